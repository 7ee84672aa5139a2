# v2pe: set-up is `make install` then `make test`. Everything runs from the project's own .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines pin the CPU build of torch first, so no multi-GB CUDA build is pulled in.
# On a GPU machine: make install TORCH_SPEC="torch" EXTRAS="dev,gpu"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
PYTEST_ARGS ?=
MODEL ?=
DATA ?=
GPUS ?= 1
OUT ?= runs

.PHONY: install test test-slow test-gpu bench smoke train-tiny train-32k train-256k clean tokenizer

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"

test:
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow:
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-gpu:
	$(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

bench:
	$(PY) bench/bench_build.py
	$(PY) bench/bench_positions.py

tokenizer:
	$(PY) scripts/make_tokenizer.py

clean:
	rm -rf out/ runs/ build/ dist/ *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
