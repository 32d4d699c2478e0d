"""Distillation as a TFX Trainer step: a `run_fn` that is one more door into `kdistill.runner.run`.

TFX's Trainer imports the user's module file and calls `run_fn(fn_args)` with a
`tfx.components.FnArgs`. This module implements that function **without importing tfx**, so it
runs in any TFX release that keeps the contract (and in tests, with any object that has the same
attributes). It reads the Trainer's tf.Examples, hands them to the one pipeline
(`kdistill.runner.run`, the same `RunConfig` as `kdistill distill`), then writes the distilled
student as the Trainer's serving model.

What it reads from `fn_args`:

- `custom_config`: the dict given to `Trainer(custom_config=...)`: `config`, the `RunConfig` (a
  mapping with the keys of a `kdistill distill` YAML, or the path of a YAML/TOML/JSON file), plus
  the TFX-specific keys of `TfxConfig` (tf.Example feature names, reader, signatures...).
- `train_files` / `eval_files`: file patterns of ExampleGen output (gzipped TFRecord files of
  `tf.train.Example`), e.g. `<examples>/Split-train/*`. The train split trains; the eval split
  is the run's validation split and also its test split (the report's accuracies).
- `train_steps` / `eval_steps` (optional): `train_steps` sets `stages.task.epochs` to
  `ceil(train_steps / steps per epoch)`, with `ceil(training examples / data.batch_size)` steps
  per epoch: **steps are rounded up to whole epochs** (the runner schedules, resumes and keeps
  its best epoch per epoch). `eval_steps` sets `data.max_eval_examples` to
  `eval_steps * data.eval_batch_size` unless the config sets it.
- `serving_model_dir`: where Evaluator and Pusher look for the SavedModel.
- `model_run_dir`: the run directory of `kdistill.runner.run` goes to `<model_run_dir>/kdistill`
  (unless the config sets `output`; TensorBoard logs under it), the fine-tuned teacher cache to
  `<model_run_dir>/teacher_cache` (unless `teacher.cache_dir` is set), the report to
  `<model_run_dir>/report.json`. A remote `model_run_dir` (`gs://...`) gets a copy of a run
  made in a local temporary directory.
- `data_accessor` and `schema_path`: used, when both are set, to read the examples with TFXIO
  (`data_accessor.tf_dataset_factory`); otherwise the TFRecord files are read directly.
  `transform_output` (a Transform graph) is refused with a clear error: tokenise inside kdistill
  (raw text) or write pre-tokenised features instead.

The examples hold either raw text and a label (tokenised by the runner with the teacher's
tokenizer or `data.vocabulary`) or pre-tokenised int features (`token_ids`, optional
`padding_mask` and `segment_ids`). The serving SavedModel holds the **student only**, with two
signatures (names set by `custom_config["signatures"]`):

- `serving_default`: serialized `tf.train.Example` strings (`examples`, shape `[batch]`) ->
  `logits`, `probabilities`; what TFX Evaluator (TFMA) and most TFX serving setups call.
- `serving_tokens`: `token_ids`, `padding_mask`, `segment_ids` int32 `[batch, sequence_length]`
  -> `logits`, `probabilities` (the signature `export_student` writes as `serving_default`).

With raw text, `serving_default` tokenises inside the graph with TensorFlow Text ops: whoever
loads it must `import tensorflow_text` first (or use a TF Serving build with those ops).
"""

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kdistill.data.tf_examples import (
    COMPRESSIONS,
    TOKEN_INPUTS,
    ExampleReader,
    FeatureNames,
    Features,
    compression_of,
    detect_format,
    expand_patterns,
    first_example,
    tfrecords,
)

logger = logging.getLogger(__name__)

