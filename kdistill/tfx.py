"""Distillation as a TFX Trainer step: a `run_fn` that follows the Trainer module-file contract.

TFX's Trainer imports the user's module file and calls `run_fn(fn_args)` with a
`tfx.components.FnArgs`. This module implements that function **without importing tfx**, so it
runs in any TFX release that keeps the contract (and in tests, with any object that has the same
attributes):

- `fn_args.train_files` / `fn_args.eval_files`: lists of file patterns, e.g.
  `<examples>/Split-train/*`, of ExampleGen output: gzipped TFRecord files of `tf.train.Example`.
- `fn_args.custom_config`: the `custom_config` dict given to `Trainer(...)`; see `TrainerConfig`
  for the keys (the teacher, the student preset, the objectives, feature names...).
- `fn_args.train_steps` / `fn_args.eval_steps`: `TrainArgs(num_steps=...)` /
  `EvalArgs(num_steps=...)`, or None (one pass over the split per epoch).
- `fn_args.serving_model_dir`: where Evaluator and Pusher look for the SavedModel.
- `fn_args.model_run_dir`: TensorBoard logs and other training outputs.
- `fn_args.data_accessor` and `fn_args.schema_path`: used, when both are set, to read the
  examples with TFXIO (`data_accessor.tf_dataset_factory`); otherwise the TFRecord files are
  read directly. `fn_args.transform_output` (a Transform graph) is refused with a clear error:
  tokenise inside kdistill (raw text) or write pre-tokenised features instead.

The examples hold either raw text and a label (tokenised with the teacher's WordPiece
vocabulary) or pre-tokenised int features (`token_ids`, optional `padding_mask` and
`segment_ids`). `run_fn` loads the teacher, builds a student, distills it with
`kdistill.Distiller`, writes the **student only** to `serving_model_dir` as a SavedModel with two
signatures, and writes `kdistill.export_student`'s report:

- `serving_default`: serialized `tf.train.Example` strings (`examples`, shape `[batch]`) ->
  `logits`, `probabilities`; what TFX Evaluator (TFMA) and most TFX serving setups call.
- `serving_tokens`: `token_ids`, `padding_mask`, `segment_ids` int32 `[batch, sequence_length]`
  -> `logits`, `probabilities` (the signature `export_student` writes as `serving_default`).

With raw text, `serving_default` tokenises inside the graph with TensorFlow Text ops: whoever
loads it must `import tensorflow_text` first (or use a TF Serving build with those ops).
"""

import dataclasses
import json
import logging
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

EXAMPLES_SIGNATURE = "serving_default"
TOKENS_SIGNATURE = "serving_tokens"
TOKEN_INPUTS = ("token_ids", "padding_mask", "segment_ids")
PACKAGED_TEACHERS = ("minilm", "all-minilm-l6-v2")
READERS = ("auto", "tfrecord", "data_accessor")
INPUT_FORMATS = ("auto", "text", "tokens")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
REPORT_NAME = "report.json"
# custom_config keys of tfx.extensions.google_cloud_ai_platform (ai_platform_training_args...).
TFX_EXTENSION_PREFIX = "ai_platform_"


# ----------------------------------------------------------------------------- configuration


