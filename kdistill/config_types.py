"""The types of a config's keys: strict scalars, counts, file paths, names looked up at
validation time, and kdistill's own validation error.

`kdistill.config_sections` types every key of a run config with these (as `Annotated` types
whose metadata pydantic applies and turns into JSON Schema): `Int`, `Float`, `Bool` and `Str`
are strict (no `"3"` for an integer, no `1.5` or `true` either), `Count` and `Positive` are
bounded integers, `FilePath` marks a path resolved against the config file's folder,
`Choice(names)` is one of a list looked up when validating, and `AugmentSamples` is a count
or `fill`.
"""

from typing import Annotated, Any

import pydantic
from annotated_types import Ge
from pydantic_core import PydanticCustomError, core_schema

from kdistill.config_errors import CUSTOM
from kdistill.config_files import got, suggest

PATH = "path"  # marker: `Annotated[str, PATH]` is a file path, resolved against its origin
Int = Annotated[int, pydantic.Strict()]  # not true/false, "3" or 1.5
Float = Annotated[float, pydantic.Strict()]  # an integer too, not "0.5"
Bool = Annotated[bool, pydantic.Strict()]
Str = Annotated[str, pydantic.Strict()]
Count = Annotated[Int, Ge(0)]
Positive = Annotated[Int, Ge(1)]
FilePath = Annotated[Str, PATH]
SECTION = pydantic.ConfigDict(extra="forbid")  # `__pydantic_config__` of every section


def _augment_samples(value):
    if value == "fill" or (type(value) is int and value >= 0):
        return value
    raise ValueError(f"must be a count of variants (0: off) or `fill`, {got(value)}.")


AugmentSamples = Annotated[Any, pydantic.PlainValidator(_augment_samples), pydantic.WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"const": "fill"}]})]


class Choice:
    """`Annotated[Str, Choice(names)]`: one of `names()`, a callable (looked up when validating).

    Example:
    >>> pydantic.TypeAdapter(Annotated[Str, Choice(lambda: ["adam", "sgd"])]).validate_python("sgd")
    'sgd'
    """

    def __init__(self, names):
        self.names = names

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema, handler):
        return {**handler(schema), "enum": list(self.names())}

    def check(self, value):
        """`value` if it is a valid name, else a ValueError naming the closest."""
        names = self.names()
        if value not in names:
            raise ValueError(f"unknown value {value!r}; valid values: {names}."
                             f"{suggest(value, names)}")
        return value


def custom_error(reason, path=()):
    """A pydantic error of kdistill's own: `reason` about the key `path` below the value's
    (raised by a validator; `kdistill.config_errors.error_text` words it).

    Example:
    >>> custom_error("expected a list", ("layers",)).context["path"]
    ('layers',)
    """
    return PydanticCustomError(CUSTOM, "{reason}", {"reason": reason, "path": tuple(path)})
