"""The student's SavedModel: a token-id signature and a raw-text signature that tokenises in graph.

`write_saved_model` writes a SavedModel that tracks only the student's variables, with the
`serving_default` signature (the student's token inputs -> `logits`, `probabilities`) and, when a
keras-hub preprocessor is given, a `serve_text` signature: a batch of strings in, tokenised in the
graph by the preprocessor's TF Text ops (the same WordPiece tokenizer, special tokens and
sequence length the student was trained with), and `logits`, `probabilities`, the top-1
`label_id` and `label` name and every class's `label_names` out. `text_preprocessor` builds that
preprocessor at the exported sequence length. `kdistill.export.export_student` writes the
SavedModel with them and checks both signatures against the Keras student.

Loading a SavedModel with `serve_text` needs the TF Text ops registered: `import tensorflow_text`
before `tf.saved_model.load` in Python.
"""

import numpy as np
import tensorflow as tf

from kdistill.evaluation import dir_size
from kdistill.parity import compare, median_ms

SIGNATURE_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"
TEXT_SIGNATURE_KEY = "serve_text"
TEXT_INPUT_NAME = "text"
OUTPUT_NAMES = ("logits", "probabilities")
TEXT_OUTPUT_NAMES = ("logits", "probabilities", "label_id", "label", "label_names")


def text_preprocessor(preprocessor, sequence_length):
    """A keras-hub text classifier preprocessor that pads and truncates to `sequence_length`.

    The preprocessor given is not changed: a new one of the same class is built on its
    tokenizer (same vocabulary, lower-casing and special tokens) with the exported length.

    Args:
        preprocessor: a keras-hub text classifier preprocessor (e.g.
            `keras_hub.models.BertTextClassifierPreprocessor`), or a `BertTokenizer`.
        sequence_length: int. Tokens per example, `[CLS]` and `[SEP]` included.

    Returns:
        A keras-hub text classifier preprocessor: strings -> `{"token_ids", "padding_mask",
        "segment_ids"}` `[batch, sequence_length]`.

    Raises:
        ValueError: neither a keras-hub text classifier preprocessor nor a BertTokenizer.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"]
    >>> tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=True)
    >>> text_preprocessor(tokenizer, 6)(["Good film"])["token_ids"].numpy().tolist()
    [[2, 5, 6, 3, 0, 0]]
    """
    import keras_hub

    sequence_length = int(sequence_length)
    if isinstance(preprocessor, keras_hub.tokenizers.BertTokenizer):
        return keras_hub.models.BertTextClassifierPreprocessor(
            preprocessor, sequence_length=sequence_length)
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if not isinstance(preprocessor, keras_hub.models.TextClassifierPreprocessor) or (
            tokenizer is None):
        raise ValueError(
            "preprocessor must be a keras-hub text classifier preprocessor (e.g. "
            "keras_hub.models.BertTextClassifierPreprocessor) or a BertTokenizer, got "
            f"{type(preprocessor).__name__}.")
    if preprocessor.sequence_length == sequence_length:
        return preprocessor
    return type(preprocessor)(tokenizer=tokenizer, sequence_length=sequence_length,
                              truncate=getattr(preprocessor, "truncate", "round_robin"))


def _check_text_inputs(preprocessor, specs):
    produced = preprocessor(tf.constant(["a"]))
    missing = [name for name in specs if name not in produced]
    if missing:
        raise ValueError(
            f"The student takes inputs {sorted(specs)} but the preprocessor produces "
            f"{sorted(produced)}: the serve_text signature cannot feed {missing}. Pass the "
            "preprocessor the student was trained with, or preprocessor=None.")


def write_saved_model(path, variables, forward, specs, preprocessor=None, label_names=None):
    """Writes the student's forward pass as a SavedModel with a token and a text signature.

    Only `variables` are tracked (as plain `tf.Variable`s), so each weight is stored once:
    Keras' `ExportArchive`/`model.export` in Keras 3.15 store every variable twice (under the
    model and under `_all_variables`), doubling the SavedModel on disk.

    Args:
        path: str. The SavedModel directory to write.
        variables: list of variables. The student's weights (`model.weights`).
        forward: callable. `{input name: tensor} -> float32 logits [batch, classes]`.
        specs: dict. `{input name: tf.TensorSpec}` of the token signature.
        preprocessor: keras-hub text classifier preprocessor or None. With one (see
            `text_preprocessor`), a `serve_text` signature is added: `text` (a `[batch]` string
            tensor) -> `logits`, `probabilities`, `label_id` (int64), `label` (the top-1 class
            name) and `label_names` (`[batch, classes]`, the name of each probability's class).
        label_names: list of str or None. Class names in label-index order; None names the
            classes `"0"`, `"1"`, ...

    Returns:
        list of str. The signature keys written.

    Raises:
        ValueError: a preprocessor that does not produce the student's inputs, or label names
            that do not match the number of classes.

    Example:
    >>> import os, tempfile
    >>> from kdistill import testing
    >>> model = testing.tiny_mlp()
    >>> specs = {"features": tf.TensorSpec([None, 8], tf.float32, name="features")}
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp")
    >>> write_saved_model(path, model.weights, lambda x: model(x["features"]), specs)
    ['serving_default']
    >>> loaded = tf.saved_model.load(path).signatures["serving_default"]
    >>> sorted(loaded(features=tf.zeros([2, 8])))
    ['logits', 'probabilities']
    """
    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = [getattr(v, "value", v) for v in variables]  # loaded.variables

    @tf.function(input_signature=[dict(specs)])
    def serve(flat):
        logits = forward(flat)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    root.serve = serve
    signatures = {SIGNATURE_KEY: serve}
    if preprocessor is not None:
        _check_text_inputs(preprocessor, specs)
        num_classes = int(serve.get_concrete_function().structured_outputs["logits"].shape[-1])
        if label_names is None:
            label_names = [str(i) for i in range(num_classes)]
        if len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names {list(label_names)} for a model "
                             f"with {num_classes} classes; give one name per class.")
        names = tf.constant([str(n) for n in label_names])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=TEXT_INPUT_NAME)])
        def serve_text(text):
            tokens = preprocessor(text)
            logits = forward({n: tf.cast(tokens[n], s.dtype) for n, s in specs.items()})
            label_id = tf.argmax(logits, axis=-1)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1),
                    "label_id": label_id, "label": tf.gather(names, label_id),
                    "label_names": tf.tile(names[None], [tf.shape(logits)[0], 1])}

        root.serve_text = serve_text
        signatures[TEXT_SIGNATURE_KEY] = serve_text
    tf.saved_model.save(root, path, signatures=signatures)
    return list(signatures)