@dataclasses.dataclass
class TrainerConfig:
    """The `custom_config` keys `run_fn` reads (unknown keys are an error, to catch typos).

    Keys starting with `ai_platform_` belong to TFX's Vertex AI Trainer extension
    (`TRAINING_ARGS_KEY`, `ENABLE_VERTEX_KEY`...) and are ignored.

    Args:
        teacher: str. A `.keras` file, a SavedModel directory (`serving_default` signature, logits
            only: logits objectives), or `"minilm"`: the packaged all-MiniLM-L6-v2 encoder with a
            new head, fine-tuned on the train split first (see `teacher_fine_tune_epochs`).
        num_classes: int or None. Number of classes; required for `"minilm"`, otherwise checked
            against the teacher's output width.
        student: str. A `kdistill.students.PRESETS` name (sized to the teacher) or a `.keras`
            file holding an initialised student.
        student_args: dict. Keyword arguments of `kdistill.students.student_for` /
            `build_student` (e.g. `{"embedding_init": "svd", "num_layers": 3}`).
        objectives: str. A `kdistill.objectives.PRESETS` name (`"logits_kd"`, `"tinybert"`...).
        objective_args: dict. Keyword arguments of that preset (e.g. `{"temperature": 4.0}`).
        input_format: str. `"text"` (raw text + label), `"tokens"` (pre-tokenised int
            features) or `"auto"` (decided from the first train example).
        text_feature: str. Feature holding the text (bytes).
        text_pair_feature: str or None. Feature holding the second text of a pair.
        label_feature: str or None. Feature holding the integer class id; None for unlabelled
            data (pure KD; objectives must not need labels).
        label_names: list of str or None. Names of the classes in order, when the label feature
            holds strings; they are mapped to their index.
        token_features: dict or None. Model input -> feature name for pre-tokenised data, e.g.
            `{"token_ids": "input_ids", "padding_mask": "attention_mask",
            "segment_ids": "token_type_ids"}`. A missing `padding_mask` becomes
            `token_ids != 0`; a missing `segment_ids` becomes zeros.
        vocabulary: str or None. The teacher's WordPiece `vocab.txt`, to tokenise raw text
            (not needed for `"minilm"` or a teacher `.keras` file with a preprocessor attached).
        lowercase: bool. Lower-case text before WordPiece (uncased vocabularies).
        sequence_length: int or None. Tokens per example (default 128 for text; the features'
            length for pre-tokenised data).
        batch_size: int. Global batch size.
        epochs: int. Passes over the train split (when `fn_args.train_steps` is None).
        learning_rate: float. AdamW learning rate of the student.
        weight_decay: float. AdamW weight decay.
        shuffle_buffer: int. Examples in the train shuffle buffer (0: no shuffling).
        seed: int. Seed of the shuffle, the model initialisation and dropout.
        teacher_fine_tune_epochs: int or None. Fine-tune the teacher on the train split first
            (cached by data and config; default 2 for `"minilm"`, else 0).
        teacher_learning_rate: float. AdamW learning rate of the teacher fine-tuning.
        cache_dir: str or None. Cache of the fine-tuned teacher (default
            `<model_run_dir>/teacher_cache`).
        reader: str. `"tfrecord"` reads the files with `tf.data.TFRecordDataset`,
            `"data_accessor"` uses `fn_args.data_accessor.tf_dataset_factory` with the schema at
            `fn_args.schema_path`, `"auto"` picks the latter when both are set.
        compression: str. `"auto"` (GZIP for `*.gz` files, as ExampleGen writes), `"GZIP"`,
            `"ZLIB"` or `""` (none).
        export_formats: list of str. Formats `kdistill.export_student` writes (and checks) under
            `<model_run_dir>/export`, next to `report.json`; `[]` skips it.
        export_args: dict. More keyword arguments of `export_student` (e.g.
            `{"latency_runs": 20}`).
        strategy: str. `"auto"` (MultiWorkerMirroredStrategy when `TF_CONFIG` names several
            tasks, MirroredStrategy with several GPUs, else the default strategy), `"default"`,
            `"mirrored"` or `"multi_worker"`.
        overwrite: bool. Replace an existing `serving_model_dir` / export directory.

    Example:
    >>> config = TrainerConfig.from_custom_config({"teacher": "teacher.keras",
    ...                                            "student": "bert_tiny", "epochs": 2})
    >>> config.objectives, config.epochs
    ('logits_kd', 2)
    >>> TrainerConfig.from_custom_config({"teacher": "t.keras", "epoch": 2})
    Traceback (most recent call last):
    ...
    ValueError: Unknown custom_config key(s) ['epoch']; valid keys: ...
    """

    teacher: str
    num_classes: int | None = None
    student: str = "bert_tiny"
    student_args: dict = dataclasses.field(default_factory=dict)
    objectives: str = "logits_kd"
    objective_args: dict = dataclasses.field(default_factory=dict)
    input_format: str = "auto"
    text_feature: str = "text"
    text_pair_feature: str | None = None
    label_feature: str | None = "label"
    label_names: list | None = None
    token_features: dict | None = None
    vocabulary: str | None = None
    lowercase: bool = True
    sequence_length: int | None = None
    batch_size: int = 32
    epochs: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    shuffle_buffer: int = 10_000
    seed: int = 0
    teacher_fine_tune_epochs: int | None = None
    teacher_learning_rate: float = 5e-5
    cache_dir: str | None = None
    reader: str = "auto"
    compression: str = "auto"
    export_formats: list = dataclasses.field(default_factory=lambda: ["saved_model"])
    export_args: dict = dataclasses.field(default_factory=dict)
    strategy: str = "auto"
    overwrite: bool = False

    @classmethod
    def from_custom_config(cls, custom_config):
        """Validates a Trainer `custom_config` dict and fills in the defaults.

        Args:
            custom_config: dict. The `custom_config` given to `Trainer(...)`.

        Returns:
            A `TrainerConfig`.
        """
        if not isinstance(custom_config, dict):
            raise ValueError(
                "kdistill.tfx.run_fn needs fn_args.custom_config to be a dict with at least "
                f"'teacher' (got {type(custom_config).__name__}). Pass "
                "Trainer(..., custom_config={'teacher': 'gs://.../teacher.keras', ...}).")
        # Keys of TFX's Vertex AI / AI Platform Trainer extension reach run_fn too; skip them.
        custom_config = {k: v for k, v in custom_config.items()
                         if not str(k).startswith(TFX_EXTENSION_PREFIX)}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(custom_config) - fields)
        if unknown:
            raise ValueError(f"Unknown custom_config key(s) {unknown}; valid keys: "
                             f"{sorted(fields)}.")
        if not custom_config.get("teacher"):
            raise ValueError(
                "custom_config has no 'teacher': give a .keras file, a SavedModel directory, or "
                "'minilm' (the packaged all-MiniLM-L6-v2, fine-tuned on the train split).")
        config = cls(**custom_config)
        config._validate()
        return config

    def _validate(self):
        choices = (("input_format", INPUT_FORMATS), ("reader", READERS),
                   ("strategy", STRATEGIES), ("compression", ("auto", "GZIP", "ZLIB", "")))
        for name, valid in choices:
            if getattr(self, name) not in valid:
                raise ValueError(f"custom_config[{name!r}] = {getattr(self, name)!r}; valid "
                                 f"values: {list(valid)}.")
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"custom_config[{name!r}] must be a positive int, got {value!r}.")
        for name in ("num_classes", "sequence_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"custom_config[{name!r}] must be a positive int or None, got "
                                 f"{value!r}.")
        for name in ("student_args", "objective_args", "export_args"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"custom_config[{name!r}] must be a dict.")
        if self.token_features is not None:
            bad = sorted(set(self.token_features) - set(TOKEN_INPUTS))
            if bad or "token_ids" not in self.token_features:
                raise ValueError(
                    f"custom_config['token_features'] maps model inputs {list(TOKEN_INPUTS)} to "
                    f"feature names and needs 'token_ids'; got keys {sorted(self.token_features)}.")
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"custom_config['label_names'] has duplicates: {self.label_names}.")