EXAMPLES_SIGNATURE = "serving_default"
TOKENS_SIGNATURE = "serving_tokens"
READERS = ("auto", "tfrecord", "data_accessor")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
REPORT_NAME = "report.json"
RUN_SUBDIR = "kdistill"
# custom_config keys of tfx.extensions.google_cloud_ai_platform (ai_platform_training_args...).
TFX_EXTENSION_PREFIX = "ai_platform_"
# Keys of the former flat custom_config (kdistill <= 0.x `TrainerConfig`) and where they live now.
_MOVED_KEYS = {
    "teacher": "teacher.model", "num_classes": "teacher.num_classes",
    "teacher_fine_tune_epochs": "teacher.fine_tune_epochs",
    "teacher_learning_rate": "teacher.fine_tune_learning_rate", "cache_dir": "teacher.cache_dir",
    "student_args": "student (num_layers, hidden_dim, init...)",
    "objectives": "stages.task.objectives", "objective_args": "stages.task.objectives",
    "epochs": "stages.task.epochs", "learning_rate": "stages.task.learning_rate",
    "weight_decay": "stages.task.weight_decay", "batch_size": "data.batch_size",
    "sequence_length": "data.sequence_length", "vocabulary": "data.vocabulary",
    "lowercase": "data.lowercase", "shuffle_buffer": "(nothing: the runner shuffles every "
    "epoch by seed)", "export_formats": "export.formats", "export_args": "export",
}
# Data keys of a RunConfig that name files or a built-in dataset: the Trainer's examples
# replace them (so a config shared with `kdistill distill` works unchanged).
_DATA_SOURCE_KEYS = ("dataset", "train", "validation", "test", "unlabelled")


def _config_error(message):
    from kdistill.config import ConfigError

    return ConfigError(message)


# ----------------------------------------------------------------------------- configuration




