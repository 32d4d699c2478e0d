"""The `Example:` blocks of public docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "kdistill.losses",
    "kdistill.mapping",
    "kdistill.objectives",
    "kdistill.taps",
    "kdistill.distiller",
    "kdistill.testing",
    "kdistill.data.augment",
    "kdistill.data.teacher_cache",
    "kdistill.metrics",
    "kdistill.multi_teacher",
    "kdistill.callbacks",
    "kdistill.saved_model_teacher",
    "kdistill.tfx",
    "kdistill.vocabulary",
    "kdistill.demo",
    "kdistill.students",
    "kdistill.pruning",
    "kdistill.cli",
    "kdistill.config",
    "kdistill.plots",
    "kdistill.runner",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
