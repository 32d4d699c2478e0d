"""What an app needs to feed a `.tflite` file, in a small JSON file next to it.

A `.tflite` student takes token ids, not text. `write_sidecar` writes `model_<format>.json` next
to `model_<format>.tflite`: the interpreter signature's inputs (name, dtype, shape, tensor index,
in signature order) and outputs (with the scale and zero point of int8 ones), the label names in
index order, and the tokenizer: the vocabulary file (`vocab.txt`, written once by
`write_vocabulary`; line `i` is token id `i`) and every setting an app must reproduce to turn a
string into those ids (lower-casing, accent stripping, punctuation and CJK splitting, the
WordPiece suffix and unknown token, special tokens and their ids, the sequence length and how a
sequence is packed). `tokenizer_settings` reads them
off a keras-hub preprocessor; `read_sidecar` reads a sidecar back. docs/export.md has a tested
snippet that classifies a string with `ai_edge_litert` and a sidecar alone.
"""

import json
import os

SIDECAR_FORMAT = "kdistill-tflite-sidecar"
SIDECAR_VERSION = 1
VOCABULARY_FILENAME = "vocab.txt"

# `tf_text.FastWordpieceTokenizer` (behind keras-hub's WordPieceTokenizer) maps longer words to
# the unknown token.
MAX_BYTES_PER_WORD = 100

# The CJK ideograph blocks BERT splits into single-character words (google-research/bert).
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# Unicode's Default_Ignorable_Code_Point ranges: lower-casing (NFKC_Casefold, as
# `tf_text.case_fold_utf8` applies it) drops them.
DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))

# How keras-hub feeds a BERT-style classifier, input by input.
_FEEDS = {
    "token_ids": "[start] + the word pieces' ids (at most sequence_length - 2) + [end], then "
                 "[pad] ids up to sequence_length",
    "padding_mask": "1 where token_ids is not the [pad] id, else 0",
    "segment_ids": "0 everywhere (one segment)",
}
_OUTPUTS = {
    "logits": "unnormalised class scores, in label-index order",
    "probabilities": "softmax of the logits, in label-index order",
}
_SPECIAL_TOKENS = ("start", "end", "pad", "cls", "sep", "mask")


def sidecar_path(tflite_path):
    """The sidecar's path for a `.tflite` path: the same name with `.json`.

    Example:
    >>> sidecar_path("export/model_int8.tflite")
    'export/model_int8.json'
    """
    root, _ = os.path.splitext(os.fspath(tflite_path))
    return root + ".json"


def write_vocabulary(directory, tokenizer):
    """Writes a tokenizer's vocabulary to `directory/vocab.txt`, one token a line (line i = id i).

    Args:
        directory: str. Where to write it (the export directory).
        tokenizer: a keras-hub tokenizer with `get_vocabulary()`.

    Returns:
        str. The file's path.

    Raises:
        ValueError: a token that holds a line break (it could not be read back line by line).

    Example:
    >>> import tempfile, keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film"]
    >>> path = write_vocabulary(tempfile.mkdtemp(), keras_hub.tokenizers.BertTokenizer(vocab))
    >>> open(path, encoding="utf-8").read().splitlines()[-1]
    'film'
    """
    vocabulary = list(tokenizer.get_vocabulary())
    bad = [t for t in vocabulary if "\n" in t or "\r" in t]
    if bad:
        raise ValueError(f"Vocabulary tokens with line breaks cannot go in {VOCABULARY_FILENAME}: "
                         f"{bad[:3]}.")
    path = os.path.join(directory, VOCABULARY_FILENAME)
    with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(vocabulary) + "\n")
    os.replace(path + ".tmp", path)
    return path