@dataclasses.dataclass
class TfxConfig:
    """`fn_args.custom_config`, validated: the `RunConfig` plus the TFX-specific keys.

    Every key but `config` is optional. Unknown keys are an error (with the closest valid key);
    keys starting with `ai_platform_` belong to TFX's Vertex AI Trainer extension
    (`TRAINING_ARGS_KEY`, `ENABLE_VERTEX_KEY`...) and are ignored.

    Args:
        raw: dict. The `RunConfig` mapping, from the custom_config key `config`: a mapping
            with the keys of a `kdistill distill` config file (`teacher`, `student`, `data`,
            `stages`, `export`...), or the local path of such a YAML/TOML/JSON file (relative
            paths in it are resolved against its directory). Its `data.dataset`, `train`,
            `validation`, `test` and `unlabelled` are not used (the Trainer's examples are);
            `output` and `teacher.cache_dir` default under `model_run_dir`. `run_config()`
            validates it.
        source: str. Where `raw` came from (the config file), named in errors.
        lines: dict. `{key path: line}` of a YAML file, for errors.
        base_dir: str or None. Relative paths in `raw` are resolved against it (the config
            file's directory; None: the current directory).
        features: dict. The `FeatureNames` keys given (as flat keys of custom_config):
            `text_feature`, `text_pair_feature`, `label_feature`, `label_names`,
            `token_features`, `input_format`; the first four default to the config's
            `data.text_column`, `data.text_pair_column`, `data.label_column` and
            `data.label_names` (see `resolve_features`).
        reader: str. `"tfrecord"` reads the files with `tf.data.TFRecordDataset`,
            `"data_accessor"` uses `fn_args.data_accessor.tf_dataset_factory` with the schema at
            `fn_args.schema_path`, `"auto"` picks the latter when both are set.
        compression: str. `"auto"` (GZIP for `*.gz` files, as ExampleGen writes), `"GZIP"`,
            `"ZLIB"` or `""` (none).
        signatures: dict. Names of the serving signatures: `{"examples": "serving_default",
            "tokens": "serving_tokens"}` (the defaults); None drops one (not both).
        strategy: str. `"auto"`: MultiWorkerMirroredStrategy when `TF_CONFIG` names several
            tasks, MirroredStrategy with several GPUs, else the config's `strategy`;
            `"default"`, `"mirrored"` or `"multi_worker"` force one.
        overwrite: bool. Replace a finished run in the run directory and a non-empty
            `serving_model_dir`.

    Example:
    >>> config = TfxConfig.from_custom_config({
    ...     "config": {"teacher": {"model": "minilm"}, "stages": {"task": {"epochs": 1}}},
    ...     "text_feature": "sentence", "ai_platform_training_args": {"project": "p"}})
    >>> config.features, config.raw["teacher"]["model"]
    ({'text_feature': 'sentence'}, 'minilm')
    >>> TfxConfig.from_custom_config({"config": {}, "text_feture": "sentence"})
    Traceback (most recent call last):
    ...
    kdistill...ConfigError: custom_config['text_feture']: unknown key. Did you mean 'text_feature'? ...
    """  # noqa: E501

    raw: dict
    source: str = "custom_config['config']"
    lines: dict = dataclasses.field(default_factory=dict)
    base_dir: str | None = None
    features: dict = dataclasses.field(default_factory=dict)
    reader: str = "auto"
    compression: str = "auto"
    signatures: dict = dataclasses.field(default_factory=lambda: {
        "examples": EXAMPLES_SIGNATURE, "tokens": TOKENS_SIGNATURE})
    strategy: str = "auto"
    overwrite: bool = False

    _FEATURE_KEYS = tuple(f.name for f in dataclasses.fields(FeatureNames))
    _KEYS = ("config",) + _FEATURE_KEYS + ("reader", "compression", "signatures", "strategy",
                                           "overwrite")

    @classmethod
    def from_custom_config(cls, custom_config):
        """Validates a Trainer `custom_config` dict and reads its `config`.

        Args:
            custom_config: dict. The `custom_config` given to `Trainer(...)`.

        Returns:
            A `TfxConfig`; `raw` is the RunConfig mapping (validated by `run_config`).

        Raises:
            ConfigError: an unknown key, a bad value, or no `config`.
        """
        from kdistill.config import RunConfig, read_config_file

        if not isinstance(custom_config, dict):
            raise _config_error(
                "kdistill.tfx.run_fn needs fn_args.custom_config to be a dict with 'config' (got "
                f"{type(custom_config).__name__}). Pass Trainer(..., custom_config={{'config': "
                "'run.yaml'}}) or a mapping of the RunConfig.")
        custom = {k: v for k, v in custom_config.items()
                  if not str(k).startswith(TFX_EXTENSION_PREFIX)}
        run_keys = {f.name for f in dataclasses.fields(RunConfig)}
        for key in custom:
            if key in cls._KEYS:
                continue
            if key in _MOVED_KEYS or key in run_keys:
                where = _MOVED_KEYS.get(key, key)
                raise _config_error(
                    f"custom_config[{key!r}]: a RunConfig setting; put it in "
                    f"custom_config['config'] (as {where}), the same keys as a kdistill distill "
                    "config file.")
            match = difflib.get_close_matches(str(key), cls._KEYS, n=1, cutoff=0.6)
            hint = f" Did you mean {match[0]!r}?" if match else ""
            raise _config_error(f"custom_config[{key!r}]: unknown key.{hint} Valid keys: "
                                f"{list(cls._KEYS)} (and ai_platform_* keys, ignored).")
        if custom.get("config") is None:
            raise _config_error(
                "custom_config has no 'config': give the RunConfig as a mapping (the keys of a "
                "kdistill distill config file: teacher, student, data, stages...) or the path of "
                "a YAML/TOML/JSON config file.")
        value = custom["config"]
        source, lines, base_dir = "custom_config['config']", {}, None
        if isinstance(value, RunConfig):
            raw = value.to_dict()
        elif isinstance(value, dict):
            raw = value
        elif isinstance(value, (str, os.PathLike)):
            path = os.fspath(value)
            raw, lines = read_config_file(path)
            source, base_dir = path, os.path.dirname(os.path.abspath(path))
        else:
            raise _config_error(
                "custom_config['config'] must be a mapping (the RunConfig's keys) or the path of "
                f"a config file, got {type(value).__name__}.")
        raw = json.loads(json.dumps(raw, default=str))  # a private copy
        data = raw.get("data")
        if isinstance(data, dict):
            dropped = [k for k in _DATA_SOURCE_KEYS if data.pop(k, None) is not None]
            if dropped:
                logger.warning("kdistill.tfx: data.%s in %s not used: the examples are the "
                               "Trainer's (fn_args.train_files / eval_files).",
                               ", data.".join(dropped), source)
        features = {k: custom[k] for k in cls._FEATURE_KEYS if k in custom}
        config = cls(raw, source, lines, base_dir, features,
                     **{k: custom[k] for k in ("reader", "compression", "signatures", "strategy",
                                               "overwrite") if k in custom})
        config._validate()
        return config

    def _validate(self):
        for name, valid in (("reader", READERS), ("strategy", STRATEGIES),
                            ("compression", COMPRESSIONS)):
            if getattr(self, name) not in valid:
                raise _config_error(f"custom_config[{name!r}] = {getattr(self, name)!r}; valid "
                                    f"values: {list(valid)}.")
        if not isinstance(self.overwrite, bool):
            raise _config_error(f"custom_config['overwrite'] must be true or false, got "
                                f"{self.overwrite!r}.")
        signatures = self.signatures
        if not isinstance(signatures, dict) or set(signatures) - {"examples", "tokens"}:
            raise _config_error(
                "custom_config['signatures'] maps 'examples' and/or 'tokens' to signature names "
                f"(None drops one), got {signatures!r}.")
        signatures = dict({"examples": EXAMPLES_SIGNATURE, "tokens": TOKENS_SIGNATURE},
                          **signatures)
        names = [n for n in signatures.values() if n is not None]
        if not names or len(set(names)) != len(names) or not all(
                isinstance(n, str) and n for n in names):
            raise _config_error(
                "custom_config['signatures'] needs at least one signature and distinct, "
                f"non-empty names, got {signatures}.")
        self.signatures = signatures
        try:
            FeatureNames(**self.features).validate()
        except ValueError as error:
            raise _config_error(str(error)) from None

    def run_config(self, overrides=()):
        """The validated `RunConfig`, with `overrides` (`(key_path, value, label)`) on top.

        Raises:
            ConfigError: naming the key and where it was set.
        """
        from kdistill.config import config_from_dict

        return config_from_dict(self.raw, source=self.source, lines=self.lines,
                                base_dir=self.base_dir, overrides=overrides, data_given=True)

    def resolve_features(self, data):
        """The `FeatureNames`, unset names taken from the config's `data` columns.

        Args:
            data: `kdistill.config.DataConfig`.

        Returns:
            A validated `FeatureNames`.
        """
        names = dict(text_feature=data.text_column, text_pair_feature=data.text_pair_column,
                     label_feature=data.label_column, label_names=data.label_names)
        names.update(self.features)
        try:
            return FeatureNames(**names).validate()
        except ValueError as error:
            raise _config_error(str(error)) from None