# ----------------------------------------------------------------------------- fn_args and files


def _fn_arg(fn_args, name, required=True):
    value = getattr(fn_args, name, None)
    if required and value is None:
        raise ValueError(
            f"fn_args.{name} is missing. kdistill.tfx.run_fn expects the TFX Trainer's FnArgs "
            "(train_files, eval_files, serving_model_dir, model_run_dir, custom_config; "
            "train_steps, eval_steps, data_accessor, schema_path optional).")
    return value


def _expand(patterns, split):
    """The files matching a split's patterns (sorted, deduplicated), with clear errors."""
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


def _compression(files, setting):
    if setting != "auto":
        return setting
    gz = [f.endswith(".gz") for f in files]
    if any(gz) and not all(gz):
        raise ValueError("The input files mix gzipped (*.gz) and uncompressed files; set "
                         "custom_config['compression'] explicitly or separate them.")
    return "GZIP" if all(gz) else ""


def _records(files, compression):
    return tf.data.TFRecordDataset(files, compression_type=compression,
                                   num_parallel_reads=min(len(files), 4))


def _first_example(files, compression, split):
    for record in _records(files, compression).take(1):
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


# ----------------------------------------------------------------------------- features


class _Features:
    """What the examples hold and how to turn parsed features into model inputs and labels."""

    def __init__(self, config, example, preprocessor):
        self.config = config
        self.preprocessor = preprocessor
        features = example.features.feature
        available = {name: _kind(f) for name, f in features.items()}
        token_map = dict(config.token_features or {"token_ids": "token_ids"})
        fmt = config.input_format
        if fmt == "auto":
            if config.text_feature in features:
                fmt = "text"
            elif token_map["token_ids"] in features:
                fmt = "tokens"
            else:
                raise ValueError(
                    f"The examples have neither the text feature {config.text_feature!r} nor the "
                    f"token feature {token_map['token_ids']!r}; they have {available}. Set "
                    "custom_config['text_feature'] or ['token_features'].")
        self.format = fmt
        wanted = [config.text_feature] if fmt == "text" else [token_map["token_ids"]]
        if fmt == "text" and config.text_pair_feature:
            wanted.append(config.text_pair_feature)
        if config.label_feature:
            wanted.append(config.label_feature)
        missing = [n for n in wanted if n not in features]
        if missing:
            raise ValueError(f"The examples lack the feature(s) {missing}; they have {available}. "
                             "Set the feature names in custom_config.")

        self.spec = {}
        if fmt == "text":
            for name in filter(None, [config.text_feature, config.text_pair_feature]):
                if available[name] != "bytes_list":
                    raise ValueError(f"Text feature {name!r} holds {available[name]}, not "
                                     "bytes_list (strings).")
                self.spec[name] = tf.io.FixedLenFeature([], tf.string)
            if preprocessor is None:
                raise ValueError(
                    "The examples hold raw text but there is no tokenizer: set "
                    "custom_config['vocabulary'] to the teacher's WordPiece vocab.txt, use "
                    "teacher='minilm', or write pre-tokenised 'token_ids' features.")
            self.sequence_length = int(preprocessor.sequence_length)
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
            if config.sequence_length not in (None, length):
                raise ValueError(f"The token features hold {length} tokens per example but "
                                 f"custom_config['sequence_length'] is {config.sequence_length}.")
            self.sequence_length = length
            for name in self.token_map.values():
                self.spec[name] = tf.io.FixedLenFeature([length], tf.int64)

        self.label_table = None
        if config.label_feature:
            kind = available[config.label_feature]
            if kind == "int64_list":
                self.spec[config.label_feature] = tf.io.FixedLenFeature([], tf.int64)
            elif kind == "bytes_list" and config.label_names:
                self.spec[config.label_feature] = tf.io.FixedLenFeature([], tf.string)
                self.label_table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant([str(n) for n in config.label_names]),
                        tf.range(len(config.label_names), dtype=tf.int64)), default_value=-1)
            else:
                hint = (" Pass custom_config['label_names'] to map the strings to ids."
                        if kind == "bytes_list" else "")
                raise ValueError(f"Label feature {config.label_feature!r} holds {kind}; expected "
                                 f"int64_list class ids.{hint}")

    @property
    def input_spec(self):
        """The parsing spec of the model inputs only (what a serving request carries)."""
        return {k: v for k, v in self.spec.items() if k != self.config.label_feature}

    def inputs(self, features):
        """Parsed (batched) features -> `{token_ids, padding_mask, segment_ids}` int32."""
        if self.format == "text":
            text = _as_strings(features[self.config.text_feature])
            if self.config.text_pair_feature:
                text = (text, _as_strings(features[self.config.text_pair_feature]))
            x = self.preprocessor(text)
        else:
            ids = _as_tokens(features[self.token_map["token_ids"]], self.sequence_length)
            x = {"token_ids": ids}
            for key, default in (("padding_mask", tf.not_equal(ids, 0)),
                                 ("segment_ids", tf.zeros_like(ids))):
                name = self.token_map.get(key)
                x[key] = default if name is None else _as_tokens(features[name],
                                                                 self.sequence_length)
        return {k: tf.cast(x[k], tf.int32) for k in TOKEN_INPUTS}

    def labels(self, features_or_label):
        label = features_or_label
        if isinstance(label, dict):
            label = label[self.config.label_feature]
        label = tf.reshape(_densify(label), [-1])
        if self.label_table is not None:
            label = self.label_table.lookup(label)
        return tf.cast(label, tf.int32)

    def parse(self, serialized, with_labels=True):
        spec = self.spec if with_labels else self.input_spec
        features = tf.io.parse_example(serialized, spec)
        x = self.inputs(features)
        if with_labels and self.config.label_feature:
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


