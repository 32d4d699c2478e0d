"""Run configuration of `kdistill distill`: typed sections loaded from YAML, TOML or JSON.

A config file describes one distillation run: the teacher, the student, the data, the training
stages with their objectives, the distribution strategy and the output directory. It is loaded
into typed dataclasses (`RunConfig` and its sections) and validated: an unknown key, a value of
the wrong type or out of range, or an unknown preset/objective is a `ConfigError` that names the
key, the file and line (YAML; TOML and JSON give the key path) and, for a misspelt name, the
closest valid one. Every field can also be set from the command line
(`--set stages.task.epochs=3`).

Relative paths in a config file are resolved against the file's directory; paths given on the
command line against the current directory. This module imports no TensorFlow; validating
objectives, presets and export formats imports the parts of kdistill that define them.

A minimal YAML config (the keys left out keep their defaults, see `describe()`):

    teacher:
      model: teacher.keras          # or: minilm, or a SavedModel directory
    student:
      preset: bert_tiny
      num_layers: 3
      init: svd
    data:
      train: train.csv
      validation: dev.csv
      vocabulary: vocab.txt
    stages:
      task:
        epochs: 3
        learning_rate: 5.0e-4
        objectives: {preset: logits_kd, temperature: 2.0, alpha: 0.5}
    output: runs/my_run
"""

import dataclasses
import difflib
import inspect
import json
import os
import re
import sys
import textwrap
import typing
from typing import Annotated, Any, Literal, Optional

import yaml

PATH = "path"  # marker: `Annotated[str, PATH]` is a file path, resolved against its origin
FilePath = Annotated[str, PATH]
NAMED_SOURCES = ("minilm",)  # values of path fields that name a packaged resource, not a file
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}


class ConfigError(ValueError):
    """A configuration problem; the message says where (file and line, or key path) and what to do.

    Example:
    >>> str(ConfigError("run.yaml, line 3: stages.task.epoch: unknown key"))
    'run.yaml, line 3: stages.task.epoch: unknown key'
    """


# ------------------------------------------------------------------------------- the sections


@dataclasses.dataclass
class TeacherConfig:
    """The teacher to distil from.

    Attributes:
        model: str. `minilm` (the packaged all-MiniLM-L6-v2 with a new classification head),
            a `.keras` file, or a SavedModel directory (logits-only distillation).
        fine_tune_epochs: int or None. Fine-tune the teacher on the training data first
            (AdamW, cached by data and settings). Default: 2 for `minilm`, 0 for files.
        fine_tune_learning_rate: float. Learning rate of that fine-tuning.
        num_classes: int or None. Classes of the `minilm` head (default: from the data).
        output_key: str or None. The SavedModel signature output that holds the logits.
        endpoint: str. The SavedModel signature to call.
        cache_dir: path or None. Where fine-tuned teachers are cached (default
            `$KDISTILL_CACHE_DIR/teachers` or `~/.cache/kdistill/teachers`).

    Example:
    >>> TeacherConfig().model
    'minilm'
    """

    model: FilePath = "minilm"
    fine_tune_epochs: Optional[int] = dataclasses.field(default=None, metadata={"min": 0})
    fine_tune_learning_rate: float = dataclasses.field(default=5e-5, metadata={"gt": 0})
    num_classes: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    output_key: Optional[str] = None
    endpoint: str = "serving_default"
    cache_dir: Optional[FilePath] = None


def _student_presets():
    from kdistill import students

    return sorted(students.PRESETS)


@dataclasses.dataclass
class StudentConfig:
    """The student: a preset size with overrides, and how it is initialised.

    Attributes:
        preset: str. A preset of `kdistill.students.PRESETS` (`tinybert_4`, `tinybert_6`,
            `bert_small`, `bert_mini`, `bert_tiny`, `test_tiny`); ignored by `from_teacher`.
        num_layers: int or None. Override of the preset's depth (with `from_teacher`: how
            many teacher layers to copy).
        hidden_dim: int or None. Override of the preset's width.
        num_heads: int or None. Override of the preset's attention heads.
        intermediate_dim: int or None. Override of the preset's feed-forward width.
        init: str. `random`, `svd` (token/position/segment tables from the teacher's by a
            truncated SVD), `from_teacher` (DistilBERT style: the teacher's width, copies of
            some of its layers) or `prune` (a structured slice of the fine-tuned teacher,
            Minitron style, `kdistill.pruning.prune_teacher`: its first `num_layers` layers, the
            `hidden_dim` most important channels, `hidden_dim / head size` heads and the
            `intermediate_dim` most important FFN units, measured on `calibration_examples`
            training examples; all three keys are required and `num_heads` follows).
        teacher_layers: list of int or None. `from_teacher`: the teacher layers to copy.
        layer_strategy: str. `from_teacher` without `teacher_layers`: `skip`, `first` or
            `last`.
        calibration_examples: int. `prune`: training examples the importance is measured on.
        vocabulary_min_count: int or None. Prune the student's vocabulary to the word pieces
            seen at least this often in the training and unlabelled text
            (`kdistill.vocabulary`): the student keeps reading the teacher's token ids, with a
            much smaller embedding table. None keeps the whole vocabulary. Not with
            `from_teacher`.
        dropout: float. Dropout of the student's backbone and head (`prune`: the teacher's).

    Example:
    >>> StudentConfig(num_layers=3).overrides()
    {'num_layers': 3}
    """

    preset: str = dataclasses.field(default="bert_tiny",
                                    metadata={"choices": _student_presets})
    num_layers: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    hidden_dim: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    num_heads: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    intermediate_dim: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    init: Literal["random", "svd", "from_teacher", "prune"] = "random"
    teacher_layers: Optional[list[int]] = None
    layer_strategy: Literal["skip", "first", "last"] = "skip"
    calibration_examples: int = dataclasses.field(default=512, metadata={"min": 1})
    vocabulary_min_count: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "lt": 1.0})

    def overrides(self):
        """The architectural overrides that are set, as `build_student` keyword arguments."""
        names = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclasses.dataclass
