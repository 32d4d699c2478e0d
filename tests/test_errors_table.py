"""docs/errors.md is current: its table is `tests/bad_inputs.py`'s, and each case's test exists and
asserts the message the table quotes.

A message that changes in a test (because kdistill says something else) no longer matches the
registry, and a registry that changes no longer matches the docs: both fail here until
`make docs` is run and the registry is fixed.
"""

import ast
import dataclasses
import os
import re

import pytest

from tests import bad_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "errors.md")
_MODULES = {}


def _module(file):
    if file not in _MODULES:
        with open(os.path.join(ROOT, "tests", file), encoding="utf-8") as f:
            _MODULES[file] = ast.parse(f.read())
    return _MODULES[file]


def _strings(node):
    """The string constants in `node` (f-strings: their literal parts), regex escapes undone."""
    found = []
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            found.append(child.value)
    return found + [re.sub(r"\\(.)", r"\1", s) for s in found]


def _test_strings(test):
    """The strings of a test function (with its decorators) and of the module constants it uses."""
    file, name = test.split("::")
    module = _module(file)
    function = next((n for n in module.body if isinstance(n, ast.FunctionDef)
                     and n.name == name), None)
    if function is None:
        return None
    used = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}
    constants = [n for n in module.body if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id in used for t in n.targets)]
    return _strings(function) + [s for node in constants for s in _strings(node)]


def test_the_docs_table_is_current():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    assert bad_inputs.rewrite(text) == text, (
        "docs/errors.md is out of date with tests/bad_inputs.py: run `make docs`.")


def _missing(case):
    """The pieces of `case.says` its test does not assert (None: no such test)."""
    strings = _test_strings(case.test)
    if strings is None:
        return None
    if case.result:
        return []  # a valid input: `says` is the result the test checks, in words
    pieces = [p.strip(" .") for p in case.says.removeprefix("warning: ").split("…")]
    pieces = [p for p in pieces if not (p.startswith("(") and p.endswith(")"))]  # comments
    return [p for p in pieces if p and not any(p in s for s in strings)]


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=lambda c: c.test.split("::")[1])
def test_each_case_is_fed_by_a_test_that_asserts_its_message(case):
    missing = _missing(case)
    assert missing is not None, f"{case.test} does not exist"
    assert not missing, f"{case.test} asserts none of {missing}: update tests/bad_inputs.py"


def test_the_check_fails_on_a_message_no_test_asserts():
    case = bad_inputs.CASES[1]
    assert _missing(dataclasses.replace(case, says=case.says + " … a message never given")) == [
        "a message never given"]
    assert _missing(dataclasses.replace(case, test=case.test + "_gone")) is None
    stale = f"intro\n{bad_inputs.BEGIN}\n| an old row |\n{bad_inputs.END}\nafter\n"
    assert bad_inputs.rewrite(stale) == (f"intro\n{bad_inputs.BEGIN}\n\n{bad_inputs.markdown()}"
                                         f"\n\n{bad_inputs.END}\nafter\n")
