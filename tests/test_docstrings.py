"""The `Example:` blocks of public docstrings run and print what they say, in every module.

The modules are discovered (`kdistill.testing.package_modules`), not listed, so a new module
cannot slip past. A module is skipped only when it needs an optional extra that is not installed
(`kdistill.beam` without `apache_beam`), or when it has no example and nothing public to show.
"""

import doctest
import inspect

import pytest

from kdistill import testing

MODULES = {name: (module, reason) for name, module, reason in testing.package_modules()}


def _public_definitions(module):
    """Public functions and classes defined in (not imported into) the module."""
    return sorted(name for name, value in vars(module).items()
                  if not name.startswith("_")
                  and (inspect.isfunction(value) or inspect.isclass(value))
                  and value.__module__ == module.__name__)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples(name):
    module, reason = MODULES[name]
    if module is None:
        pytest.skip(reason)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    if result.attempted == 0:
        public = _public_definitions(module)
        if not public:
            pytest.skip(f"{name} defines no public function or class")
        pytest.fail(f"{name} has no runnable example, but defines the public {public}")
    assert result.failed == 0
