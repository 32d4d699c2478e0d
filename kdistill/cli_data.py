"""The data flags of `kdistill evaluate`, `export` and `benchmark`: the examples they name.

`add_data_arguments(parser)` adds `--data`, `--config`, `--vocabulary`, the column flags and
`--encoding`; `read_data(args, models)` reads and tokenises what they name: the built-in dataset,
a CSV/TSV/JSONL file, or the data section of a run config. String labels are numbered with the
label names kept with the models (`labels.json`), never from the file alone when those are known.
"""

import sys
import textwrap
import warnings

# What to do about a file that is not in the encoding it was read with, for flag users.
ENCODING_FIX = ("pass --encoding with the encoding it was saved in (e.g. --encoding latin-1 or "
                "cp1252)")


def add_data_arguments(parser, required=False):
    """Adds the data flags (`--data`, `--config`, `--vocabulary`, columns, `--encoding`, ...).

    Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_data_arguments(parser)
    >>> args = parser.parse_args(["--data", "reviews.csv", "--encoding", "latin-1"])
    >>> args.data, args.encoding, args.split
    ('reviews.csv', 'latin-1', 'test')
    """
    group = parser.add_argument_group(
        "data", textwrap.fill("Labelled examples: the built-in dataset, a CSV/TSV/JSONL file, or "
                              "the data of a run config. Tokenised with --vocabulary (default: "
                              "minilm for rotten_tomatoes, else the .keras model's own "
                              "preprocessor).", width=96))
    group.add_argument("--data", metavar="SPEC", required=required,
                       help="rotten_tomatoes[:SPLIT] (SPLIT: train, validation, test; default "
                            "test) or a CSV/TSV/JSONL file")
    group.add_argument("--config", metavar="FILE",
                       help="take the data settings (files, columns, vocabulary, sequence "
                            "length) from a run config or a run's config.json")
    group.add_argument("--split", default="test", choices=("train", "validation", "test"),
                       help="with --config or --data rotten_tomatoes: which split (default: "
                            "test; falls back to validation when the config has no test file)")
    group.add_argument("--vocabulary", metavar="FILE",
                       help="WordPiece vocab.txt of the models' tokenizer, or minilm")
    group.add_argument("--sequence-length", type=int, metavar="N",
                       help="tokens per example (default: the config's, a SavedModel's or "
                            ".tflite file's fixed length, else 64 or the models' maximum)")
    group.add_argument("--text-column", default=None, help="text column (default: text)")
    group.add_argument("--label-column", default=None, help="label column (default: label)")
    group.add_argument("--text-pair-column", default=None,
                       help="optional second text column")
    group.add_argument("--encoding", default=None, metavar="CODEC",
                       help="text encoding of the file, e.g. latin-1 or cp1252 (default: utf-8; "
                            "with --config, its data.encoding)")
    group.add_argument("--label-names", default=None, metavar="A,B,...",
                       help="class names in label-index order, comma-separated")
    group.add_argument("--max-examples", type=int, metavar="N",
                       help="use only the first N examples")
    group.add_argument("--uncased", dest="lowercase", action="store_true", default=None,
                       help="lower-case text before WordPiece (the default)")
    group.add_argument("--cased", dest="lowercase", action="store_false",
                       help="keep case (for cased vocabularies)")


def _data_overrides(args, spec_path=None):
    flags = (("text_column", "--text-column"), ("label_column", "--label-column"),
             ("text_pair_column", "--text-pair-column"), ("vocabulary", "--vocabulary"),
             ("sequence_length", "--sequence-length"), ("lowercase", "--cased/--uncased"),
             ("max_eval_examples", "--max-examples"), ("encoding", "--encoding"))
    overrides = []
    if spec_path is not None:
        overrides.append((("data", "test"), spec_path, f"--data {spec_path}"))
    for key, flag in flags:
        dest = "max_examples" if key == "max_eval_examples" else key
        value = getattr(args, dest, None)
        if value is not None:
            overrides.append((("data", key), value, flag))
    if args.label_names:
        names = [n.strip() for n in args.label_names.split(",")]
        overrides.append((("data", "label_names"), names, "--label-names"))
    return overrides