class DataConfig:
    """The data: the built-in Rotten Tomatoes snippets, or your CSV/TSV/JSONL files.

    Attributes:
        dataset: str or None. `rotten_tomatoes` (built in, offline), or None to use files.
        train: path or None. Labelled training file (CSV, TSV or JSONL).
        validation: path or None. Labelled validation file (per-epoch metrics).
        test: path or None. Labelled test file (final accuracy; default: the validation data).
        unlabelled: path or None. Text for general distillation (default: the training text).
        text_column: str. Column (JSON key) with the text.
        label_column: str. Column with the label.
        text_pair_column: str or None. Optional second text segment.
        label_names: list of str or None. Class names in index order.
        vocabulary: path or None. WordPiece `vocab.txt` of the teacher's tokenizer, or
            `minilm`. Default: the teacher's own (packaged MiniLM, or a preprocessor saved with
            the `.keras` teacher).
        lowercase: bool. Lower-case text before WordPiece (uncased vocabularies).
        sequence_length: int. Tokens per example.
        batch_size: int. Training batch size (global, over all replicas).
        eval_batch_size: int. Batch size of validation, test and teacher fine-tuning metrics.
        max_train_examples: int or None. Train the student on the first N training (and
            unlabelled) examples only; a fine-tuned teacher still learns from all of them.
        max_eval_examples: int or None. Use only the first N validation and test examples.
        trim_padding: bool. Cut all-padding columns of training batches (same results, faster).
        group_by_length: bool. Batch training examples of similar length together (within
            windows of 50 shuffled batches; the batches are shuffled again): less padding to
            compute, same examples per epoch, still restartable mid-epoch.
        augment_samples: int. TinyBERT data augmentation of the task stage: N word-replacement
            variants of each training example (`kdistill.data.Augmenter.for_teacher`), labelled
            by the teacher's soft targets (a replacement may flip the label, so give the task
            objectives `alpha: 0`). 0: off. Needs a keras-hub teacher.
        data_dir: path or None. TFDS directory of the built-in dataset (default
            `$KDISTILL_DATA_DIR` or `~/.cache/kdistill/tfds`).

    Example:
    >>> DataConfig().sequence_length, DataConfig().batch_size
    (64, 32)
    """

    dataset: Optional[Literal["rotten_tomatoes"]] = None
    train: Optional[FilePath] = None
    validation: Optional[FilePath] = None
    test: Optional[FilePath] = None
    unlabelled: Optional[FilePath] = None
    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: Optional[str] = None
    label_names: Optional[list[str]] = None
    vocabulary: Optional[FilePath] = None
    lowercase: bool = True
    sequence_length: int = dataclasses.field(default=64, metadata={"min": 2})
    batch_size: int = dataclasses.field(default=32, metadata={"min": 1})
    eval_batch_size: int = dataclasses.field(default=64, metadata={"min": 1})
    max_train_examples: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    max_eval_examples: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    trim_padding: bool = True
    group_by_length: bool = False
    augment_samples: int = dataclasses.field(default=0, metadata={"min": 0})
    data_dir: Optional[FilePath] = None


@dataclasses.dataclass
class ObjectiveSpec:
    """One entry of a stage's `objectives`: a preset or an objective class, with its arguments.

    In a config file: a preset name (`tinybert`), a mapping with `preset` and the preset's
    arguments (`{preset: logits_kd, temperature: 4.0}`), a mapping with `type` naming a class
    of `kdistill.objectives` and its arguments (`{type: HiddenStateKD, layer_map: skip}`), or a
    list of these (their objectives are combined).

    Attributes:
        kind: str. `"preset"` or `"type"`.
        name: str. The preset (`kdistill.objectives.PRESETS`) or class name.
        args: dict. Keyword arguments.

    Example:
    >>> ObjectiveSpec("preset", "logits_kd", {"temperature": 4.0}).to_raw()
    {'preset': 'logits_kd', 'temperature': 4.0}
    """

    kind: str
    name: str
    args: dict = dataclasses.field(default_factory=dict)

    def to_raw(self):
        """The config-file form (a mapping)."""
        return {self.kind: self.name, **self.args}

    def factory(self):
        """The preset function or objective class this entry names."""
        from kdistill import objectives

        return objectives.PRESETS[self.name] if self.kind == "preset" else objective_classes()[
            self.name]

    def build(self, layer_map=None):
        """Instantiates the objectives (a list); `layer_map` fills an unset `layer_map`."""
        fn = self.factory()
        args = dict(self.args)
        if layer_map is not None and "layer_map" not in args and (
                "layer_map" in inspect.signature(fn).parameters):
            args["layer_map"] = layer_map
        if "layer_map" in args and isinstance(args["layer_map"], list):
            args["layer_map"] = [tuple(p) for p in args["layer_map"]]
        result = fn(**args)
        return list(result) if isinstance(result, (list, tuple)) else [result]


Objectives = list[ObjectiveSpec]


def build_objectives(specs, layer_map=None):
    """Fresh objective instances for a stage's specs (see `ObjectiveSpec`).

    Args:
        specs: list of `ObjectiveSpec`.
        layer_map: str, list of pairs or None. Default for objectives taking a `layer_map`.

    Returns:
        list of `kdistill.objectives.Objective`.

    Example:
    >>> [type(o).__name__ for o in build_objectives([ObjectiveSpec("preset", "tinybert")])]
    ['LogitsKD', 'AttentionKD', 'HiddenStateKD', 'EmbeddingKD']
    """
    return [o for spec in specs for o in spec.build(layer_map)]


