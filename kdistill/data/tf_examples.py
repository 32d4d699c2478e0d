"""tf.train.Example files as a run's examples: feature names, parsing, readers.

The TFX Trainer module (`kdistill.tfx.run_fn`) and the Beam teacher pipeline
(`kdistill.beam`) read ExampleGen output with these: `FeatureNames` says which features hold the
text (or the pre-tokenised ids) and the label, `Features` parses serialized examples into model
inputs and labels, `ExampleReader` reads a split's TFRecord files (directly, or through TFX's
`DataAccessor`) as the unbatched `(example, label)` elements `kdistill.runner.run` takes.
"""

import dataclasses
import os

import tensorflow as tf

TOKEN_INPUTS = ("token_ids", "padding_mask", "segment_ids")
INPUT_FORMATS = ("auto", "text", "tokens")

COMPRESSIONS = ("auto", "GZIP", "ZLIB", "")


@dataclasses.dataclass
class FeatureNames:
    """Which `tf.train.Example` features hold the inputs and the label.

    Shared by `run_fn` and `kdistill.beam.cache_teacher_outputs_beam`.

    Args:
        text_feature: str. Feature holding the text (bytes).
        text_pair_feature: str or None. Feature holding the second text of a pair.
        label_feature: str or None. Feature holding the class (an int id, or a string listed in
            `label_names`); None for unlabelled examples (`kdistill.beam` only: the runner
            trains on labelled examples).
        label_names: list of str or None. Names of the classes in index order: string labels
            are mapped to their index (an unlisted string becomes -1, an error).
        token_features: dict or None. Model input -> feature name for pre-tokenised data, e.g.
            `{"token_ids": "input_ids", "padding_mask": "attention_mask",
            "segment_ids": "token_type_ids"}`. A missing `padding_mask` becomes
            `token_ids != 0`; a missing `segment_ids` becomes zeros.
        input_format: str. `"text"` (raw text + label), `"tokens"` (pre-tokenised int
            features) or `"auto"` (decided from the first example).

    Example:
    >>> FeatureNames(text_feature="sentence").validate().text_feature
    'sentence'
    >>> FeatureNames(token_features={"input_ids": "ids"}).validate()
    Traceback (most recent call last):
    ...
    ValueError: custom_config['token_features'] maps model inputs ['token_ids', 'padding_mask', 'segment_ids'] to feature names and needs 'token_ids'; got keys ['input_ids'].
    """  # noqa: E501

    text_feature: str = "text"
    text_pair_feature: str | None = None
    label_feature: str | None = "label"
    label_names: list | None = None
    token_features: dict | None = None
    input_format: str = "auto"

    def validate(self):
        """Checks the values; returns self. Raises ValueError naming the bad key."""
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"custom_config['input_format'] = {self.input_format!r}; valid "
                             f"values: {list(INPUT_FORMATS)}.")
        for name, optional in (("text_feature", False), ("text_pair_feature", True),
                               ("label_feature", True)):
            value = getattr(self, name)
            if not (value is None and optional) and not (isinstance(value, str) and value):
                raise ValueError(f"custom_config[{name!r}] must be a feature name (a non-empty "
                                 f"string){' or None' if optional else ''}, got {value!r}.")
        if self.token_features is not None:
            if not isinstance(self.token_features, dict):
                raise ValueError("custom_config['token_features'] must be a dict of model input "
                                 f"-> feature name, got {self.token_features!r}.")
            bad = sorted(set(self.token_features) - set(TOKEN_INPUTS))
            if bad or "token_ids" not in self.token_features:
                raise ValueError(
                    f"custom_config['token_features'] maps model inputs {list(TOKEN_INPUTS)} to "
                    f"feature names and needs 'token_ids'; got keys {sorted(self.token_features)}.")
            names = list(self.token_features.values())
            if not all(isinstance(n, str) and n for n in names):
                raise ValueError("custom_config['token_features'] values must be feature names, "
                                 f"got {names}.")
        if self.label_names is not None:
            if not isinstance(self.label_names, (list, tuple)) or not self.label_names:
                raise ValueError("custom_config['label_names'] must be a non-empty list of class "
                                 f"names, got {self.label_names!r}.")
            if len(set(map(str, self.label_names))) != len(self.label_names):
                raise ValueError(
                    f"custom_config['label_names'] has duplicates: {list(self.label_names)}.")
            self.label_names = [str(n) for n in self.label_names]
        return self


