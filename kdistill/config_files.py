"""Reading config files: YAML (with the line of every key), TOML and JSON; `--set` overrides.

`read_config_file` returns the raw mapping and `{key path: line}` (YAML), so that every error
about a key can name the file and the line; `ConfigError` is the error every config problem
raises. `kdistill.config` turns the raw mapping into the typed `RunConfig`.
"""

import difflib
import json
import os
import re

import yaml

SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}


class ConfigError(ValueError):
    """A configuration problem; the message says where (file and line, or key path) and what to do.

    Example:
    >>> str(ConfigError("run.yaml, line 3: stages.task.epoch: unknown key"))
    'run.yaml, line 3: stages.task.epoch: unknown key'
    """


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


def suggest(word, options):
    """` Did you mean 'x'?` for the closest of `options` to `word`, or "" when none is close.

    Example:
    >>> suggest("epoch", ["epochs", "seed"])
    " Did you mean 'epochs'?"
    """
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def got(value):
    """`got VALUE (TYPE)`: what a config gave, for the end of an error message.

    Example:
    >>> got("two")
    "got 'two' (str)"
    """
    return f"got {value!r} ({type(value).__name__})"


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