# ----------------------------------------------------------------------------- fn_args and files


def _fn_arg(fn_args, name, required=True):
    value = getattr(fn_args, name, None)
    if required and value is None:
        raise ValueError(
            f"fn_args.{name} is missing. kdistill.tfx.run_fn expects the TFX Trainer's FnArgs "
            "(train_files, eval_files, serving_model_dir, model_run_dir, custom_config; "
            "train_steps, eval_steps, data_accessor, schema_path optional).")
    return value












# ----------------------------------------------------------------------------- features












# ----------------------------------------------------------------------------- reading










def _label_range(dataset, split):
    """`(count, min, max)` of a split's labels; ValueError for a split without any."""
    low, high, count = None, None, 0
    for batch in dataset:
        y = batch.numpy()
        if y.size:
            low = y.min() if low is None else min(low, y.min())
            high = y.max() if high is None else max(high, y.max())
            count += y.size
    if count == 0:
        raise ValueError(f"The {split} split yielded no labelled examples.")
    return count, int(low), int(high)


def _check_labels(split, low, high, num_classes):
    if low < 0 or high >= num_classes:
        unmapped = " (-1: a string label not in label_names)" if low == -1 else ""
        raise ValueError(
            f"The {split} split has labels in [{low}, {high}]{unmapped} but the teacher has "
            f"{num_classes} classes (ids 0..{num_classes - 1}). Check custom_config "
            "['label_feature'] and ['label_names'], teacher.num_classes in the config, and the "
            "teacher.")


