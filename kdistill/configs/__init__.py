"""Run configs packaged with kdistill: the demo (`demo.yaml`) and its variants.

`kdistill demo` is `kdistill distill` on one of these files; nothing else about the demo is
special. `with_overrides` writes command-line settings into a config's text, so that
`kdistill demo --print-config` prints exactly the config the demo runs.

Example:
>>> sorted(names())
['demo', 'demo_augment', 'demo_quick']
"""

import json
import os
import re

_DIR = os.path.dirname(os.path.abspath(__file__))


def names():
    """The packaged configs' names (file names without `.yaml`).

    Example:
    >>> "demo" in names()
    True
    """
    return sorted(f[:-5] for f in os.listdir(_DIR) if f.endswith(".yaml"))


def path(name):
    """The path of the packaged config `name` (e.g. `"demo"`).

    Raises:
        ValueError: no such packaged config.

    Example:
    >>> os.path.basename(path("demo_quick"))
    'demo_quick.yaml'
    """
    if name not in names():
        raise ValueError(f"No packaged config {name!r}; packaged: {names()}.")
    return os.path.join(_DIR, f"{name}.yaml")


def text(name):
    """The packaged config's YAML text.

    Example:
    >>> text("demo").startswith("#")
    True
    """
    with open(path(name), encoding="utf-8") as f:
        return f.read()


def with_overrides(yaml_text, overrides):
    """The YAML text with each `(key_path, value)` set, keeping every comment and other line.

    A key that is already set has its line replaced (with its nested block, if any); a missing
    key is added at the end of its section, missing sections with it. Values are written as
    JSON, which YAML reads back unchanged. The text must be block-style YAML indented by two
    spaces per level, as the packaged configs are.

    Args:
        yaml_text: str.
        overrides: iterable of `(key_path tuple, value)`.

    Returns:
        str.

    Example:
    >>> print(with_overrides("a:\\n  b: 1  # note\\nc: 2\\n", [(("a", "b"), 3), (("d",), "x"),
    ...                                                       (("a", "e"), [1])]))
    a:
      b: 3
      e: [1]
    c: 2
    d: "x"
    <BLANKLINE>
    """
    lines = yaml_text.splitlines()
    for key_path, value in overrides:
        lines = _set(lines, tuple(key_path), json.dumps(value))
    return "\n".join(lines) + "\n"


def _block_end(lines, start, indent):
    """One past the last line of the block opened at `start` (lines deeper than `indent`)."""
    end = start + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and not line.lstrip().startswith("#") and (
                len(line) - len(line.lstrip()) <= indent):
            break
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _set(lines, key_path, value):
    begin, end, depth = 0, len(lines), 0
    for i, key in enumerate(key_path):
        indent = "  " * depth
        pattern = re.compile(rf"^{indent}{re.escape(key)}:(\s|$)")
        found = next((j for j in range(begin, end) if pattern.match(lines[j])), None)
        last = i == len(key_path) - 1
        if found is None:
            new = [f"{indent}{key}: {value}"] if last else [f"{indent}{key}:"]
            lines = lines[:end] + new + lines[end:]
            found = end
            if last:
                return lines
        block = _block_end(lines, found, len(indent))
        if last:
            return lines[:found] + [f"{indent}{key}: {value}"] + lines[block:]
        begin, end, depth = found + 1, block, depth + 1
    return lines