# ----------------------------------------------------------------------------- datasets


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


class _Reader:
    """Builds batched `(inputs, labels)` datasets of a split, from files or TFXIO."""

    def __init__(self, fn_args, config, features, compression):
        self.config, self.features, self.compression = config, features, compression
        accessor = getattr(fn_args, "data_accessor", None)
        schema_path = getattr(fn_args, "schema_path", None) or getattr(fn_args, "schema_file",
                                                                       None)
        use_accessor = config.reader == "data_accessor" or (
            config.reader == "auto" and accessor is not None and schema_path is not None)
        if use_accessor and (accessor is None or schema_path is None):
            raise ValueError(
                "custom_config['reader'] = 'data_accessor' needs fn_args.data_accessor and "
                "fn_args.schema_path (wire SchemaGen's schema into the Trainer); or use "
                "reader='tfrecord'.")
        self.accessor = accessor if use_accessor else None
        self.schema = _load_schema(schema_path) if use_accessor else None
        self.name = "data_accessor" if use_accessor else "tfrecord"

    def labels(self, files):
        """Batches of labels alone (nothing tokenised), for the label checks."""
        features, label = self.features, self.config.label_feature
        if self.accessor is not None:
            options = _dataset_options(batch_size=1024, num_epochs=1, shuffle=False,
                                       label_key=label)
            dataset = self.accessor.tf_dataset_factory(files, options, self.schema)
            return dataset.map(lambda f, y: features.labels(y))
        spec = {label: features.spec[label]}
        return _records(files, self.compression).batch(1024).map(
            lambda s: features.labels(tf.io.parse_example(s, spec)))

    def dataset(self, files, training, repeat=False):
        config, features = self.config, self.features
        shuffle = training and config.shuffle_buffer > 0
        if self.accessor is not None:
            options = _dataset_options(
                batch_size=config.batch_size, num_epochs=None if repeat else 1,
                shuffle=shuffle, shuffle_buffer_size=max(config.shuffle_buffer, 1),
                shuffle_seed=config.seed, label_key=config.label_feature)
            dataset = self.accessor.tf_dataset_factory(files, options, self.schema)
            if config.label_feature:
                dataset = dataset.map(lambda f, y: (features.inputs(f), features.labels(y)))
            else:
                dataset = dataset.map(features.inputs)
            return dataset.prefetch(2)
        dataset = _records(files, self.compression)
        if shuffle:
            dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed,
                                      reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.batch(config.batch_size).map(features.parse)
        return dataset.prefetch(2)