# ----------------------------------------------------------------------------- the teacher


def _teacher_facts(config, need_tokenizer, need_width):
    """`(preprocessor or None, output width or None)` of the config's teacher.

    The preprocessor is the one `kdistill.runner.load_teacher` tokenises with (so the serving
    signature tokenises like the training data); the teacher file is loaded only when the
    tokenizer or the width must come from it.
    """
    from kdistill import teachers
    from kdistill.data import make_preprocessor
    from kdistill.evaluation import detach_preprocessor, num_outputs

    data, source = config.data, config.teacher.model
    preprocessor = width = None
    if need_tokenizer and data.vocabulary is not None:
        preprocessor = make_preprocessor(data.vocabulary, data.sequence_length, data.lowercase)
        need_tokenizer = False
    if source == "minilm":
        if need_tokenizer:
            import keras_hub

            preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
                teachers.packaged_model_dir(), sequence_length=data.sequence_length)
        return preprocessor, None
    if need_tokenizer or need_width:
        teacher = teachers.load_teacher(source, output_key=config.teacher.output_key,
                                        endpoint=config.teacher.endpoint)
        width = num_outputs(teacher)
        own = detach_preprocessor(teacher)
        if need_tokenizer and own is not None:
            own.sequence_length = data.sequence_length
            preprocessor = own
        del teacher
    return preprocessor, width


def _strategy(name, config_strategy):
    """The strategy for `name`; `"auto"` reads `TF_CONFIG` and the visible GPUs."""
    from kdistill.distribution import make_strategy

    if name == "auto":
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        tasks = sum(len(v) for v in tf_config.get("cluster", {}).values())
        if tasks > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = config_strategy
    return make_strategy(name)


# ----------------------------------------------------------------------------- saving


def _write_serving_model(student, features, path, signatures):
    """The student with a tf.Example signature and a token signature."""
    from kdistill.evaluation import as_float32_logits

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
        logits = as_float32_logits(student(x, training=False))
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        return outputs(features.parse(examples, with_labels=False))

    @tf.function(input_signature=[specs])
    def serve_tokens(x):
        return outputs(x)

    root.serve_examples, root.serve_tokens = serve_examples, serve_tokens
    functions = {"examples": serve_examples, "tokens": serve_tokens}
    tf.saved_model.save(root, path, signatures={
        name: functions[kind] for kind, name in signatures.items() if name is not None})


def _check_serving_model(path, student, features, serialized, signatures):
    """Runs the signatures of the written SavedModel against the Keras student."""
    loaded = tf.saved_model.load(path)
    x = features.parse(serialized, with_labels=False)
    reference = keras.ops.convert_to_numpy(student(x, training=False)).astype("float32")
    names = [n for n in signatures.values() if n is not None]
    result = {"path": path, "signatures": names, "num_examples": int(reference.shape[0]),
              "sequence_length": features.sequence_length, "input_format": features.format}
    for kind, name in signatures.items():
        if name is None:
            continue
        signature = loaded.signatures[name]
        logits = (signature(examples=serialized) if kind == "examples" else signature(**x))
        logits = logits["logits"].numpy()
        result[name] = {
            "max_abs_diff": float(np.max(np.abs(logits - reference))),
            "top1_agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        }
    return result


def _write_json(path, value):
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=2, default=str))


def _is_remote(path):
    return "://" in os.fspath(path)


def _copy_tree(source, target):
    """Copies a local directory tree to `target` (any filesystem tf.io.gfile writes)."""
    for root, _, files in os.walk(source):
        relative = os.path.relpath(root, source)
        directory = target if relative == "." else os.path.join(target, relative)
        tf.io.gfile.makedirs(directory)
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(directory, name),
                             overwrite=True)