def objective_classes():
    """`{name: class}` of the public objective classes of `kdistill.objectives`.

    Example:
    >>> "LogitsKD" in objective_classes()
    True
    """
    from kdistill import objectives

    return {name: cls for name, cls in vars(objectives).items()
            if inspect.isclass(cls) and issubclass(cls, objectives.Objective)
            and cls is not objectives.Objective and not name.startswith("_")}


def _objectives(*entries):
    return lambda: [ObjectiveSpec("preset", name, dict(args)) for name, args in entries]


@dataclasses.dataclass
class StageConfig:
    """A training stage: how long, how fast.

    Attributes:
        epochs: int. Passes over the stage's data; 0 skips the stage.
        learning_rate: float. Peak learning rate.
        optimizer: str. `adamw`, `adam` or `sgd`.
        weight_decay: float. AdamW's decoupled weight decay (not on biases or LayerNorm).
        schedule: str. `cosine` (linear warm-up, cosine decay to 0) or `constant`.
        warmup: float. Fraction of the stage's steps spent warming up (`cosine`).
        clipnorm: float or None. Clip each gradient to this norm. Under a strategy with
            several replicas Keras clips each replica's share before they are summed, so the
            run no longer matches one device (see docs/results.md).
        restore_best: bool. Keep the student's weights of the stage's best epoch by validation
            accuracy (an epoch must beat the accuracy from before the stage, else the weights
            from before the stage are kept). Needs validation data and the `accuracy` metric.

    Example:
    >>> StageConfig().schedule, StageConfig().clipnorm
    ('cosine', None)
    """

    epochs: int = dataclasses.field(default=0, metadata={"min": 0})
    learning_rate: float = dataclasses.field(default=5e-5, metadata={"gt": 0})
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = dataclasses.field(default=0.01, metadata={"min": 0})
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: float = dataclasses.field(default=0.1, metadata={"min": 0, "lt": 1})
    clipnorm: Optional[float] = dataclasses.field(default=None, metadata={"gt": 0})
    restore_best: bool = False


@dataclasses.dataclass
class ScheduleConfig:
    """A value annealed over a stage (`kdistill.callbacks.KDScheduler`).

    Attributes:
        kind: str. `linear`, `cosine` or `exponential` (`kdistill.callbacks.LinearSchedule`,
            ...).
        start: float. The value at the stage's first epoch (or step).
        end: float. The value at its last epoch (or step).

    Example:
    >>> ScheduleConfig(kind="cosine", start=8.0, end=2.0).build()(0.5)
    5.0
    """

    kind: Literal["linear", "cosine", "exponential"] = "linear"
    start: float = 4.0
    end: float = 1.0

    def build(self):
        """The `kdistill.callbacks` schedule object."""
        from kdistill import callbacks

        cls = {"linear": callbacks.LinearSchedule, "cosine": callbacks.CosineSchedule,
               "exponential": callbacks.ExponentialSchedule}[self.kind]
        return cls(self.start, self.end)


@dataclasses.dataclass
class DistillStageConfig(StageConfig):
    """A distillation stage: a `StageConfig` plus the objectives.

    Attributes:
        objectives: preset name, `{preset: NAME, ...arguments}`, `{type: CLASS, ...arguments}`
            or a list of these. Presets: `logits_kd`, `tinybert`, `distilbert`, `minilm`,
            `pkd`; classes: `LogitsKD`, `HiddenStateKD`, `EmbeddingKD`, `AttentionKD`,
            `MiniLMKD`, `PKDHiddenKD`.
        temperature_schedule: ScheduleConfig or None. Anneal the temperature of the stage's
            (one) `LogitsKD` objective, e.g. `{kind: cosine, start: 8, end: 2}`.
        alpha_schedule: ScheduleConfig or None. Anneal its hard-label weight alpha likewise.
        schedule_update: str. Move the schedules once per `epoch` or once per `step`.
        cache_teacher: bool. Run the teacher once over the stage's data (and the validation
            data) and train every epoch from its logits, instead of a teacher forward at every
            step; the logits are kept next to the fine-tuned teacher (`teacher.cache_dir`) and
            reused by the next run with the same teacher and data. Logits-only objectives.

    Example:
    >>> [o.name for o in DistillStageConfig().objectives]
    ['logits_kd']
    """

    objectives: Objectives = dataclasses.field(default_factory=_objectives(("logits_kd", {})))
    temperature_schedule: Optional[ScheduleConfig] = None
    alpha_schedule: Optional[ScheduleConfig] = None
    schedule_update: Literal["epoch", "step"] = "epoch"
    cache_teacher: bool = False

    def scheduler(self, steps_per_epoch=1):
        """The stage's `KDScheduler`, or None without schedules.

        Args:
            steps_per_epoch: int. For `schedule_update: step` (the schedule spans the stage).

        Returns:
            A `kdistill.callbacks.KDScheduler` or None.
        """
        if self.temperature_schedule is None and self.alpha_schedule is None:
            return None
        from kdistill.callbacks import KDScheduler

        def built(schedule):
            return None if schedule is None else schedule.build()

        total = self.epochs * (steps_per_epoch if self.schedule_update == "step" else 1)
        return KDScheduler(temperature=built(self.temperature_schedule),
                           alpha=built(self.alpha_schedule), update=self.schedule_update,
                           total=max(total, 1))