def _models_label_names(models):
    """`(label_names, where)` of the `labels.json` kept with the models, or `(None, None)`."""
    from kdistill.config import ConfigError

    known = [m for m in models if getattr(m, "label_names", None)]
    for other in known[1:]:
        if other.label_names != known[0].label_names:
            raise ConfigError(
                f"the models were trained on different labels: {known[0].label_names} "
                f"({known[0].labels_path}) vs {other.label_names} ({other.labels_path}); "
                "evaluate them separately.")
    if not known:
        return None, None
    return known[0].label_names, f"{known[0].name} (from {known[0].labels_path})"


def _file_labels(path, data, names, where, models):
    """Reads a labelled file with the models' label names (refusing labels they do not know)."""
    from kdistill.data import load_text_file
    from kdistill.data.files import EncodingError, LabelGapWarning, UnknownLabelError
    from kdistill.evaluation import num_outputs

    outputs = {n for n in (num_outputs(m.model) for m in models if m.kind == "keras") if n}
    try:
        with warnings.catch_warnings():
            if outputs:  # an evaluation file need not hold every class the model knows
                warnings.simplefilter("ignore", LabelGapWarning)
            text = load_text_file(path, text_column=data.text_column,
                                  label_column=data.label_column,
                                  text_pair_column=data.text_pair_column, label_names=names,
                                  encoding=data.encoding)
    except EncodingError as error:
        raise error.with_fix(ENCODING_FIX) from None
    except UnknownLabelError as error:
        if where is None or data.label_names:
            raise
        raise ValueError(
            f"{error.path}, line {error.line}: label {error.label!r} is not one the model "
            f"knows: {where} has the classes {error.label_names}. Evaluate on data with those "
            "labels (or their indices 0..{}).".format(len(error.label_names) - 1)) from None
    ids = names is None and all(n.isdigit() for n in text.label_names)
    if ids and outputs and len(text.label_names) > max(outputs):
        raise ValueError(f"{path} has the class ids 0..{len(text.label_names) - 1} but the "
                         f"model outputs {max(outputs)} classes: evaluate on data with its "
                         f"classes (ids 0..{max(outputs) - 1}).")
    if names is None and not all(n.isdigit() for n in text.label_names):
        if outputs and max(outputs) != len(text.label_names):
            raise ValueError(
                f"{path} has the labels {text.label_names} but the model outputs "
                f"{max(outputs)} classes, and no label names came with it (no labels.json "
                "next to it): cannot tell which class each label is. Pass --label-names "
                "A,B,... in the training order, or --config RUN/config.json.")
        print(f"kdistill: note: the label names of the models are not known (no labels.json "
              f"next to them); the labels of {path} are numbered in sorted order "
              f"{text.label_names}. Pass --label-names or --config RUN/config.json to be sure.",
              file=sys.stderr)
    return text.dataset


