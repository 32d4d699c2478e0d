"""Run configuration of `kdistill distill`: typed sections loaded from YAML, TOML or JSON.

A config file describes one distillation run: the teacher, the student, the data, the training
stages with their objectives, the distribution strategy and the output directory. It is loaded
into typed dataclasses (`RunConfig` and its sections, `kdistill.config_sections`) and validated
by pydantic (`pydantic.TypeAdapter(RunConfig)`), then across fields here: an unknown key, a
value of the wrong type or out of range, or an unknown preset/objective is a `ConfigError` that
names the key, the file and line (YAML; TOML and JSON give the key path) and, for a misspelt
name, the closest valid one (`kdistill.config_errors`); every mistake pydantic finds is a line
of it. Every field can also be set from the command line (`--set stages.task.epochs=3`).
`json_schema()` is the JSON Schema of a config file (`kdistill config-schema`), for editors.

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
import functools
import inspect
import json
import os
import re
import sys
import textwrap
import typing
from typing import Annotated, Optional

import pydantic

from kdistill.config_errors import error_text
from kdistill.config_files import (
    SUFFIXES,
    ConfigError,
    dotted,
    parse_set,
    read_config_file,
)
from kdistill.config_sections import (
    NAMED_SOURCES,
    DataConfig,
    DistillStageConfig,
    ExportConfig,
    ObjectiveSpec,
    RunConfig,
    ScheduleConfig,
    StageConfig,
    StagesConfig,
    StudentConfig,
    TargetsConfig,
    TeacherConfig,
    build_objectives,
    objective_classes,
)
from kdistill.config_types import PATH

__all__ = [
    "ConfigError", "DataConfig", "DistillStageConfig", "ExportConfig", "ObjectiveSpec",
    "RunConfig", "SUFFIXES", "ScheduleConfig", "StageConfig", "StagesConfig", "StudentConfig",
    "TargetsConfig", "TeacherConfig", "build_objectives", "config_from_dict", "describe",
    "describe_markdown", "dotted", "json_schema", "load_config", "load_data_config",
    "objective_classes", "parse_set", "read_config_file",
]


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
            ctx.origins[here] = _Origin(label, None, os.getcwd())  # a section the flag made
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


@functools.cache
def _adapter(cls):
    return pydantic.TypeAdapter(cls)


def _validate(cls, raw, path, ctx):
    """`cls` validated from `raw` by pydantic: every error as a line naming the key and where."""
    try:
        section = _adapter(cls).validate_python(raw)
    except pydantic.ValidationError as e:
        problems = [error_text(error, cls) for error in e.errors()]
        problems.sort(key=lambda p: ctx.origin(path + p[0]).line or 0)  # in file order
        raise ConfigError("\n".join(str(ctx.error(path + loc, text))
                                     for loc, text in problems)) from None
    _resolve_paths(section, path, ctx)
    return section


def _resolve_paths(section, path, ctx):
    """Resolves the file-path keys of `section` against where each was set."""
    hints = typing.get_type_hints(type(section), include_extras=True)
    for field in dataclasses.fields(section):
        value, here = getattr(section, field.name), path + (field.name,)
        if dataclasses.is_dataclass(value) and not isinstance(value, ObjectiveSpec):
            _resolve_paths(value, here, ctx)
        elif isinstance(value, str) and _is_path(hints[field.name]):
            setattr(section, field.name, _resolve_path(value, ctx.origin(here)))


def _is_path(tp):
    if typing.get_origin(tp) is Annotated:
        return PATH in tp.__metadata__
    return any(_is_path(a) for a in typing.get_args(tp))


def _resolve_path(value, origin):
    if value in NAMED_SOURCES or not value:
        return value
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(origin.base_dir,
                                                                             value))


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
            if getattr(data, key) not in (None, "movie_reviews"):
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
    if data.transfer_examples != 0 and data.dataset is None and data.unlabelled is None and (
            not data_given):
        raise ctx.error(("data", "transfer_examples"), "adds unlabelled text to the task "
                        "stage: set data.unlabelled (a file of texts).")
    if data.transfer_examples != 0 and not stages.task.epochs:
        raise ctx.error(("data", "transfer_examples"), "adds to the task stage's data, but "
                        "stages.task.epochs is 0.")
    if data.augment_samples and not stages.task.epochs:
        raise ctx.error(("data", "augment_samples"), "augments the task stage's data, but "
                        "stages.task.epochs is 0.")
    for name, stage in stages.items():
        if isinstance(stage, DistillStageConfig):
            _check_schedules(name, stage, ctx)
    if config.targets.gain_over_labels_only is not None and not config.labels_only:
        raise ctx.error(("targets", "gain_over_labels_only"), "compares with the same student "
                        "trained on labels alone: set `labels_only: true` (or remove the target).")
    if config.labels_only and not any(stage.epochs for name, stage in stages.items()
                                      if name != "general"):
        raise ctx.error(("labels_only",), "trains the labelled stages (task, finetune) on the "
                        "labels alone, but both have 0 epochs.")
    if not any(stage.epochs for _, stage in stages.items()):
        raise ctx.error(("stages",), "every stage has 0 epochs, so there is nothing to train; "
                        "set e.g. stages.task.epochs.")
    for path, value, name in ((("teacher", "model"), config.teacher.model, "minilm"),
                              (("data", "vocabulary"), data.vocabulary, "minilm"),
                              (("data", "unlabelled"), data.unlabelled, "movie_reviews")):
        if value in NAMED_SOURCES and value != name:
            raise ctx.error(path, f"`{value}` is not a packaged resource for this key (only "
                            f"`{name}` is); give a file.")
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
    kdistill.config_files.ConfigError: run.yaml, line 7: stages.task.epoch: unknown key. Did you mean 'epochs'? ...
    """  # noqa: E501
    raw, ctx = _prepare(raw, source, lines, base_dir, overrides)
    config = _validate(RunConfig, raw, (), ctx)
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
    kdistill.config_files.ConfigError: ...run.toml: stages.task.epochs: expected an integer, got 'two' (str).
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
    return _validate(DataConfig, raw.get("data") or {}, ("data",), ctx)


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
             "",
             "Editors can complete and check config files: `kdistill config-schema > "
             "kdistill-config.schema.json` writes the JSON Schema of a run config (every key "
             "below, with its type, bounds, choices and description), and a first line "
             "`# yaml-language-server: $schema=kdistill-config.schema.json` in a YAML file "
             "points the YAML language server (VS Code's YAML extension, Neovim, Emacs, ...) "
             "at it.",
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


def json_schema():
    """The JSON Schema of a run config file, from pydantic, with each key's description.

    `kdistill config-schema` prints it (docs/config.md says how an editor uses it).

    Example:
    >>> schema = json_schema()
    >>> schema["properties"]["stages"]["$ref"], schema["additionalProperties"]
    ('#/$defs/StagesConfig', False)
    >>> schema["$defs"]["StageConfig"]["properties"]["epochs"]["minimum"]
    0
    """
    schema = _adapter(RunConfig).json_schema()
    sections = {cls.__name__: cls for cls in (
        RunConfig, TeacherConfig, StudentConfig, DataConfig, StagesConfig, StageConfig,
        DistillStageConfig, ScheduleConfig, ExportConfig, TargetsConfig)}
    for name, node in [("RunConfig", schema), *schema["$defs"].items()]:
        docs = _attribute_docs(sections[name])
        node["description"] = inspect.getdoc(sections[name]).split("\n\n")[0]
        for key, value in node["properties"].items():
            value["description"] = docs[key]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **schema, "title": "kdistill run config"}


if __name__ == "__main__":  # pragma: no cover
    print(describe_markdown() if "--markdown" in sys.argv else describe(), end="")