@dataclasses.dataclass
class StagesConfig:
    """The three stages, run in this order (each skipped with `epochs: 0`).

    Attributes:
        general: DistillStageConfig. General distillation on unlabelled text (default
            objectives: TinyBERT's intermediate losses, `{preset: tinybert, prediction:
            false}`; 0 epochs, learning rate 1e-3).
        task: DistillStageConfig. Task distillation on the labelled training data (default
            objectives: Hinton KD, `logits_kd`; 3 epochs, learning rate 5e-4).
        finetune: StageConfig. The student alone on the labels (0 epochs, learning rate 5e-5).

    Example:
    >>> [name for name, _ in StagesConfig().items()]
    ['general', 'task', 'finetune']
    """

    general: DistillStageConfig = dataclasses.field(default_factory=lambda: DistillStageConfig(
        epochs=0, learning_rate=1e-3,
        objectives=_objectives(("tinybert", {"prediction": False}))()))
    task: DistillStageConfig = dataclasses.field(
        default_factory=lambda: DistillStageConfig(epochs=3, learning_rate=5e-4))
    finetune: StageConfig = dataclasses.field(
        default_factory=lambda: StageConfig(epochs=0, learning_rate=5e-5))

    def items(self):
        """`(name, stage)` in running order."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


def _export_formats():
    from kdistill.export import VALID_FORMATS

    return list(VALID_FORMATS)


@dataclasses.dataclass
class ExportConfig:
    """Export of the final student (`kdistill.export_student`) at the end of the run.

    Attributes:
        formats: list of str. Any of `saved_model`, `tflite_float32`, `tflite_float16`,
            `tflite_dynamic_int8`, `tflite_int8`; empty: no export (`kdistill export` later).
        num_calibration_examples: int. Calibration examples of `tflite_int8`.

    Example:
    >>> ExportConfig().formats
    []
    """

    formats: list[str] = dataclasses.field(default_factory=list,
                                           metadata={"choices": _export_formats})
    num_calibration_examples: int = dataclasses.field(default=100, metadata={"min": 1})


@dataclasses.dataclass
class TargetsConfig:
    """Goals the run checks at the end; the report and the summary say `ok` or `MISSED` for each.

    Attributes:
        relative_accuracy: float or None. Student test accuracy / teacher test accuracy.
        param_ratio: float or None. Teacher parameters / student parameters.
        speedup: float or None. Keras teacher batch-1 latency / the edge artifact's (the
            `tflite_dynamic_int8` export if there is one, else the Keras student).

    Example:
    >>> TargetsConfig(param_ratio=5).param_ratio
    5.0
    """

    relative_accuracy: Optional[float] = dataclasses.field(default=None, metadata={"gt": 0})
    param_ratio: Optional[float] = dataclasses.field(default=None, metadata={"gt": 0})
    speedup: Optional[float] = dataclasses.field(default=None, metadata={"gt": 0})

    def __post_init__(self):
        for name in ("relative_accuracy", "param_ratio", "speedup"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                setattr(self, name, float(value))


def _check_metric(name):
    import keras

    from kdistill import metrics

    resolved = metrics.get(name)
    if isinstance(resolved, str):
        try:
            keras.metrics.get(resolved)
        except ValueError:
            known = ["accuracy", "teacher_agreement", "teacher_kl", "ece"]
            raise ValueError(f"unknown metric {name!r}; e.g. {known} or any Keras metric name."
                             f"{_suggest(name, known)}") from None


LayerMapSpec = Optional[Any]  # validated by `kdistill.mapping.LayerMap` (see `_check_layer_map`)


@dataclasses.dataclass
class RunConfig:
    """A whole `kdistill distill` run.

    Attributes:
        teacher: TeacherConfig. What to distil from.
        student: StudentConfig. What to train.
        data: DataConfig. Where the examples come from and how they are tokenised.
        stages: StagesConfig. General distillation, task distillation, fine-tuning.
        layer_map: str, list of [student_layer, teacher_layer] pairs, or None. Default layer
            mapping of the objectives that take one: `uniform`, `skip`, `last`, `first`.
        strategy: str. `default` (one device), `mirrored` (all local devices) or
            `multi_worker` (the cluster in `TF_CONFIG`).
        output: path or None. The run directory (required here or as `--output`).
        seed: int. Seed of the student's initialisation, dropout and data order.
        save_every: int. Steps between backups of the training state (resumable runs).
        log_every: int. Steps between TensorBoard and history points.
        metrics: list of str. Metrics of the labelled stages (validation too): Keras names
            (`accuracy`) and kdistill's fidelity metrics (`teacher_agreement`, `teacher_kl`,
            `ece`); the teacher-based ones are left out of the student-only fine-tuning.
        jit_compile: `auto`, true or false. XLA compilation of the training steps (Keras'
            `compile(jit_compile=...)`; `auto` uses XLA where the model supports it). XLA
            compiles once per batch shape; small models and short runs start faster without.
        deterministic: bool. Deterministic TensorFlow ops (`enable_op_determinism`).
        latency_runs: int. Batch-1 timing runs of teacher and student at the end of the run.
        export: ExportConfig. Optional SavedModel/TFLite export of the student.
        targets: TargetsConfig. Goals checked in the report (none by default).

    Example:
    >>> RunConfig().strategy, RunConfig().stages.task.epochs
    ('default', 3)
    """

    teacher: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    stages: StagesConfig = dataclasses.field(default_factory=StagesConfig)
    layer_map: LayerMapSpec = None
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    output: Optional[FilePath] = None
    seed: int = 0
    save_every: int = dataclasses.field(default=100, metadata={"min": 1})
    log_every: int = dataclasses.field(default=10, metadata={"min": 1})
    metrics: list[str] = dataclasses.field(
        default_factory=lambda: ["accuracy", "teacher_agreement", "teacher_kl"],
        metadata={"check": _check_metric})
    jit_compile: Literal["auto", True, False] = "auto"
    deterministic: bool = False
    latency_runs: int = dataclasses.field(default=20, metadata={"min": 1})
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    targets: TargetsConfig = dataclasses.field(default_factory=TargetsConfig)

    def to_dict(self):
        """A plain, JSON-serialisable dict (the form `config_from_dict` reads back).

        Example:
        >>> RunConfig().to_dict()["stages"]["task"]["objectives"]
        [{'preset': 'logits_kd'}]
        """
        return _to_raw(self)


def _to_raw(value):
    if isinstance(value, ObjectiveSpec):
        return value.to_raw()
    if dataclasses.is_dataclass(value):
        return {f.name: _to_raw(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_raw(v) for v in value]
    return value


# ------------------------------------------------------------------------------- where things are


@dataclasses.dataclass(frozen=True)
class _Origin:
    source: str  # a file, or a command-line flag
    line: Optional[int]
    base_dir: str  # relative paths are resolved against this

    def __str__(self):
        return self.source if self.line is None else f"{self.source}, line {self.line}"


class _Context:
    """Where each key path came from, for error messages and path resolution."""

    def __init__(self, default):
        self.default = default
        self.origins = {}

    def origin(self, path):
        for n in range(len(path), -1, -1):
            if path[:n] in self.origins:
                return self.origins[path[:n]]
        return self.default

    def error(self, path, message):
        return ConfigError(f"{self.origin(path)}: {dotted(path) or '(top level)'}: {message}")


def dotted(path):
    """`("stages", "task", "objectives", 0)` -> `"stages.task.objectives[0]"`.

    Example:
    >>> dotted(("stages", "task", "objectives", 0, "temperature"))
    'stages.task.objectives[0].temperature'
    """
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _suggest(word, options):
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


# ------------------------------------------------------------------------------- reading files


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `5e-5` as a float (YAML 1.1 wants `5.0e-5`)."""