def read_data(args, models, spec=None, split=None, with_texts=False):
    """The examples the data flags name (or `spec`/`split`), tokenised: a `Split` or None.

    String labels are numbered with the label names kept with the models (`labels.json` next
    to them), `--label-names` or the config's, never from the file alone when the models'
    names are known; a label the models do not know is refused by name.

    Args:
        args: the parsed flags of `add_data_arguments` (and `--label-names`).
        models: list of `kdistill.evaluation.LoadedModel`. The models that will read the data
            (their label names, preprocessor, input length).
        spec: str or None. Instead of `--data` (e.g. `--calibration`'s).
        split: str or None. Instead of `--split`.
        with_texts: bool. Return `(split, preprocessor, texts)`: also the preprocessor that
            tokenised them and the raw texts (a dataset of `(text, label)`), e.g. to check a
            student that serves raw strings (`kdistill export`). `(None, None, None)` for no data.

    Raises:
        ConfigError: contradicting flags, labels or data. ValueError: a file that cannot be
            read (naming it, the line and the flag to pass).

    Example:
    >>> import argparse, os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> with open(os.path.join(root, "vocab.txt"), "w") as f:
    ...     _ = f.write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "bon"]))
    >>> with open(os.path.join(root, "t.csv"), "wb") as f:
    ...     _ = f.write("text,label\\nbon,pos\\ntrès bon,pos\\n".encode("latin-1"))
    >>> parser = argparse.ArgumentParser()
    >>> add_data_arguments(parser)
    >>> flags = ["--data", f"{root}/t.csv", "--vocabulary", f"{root}/vocab.txt"]
    >>> read_data(parser.parse_args(flags), [])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kdistill.data.files.EncodingError: .../t.csv, line 3, column 3: byte 0xe8 is not ...
    >>> len(read_data(parser.parse_args(flags + ["--encoding", "latin-1"]), []))
    2
    """
    from kdistill import config as config_lib
    from kdistill.data import make_preprocessor, text_splits, tokenize
    from kdistill.data.files import EncodingError

    spec = spec or args.data
    split = split or args.split
    if not spec and not args.config:
        return (None, None, None) if with_texts else None
    if spec and args.config:
        raise config_lib.ConfigError("give --data or --config, not both.")
    known, where = _models_label_names(models)
    name, _, rt_split = (spec or "").partition(":")
    if args.config:
        data = config_lib.load_data_config(args.config, _data_overrides(args))
    elif name == "rotten_tomatoes":
        data = config_lib.load_data_config(None, _data_overrides(args) + [
            (("data", "dataset"), name, f"--data {spec}")])
        split = rt_split or split
    else:
        data = config_lib.load_data_config(None, _data_overrides(args, spec))
    if known is not None and data.label_names and list(data.label_names) != known:
        source = "--label-names" if args.label_names else f"data.label_names of {args.config}"
        raise config_lib.ConfigError(
            f"{source} {list(data.label_names)} differ from the labels {where} was trained "
            f"on: {known}. Leave it out, or fix the labels file.")
    if args.sequence_length is None and not args.config:
        fixed = [m.sequence_length for m in models if m.sequence_length]
        limits = [m.max_length for m in models if m.max_length]
        if fixed:  # a SavedModel / TFLite file fixes its input length
            data.sequence_length = fixed[0]
        elif limits:  # no longer than a keras-hub model's position table
            data.sequence_length = min(data.sequence_length, *limits)
    too_long = [m for m in models if m.max_length and data.sequence_length > m.max_length]
    if too_long:
        source = ("--sequence-length" if args.sequence_length is not None else
                  f"data.sequence_length of {args.config}")
        raise config_lib.ConfigError(
            f"{source} is {data.sequence_length}, longer than the position table of "
            f"{too_long[0].name} ({too_long[0].max_length} positions): pass --sequence-length "
            f"{too_long[0].max_length} (or less).")
    if data.dataset is not None or args.config:
        try:
            texts = text_splits(data)
        except EncodingError as error:
            raise error.with_fix(f"pass --encoding, or set data.encoding in {args.config}") \
                from None
        if known is not None and list(texts.label_names) != known:
            raise config_lib.ConfigError(
                f"the data of {args.config or '--data ' + spec} has the classes "
                f"{list(texts.label_names)} but {where} was trained on {known}; use the data "
                "the models were trained for.")
        if texts.get(split) is None:
            split = "validation"
        if texts.get(split) is None:
            raise config_lib.ConfigError(f"the data of {args.config} has no {args.split} or "
                                         "validation file.")
        text = texts.get(split)
    else:
        text = _file_labels(data.test, data, data.label_names or known, where, models)
    vocabulary = data.vocabulary or ("minilm" if data.dataset == "rotten_tomatoes" else None)
    if vocabulary is not None:
        preprocessor = make_preprocessor(vocabulary, data.sequence_length, data.lowercase)
    else:
        own = [m.preprocessor for m in models if m.preprocessor is not None]
        if not own:
            raise config_lib.ConfigError(
                "cannot tokenise the text: pass --vocabulary (the vocab.txt the models were "
                "trained with, or minilm), or --config with a run's config.json.")
        preprocessor = own[0]
        preprocessor.sequence_length = data.sequence_length
    tokens = tokenize(text, preprocessor, data.max_eval_examples)
    if not with_texts:
        return tokens
    if data.max_eval_examples is not None:
        text = text.take(data.max_eval_examples)
    return tokens, preprocessor, text


def data_label_names(args):
    """The label names `--label-names` or `--config` give, or None.

    Example:
    >>> import argparse
    >>> data_label_names(argparse.Namespace(label_names="neg, pos", config=None))
    ['neg', 'pos']
    """
    from kdistill import config as config_lib

    if args.label_names:
        return [n.strip() for n in args.label_names.split(",")]
    if args.config:
        from kdistill.data import text_splits

        return list(text_splits(config_lib.load_data_config(
            args.config, _data_overrides(args))).label_names)
    return None