def expand_patterns(patterns, split):
    """The files matching a split's patterns (sorted, deduplicated), with clear errors.

    Args:
        patterns: str or list of str. File patterns, or split directories.
        split: str. `train` / `eval`, named in errors (as `fn_args.<split>_files`).

    Returns:
        list of str.

    Raises:
        ValueError: no patterns. FileNotFoundError: a pattern that matches nothing.

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name in ("a.gz", "b.gz"):
    ...     open(os.path.join(d, name), "w").close()
    >>> [os.path.basename(f) for f in expand_patterns(d, "train")]
    ['a.gz', 'b.gz']
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    if not patterns:
        raise ValueError(f"fn_args.{split}_files is empty: the Trainer got no {split} split. Check "
                         "ExampleGen's output splits and Trainer's train_args/eval_args.")
    files = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        if tf.io.gfile.isdir(pattern):  # a split directory given without the trailing /*
            pattern = os.path.join(pattern, "*")
        matched = sorted(tf.io.gfile.glob(pattern))
        if not matched:
            raise FileNotFoundError(f"No {split} files match {pattern!r} (fn_args.{split}_files).")
        files += [f for f in matched if not tf.io.gfile.isdir(f)]
    return sorted(set(files))


def compression_of(files, setting):
    """The TFRecord compression of `files`: `setting`, or for `"auto"` GZIP when they end in `.gz`.

    Example:
    >>> compression_of(["part-0.gz", "part-1.gz"], "auto"), compression_of(["x"], "auto")
    ('GZIP', '')
    """
    if setting != "auto":
        return setting
    gz = [f.endswith(".gz") for f in files]
    if any(gz) and not all(gz):
        raise ValueError("The input files mix gzipped (*.gz) and uncompressed files; set "
                         "custom_config['compression'] explicitly or separate them.")
    return "GZIP" if all(gz) else ""


def tfrecords(files, compression):
    """A `tf.data.TFRecordDataset` over `files` (up to 4 read in parallel).

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.tfrecord")
    >>> with tf.io.TFRecordWriter(path) as writer:
    ...     writer.write(b"record")
    >>> [r.numpy() for r in tfrecords([path], "")]
    [b'record']
    """
    return tf.data.TFRecordDataset(files, compression_type=compression,
                                   num_parallel_reads=min(len(files), 4))


def first_example(files, compression, split="train"):
    """The first `tf.train.Example` of a split's TFRecord files.

    Args:
        files: list of str. TFRecord files.
        compression: str. `"GZIP"`, `"ZLIB"` or `""`.
        split: str. Named in errors.

    Returns:
        A `tf.train.Example`.

    Raises:
        ValueError: no records, or records that are not tf.Examples.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.tfrecord")
    >>> example = tf.train.Example(features=tf.train.Features(feature={"label": tf.train.Feature(
    ...     int64_list=tf.train.Int64List(value=[1]))}))
    >>> with tf.io.TFRecordWriter(path) as writer:
    ...     writer.write(example.SerializeToString())
    >>> first_example([path], "").features.feature["label"].int64_list.value[0]
    1
    """
    for record in tfrecords(files, compression).take(1):
        example = tf.train.Example()
        try:
            example.ParseFromString(record.numpy())
        except Exception as error:  # noqa: BLE001 - protobuf DecodeError and friends
            raise ValueError(f"The {split} files ({files[0]}, ...) do not hold tf.train.Example "
                             f"records: {error}. Set custom_config['compression'] if they are "
                             "compressed differently.") from error
        return example
    raise ValueError(f"The {split} split is empty: {len(files)} file(s) ({files[0]}, ...) hold no "
                     "examples.")


def _kind(feature):
    return feature.WhichOneof("kind")


def detect_format(names, example):
    """`"text"` or `"tokens"`: `names.input_format`, or what the example holds.

    Example:
    >>> example = tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
    ...     bytes_list=tf.train.BytesList(value=[b"a film"]))}))
    >>> detect_format(FeatureNames(), example)
    'text'
    """
    features = example.features.feature
    token_ids = (names.token_features or {}).get("token_ids", "token_ids")
    if names.input_format != "auto":
        return names.input_format
    if names.text_feature in features:
        return "text"
    if token_ids in features:
        return "tokens"
    available = {name: _kind(f) for name, f in features.items()}
    raise ValueError(
        f"The examples have neither the text feature {names.text_feature!r} nor the token "
        f"feature {token_ids!r}; they have {available}. Set custom_config['text_feature'] or "
        "['token_features'].")


class Features:
    """What the examples hold, and how parsed features become model inputs and labels.

    Built from the first example: it checks that the named features exist with the right
    kinds, decides raw text or pre-tokenised input, and knows the parsing spec.

    Args:
        names: `FeatureNames`.
        example: `tf.train.Example`. The first example of the data.
        preprocessor: keras-hub text classifier preprocessor or None. Tokenises raw text for
            `inputs` and `parse` (`examples` reads text without it; `check_tokenizer` says
            whether one is needed).
        sequence_length: int or None. Pre-tokenised data: the expected tokens per example (an
            error if the features hold another count); None takes the features' own.

    Attributes:
        format: str. `"text"` or `"tokens"`.
        sequence_length: int or None. Tokens per example (the preprocessor's for text; None
            for text without one).
        spec: dict. `tf.io.parse_example` spec of the inputs and the label.

    Example:
    >>> example = tf.train.Example(features=tf.train.Features(feature={
    ...     "ids": tf.train.Feature(int64_list=tf.train.Int64List(value=[2, 7, 3, 0])),
    ...     "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}))
    >>> features = Features(FeatureNames(token_features={"token_ids": "ids"}), example)
    >>> features.format, features.sequence_length
    ('tokens', 4)
    >>> x, y = features.parse(tf.constant([example.SerializeToString()]))
    >>> x["padding_mask"].numpy().tolist(), y.numpy().tolist()
    ([[1, 1, 1, 0]], [1])
    """

    def __init__(self, names, example, preprocessor=None, sequence_length=None):
        self.names = names
        self.preprocessor = preprocessor
        features = example.features.feature
        available = {name: _kind(f) for name, f in features.items()}
        token_map = dict(names.token_features or {"token_ids": "token_ids"})
        self.format = fmt = detect_format(names, example)
        wanted = [names.text_feature] if fmt == "text" else [token_map["token_ids"]]
        if fmt == "text" and names.text_pair_feature:
            wanted.append(names.text_pair_feature)
        if names.label_feature:
            wanted.append(names.label_feature)
        missing = [n for n in wanted if n not in features]
        if missing:
            raise ValueError(f"The examples lack the feature(s) {missing}; they have {available}. "
                             "Set the feature names in custom_config.")

        self.spec = {}
        if fmt == "text":
            for name in filter(None, [names.text_feature, names.text_pair_feature]):
                if available[name] != "bytes_list":
                    raise ValueError(f"Text feature {name!r} holds {available[name]}, not "
                                     "bytes_list (strings).")
                self.spec[name] = tf.io.FixedLenFeature([], tf.string)
            self.sequence_length = None if preprocessor is None else int(
                preprocessor.sequence_length)
        else:
            self.token_map = {k: v for k, v in token_map.items() if v in features}
            for key in ("padding_mask", "segment_ids"):  # default names when not mapped
                if key not in token_map and key in features:
                    self.token_map[key] = key
            ids = features[self.token_map["token_ids"]]
            length = len(ids.int64_list.value)
            if _kind(ids) != "int64_list" or length == 0:
                raise ValueError(f"Token feature {self.token_map['token_ids']!r} must be a "
                                 f"non-empty int64_list, got {_kind(ids)} of length {length}.")
            if sequence_length not in (None, length):
                raise ValueError(f"The token features hold {length} tokens per example but the "
                                 f"sequence length is {sequence_length}.")
            self.sequence_length = length
            for name in self.token_map.values():
                self.spec[name] = tf.io.FixedLenFeature([length], tf.int64)

        self.label_table = None
        label = names.label_feature
        if label:
            kind = available[label]
            if kind == "int64_list":
                self.spec[label] = tf.io.FixedLenFeature([], tf.int64)
            elif kind == "bytes_list" and names.label_names:
                self.spec[label] = tf.io.FixedLenFeature([], tf.string)
                self.label_table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant([str(n) for n in names.label_names]),
                        tf.range(len(names.label_names), dtype=tf.int64)), default_value=-1)
            else:
                hint = (" Pass custom_config['label_names'] to map the strings to ids."
                        if kind == "bytes_list" else "")
                raise ValueError(f"Label feature {label!r} holds {kind}; expected int64_list "
                                 f"class ids.{hint}")

    def check_tokenizer(self):
        """Raises ValueError for raw text without a preprocessor (nothing can tokenise it)."""
        if self.format == "text" and self.preprocessor is None:
            raise ValueError(
                "The examples hold raw text but there is no tokenizer: set data.vocabulary in "
                "the config (the teacher's WordPiece vocab.txt, or minilm), use a teacher saved "
                "with its preprocessor or teacher.model: minilm, or write pre-tokenised "
                "'token_ids' features.")
        return self

    @property
    def input_spec(self):
        """The parsing spec of the model inputs only (what a serving request carries)."""
        return {k: v for k, v in self.spec.items() if k != self.names.label_feature}

    def examples(self, features):
        """Parsed (batched) features -> the runner's examples, untokenised.

        Raw text: `[batch]` strings (or a `(text, pair)` tuple); tokens: `{token_ids int32,
        padding_mask bool, segment_ids int32}` `[batch, sequence_length]`.
        """
        names = self.names
        if self.format == "text":
            text = _as_strings(features[names.text_feature])
            if names.text_pair_feature:
                return text, _as_strings(features[names.text_pair_feature])
            return text
        ids = _as_tokens(features[self.token_map["token_ids"]], self.sequence_length)
        x = {"token_ids": ids}
        for key, default in (("padding_mask", tf.not_equal(ids, 0)),
                             ("segment_ids", tf.zeros_like(ids))):
            name = self.token_map.get(key)
            x[key] = default if name is None else _as_tokens(features[name], self.sequence_length)
        return {"token_ids": tf.cast(x["token_ids"], tf.int32),
                "padding_mask": tf.cast(x["padding_mask"], tf.bool),
                "segment_ids": tf.cast(x["segment_ids"], tf.int32)}

    def inputs(self, features):
        """Parsed (batched) features -> `{token_ids, padding_mask, segment_ids}` int32."""
        x = self.examples(features)
        if self.format == "text":
            x = self.check_tokenizer().preprocessor(x)
        return {k: tf.cast(x[k], tf.int32) for k in TOKEN_INPUTS}

    def labels(self, features_or_label):
        """Parsed features (or the label tensor itself) -> `[batch]` int32 class ids."""
        label = features_or_label
        if isinstance(label, dict):
            label = label[self.names.label_feature]
        label = tf.reshape(_densify(label), [-1])
        if self.label_table is not None:
            label = self.label_table.lookup(label)
        return tf.cast(label, tf.int32)

    def parse(self, serialized, with_labels=True):
        """Serialized tf.Examples `[batch]` -> model inputs (and labels, when labelled)."""
        spec = self.spec if with_labels else self.input_spec
        features = tf.io.parse_example(serialized, spec)
        x = self.inputs(features)
        if with_labels and self.names.label_feature:
            return x, self.labels(features)
        return x


def _densify(value, default=None):
    if isinstance(value, tf.SparseTensor):
        return tf.sparse.to_dense(value, default_value=default)
    if isinstance(value, tf.RaggedTensor):
        return value.to_tensor(default_value=default)
    return value


def _as_strings(value):
    """`[batch]` strings from a dense `[batch]`/`[batch, 1]` or a sparse/ragged feature."""
    value = _densify(value, default=b"")
    if value.shape.rank == 2:
        value = value[:, 0]
    return tf.reshape(value, [-1])


def _as_tokens(value, length):
    """`[batch, length]` ints; padded with zeros or truncated from sparse/ragged features."""
    value = _densify(value, default=0)
    value = value[:, :length]
    return tf.pad(value, [[0, 0], [0, length - tf.shape(value)[1]]])


def _dataset_options(**kwargs):
    """`tfx_bsl.public.tfxio.TensorFlowDatasetOptions` (the same fields without tfx_bsl)."""
    try:
        from tfx_bsl.public.tfxio import TensorFlowDatasetOptions
    except ImportError:
        TensorFlowDatasetOptions = _TensorFlowDatasetOptions
    return TensorFlowDatasetOptions(**kwargs)


@dataclasses.dataclass(frozen=True)
class _TensorFlowDatasetOptions:
    """The fields of tfx_bsl's `TensorFlowDatasetOptions` that kdistill sets."""

    batch_size: int
    drop_final_batch: bool = False
    num_epochs: int | None = None
    shuffle: bool = True
    shuffle_buffer_size: int = 10000
    shuffle_seed: int | None = None
    label_key: str | None = None


def _load_schema(path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        files = [f for f in tf.io.gfile.listdir(path) if not f.endswith("/")]
        if len(files) != 1:
            raise ValueError(f"schema_path {path} is a directory with {files}; expected one "
                             "schema file.")
        path = os.path.join(path, files[0])
    schema = schema_pb2.Schema()
    with tf.io.gfile.GFile(path, "rb") as f:
        content = f.read()
    try:
        text_format.Parse(content.decode("utf-8"), schema)
    except (UnicodeDecodeError, text_format.ParseError):
        schema.ParseFromString(content)
    return schema


class ExampleReader:
    """Reads a split's tf.Examples as the runner's unbatched `(example, label)` elements.

    Args:
        features: `Features`.
        compression: str. Of the TFRecord files (`"GZIP"`, `"ZLIB"`, `""`).
        data_accessor: TFX `DataAccessor` or None. When set (with `schema`), the files are read
            through `data_accessor.tf_dataset_factory` (TFXIO) instead of `TFRecordDataset`.
        schema: `tensorflow_metadata` `Schema` or None.
        batch_size: int. Records parsed per batch while reading.

    Attributes:
        name: str. `"data_accessor"` or `"tfrecord"`.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.tfrecord")
    >>> def example(ids, label):
    ...     return tf.train.Example(features=tf.train.Features(feature={
    ...         "token_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=ids)),
    ...         "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
    >>> with tf.io.TFRecordWriter(path) as writer:
    ...     for ids, label in (([2, 5, 3], 0), ([2, 6, 3], 1)):
    ...         writer.write(example(ids, label).SerializeToString())
    >>> features = Features(FeatureNames(), first_example([path], ""))
    >>> x, y = next(iter(ExampleReader(features, "").dataset([path])))
    >>> x["token_ids"].numpy().tolist(), int(y)
    ([2, 5, 3], 0)
    """

    def __init__(self, features, compression, data_accessor=None, schema=None, batch_size=512):
        self.features, self.compression = features, compression
        self.accessor = data_accessor if schema is not None else None
        self.schema = schema
        self.batch_size = batch_size
        self.name = "data_accessor" if self.accessor is not None else "tfrecord"

    @classmethod
    def for_fn_args(cls, fn_args, reader, features, compression):
        """The reader `custom_config['reader']` picks for these `fn_args`.

        Args:
            fn_args: the Trainer's `FnArgs` (`data_accessor`, `schema_path` are read).
            reader: str. `"auto"`, `"tfrecord"` or `"data_accessor"`.
            features: `Features`.
            compression: str.

        Returns:
            An `ExampleReader`.
        """
        accessor = getattr(fn_args, "data_accessor", None)
        schema_path = getattr(fn_args, "schema_path", None) or getattr(fn_args, "schema_file",
                                                                       None)
        use_accessor = reader == "data_accessor" or (
            reader == "auto" and accessor is not None and schema_path is not None)
        if use_accessor and (accessor is None or schema_path is None):
            raise ValueError(
                "custom_config['reader'] = 'data_accessor' needs fn_args.data_accessor and "
                "fn_args.schema_path (wire SchemaGen's schema into the Trainer); or use "
                "reader='tfrecord'.")
        if not use_accessor:
            return cls(features, compression)
        return cls(features, compression, accessor, _load_schema(schema_path))

    def _batches(self, files, label_only=False):
        """Batches of parsed features (a dict), or `(features, label)` from TFXIO."""
        features, label = self.features, self.features.names.label_feature
        if self.accessor is not None:
            options = _dataset_options(batch_size=self.batch_size, num_epochs=1, shuffle=False,
                                       label_key=label)
            return self.accessor.tf_dataset_factory(list(files), options, self.schema)
        spec = {label: features.spec[label]} if label_only else features.spec
        return tfrecords(files, self.compression).batch(self.batch_size).map(
            lambda s: tf.io.parse_example(s, spec))

    def labels(self, files):
        """Batches of labels alone (nothing tokenised), for the label checks."""
        features = self.features
        if self.accessor is not None:
            return self._batches(files).map(lambda f, y: features.labels(y))
        return self._batches(files, label_only=True).map(features.labels)

    def dataset(self, files):
        """Unbatched `(text, label)`, `((text, pair), label)` or `(token dict, label)` elements
        (the input alone without a label feature), in file order."""
        features = self.features
        labelled = bool(features.names.label_feature)
        if self.accessor is not None:
            def element(f, y):
                return (features.examples(f), features.labels(y)) if labelled else (
                    features.examples(f))
            dataset = self._batches(files).map(element)
        else:
            def element(f):
                return (features.examples(f), features.labels(f)) if labelled else (
                    features.examples(f))
            dataset = self._batches(files).map(element)
        return dataset.unbatch()