_YamlLoader.yaml_implicit_resolvers = {
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _yaml_lines(node, path, lines, source):
    """Records the line of every key and list item; rejects duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{source}, line {line}: {dotted(path + (key,))}: duplicate key "
                                  f"(first set on line {seen[key]}); keep one.")
            seen[key] = line
            lines[path + (key,)] = line
            _yaml_lines(value_node, path + (key,), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _yaml_lines(item, path + (i,), lines, source)


def _read_yaml(text, source):
    try:
        loader = _YamlLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}, line {mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: YAML syntax error: {e.problem or e}.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: YAML error: {e}") from None
    lines = {}
    if node is not None:
        _yaml_lines(node, (), lines, source)
    return data, lines


def _read_toml(text, source):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError(f"{source}: reading TOML needs Python 3.11+ (tomllib) or "
                              "`pip install tomli`; or write the config as YAML.") from None
    try:
        return tomllib.loads(text), {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: TOML syntax error: {e}.") from None


def _read_json(text, source):
    try:
        return json.loads(text), {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}, line {e.lineno}: JSON syntax error: {e.msg}.") from None


def read_config_file(path):
    """Reads a config file into `(raw_dict, {key_path: line})`; the format from its extension.

    Args:
        path: str. A `.yaml`/`.yml`, `.toml` or `.json` file.

    Returns:
        `(dict, dict)`. Line numbers are known for YAML only.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.yaml")
    >>> with open(path, "w") as f:
    ...     _ = f.write("seed: 1\\nstages:\\n  task:\\n    learning_rate: 5e-4\\n")
    >>> raw, lines = read_config_file(path)
    >>> raw["stages"]["task"]["learning_rate"], lines[("stages", "task", "learning_rate")]
    (0.0005, 4)
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: unknown config format {suffix or '(no extension)'!r}; use "
                          f"one of {sorted(SUFFIXES)} (YAML, TOML or JSON).")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    reader = {"yaml": _read_yaml, "toml": _read_toml, "json": _read_json}[SUFFIXES[suffix]]
    raw, lines = reader(text, path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (teacher, "
                          f"student, data, stages, ...), got a {type(raw).__name__}.")
    return raw, lines


# ------------------------------------------------------------------------------- overrides


def parse_set(text):
    """Parses one `--set KEY=VALUE`; the value is read as YAML (`3`, `5e-4`, `[0, 2]`, `null`).

    Args:
        text: str. `dotted.key=value`; list items by index (`stages.task.objectives.0.alpha=0.1`).

    Returns:
        `(key_path tuple, value)`.

    Example:
    >>> parse_set("stages.task.epochs=3")
    (('stages', 'task', 'epochs'), 3)
    >>> parse_set("student.teacher_layers=[0, 2]")
    (('student', 'teacher_layers'), [0, 2])
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: expected KEY=VALUE with a dotted key, e.g. "
                          "--set stages.task.epochs=3")
    try:
        parsed = yaml.load(value, Loader=_YamlLoader) if value.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text}: cannot read the value as YAML ({e}).") from None
    path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
    return path, parsed


def _apply_override(raw, path, value, label, ctx):
    node = raw
    for i, key in enumerate(path[:-1]):
        here = path[: i + 1]
        if isinstance(node, list):
            if not isinstance(key, int) or not 0 <= key < len(node):
                raise ConfigError(f"{label}: {dotted(here)}: no list item {key!r} (the list has "
                                  f"{len(node)} items).")
            node = node[key]
            continue
        if isinstance(key, int):
            raise ConfigError(f"{label}: {dotted(here)}: {dotted(path[:i])} is not a list.")
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, (dict, list)):
            raise ConfigError(f"{label}: {dotted(here)} is a {type(child).__name__}, not a "
                              "section; set it as a whole.")
        node = child
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or not 0 <= last < len(node):
            raise ConfigError(f"{label}: {dotted(path)}: no list item {last!r}.")
    elif isinstance(last, int):
        raise ConfigError(f"{label}: {dotted(path)}: {dotted(path[:-1])} is not a list.")
    node[last] = value
    origin = _Origin(label, None, os.getcwd())
    for known in [p for p in ctx.origins if p[: len(path)] == path]:
        del ctx.origins[known]
    ctx.origins[path] = origin


# ------------------------------------------------------------------------------- validation


def _type_name(tp):
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _got(value):
    return f"got {value!r} ({type(value).__name__})"


def _check_bounds(value, meta, path, ctx):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for key, ok, text in (("min", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("lt", lambda v, b: v < b, "<")):
        if key in meta and not ok(value, meta[key]):
            raise ctx.error(path, f"must be {text} {meta[key]}, got {value!r}.")


def _convert(tp, value, path, ctx, meta, default=None):
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        value = _convert(base, value, path, ctx, meta, default)
        if PATH in marks and isinstance(value, str):
            value = _resolve_path(value, ctx.origin(path))
        return value
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path, ctx, meta, default)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ctx.error(path, f"must be one of {list(choices)}, {_got(value)}."
                            f"{_suggest(value, choices)}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if item_type is ObjectiveSpec and isinstance(value, (str, dict)):
            return [_objective_spec(value, path, ctx)]  # one entry needs no list
        if not isinstance(value, list):
            raise ctx.error(path, f"expected a list, {_got(value)}.")
        return [_convert(item_type, v, path + (i,), ctx, meta) for i, v in enumerate(value)]
    if tp is ObjectiveSpec:
        return _objective_spec(value, path, ctx)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, ctx, default)
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.error(path, f"expected true or false, {_got(value)}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(path, f"expected an integer, {_got(value)}.")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.error(path, f"expected a number, {_got(value)}.")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ctx.error(path, f"expected a string, {_got(value)}.")
        if "choices" in meta:
            choices = meta["choices"]()
            if value not in choices:
                raise ctx.error(path, f"unknown value {value!r}; valid values: {choices}."
                                f"{_suggest(value, choices)}")
        if "check" in meta:
            try:
                meta["check"](value)
            except ValueError as e:
                raise ctx.error(path, str(e)) from None
    _check_bounds(value, meta, path, ctx)
    return value


def _resolve_path(value, origin):
    if value in NAMED_SOURCES or not value:
        return value
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(origin.base_dir,
                                                                             value))


def _build(cls, raw, path, ctx, default=None):
    """Builds dataclass `cls` from a mapping; unset fields keep `default`'s values."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ctx.error(path, f"expected a section (a mapping of keys), {_got(raw)}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ctx.error(path + (key,), f"unknown key.{_suggest(key, fields)} Valid keys "
                            f"here: {sorted(fields)}.")
    hints = typing.get_type_hints(cls, include_extras=True)
    if default is None:
        default = cls()
    values = {}
    for name, field in fields.items():
        here = path + (name,)
        if name in raw:
            values[name] = _convert(hints[name], raw[name], here, ctx, field.metadata,
                                    getattr(default, name))
        else:
            values[name] = getattr(default, name)
    if cls is RunConfig and values["layer_map"] is not None:
        values["layer_map"] = _check_layer_map(values["layer_map"], path + ("layer_map",), ctx)
    return cls(**values)