def _check_labels(dataset, num_classes, split, max_batches):
    """Scans up to `max_batches` batches of labels; ValueError naming any out of range."""
    low, high, count = None, None, 0
    for batch in dataset.take(max_batches):
        y = batch.numpy()
        if y.size:
            low = y.min() if low is None else min(low, y.min())
            high = y.max() if high is None else max(high, y.max())
            count += y.size
    if count == 0:
        raise ValueError(f"The {split} split yielded no labelled examples.")
    if low < 0 or high >= num_classes:
        unmapped = " (-1: a string label not in label_names)" if low == -1 else ""
        raise ValueError(
            f"The {split} split has labels in [{low}, {high}]{unmapped} but the teacher has "
            f"{num_classes} classes (ids 0..{num_classes - 1}). Check custom_config "
            "['label_feature'], ['label_names'] and ['num_classes'], and the teacher.")
    return count


# ----------------------------------------------------------------------------- models


def _preprocessor(config, teacher_preprocessor, sequence_length):
    import keras_hub

    if config.vocabulary:
        if not tf.io.gfile.exists(config.vocabulary):
            raise FileNotFoundError(f"custom_config['vocabulary'] {config.vocabulary!r} does not "
                                    "exist; give the teacher's WordPiece vocab.txt.")
        with tf.io.gfile.GFile(config.vocabulary) as f:
            vocabulary = [line.rstrip("\n") for line in f if line.strip()]
        tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocabulary,
                                                       lowercase=config.lowercase)
        return keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer, sequence_length=sequence_length)
    if teacher_preprocessor is not None:
        teacher_preprocessor.sequence_length = sequence_length
        return teacher_preprocessor
    return None


def _num_outputs(model):
    try:
        return int(model.output.shape[-1])
    except (AttributeError, ValueError, TypeError):
        return None


def _load_teacher(config, sequence_length):
    """`(teacher, preprocessor or None, packaged)`."""
    from kdistill import teachers

    if config.teacher.lower() in PACKAGED_TEACHERS:
        if config.num_classes is None:
            raise ValueError("teacher='minilm' gets a new classification head: set "
                             "custom_config['num_classes'].")
        teacher, preprocessor = teachers.minilm_teacher(num_classes=config.num_classes,
                                                        sequence_length=sequence_length,
                                                        seed=config.seed)
        return teacher, preprocessor, True
    teacher = teachers.load_teacher(config.teacher)
    preprocessor = getattr(teacher, "preprocessor", None)
    if preprocessor is not None:
        teacher.preprocessor = None  # the data pipeline tokenises; the model takes token dicts
    return teacher, preprocessor, False


