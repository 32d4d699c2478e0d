"""Pydantic's validation errors as kdistill's config messages: the key path and what to write.

`kdistill.config` validates a raw config with pydantic (`pydantic.TypeAdapter(RunConfig)`).
Each error pydantic reports (an item of `ValidationError.errors()`: its `type`, the key path
`loc`, the `input`) becomes `(key path, text)` here, with the closest valid name for a misspelt
key or value; `kdistill.config` puts the file and line of the key path in front.
"""

import dataclasses
import types
import typing

from kdistill.config_files import got, suggest

CUSTOM = "kdistill"  # error type of kdistill's own validators; ctx: `reason`, `path` (below loc)

_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "list_type": "a list",
             "dataclass_type": "a section (a mapping of keys)", "dict_type": "a mapping"}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}
_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")


def error_text(error, root=None):
    """`(key path, message)` of one pydantic error, in kdistill's words.

    Args:
        error: dict. An item of `pydantic.ValidationError.errors()`.
        root: dataclass or None. The class validated: names the valid keys of an unknown key's
            section and the choices of a `Literal`.

    Returns:
        `(tuple, str)`.

    Example:
    >>> error_text({"type": "int_type", "loc": ("stages", "task", "epochs"), "input": "two",
    ...             "msg": "Input should be a valid integer"})
    (('stages', 'task', 'epochs'), "expected an integer, got 'two' (str).")
    """
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    ctx = error.get("ctx") or {}
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, {got(value)}."
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return loc, f"must be {sign} {ctx[key]:g}, got {value!r}."
    if kind in _UNKNOWN_KEY:
        section = _type_at(root, loc[:-1])
        keys = [f.name for f in dataclasses.fields(section)] if dataclasses.is_dataclass(
            section) else []
        return loc, f"unknown key.{suggest(loc[-1], keys)} Valid keys here: {sorted(keys)}."
    if kind == "literal_error":
        choices = list(typing.get_args(_type_at(root, loc)))
        return loc, f"must be one of {choices}, {got(value)}.{suggest(value, choices)}"
    if kind == "value_error":
        return loc, str(ctx["error"])
    if kind == CUSTOM:
        return loc + tuple(ctx.get("path", ())), ctx["reason"]
    return loc, f"{error['msg']}, {got(value)}."


def _type_at(root, loc):
    """The type of the key at `loc` below dataclass `root` (Annotated and Optional removed)."""
    tp = root
    for key in loc:
        tp = _bare(tp)
        if isinstance(key, int) and typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        elif isinstance(key, str) and dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp, include_extras=True).get(key)
        else:
            return None
    return _bare(tp)


def _bare(tp):
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp
