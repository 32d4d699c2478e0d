"""Load a user's own labelled text from CSV, TSV or JSON Lines files."""

import codecs
import csv
import dataclasses
import json
import math
import os
import warnings

import numpy as np
import tensorflow as tf

FORMATS = ("csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
               ".ndjson": "jsonl"}


@dataclasses.dataclass(frozen=True)
class TextDataset:
    """A text classification dataset read from a file.

    Attributes:
        dataset: `tf.data.Dataset`. Unbatched elements `(text, label)`, or
            `((text, text_pair), label)` when a pair column is used; `text` is a string
            scalar, `label` an int32 scalar index into `label_names`. Without a label column
            the elements are `text` or `(text, text_pair)` only.
        label_names: list of str or None. Class names in label-index order.
        num_examples: int. Number of rows.
        path: str. The file read.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "pairs.tsv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("premise\\thypothesis\\tlabel\\nA cat sat.\\tA cat.\\tyes\\n")
    >>> data = load_text_file(path, text_column="premise", text_pair_column="hypothesis")
    >>> data.num_classes, data.label_names, data.num_examples
    (1, ['yes'], 1)
    >>> data.dataset.element_spec[0][1].dtype.name
    'string'
    """

    dataset: tf.data.Dataset
    label_names: list | None
    num_examples: int
    path: str

    @property
    def num_classes(self):
        """Number of classes (`len(label_names)`), or None without labels."""
        return None if self.label_names is None else len(self.label_names)