def _build_student(config, teacher, num_classes, sequence_length, vocabulary_size):
    from kdistill import students

    if config.student.endswith(".keras"):
        if not os.path.exists(config.student):
            raise FileNotFoundError(f"custom_config['student'] {config.student!r} does not exist.")
        import keras_hub  # noqa: F401 - registers keras-hub classes

        return keras.saving.load_model(config.student, compile=False)
    if config.student not in students.PRESETS:
        raise ValueError(f"Unknown student {config.student!r}: give a preset "
                         f"{sorted(students.PRESETS)} or a .keras file.")
    args = dict(config.student_args)
    if hasattr(teacher, "backbone"):
        return students.student_for(teacher, config.student, num_classes=num_classes, **args)
    vocabulary_size = args.pop("vocabulary_size", vocabulary_size)
    if vocabulary_size is None:
        raise ValueError(
            "The teacher is not a keras-hub model, so the student's vocabulary size is unknown: "
            "set custom_config['vocabulary'] (vocab.txt) or student_args={'vocabulary_size': N}.")
    args.setdefault("max_sequence_length", max(sequence_length, 512))
    return students.build_student(config.student, vocabulary_size, num_classes=num_classes,
                                  **args)


def _objectives(config):
    from kdistill import objectives

    if config.objectives not in objectives.PRESETS:
        raise ValueError(f"Unknown objectives preset {config.objectives!r}; valid: "
                         f"{sorted(objectives.PRESETS)}.")
    return objectives.PRESETS[config.objectives](**config.objective_args)


# ----------------------------------------------------------------------------- distribution


def _strategy(name):
    """The strategy for `name`; `"auto"` reads `TF_CONFIG` and the visible GPUs."""
    from kdistill.runner import make_strategy

    if name == "auto":
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        tasks = sum(len(v) for v in tf_config.get("cluster", {}).values())
        if tasks > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    return make_strategy(name)


def _is_chief(strategy):
    from kdistill.runner import _worker_index

    return _worker_index(strategy) == 0


# ----------------------------------------------------------------------------- saving


def _write_serving_model(student, features, path):
    """The student with a tf.Example signature and a token signature; returns the signatures."""
    from kdistill.export import _as_float32_logits

    specs = {name: tf.TensorSpec([None, features.sequence_length], tf.int32, name=name)
             for name in TOKEN_INPUTS}
    root = tf.__internal__.tracking.AutoTrackable()
    # Student weights only, each once (a tracked Keras model would store them twice); not the
    # dropout seed-generator states, which inference does not read.
    root.variables = [getattr(v, "value", v) for v in student.weights]
    if features.preprocessor is not None:
        root.preprocessor = features.preprocessor  # tracks the vocabulary tables

    @tf.autograph.experimental.do_not_convert  # no control flow; avoids AutoGraph warnings
    def outputs(x):
        logits = _as_float32_logits(student(x, training=False))
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        return outputs(features.parse(examples, with_labels=False))

    @tf.function(input_signature=[specs])
    def serve_tokens(x):
        return outputs(x)

    root.serve_examples, root.serve_tokens = serve_examples, serve_tokens
    tf.saved_model.save(root, path, signatures={EXAMPLES_SIGNATURE: serve_examples,
                                                TOKENS_SIGNATURE: serve_tokens})


def _check_serving_model(path, student, features, serialized):
    """Runs both signatures of the written SavedModel against the Keras student."""
    loaded = tf.saved_model.load(path)
    x = features.parse(serialized, with_labels=False)
    reference = keras.ops.convert_to_numpy(student(x, training=False)).astype("float32")
    from_examples = loaded.signatures[EXAMPLES_SIGNATURE](examples=serialized)["logits"].numpy()
    from_tokens = loaded.signatures[TOKENS_SIGNATURE](**x)["logits"].numpy()
    result = {"path": path, "signatures": [EXAMPLES_SIGNATURE, TOKENS_SIGNATURE],
              "num_examples": int(reference.shape[0]),
              "sequence_length": features.sequence_length, "input_format": features.format}
    for name, logits in ((EXAMPLES_SIGNATURE, from_examples), (TOKENS_SIGNATURE, from_tokens)):
        result[name] = {
            "max_abs_diff": float(np.max(np.abs(logits - reference))),
            "top1_agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        }
    return result


def _callbacks(run_dir, chief):
    """A CSV log (`training_log.csv`) and, when `tensorboard` is installed (it is in every TFX
    image), TensorBoard logs, both under `model_run_dir` and from the chief only."""
    if not chief:
        return []
    callbacks = [keras.callbacks.CSVLogger(os.path.join(run_dir, "training_log.csv"))]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        logger.warning("tensorboard is not installed: no TensorBoard logs in %s (pip install "
                       "tensorboard); the per-epoch metrics are in training_log.csv.", run_dir)
    else:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=run_dir))
    return callbacks