def tokenizer_settings(preprocessor, vocabulary_file=VOCABULARY_FILENAME):
    """The settings an app needs to tokenise text as a keras-hub WordPiece preprocessor does.

    Args:
        preprocessor: a keras-hub text classifier preprocessor whose tokenizer is a
            `WordPieceTokenizer` (e.g. `BertTextClassifierPreprocessor`), at the exported
            sequence length (`kdistill.serving.text_preprocessor`).
        vocabulary_file: str. The vocabulary's path relative to the sidecar.

    Returns:
        dict. `type` (`"wordpiece"`), `vocabulary_file`, `vocabulary_size`, `lowercase`,
        `strip_accents`, `split`, `split_on_cjk`, `suffix_indicator`, `unknown_token`,
        `unknown_token_id`, `max_bytes_per_word`, `special_tokens_in_strings`, `cjk_ranges`,
        `lowercase_drops_ranges` (inclusive code point ranges), `special_tokens`
        (`{"start"|"end"|"pad"|...: {"token", "id"}}`), `sequence_length`, `truncate` and
        `steps` (the algorithm in words).

    Raises:
        ValueError: a tokenizer that is not WordPiece (only WordPiece is described).

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film"]
    >>> preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
    ...     keras_hub.tokenizers.BertTokenizer(vocab, lowercase=True), sequence_length=8)
    >>> settings = tokenizer_settings(preprocessor)
    >>> settings["lowercase"], settings["special_tokens"]["start"], settings["sequence_length"]
    (True, {'token': '[CLS]', 'id': 2}, 8)
    """
    import keras_hub

    tokenizer = preprocessor.tokenizer
    if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        raise ValueError(
            f"The sidecar describes WordPiece tokenizers only, not {type(tokenizer).__name__}; "
            "tokenise in the app with the same library, or export with preprocessor=None.")
    special = {}
    for name in _SPECIAL_TOKENS:
        token = getattr(tokenizer, f"{name}_token", None)
        if token is not None:
            special[name] = {"token": token, "id": int(tokenizer.token_to_id(token))}
    return {
        "type": "wordpiece",
        "vocabulary_file": vocabulary_file,
        "vocabulary_size": int(tokenizer.vocabulary_size()),
        "lowercase": bool(tokenizer.lowercase),
        "strip_accents": bool(tokenizer.strip_accents),
        "split": bool(tokenizer.split),
        "split_on_cjk": bool(tokenizer.split_on_cjk),
        "suffix_indicator": tokenizer.suffix_indicator,
        "unknown_token": tokenizer.oov_token,
        "unknown_token_id": int(tokenizer.token_to_id(tokenizer.oov_token)),
        "max_bytes_per_word": MAX_BYTES_PER_WORD,
        "special_tokens_in_strings": bool(tokenizer.special_tokens_in_strings),
        "cjk_ranges": [list(r) for r in CJK_RANGES],
        "lowercase_drops_ranges": [list(r) for r in DEFAULT_IGNORABLE_RANGES],
        "special_tokens": special,
        "sequence_length": int(preprocessor.sequence_length),
        "truncate": getattr(preprocessor, "truncate", "round_robin"),
        "steps": [
            "strip_accents: NFD-normalise, then drop combining marks (category Mn)",
            "split: split at ASCII whitespace ' \\t\\n\\r\\f' and control/format characters "
            "(categories Cc, Cf), dropping them; ASCII symbols !-/ :-@ [-` {-~ and Unicode "
            "punctuation (categories P*) become words of their own, and so does each character "
            "in cjk_ranges when split_on_cjk",
            "lowercase: each word NFKC-normalised, case-folded (str.casefold), NFKC-normalised, "
            "and the characters in lowercase_drops_ranges dropped",
            "wordpiece: per word, greedy longest match from the left; pieces after the first "
            "carry the suffix_indicator; a word with an unmatchable rest, or longer than "
            "max_bytes_per_word UTF-8 bytes, becomes the unknown token",
            "pack: see each input's 'feed'",
        ],
    }