# The special tokens a BERT WordPiece vocabulary must hold (keras-hub's `BertTokenizer`).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def check_vocabulary(path):
    """Checks a WordPiece `vocab.txt` before a tokenizer reads it; returns its tokens.

    Args:
        path: str. One token per line, with `[PAD] [UNK] [CLS] [SEP] [MASK]`.

    Raises:
        FileNotFoundError: no such file. ValueError: empty, not UTF-8 (`EncodingError`), or
            without the special tokens (the message names the file and the missing tokens).

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> _ = open(path, "w").write("the\\nfilm\\n")
    >>> check_vocabulary(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../vocab.txt lacks the special tokens ['[PAD]', '[UNK]', '[CLS]', '[SEP]', ...
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No vocabulary file {path}: pass the vocab.txt of the teacher's "
                                "tokenizer (data.vocabulary / --vocabulary), or minilm.")
    try:
        with open(path, encoding="utf-8") as f:
            tokens = [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as error:
        raise _decoding_error(path, "utf-8", error).with_fix(
            "pass the vocabulary file of the teacher's tokenizer") from None
    if not any(t.strip() for t in tokens):
        raise ValueError(f"{path} is empty: a WordPiece vocab.txt has one token per line. Pass "
                         "the vocab.txt of the teacher's tokenizer, or minilm.")
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise ValueError(
            f"{path} lacks the special tokens {missing}: it is not a BERT WordPiece vocab.txt "
            f"(which holds {list(SPECIAL_TOKENS)}). Pass the vocab.txt of the teacher's "
            "tokenizer, or minilm.")
    return tokens


def _format_of(path, format):
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"Unknown format {format!r} for {path}; use one of {FORMATS}.")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise ValueError(f"Cannot tell the format of {path} from its extension {ext!r}; pass "
                         f"format= one of {FORMATS}.")
    return _EXTENSIONS[ext]


class UnknownLabelError(ValueError):
    """A label that is not one of the known class names (a `ValueError` naming file and line).

    Attributes:
        path: str. The file.
        line: int. The line of the row.
        label: str. The label found.
        label_names: list of str. The known class names.

    Example:
    >>> error = UnknownLabelError("t.csv", 3, "maybe", ["neg", "pos"], "label")
    >>> error.label, str(error).split(";")[0]
    ('maybe', "t.csv, line 3: unknown label 'maybe' in column 'label'")
    """

    def __init__(self, path, line, label, label_names, column):
        self.path, self.line, self.label = path, line, label
        self.label_names, self.column = list(label_names), column
        super().__init__(
            f"{path}, line {line}: unknown label {label!r} in column {column!r}; label_names "
            f"are {self.label_names} (or indices 0..{len(self.label_names) - 1}). Fix the row "
            "or extend label_names.")


class EncodingError(ValueError):
    """Bytes that are not text in the file's encoding (a `ValueError` naming file, line, column).

    Attributes:
        path: str. The file.
        line: int or None. The first line that does not decode.
        column: int or None. The column (1-based byte offset in that line) of the first bad byte.
        encoding: str. The encoding the file was read with.
        fix: str. What to do, as the caller names its option (`encoding=`, `data.encoding`,
            `--encoding`); `with_fix` gives the same error with another.

    Example:
    >>> error = EncodingError("t.csv", 3, 11, b"\\xe8", "utf-8", "invalid continuation byte")
    >>> str(error.with_fix("pass --encoding latin-1"))  # doctest: +NORMALIZE_WHITESPACE
    't.csv, line 3, column 11: byte 0xe8 is not valid utf-8 text (invalid continuation byte).
    Save the file as UTF-8, or pass --encoding latin-1.'
    """

    FIX = "pass the encoding it was saved in, e.g. encoding='latin-1' or 'cp1252'"

    def __init__(self, path, line, column, byte, encoding, reason, fix=FIX):
        self.path, self.line, self.column, self.encoding = path, line, column, encoding
        self.byte, self.reason, self.fix = byte, reason, fix
        where = f"{path}, line {line}, column {column}" if line else path
        super().__init__(f"{where}: byte 0x{byte.hex()} is not valid {encoding} text ({reason}). "
                         f"Save the file as UTF-8, or {fix}.")

    def with_fix(self, fix):
        """The same error, with `fix` as what to do (e.g. `"set data.encoding: latin-1"`)."""
        return EncodingError(self.path, self.line, self.column, self.byte, self.encoding,
                             self.reason, fix)


def _decoding_error(path, encoding, error):
    """The `EncodingError` of the first line of `path` that is not `encoding` text."""
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                error = e
                break
        else:
            line = None
    return EncodingError(path, line, error.start + 1 if line else None,
                         error.object[error.start:error.start + 1], encoding, error.reason)


def _iter_delimited(path, fmt, encoding="utf-8-sig"):
    """Yields `(line_number, row_dict, fieldnames)`; TSV is unquoted (GLUE style)."""
    with open(path, encoding=encoding, newline="") as f:
        if fmt == "tsv":
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(f)
        fieldnames = reader.fieldnames
        if not fieldnames:
            raise ValueError(f"{path} is empty: expected a header line with column names.")
        for row in reader:
            if None in row or None in row.values():
                raise ValueError(
                    f"{path}, line {reader.line_num}: the row has a different number of fields "
                    f"than the header ({len(fieldnames)} columns: {fieldnames}). Check the "
                    f"delimiter and quoting" + (" (TSV is read without quoting)."
                                                if fmt == "tsv" else "."))
            yield reader.line_num, row, fieldnames


def iter_jsonl(path, encoding="utf-8-sig"):
    """Yields `(line_number, row dict, sorted keys)` of a JSON Lines file, skipping blank lines.

    Raises:
        ValueError: a line that is not one JSON object (naming the file and the line).

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"text": "a", "label": 1}\\n\\n{"text": "b"}\\n')
    >>> [(n, row["text"]) for n, row, _ in iter_jsonl(path)]
    [(1, 'a'), (3, 'b')]
    """
    with open(path, encoding=encoding) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({e.msg}). Each "
                                 "line must be one JSON object.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object, got "
                                 f"{type(row).__name__}.")
            yield line_number, row, sorted(row)


def _as_label_string(value):
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def load_text_file(path, text_column="text", label_column="label", text_pair_column=None,
                   label_names=None, format=None, encoding="utf-8"):
    """Read labelled text from a CSV, TSV or JSON Lines file.

    CSV is standard (quoted) CSV with a header line; TSV is tab-separated with a header and no
    quoting (as in GLUE); JSONL has one JSON object per line. The format comes from the
    extension (`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`) unless given.

    Labels: with `label_names`, each label must be one of the names, or else an integer index
    into them. Without, whole-number labels `0..k-1` (also written `1.0`, or JSON `true`) are
    used as they are (names `"0"`..), negative ones (-1/1) are numbered in numeric order, and
    other labels are numbered in sorted order of their string values. Integer labels that skip
    an id (0, 1, 5) get a `LabelGapWarning`; fractional numbers and JSON lists are refused.

    Args:
        path: str or path-like. The file.
        text_column: str. Column (or JSON key) with the text.
        label_column: str or None. Column with the label; None for unlabelled text.
        text_pair_column: str or None. Optional second text segment (e.g. NLI hypothesis).
        label_names: list of str or None. The classes, in index order.
        format: str or None. `"csv"`, `"tsv"` or `"jsonl"`; default from the extension.
        encoding: str. The file's text encoding (default UTF-8, with or without a byte-order
            mark), e.g. `"latin-1"` or `"cp1252"` for files saved by older spreadsheet tools.

    Returns:
        A `TextDataset` (`.dataset`, `.label_names`, `.num_examples`, `.path`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: empty file, missing column (the columns found are listed), unknown label
            (`UnknownLabelError`), empty text, malformed row or JSON line, or bytes that are
            not `encoding` text (`EncodingError`, with the line and column).

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "reviews.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("text,label\\nGreat film,pos\\nDull,neg\\n")
    >>> data = load_text_file(path)
    >>> data.label_names, data.num_examples
    (['neg', 'pos'], 2)
    >>> [(t.decode(), int(y)) for t, y in data.dataset.as_numpy_iterator()]
    [('Great film', 1), ('Dull', 0)]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {path}" + (
            " (it is a directory; pass the file inside it)" if os.path.isdir(path) else ""))
    fmt = _format_of(path, format)
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty.")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"Unknown encoding {encoding!r} for {path}; pass a Python codec name "
                         "such as 'utf-8', 'latin-1' or 'cp1252'.") from None
    try:
        return _load_text_file(path, fmt, text_column, label_column, text_pair_column,
                               label_names, encoding)
    except UnicodeDecodeError as error:
        raise _decoding_error(path, encoding, error) from None