def _check_layer_map(value, path, ctx):
    from kdistill.mapping import LayerMap

    if isinstance(value, list):
        value = [list(p) if isinstance(p, (list, tuple)) else p for p in value]
    try:
        LayerMap(value)
    except ValueError as e:
        raise ctx.error(path, str(e)) from None
    return value


def _objective_spec(value, path, ctx):
    from kdistill import objectives

    if isinstance(value, ObjectiveSpec):
        return value
    if isinstance(value, str):
        value = {"preset": value}
    if not isinstance(value, dict):
        raise ctx.error(path, f"expected a preset name or a mapping with 'preset' or 'type', "
                        f"{_got(value)}.")
    kinds = [k for k in ("preset", "type") if k in value]
    if len(kinds) != 1:
        raise ctx.error(path, "give exactly one of 'preset' (e.g. preset: tinybert) or 'type' "
                        f"(e.g. type: LogitsKD); got keys {sorted(value)}.")
    kind = kinds[0]
    name = value[kind]
    known = objectives.PRESETS if kind == "preset" else objective_classes()
    if name not in known:
        raise ctx.error(path + (kind,), f"unknown {kind} {name!r}; valid: {sorted(known)}."
                        f"{_suggest(name, known)}")
    args = {k: v for k, v in value.items() if k != kind}
    spec = ObjectiveSpec(kind, name, args)
    parameters = {n: p for n, p in inspect.signature(spec.factory()).parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for key, arg in args.items():
        here = path + (key,)
        if key not in parameters:
            raise ctx.error(here, f"{name} takes no argument {key!r}."
                            f"{_suggest(key, parameters)} Its arguments: {sorted(parameters)}.")
        default = parameters[key].default
        for tp in (bool, int, float):
            if type(default) is tp and arg is not None:
                args[key] = _convert(float if tp is int and isinstance(arg, float) else tp,
                                     arg, here, ctx, {})
                break
        if key == "layer_map" and arg is not None:
            args[key] = _check_layer_map(arg, here, ctx)
    try:
        spec.build()
    except (ValueError, TypeError) as e:
        raise ctx.error(path, f"{name}: {e}") from None
    return spec


def _check_schedules(name, stage, ctx):
    from kdistill.objectives import LogitsKD

    for key in ("temperature_schedule", "alpha_schedule"):
        if getattr(stage, key) is None:
            continue
        path = ("stages", name, key)
        found = [o for o in build_objectives(stage.objectives) if isinstance(o, LogitsKD)]
        if len(found) != 1:
            raise ctx.error(path, f"a schedule needs exactly one LogitsKD objective in "
                            f"stages.{name}.objectives, found {len(found)}.")
        try:
            stage.scheduler()
        except ValueError as e:
            raise ctx.error(path, str(e)) from None


def _check_run(config, ctx, data_given=False):
    """Checks between fields; errors point at the key to change."""
    data, student, stages = config.data, config.student, config.stages
    if data.dataset is None and data.train is None and not data_given:
        raise ctx.error(("data",), "give the data: `dataset: rotten_tomatoes` (built in) or a "
                        "`train:` file (CSV, TSV or JSONL).")
    if data.dataset is not None:
        for key in ("train", "validation", "test", "unlabelled"):
            if getattr(data, key) is not None:
                raise ctx.error(("data", key), f"`dataset: {data.dataset}` brings its own "
                                "splits; remove this file or the `dataset` key.")
    if student.init == "from_teacher":
        for key in ("hidden_dim", "num_heads", "intermediate_dim"):
            if getattr(student, key) is not None:
                raise ctx.error(("student", key), "`init: from_teacher` keeps the teacher's "
                                "width, heads and feed-forward size; remove this key.")
        if student.num_layers is None and student.teacher_layers is None:
            raise ctx.error(("student", "init"), "`init: from_teacher` needs `num_layers` (how "
                            "many teacher layers to copy) or `teacher_layers`.")
    elif student.teacher_layers is not None:
        raise ctx.error(("student", "teacher_layers"), "only used with `init: from_teacher`.")
    if student.init == "prune":
        for key in ("num_layers", "hidden_dim", "intermediate_dim"):
            if getattr(student, key) is None:
                raise ctx.error(("student", key), "`init: prune` keeps this many of the "
                                "teacher's layers / channels / FFN units: set it.")
        if student.num_heads is not None:
            raise ctx.error(("student", "num_heads"), "`init: prune` keeps hidden_dim / head "
                            "size of the teacher's heads; remove this key.")
    if student.init == "from_teacher" and student.vocabulary_min_count is not None:
        raise ctx.error(("student", "vocabulary_min_count"), "`init: from_teacher` copies the "
                        "teacher's embedding table whole; remove this key or use `init: prune`.")
    for name, stage in stages.items():
        if getattr(stage, "cache_teacher", False) and stage.epochs:
            needed = sorted({tap for o in build_objectives(stage.objectives, config.layer_map)
                             for tap in o.teacher_taps} - {"logits"})
            if needed:
                raise ctx.error(("stages", name, "cache_teacher"), "the cache holds the "
                                f"teacher's logits only, but the objectives need {needed}; "
                                "use logits-only objectives or set cache_teacher: false.")
        if stage.restore_best and stage.epochs and data.dataset is None and (
                data.validation is None) and not data_given:
            raise ctx.error(("stages", name, "restore_best"), "selects the epoch by validation "
                            "accuracy: set data.validation (a labelled file).")
        if stage.restore_best and stage.epochs and "accuracy" not in config.metrics:
            raise ctx.error(("stages", name, "restore_best"), "selects the epoch by validation "
                            "accuracy: add `accuracy` to `metrics`.")
    if data.augment_samples and not stages.task.epochs:
        raise ctx.error(("data", "augment_samples"), "augments the task stage's data, but "
                        "stages.task.epochs is 0.")
    for name, stage in stages.items():
        if isinstance(stage, DistillStageConfig):
            _check_schedules(name, stage, ctx)
    if not any(stage.epochs for _, stage in stages.items()):
        raise ctx.error(("stages",), "every stage has 0 epochs, so there is nothing to train; "
                        "set e.g. stages.task.epochs.")
    if config.teacher.model not in NAMED_SOURCES and not os.path.exists(config.teacher.model):
        raise ctx.error(("teacher", "model"), f"no teacher at {config.teacher.model}: give a "
                        "`.keras` file, a SavedModel directory, or `minilm`.")
    for key in ("train", "validation", "test", "unlabelled", "vocabulary"):
        value = getattr(data, key)
        if value is not None and value not in NAMED_SOURCES and not os.path.isfile(value):
            raise ctx.error(("data", key), f"no such file: {value}.")
    if config.output is None:
        raise ctx.error(("output",), "set the run directory: `output:` in the config or "
                        "`--output DIR`.")


def _prepare(raw, source, lines, base_dir, overrides):
    """A private deep copy of `raw` (plain JSON types) with overrides applied, and its origins."""
    raw = json.loads(json.dumps(raw, default=str))
    base_dir = base_dir or os.getcwd()
    ctx = _Context(_Origin(source, None, base_dir))
    for path, line in (lines or {}).items():
        ctx.origins[path] = _Origin(source, line, base_dir)
    for path, value, label in overrides:
        _apply_override(raw, tuple(path), value, label, ctx)
    return raw, ctx


def config_from_dict(raw, source="<dict>", lines=None, base_dir=None, overrides=(),
                     data_given=False):
    """Validates a raw config mapping into a `RunConfig`.

    Args:
        raw: dict. As read from a config file.
        source: str. Named in error messages (the file).
        lines: dict or None. `{key_path: line}` for error messages (YAML).
        base_dir: str or None. Relative paths in `raw` are resolved against it (default: the
            current directory).
        overrides: iterable of `(key_path, value, label)`. Applied on top of `raw`; `label`
            (e.g. `"--set stages.task.epochs=3"`) names them in errors, and their relative
            paths are resolved against the current directory.
        data_given: bool. The caller hands the examples to `kdistill.runner.run` itself (the
            TFX module): no `data.dataset` or `data.train` is needed.

    Returns:
        A `RunConfig`.

    Raises:
        ConfigError: naming the key, where it was set, and what is expected.

    Example:
    >>> config = config_from_dict({"data": {"dataset": "rotten_tomatoes"}, "output": "/tmp/r",
    ...                            "stages": {"task": {"epochs": 1}}})
    >>> config.stages.task.epochs, config.stages.task.objectives[0].name
    (1, 'logits_kd')
    >>> config_from_dict({"stages": {"task": {"epoch": 1}}}, source="run.yaml",
    ...                  lines={("stages", "task", "epoch"): 7})
    Traceback (most recent call last):
    ...
    kdistill.config.ConfigError: run.yaml, line 7: stages.task.epoch: unknown key. Did you mean 'epochs'? ...
    """  # noqa: E501
    raw, ctx = _prepare(raw, source, lines, base_dir, overrides)
    config = _build(RunConfig, raw, (), ctx)
    _check_run(config, ctx, data_given)
    return config


def load_config(path, overrides=(), data_given=False):
    """Reads and validates a config file (YAML, TOML or JSON), with command-line overrides.

    Args:
        path: str. The config file.
        overrides: iterable of `(key_path, value, label)`, e.g. from `parse_set`.
        data_given: bool. See `config_from_dict`.

    Returns:
        A `RunConfig`.

    Raises:
        ConfigError: a syntax error, unknown key, wrong type, bad value or missing file.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.toml")
    >>> with open(path, "w") as f:
    ...     _ = f.write('output = "out"\\n[data]\\ndataset = "rotten_tomatoes"\\n')
    >>> load_config(path, [(("seed",), 3, "--seed")]).seed
    3
    >>> with open(path, "a") as f:
    ...     _ = f.write('[stages.task]\\nepochs = "two"\\n')
    >>> load_config(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kdistill.config.ConfigError: ...run.toml: stages.task.epochs: expected an integer, got 'two' (str).
    """  # noqa: E501
    raw, lines = read_config_file(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    return config_from_dict(raw, source=os.fspath(path), lines=lines, base_dir=base_dir,
                            overrides=overrides, data_given=data_given)


def load_data_config(path=None, overrides=()):
    """Reads only the `data` section of a config file (a run config or a run's `config.json`).

    Used by `kdistill evaluate/export/benchmark`: the tokenizer, columns and files of a run,
    without the checks that concern training.

    Args:
        path: str or None. A YAML, TOML or JSON config; None: the defaults plus `overrides`.
        overrides: iterable of `(key_path, value, label)`; key paths start with `"data"`.

    Returns:
        A `DataConfig`.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.yaml")
    >>> with open(path, "w") as f:
    ...     _ = f.write("data:\\n  dataset: rotten_tomatoes\\n  sequence_length: 32\\n")
    >>> load_data_config(path).sequence_length
    32
    """
    if path is None:
        raw, ctx = _prepare({}, "command line", None, None, overrides)
    else:
        raw, lines = read_config_file(path)
        raw, ctx = _prepare(raw, os.fspath(path), lines, os.path.dirname(os.path.abspath(path)),
                            overrides)
    return _build(DataConfig, raw.get("data") or {}, ("data",), ctx)


# ------------------------------------------------------------------------------- documentation


def _attribute_docs(cls):
    """`{field: description}` from the `Attributes:` section of a dataclass docstring."""
    docs, current = {}, None
    text = inspect.getdoc(cls) or ""
    in_section = False
    for line in text.splitlines():
        if line.strip() == "Attributes:":
            in_section = True
            continue
        if not in_section:
            continue
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif line.startswith("        ") and current:
            docs[current] += " " + line.strip()
        elif line.strip():
            break
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            docs = {**_attribute_docs(base), **docs}
    return docs


def _default_text(value):
    if isinstance(value, list) and value and isinstance(value[0], ObjectiveSpec):
        return json.dumps([v.to_raw() for v in value])
    return json.dumps(value)


def describe(cls=RunConfig, prefix="", default=None):
    """Every config key with its default and meaning, as text (used by `kdistill distill --help`).

    Args:
        cls: dataclass. The section to describe (default: the whole `RunConfig`).
        prefix: str. Dotted prefix of the keys.
        default: instance or None. Defaults to show (default: `cls()`).

    Returns:
        str.

    Example:
    >>> print(describe().splitlines()[0])
    teacher.model = "minilm"
    """
    default = default if default is not None else cls()
    docs = _attribute_docs(cls)
    hints = typing.get_type_hints(cls)
    lines = []
    for field in dataclasses.fields(cls):
        value = getattr(default, field.name)
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            lines.append(describe(type(value), key + ".", value))
            continue
        lines.append(f"{key} = {_default_text(value)}")
        lines += textwrap.wrap(docs.get(field.name, ""), width=96, initial_indent="    ",
                               subsequent_indent="    ")
        optional = [a for a in typing.get_args(hints[field.name]) if dataclasses.is_dataclass(a)]
        if value is None and optional:  # an optional section: show its keys when it is set
            lines.append(describe(optional[0], key + ".", None))
    return "\n".join(lines)


def describe_markdown():
    """The config reference as Markdown (docs/config.md is this, regenerated by `make docs`).

    Example:
    >>> describe_markdown().splitlines()[0]
    '# Config reference'
    """
    lines = ["# Config reference", "",
             "<!-- Generated by `make docs` (python -m kdistill.config --markdown) from the "
             "docstrings of kdistill/config.py; tests/test_config.py checks it is current. -->",
             "",
             "Every key of a `kdistill distill` config file (YAML, TOML or JSON), with its "
             "default. Set a key in the file or on the command line with `--set KEY=VALUE`; "
             "`kdistill demo --print-config` shows a complete example (the demo's own config).",
             ""]
    section = None
    for line in describe().splitlines():
        if not line.startswith(" "):
            key, _, default = line.partition(" = ")
            top = key.split(".")[0] if "." in key else "(top level)"
            if top != section:
                section = top
                lines += ["", f"## {section}", ""]
            lines.append(f"- **`{key}`** = `{default}`")
        else:
            lines[-1] += " " + line.strip() if lines[-1].startswith("- **") and (
                " — " in lines[-1]) else " — " + line.strip()
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(describe_markdown() if "--markdown" in sys.argv else describe(), end="")