# ----------------------------------------------------------------------------- run_fn


def _run_dir_overrides(raw, run_dir):
    """`output` and `teacher.cache_dir` under `model_run_dir`, unless the config sets them."""
    label, remote = "kdistill.tfx (model_run_dir)", _is_remote(run_dir)
    overrides = []
    if raw.get("output") is None:
        output = os.path.join(run_dir, RUN_SUBDIR)
        if remote:  # a local run (named after run_dir: a retry resumes it), copied there after
            digest = hashlib.sha256(run_dir.encode()).hexdigest()[:16]
            output = os.path.join(tempfile.gettempdir(), "kdistill_tfx", digest)
        overrides.append((("output",), output, label))
    if (raw.get("teacher") or {}).get("cache_dir") is None and not remote:
        overrides.append((("teacher", "cache_dir"), os.path.join(run_dir, "teacher_cache"),
                          label))
    return overrides


def _token_overrides(raw, config, names, example):
    """Pre-tokenised examples: `data.sequence_length` from the token features (or checked)."""
    length = len(example.features.feature[(names.token_features or {}).get(
        "token_ids", "token_ids")].int64_list.value)
    if config.data.augment_samples:
        raise _config_error("data.augment_samples augments raw text, but the examples are "
                            "pre-tokenised; set it to 0.")
    if "sequence_length" not in (raw.get("data") or {}):
        return [(("data", "sequence_length"), length, "the token features")] if length else []
    if length and length != config.data.sequence_length:
        raise _config_error(
            f"data.sequence_length is {config.data.sequence_length} but the token features "
            f"hold {length} tokens per example; remove the key or make them agree.")
    return []


def _classes(config, names, width, reader, train_files, eval_files):
    """`(label names, training examples)`; every label checked against the class count."""
    num_train, low, high = _label_range(reader.labels(train_files), "train")
    _, eval_low, eval_high = _label_range(reader.labels(eval_files), "eval")
    label_names = names.label_names
    if label_names is None:  # int labels: the teacher's classes (for minilm: the labels')
        num_classes = config.teacher.num_classes or width or max(high, eval_high, 1) + 1
        label_names = [str(i) for i in range(num_classes)]
    _check_labels("eval", eval_low, eval_high, len(label_names))
    _check_labels("train", low, high, len(label_names))
    return list(label_names), num_train


def _steps_overrides(fn_args, config, num_examples):
    """`(overrides, note)`: `train_steps` -> `stages.task.epochs` (rounded up to whole
    epochs), `eval_steps` -> `data.max_eval_examples` (unless the config sets it)."""
    overrides, note = [], {}
    train_steps = getattr(fn_args, "train_steps", None) or None
    eval_steps = getattr(fn_args, "eval_steps", None) or None
    if train_steps:
        train_steps = int(train_steps)
        if config.stages.task.epochs == 0:
            raise _config_error(
                f"fn_args.train_steps = {train_steps} sets the epochs of the task stage, but "
                "stages.task.epochs is 0 in the config: train the task stage, or leave the "
                "Trainer's train_args without num_steps.")
        if config.data.max_train_examples is not None:
            num_examples = min(num_examples, config.data.max_train_examples)
        steps_per_epoch = math.ceil(num_examples / config.data.batch_size)
        epochs = max(1, math.ceil(train_steps / steps_per_epoch))
        overrides.append((("stages", "task", "epochs"), epochs,
                          f"fn_args.train_steps={train_steps}"))
        note = {"train_steps": train_steps, "steps_per_epoch": steps_per_epoch,
                "epochs": epochs, "steps": epochs * steps_per_epoch}
    if eval_steps and config.data.max_eval_examples is None:
        examples = int(eval_steps) * config.data.eval_batch_size
        overrides.append((("data", "max_eval_examples"), examples,
                          f"fn_args.eval_steps={eval_steps}"))
        note["max_eval_examples"] = examples
    return overrides, note