def signature_io(interpreter, signature_key):
    """The inputs and outputs of an interpreter signature, in signature order.

    Args:
        interpreter: an `ai_edge_litert.interpreter.Interpreter`.
        signature_key: str. The signature.

    Returns:
        `(inputs, outputs)`: lists of `{"name", "dtype", "shape", "index"}` (`shape` with -1 for
        the dynamic batch; `index` is the tensor index for `interpreter.set_tensor`), with
        `quantization` (`{"scale", "zero_point"}`: real value = scale * (q - zero_point)) for
        quantized tensors (the int8 outputs of full int8 files).

    Example:
    >>> import os, tempfile
    >>> from kdistill import testing, tflite
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp")
    >>> testing.tiny_mlp().export(path, format="tf_saved_model", verbose=False)
    >>> interpreter, _ = tflite.signature_runner(tflite.convert_saved_model(
    ...     path, "tflite_float32")[0])
    >>> inputs, outputs = signature_io(interpreter, "serving_default")
    >>> inputs[0]["dtype"], inputs[0]["shape"], len(outputs)
    ('float32', [-1, 8], 1)
    """
    names = interpreter.get_signature_list()[signature_key]
    runner = interpreter.get_signature_runner(signature_key)

    def describe(details, order):
        described = []
        for name in order:
            detail = details[name]
            entry = {"name": name, "dtype": detail["dtype"].__name__,
                     "shape": [int(d) for d in detail["shape_signature"]],
                     "index": int(detail["index"])}
            scale, zero_point = detail.get("quantization", (0.0, 0))
            if scale:  # an int8 tensor of a full int8 file: real = scale * (q - zero_point)
                entry["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
            described.append(entry)
        return described

    return (describe(runner.get_input_details(), names["inputs"]),
            describe(runner.get_output_details(), names["outputs"]))


def write_sidecar(tflite_path, interpreter, signature_key, label_names, tokenizer=None):
    """Writes the sidecar JSON of a `.tflite` file (see the module docstring); returns its path.

    Args:
        tflite_path: str. The `.tflite` file; the sidecar goes next to it (`sidecar_path`).
        interpreter: an `ai_edge_litert.interpreter.Interpreter` of that file.
        signature_key: str. The signature an app runs.
        label_names: list of str. The class names in label-index order.
        tokenizer: dict or None. `tokenizer_settings(...)`; None when the tokenizer is not known
            (the sidecar then says so and an app must tokenise as in training).

    Returns:
        str. The sidecar's path.

    Example:
    >>> import os, tempfile
    >>> from kdistill import testing, tflite
    >>> out = tempfile.mkdtemp()
    >>> testing.tiny_mlp().export(os.path.join(out, "sm"), format="tf_saved_model", verbose=False)
    >>> content = tflite.convert_saved_model(os.path.join(out, "sm"), "tflite_float32")[0]
    >>> with open(os.path.join(out, "model.tflite"), "wb") as f:
    ...     _ = f.write(content)
    >>> interpreter, _ = tflite.signature_runner(content)
    >>> path = write_sidecar(os.path.join(out, "model.tflite"), interpreter, "serving_default",
    ...                      ["a", "b", "c"])
    >>> read_sidecar(path)["labels"], os.path.basename(path)
    (['a', 'b', 'c'], 'model.json')
    """
    inputs, outputs = signature_io(interpreter, signature_key)
    for entry in inputs:
        if tokenizer is not None and entry["name"] in _FEEDS:
            entry["feed"] = _FEEDS[entry["name"]]
    for entry in outputs:
        if entry["name"] in _OUTPUTS:
            entry["meaning"] = _OUTPUTS[entry["name"]]
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "model": os.path.basename(tflite_path),
        "signature": signature_key,
        "inputs": inputs,
        "outputs": outputs,
        "labels": [str(n) for n in label_names],
        "tokenizer": tokenizer,
    }
    if tokenizer is None:
        sidecar["note"] = ("The tokenizer was not given at export (preprocessor=None): feed the "
                           "token ids of the tokenizer the student was trained with.")
    path = sidecar_path(tflite_path)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path


def read_sidecar(path):
    """Reads a sidecar JSON (the path of the `.json` or of its `.tflite` file).

    Raises:
        ValueError: a file that is not a sidecar of a version this code reads.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.json")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"format": "other"}')
    >>> read_sidecar(path)
    Traceback (most recent call last):
    ...
    ValueError: ... is not a kdistill-tflite-sidecar file (format 'other').
    """
    path = os.fspath(path)
    if path.endswith(".tflite"):
        path = sidecar_path(path)
    with open(path, encoding="utf-8") as f:
        sidecar = json.load(f)
    kind = sidecar.get("format") if isinstance(sidecar, dict) else None
    if kind != SIDECAR_FORMAT:
        raise ValueError(f"{path} is not a {SIDECAR_FORMAT} file (format {kind!r}).")
    if sidecar.get("version") != SIDECAR_VERSION:
        raise ValueError(f"{path} is sidecar version {sidecar.get('version')!r}; this kdistill "
                         f"reads version {SIDECAR_VERSION}.")
    return sidecar