def load_text_signature(path):
    """The `serve_text` signature of a SavedModel written by `write_saved_model`.

    Registers the TF Text ops it uses first (`import tensorflow_text`).

    Args:
        path: str. The SavedModel directory.

    Returns:
        The concrete function: `signature(text=tf.constant([...]))` -> dict of outputs.

    Raises:
        ValueError: the SavedModel has no `serve_text` signature.

    Example (a SavedModel written without a preprocessor has the token signature only):
    >>> import os, tempfile
    >>> from kdistill import testing
    >>> model, path = testing.tiny_mlp(), os.path.join(tempfile.mkdtemp(), "mlp")
    >>> specs = {"features": tf.TensorSpec([None, 8], tf.float32, name="features")}
    >>> _ = write_saved_model(path, model.weights, lambda x: model(x["features"]), specs)
    >>> load_text_signature(path)
    Traceback (most recent call last):
    ...
    ValueError: ... has no 'serve_text' signature (it has ['serving_default']): ...
    """
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    signatures = tf.saved_model.load(path).signatures
    if TEXT_SIGNATURE_KEY not in signatures:
        raise ValueError(
            f"{path} has no {TEXT_SIGNATURE_KEY!r} signature (it has {sorted(signatures)}): "
            "export with a preprocessor (kdistill.export_student(..., preprocessor=...)).")
    return signatures[TEXT_SIGNATURE_KEY]


def check_text_signature(path, reference, preprocessor, texts, labels, label_names, warmup=5,
                         runs=50):
    """Checks a SavedModel's `serve_text` against the Keras model on raw texts, and times it.

    The texts are tokenised outside the graph by the same `preprocessor` for the reference, so
    the comparison covers the in-graph tokenisation as well as the model.

    Args:
        path: str. The SavedModel directory (see `write_saved_model`).
        reference: callable. `{input name: tensor [b, seq]}` (the preprocessor's output) ->
            the Keras model's logits as a NumPy array.
        preprocessor: the keras-hub preprocessor `serve_text` was written with.
        texts: list of str or None. Held-out raw texts; None checks nothing but the latency.
        labels: np.ndarray of class ids, or None.
        label_names: list of str. The class names `serve_text` returns.
        warmup, runs: int. Untimed and timed batch-1 calls (median latency).

    Returns:
        dict. The report entry: `path`, `size_bytes`, `signature`, `num_validation_texts`,
        `max_abs_diff`, `top1_agreement`, `accuracy`, `labels_match` (each `label` output is
        the name of the top-1 class) and `latency_ms` (one string, tokenising included).

    Example:
    >>> import os, tempfile, keras_hub
    >>> from kdistill import testing
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"]
    >>> pre = text_preprocessor(keras_hub.tokenizers.BertTokenizer(vocabulary=vocab), 6)
    >>> model = testing.tiny_bert_classifier(vocabulary_size=len(vocab), num_classes=2)
    >>> specs = {n: tf.TensorSpec([None, 6], tf.int32, name=n)
    ...          for n in ("token_ids", "padding_mask", "segment_ids")}
    >>> path = os.path.join(tempfile.mkdtemp(), "sm")
    >>> write_saved_model(path, model.weights, model, specs, pre, label_names=["neg", "pos"])
    ['serving_default', 'serve_text']
    >>> out = load_text_signature(path)(text=tf.constant(["good film", "film"]))
    >>> out["label_names"].numpy().tolist()[0], out["probabilities"].shape
    ([b'neg', b'pos'], TensorShape([2, 2]))
    >>> entry = check_text_signature(path, lambda x: model(x).numpy(), pre, ["good film"], None,
    ...                              ["neg", "pos"], warmup=1, runs=2)
    >>> entry["max_abs_diff"] < 1e-5, entry["labels_match"]
    (True, True)
    """
    signature = load_text_signature(path)
    entry = {"path": path, "size_bytes": dir_size(path), "signature": TEXT_SIGNATURE_KEY,
             "num_validation_texts": len(texts) if texts else 0}

    def run(batch):
        return signature(text=tf.constant(batch, tf.string))

    if texts:
        batches = [list(texts[i:i + 64]) for i in range(0, len(texts), 64)]
        expected = np.concatenate([reference(preprocessor(tf.constant(b))) for b in batches])
        outputs = [run(b) for b in batches]
        logits = np.concatenate([o["logits"].numpy() for o in outputs])
        entry.update(compare(expected, logits, labels))
        served = [v.decode("utf-8") for o in outputs for v in o["label"].numpy()]
        entry["labels_match"] = served == [label_names[i] for i in np.argmax(logits, -1)]
    example = [texts[0] if texts else "a"]
    entry["latency_ms"] = median_ms(lambda: run(example)["probabilities"].numpy(), warmup, runs)
    return entry