@dataclasses.dataclass
class _Plan:
    """What `run_fn` settled before the run: the config, the examples and how to read them."""

    config: object  # kdistill.config.RunConfig
    features: Features
    reader: ExampleReader
    train_files: list
    eval_files: list
    compression: str
    label_names: list
    note: dict


def _plan(fn_args, tfx_config, config, overrides):
    """Validates the examples against the config (every check before any training)."""
    raw, overrides = tfx_config.raw, list(overrides)
    names = tfx_config.resolve_features(config.data)
    if not names.label_feature:
        raise _config_error(
            "custom_config['label_feature'] is None, but kdistill.tfx trains on labelled "
            "examples (the runner measures accuracy on the eval split); name the label feature. "
            "To run a teacher over unlabelled examples, see kdistill.beam.")
    train_files = expand_patterns(_fn_arg(fn_args, "train_files"), "train")
    eval_files = expand_patterns(_fn_arg(fn_args, "eval_files"), "eval")
    compression = compression_of(train_files + eval_files, tfx_config.compression)
    first = first_example(train_files, compression, "train")
    first_example(eval_files, compression, "eval")
    fmt = detect_format(names, first)
    if fmt == "tokens":
        overrides += _token_overrides(raw, config, names, first)
        config = tfx_config.run_config(overrides)
    need_width = names.label_names is None and config.teacher.num_classes is None
    preprocessor, width = _teacher_facts(config, fmt == "text", need_width)
    features = Features(names, first, preprocessor).check_tokenizer()
    reader = ExampleReader.for_fn_args(fn_args, tfx_config.reader, features, compression)
    label_names, num_train = _classes(config, names, width, reader, train_files, eval_files)
    steps, note = _steps_overrides(fn_args, config, num_train)
    if steps:
        config = tfx_config.run_config(overrides + steps)
    note.update(train_files=len(train_files), eval_files=len(eval_files),
                train_examples=num_train)
    logger.info("kdistill.tfx: %s input, %d tokens, read with %s, %d train / %d eval files, "
                "%d training examples", features.format, features.sequence_length, reader.name,
                len(train_files), len(eval_files), num_train)
    return _Plan(config, features, reader, train_files, eval_files, compression, label_names,
                 note)


def _write_outputs(report, plan, tfx_config, serving_dir, run_dir):
    """The serving model, its check against the Keras student, and the report files."""
    from kdistill.evaluation import load_model

    student = load_model(report["student_path"]).model
    if tf.io.gfile.exists(serving_dir):  # checked before the run: empty, or overwrite=True
        tf.io.gfile.rmtree(serving_dir)
    _write_serving_model(student, plan.features, serving_dir, tfx_config.signatures)
    serialized = next(iter(tfrecords(plan.eval_files, plan.compression).batch(64)))
    report = dict(report)
    report["serving_model"] = _check_serving_model(serving_dir, student, plan.features,
                                                   serialized, tfx_config.signatures)
    report["reader"] = plan.reader.name
    report["tfx"] = dict(plan.note, run_dir=plan.config.output)
    tf.io.gfile.makedirs(run_dir)
    if _is_remote(run_dir) and tfx_config.raw.get("output") is None:
        target = os.path.join(run_dir, RUN_SUBDIR)
        _copy_tree(plan.config.output, target)
        shutil.rmtree(plan.config.output, ignore_errors=True)
        report["tfx"]["run_dir"] = target
    _write_json(os.path.join(run_dir, REPORT_NAME), report)
    extra = os.path.join(serving_dir, "assets.extra")
    tf.io.gfile.makedirs(extra)
    _write_json(os.path.join(extra, "kdistill_" + REPORT_NAME), report)
    logger.info("kdistill.tfx: student written to %s, report to %s", serving_dir, run_dir)
    return report