def _write_json(path, value):
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=2, default=str))


# ----------------------------------------------------------------------------- run_fn


def run_fn(fn_args):
    """Distills a student in a TFX Trainer and writes it to `fn_args.serving_model_dir`.

    The TFX Trainer calls this with its `FnArgs` when the module file (e.g.
    `examples/tfx_module.py`) defines `run_fn`; nothing here imports tfx. Steps:

    1. Validate `fn_args.custom_config` (`TrainerConfig`), expand `train_files`/`eval_files`
       (an empty split, a pattern matching nothing or a record that is not a `tf.train.Example`
       is a clear error), and detect raw-text or pre-tokenised features from the first example.
    2. Load the teacher (`.keras`, SavedModel, or the packaged MiniLM, fine-tuned first) and
       check its class count against `num_classes` and the labels (the whole eval split and the
       first 102,400 train examples).
    3. Build the student, distill with `kdistill.Distiller` (AdamW) for `fn_args.train_steps`
       steps (or `epochs` passes), validating on the eval split (`fn_args.eval_steps`), logging
       to `model_run_dir`: TensorBoard (when installed), `training_log.csv`, `history.json`.
    4. Export with `kdistill.export_student` to `<model_run_dir>/export` (`report.json`), write
       the serving SavedModel (signatures `serving_default` on tf.Examples and `serving_tokens`)
       to `serving_model_dir`, check both signatures against the Keras student on eval
       examples, and add that check to the report (also copied to
       `<serving_model_dir>/assets.extra/kdistill_report.json`). Under multi-worker training
       only the chief writes these.

    Args:
        fn_args: `tfx.components.FnArgs` or any object with its attributes (`train_files`,
            `eval_files`, `serving_model_dir`, `model_run_dir`, `custom_config`; optional
            `train_steps`, `eval_steps`, `data_accessor`, `schema_path`, `transform_output`).

    Returns:
        dict. The report: `export_student`'s (when `export_formats` is not empty) plus
        `"serving_model"` (parity of both signatures), `"history"` and `"reader"`.

    Example:
    >>> import types
    >>> run_fn(types.SimpleNamespace(custom_config={"student": "bert_tiny"}))
    Traceback (most recent call last):
    ...
    ValueError: custom_config has no 'teacher': ...
    """
    from kdistill.distiller import Distiller
    from kdistill.export import export_student

    config = TrainerConfig.from_custom_config(_fn_arg(fn_args, "custom_config"))
    transform = getattr(fn_args, "transform_output", None) or getattr(
        fn_args, "transform_graph_path", None)
    if transform:
        raise ValueError(
            f"fn_args.transform_output is set ({transform}): kdistill reads untransformed "
            "examples (raw text, or pre-tokenised token_ids). Wire ExampleGen's examples into the "
            "Trainer, not Transform's transformed_examples, or write the tokens as features.")
    serving_dir = os.fspath(_fn_arg(fn_args, "serving_model_dir"))
    run_dir = os.fspath(_fn_arg(fn_args, "model_run_dir"))
    export_dir = os.path.join(run_dir, "export")
    for path, what in ((serving_dir, "serving_model_dir"), (export_dir, "The export directory")):
        if tf.io.gfile.exists(path) and tf.io.gfile.listdir(path) and not config.overwrite:
            raise FileExistsError(f"{what} {path} exists and is not empty; set "
                                  "custom_config['overwrite'] = True to replace it.")
    train_files = _expand(_fn_arg(fn_args, "train_files"), "train")
    eval_files = _expand(_fn_arg(fn_args, "eval_files"), "eval")
    train_steps = getattr(fn_args, "train_steps", None) or None
    eval_steps = getattr(fn_args, "eval_steps", None) or None
    compression = _compression(train_files + eval_files, config.compression)
    first = _first_example(train_files, compression, "train")
    _first_example(eval_files, compression, "eval")

    strategy = _strategy(config.strategy)
    chief = _is_chief(strategy)
    keras.utils.set_random_seed(config.seed)
    sequence_length = config.sequence_length or 128
    with strategy.scope():
        teacher, teacher_preprocessor, packaged = _load_teacher(config, sequence_length)
    preprocessor = _preprocessor(config, teacher_preprocessor, sequence_length)
    features = _Features(config, first, preprocessor)
    reader = _Reader(fn_args, config, features, compression)
    logger.info("kdistill.tfx: %s input, %d tokens, read with %s, %d train / %d eval files",
                features.format, features.sequence_length, reader.name, len(train_files),
                len(eval_files))

    num_classes = _num_outputs(teacher)
    if config.num_classes is not None and num_classes not in (None, config.num_classes):
        raise ValueError(f"custom_config['num_classes'] is {config.num_classes} but the teacher "
                         f"{config.teacher!r} outputs {num_classes} logits.")
    num_classes = num_classes or config.num_classes
    eval_ds = reader.dataset(eval_files, training=False)
    if config.label_feature:
        if num_classes is None:
            raise ValueError("Cannot tell the teacher's number of classes; set "
                             "custom_config['num_classes'].")
        _check_labels(reader.labels(eval_files), num_classes, "eval", max_batches=-1)
        _check_labels(reader.labels(train_files), num_classes, "train", max_batches=100)

    fine_tune_epochs = config.teacher_fine_tune_epochs
    if fine_tune_epochs is None:
        fine_tune_epochs = 2 if packaged else 0
    with strategy.scope():
        if fine_tune_epochs:
            from kdistill import teachers

            if not config.label_feature:
                raise ValueError("Fine-tuning the teacher needs labels: set "
                                 "custom_config['label_feature'].")
            teachers.fine_tune_teacher(
                teacher, reader.dataset(train_files, training=True), eval_ds,
                epochs=fine_tune_epochs, learning_rate=config.teacher_learning_rate,
                seed=config.seed, cache_dir=config.cache_dir or os.path.join(run_dir,
                                                                             "teacher_cache"),
                cache_key=f"tfx:{','.join(train_files)}", verbose=2)
        vocabulary_size = None
        if preprocessor is not None:
            vocabulary_size = preprocessor.tokenizer.vocabulary_size()
        student = _build_student(config, teacher, num_classes, features.sequence_length,
                                 vocabulary_size)
        distiller = Distiller(teacher, student, objectives=_objectives(config))
        optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
        metrics = ["accuracy"] if config.label_feature else None
        distiller.compile(optimizer=optimizer, metrics=metrics)

    tf.io.gfile.makedirs(run_dir)
    fit_args = {"epochs": config.epochs}
    train_ds = reader.dataset(train_files, training=True, repeat=bool(train_steps))
    if train_steps:
        fit_args = {"epochs": 1, "steps_per_epoch": int(train_steps)}
    history = distiller.fit(
        train_ds, validation_data=eval_ds, validation_steps=eval_steps, verbose=2,
        callbacks=_callbacks(run_dir, chief), **fit_args)
    history = {k: [float(v) for v in values] for k, values in history.history.items()}

    if not chief:  # every worker trained; only the chief writes the outputs
        scratch = tempfile.mkdtemp(prefix="kdistill_worker_")
        _write_serving_model(student, features, os.path.join(scratch, "model"))
        shutil.rmtree(scratch, ignore_errors=True)
        return {"history": history, "chief": False}

    _write_json(os.path.join(run_dir, "history.json"), history)
    report = {}
    if config.export_formats:
        export_args = {"formats": tuple(config.export_formats), "validation_data": eval_ds,
                       "teacher": teacher, "overwrite": config.overwrite, "verbose": False}
        if "tflite_int8" in config.export_formats:
            export_args["representative_data"] = reader.dataset(train_files, training=False)
        export_args.update(config.export_args)
        report = export_student(student, export_dir, **export_args)

    if tf.io.gfile.exists(serving_dir):  # checked above: empty, or overwrite=True
        tf.io.gfile.rmtree(serving_dir)
    _write_serving_model(student, features, serving_dir)
    serialized = next(iter(_records(eval_files, compression).batch(64)))
    report["serving_model"] = _check_serving_model(serving_dir, student, features, serialized)
    report["history"] = history
    report["reader"] = reader.name
    tf.io.gfile.makedirs(export_dir)
    _write_json(os.path.join(export_dir, REPORT_NAME), report)
    extra = os.path.join(serving_dir, "assets.extra")
    tf.io.gfile.makedirs(extra)
    _write_json(os.path.join(extra, "kdistill_" + REPORT_NAME), report)
    logger.info("kdistill.tfx: student written to %s, report to %s", serving_dir, export_dir)
    return report


__all__ = ["TrainerConfig", "run_fn"]