def _load_text_file(path, fmt, text_column, label_column, text_pair_column, label_names,
                    encoding):
    # A UTF-8 byte-order mark is not part of the first column's name.
    encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    rows = (iter_jsonl(path, encoding) if fmt == "jsonl" else
            _iter_delimited(path, fmt, encoding))
    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    texts, pairs, raw_labels, lines = [], [], [], []
    checked_header = False
    for line_number, row, fieldnames in rows:
        if fmt != "jsonl" and not checked_header:
            missing = [c for c in wanted if c not in fieldnames]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; columns found: "
                                 f"{list(fieldnames)}. Pass text_column= / label_column= / "
                                 "text_pair_column= to match.")
            checked_header = True
        missing = [c for c in wanted if c not in row]
        if missing:
            raise ValueError(f"{path}, line {line_number}: missing key(s) {missing}; keys found: "
                             f"{list(fieldnames)}. Pass text_column= / label_column= / "
                             "text_pair_column= to match.")
        for column in (text_column, text_pair_column, label_column):
            if column is not None and isinstance(row[column], (list, dict)):
                raise ValueError(f"{path}, line {line_number}: the value in column {column!r} "
                                 f"is a JSON {type(row[column]).__name__}; expected a string"
                                 + (" (a text)." if column != label_column else
                                    " or a number (a class name or id)."))
        for column, out in ((text_column, texts), (text_pair_column, pairs)):
            if column is None:
                continue
            value = row[column]
            if value is None or not str(value).strip():
                raise ValueError(f"{path}, line {line_number}: empty text in column "
                                 f"{column!r}. Remove or fill the row.")
            out.append(str(value))
        if label_column is not None:
            value = row[label_column]
            if value is None or _as_label_string(value) == "":
                raise ValueError(f"{path}, line {line_number}: empty label in column "
                                 f"{label_column!r}. Fill it or remove the row (unlabelled "
                                 "text goes in a file of its own, e.g. data.unlabelled).")
            raw_labels.append(_as_label_string(value))
        lines.append(line_number)
    if fmt != "jsonl" and not checked_header:
        # Header only: still report a missing column before "no rows".
        with open(path, encoding=encoding, newline="") as f:
            header = next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","), [])
        missing = [c for c in wanted if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; columns found: {header}.")
    if not texts:
        raise ValueError(f"{path} has no data rows.")

    names, labels = None, None
    if label_column is not None:
        names, labels = _encode_labels(raw_labels, label_names, path, lines, label_column)

    features = tf.constant(texts) if text_pair_column is None else (
        tf.constant(texts), tf.constant(pairs))
    if labels is None:
        dataset = tf.data.Dataset.from_tensor_slices(features)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    return TextDataset(dataset=dataset, label_names=names, num_examples=len(texts), path=path)


class LabelGapWarning(UserWarning):
    """Integer labels that skip a class id (0, 1, 2, 5): a warning naming the missing ids.

    Integer labels are class ids, so 0, 1, 2, 5 make six classes, two of them never seen. Valid
    for a sample that lacks a class, a mistake otherwise: `load_text_file` warns, unless
    `label_names` lists every class.

    Attributes:
        path: str. The file.
        labels: list of int. The labels found.
        missing: list of int. The class ids below the largest that no row has.

    Example:
    >>> str(LabelGapWarning("t.csv", [0, 1, 2, 5], "label")).split(":")[1]
    " the integer labels in column 'label' are [0, 1, 2, 5]"
    """

    def __init__(self, path, labels, column):
        self.path, self.labels = path, list(labels)
        self.missing = sorted(set(range(max(labels) + 1)) - set(labels))
        super().__init__(
            f"{path}: the integer labels in column {column!r} are {self.labels}: as class ids "
            f"0..{max(labels)} they make {max(labels) + 1} classes, and {self.missing} have no "
            f"example. Renumber the labels 0..{len(self.labels) - 1}; or, if the classes are "
            "meant, pass them all in order as label_names (config key data.label_names, flag "
            "--label-names) to say so.")


def _as_integer(value):
    """The whole number a label string writes (`"2"`, `"2.0"`, `"-1"`), or None."""
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _numeric_labels(unique, raw, path, lines, column):
    """`(names, labels)` when every label is a number (the numbering follows the value), or None.

    Non-negative whole numbers are the class ids themselves; with negatives (-1/1) the classes
    are numbered in numeric order. Fractional numbers (a regression target?) are refused.
    """
    try:
        numbers = {v: float(v) for v in unique}
    except ValueError:
        return None
    if not all(math.isfinite(n) for n in numbers.values()):
        return None
    fractional = [v for v, n in numbers.items() if not n.is_integer()]
    if fractional:
        line = lines[raw.index(fractional[0])]
        raise ValueError(
            f"{path}, line {line}: the label {fractional[0]!r} in column {column!r} is a number "
            "with a fractional part: labels must be class names or whole class ids (a "
            "regression target cannot be distilled as classes). Map the values to classes.")
    ids = sorted({int(n) for n in numbers.values()})
    if ids[0] < 0:
        index = {i: k for k, i in enumerate(ids)}
        return [str(i) for i in ids], np.asarray([index[_as_integer(v)] for v in raw], np.int32)
    if len(ids) != ids[-1] + 1:
        warnings.warn(LabelGapWarning(path, ids, column), stacklevel=4)
    return ([str(i) for i in range(ids[-1] + 1)],
            np.asarray([_as_integer(v) for v in raw], np.int32))


def _encode_labels(raw, label_names, path, lines, column):
    if label_names is not None:
        names = [str(n) for n in label_names]
        if len(set(names)) != len(names):
            raise ValueError(f"label_names has duplicates: {names}.")
        index = {n: i for i, n in enumerate(names)}
        labels = []
        for value, line in zip(raw, lines):
            number = _as_integer(value)
            if value in index:
                labels.append(index[value])
            elif number is not None and 0 <= number < len(names):
                labels.append(number)
            else:
                raise UnknownLabelError(path, line, value, names, column)
        return names, np.asarray(labels, np.int32)
    unique = sorted(set(raw))
    numeric = _numeric_labels(unique, raw, path, lines, column)
    if numeric is not None:
        return numeric
    index = {n: i for i, n in enumerate(unique)}
    return unique, np.asarray([index[v] for v in raw], np.int32)