def run_fn(fn_args):
    """Distills a student in a TFX Trainer with `kdistill.runner.run`; writes the serving model.

    The TFX Trainer calls this with its `FnArgs` when the module file (e.g.
    `examples/tfx_module.py`) defines `run_fn`; nothing here imports tfx. Steps:

    1. Validate `fn_args.custom_config` (`TfxConfig`) and its `RunConfig`, expand
       `train_files`/`eval_files` (an empty split, a pattern matching nothing or a record that
       is not a `tf.train.Example` is a clear error), and detect raw-text or pre-tokenised
       features from the first example.
    2. Check every label against the teacher's class count (from `label_names`,
       `teacher.num_classes`, the teacher file, or the labels for `minilm`), before training.
    3. Run `kdistill.runner.run` on the examples (train split; the eval split as validation
       and test) into `<model_run_dir>/kdistill`: teacher (fine-tuned when the config says so),
       student, stages, measurements, `export.formats`, its `report.json`.
    4. Write the serving SavedModel (the student only; the `examples` and `tokens` signatures)
       to `serving_model_dir`, check both signatures against the Keras student on eval
       examples, and write the report (the runner's plus `serving_model`, `reader`, `tfx`) to
       `<model_run_dir>/report.json` and `<serving_model_dir>/assets.extra/kdistill_report.json`.
       Under multi-worker training every worker trains and only the chief writes these.

    Args:
        fn_args: `tfx.components.FnArgs` or any object with its attributes (`train_files`,
            `eval_files`, `serving_model_dir`, `model_run_dir`, `custom_config`; optional
            `train_steps`, `eval_steps`, `data_accessor`, `schema_path`, `transform_output`).

    Returns:
        dict. The report: the runner's (`teacher`, `student`, `ratios`, `stages`, `config`,
        `student_path`...) plus `serving_model` (both signatures against the Keras student),
        `reader` and `tfx` (the files, example count and the `train_steps` mapping). A
        non-chief worker returns `{"chief": False, "worker": N}`.

    Example:
    >>> import types
    >>> run_fn(types.SimpleNamespace(custom_config={"teacher": "teacher.keras"}))
    Traceback (most recent call last):
    ...
    kdistill...ConfigError: custom_config['teacher']: a RunConfig setting; put it in custom_config['config'] (as teacher.model), ...
    """  # noqa: E501
    from kdistill import runner
    from kdistill.data import TextSplits
    from kdistill.distribution import worker_index

    tfx_config = TfxConfig.from_custom_config(_fn_arg(fn_args, "custom_config"))
    transform = getattr(fn_args, "transform_output", None) or getattr(
        fn_args, "transform_graph_path", None)
    if transform:
        raise ValueError(
            f"fn_args.transform_output is set ({transform}): kdistill reads untransformed "
            "examples (raw text, or pre-tokenised token_ids). Wire ExampleGen's examples into the "
            "Trainer, not Transform's transformed_examples, or write the tokens as features.")
    serving_dir = os.fspath(_fn_arg(fn_args, "serving_model_dir"))
    run_dir = os.fspath(_fn_arg(fn_args, "model_run_dir"))
    if (tf.io.gfile.exists(serving_dir) and tf.io.gfile.listdir(serving_dir)
            and not tfx_config.overwrite):
        raise FileExistsError(f"serving_model_dir {serving_dir} exists and is not empty; set "
                              "custom_config['overwrite'] = True to replace it.")
    overrides = _run_dir_overrides(tfx_config.raw, run_dir)
    config = tfx_config.run_config(overrides)  # config errors before any file is read
    # Before any TF op: a multi-worker strategy configures the collectives at startup.
    strategy = _strategy(tfx_config.strategy, config.strategy)
    plan = _plan(fn_args, tfx_config, config, overrides)
    texts = TextSplits(train=plan.reader.dataset(plan.train_files),
                       validation=plan.reader.dataset(plan.eval_files),
                       label_names=plan.label_names, key="tfx:" + ",".join(plan.train_files))
    report = runner.run(plan.config, overwrite=tfx_config.overwrite, strategy=strategy,
                        texts=texts)
    worker = worker_index(strategy)
    if worker:  # every worker trained; only the chief writes
        return {"chief": False, "worker": worker}
    return _write_outputs(report, plan, tfx_config, serving_dir, run_dir)


__all__ = ["TfxConfig", "run_fn"]
