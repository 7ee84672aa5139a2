# v2pe: set-up is `make install` then `make test`. Everything runs from the project's own .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines pin the CPU build of torch first, so no multi-GB CUDA build is pulled in.
# On a GPU machine: make install TORCH_SPEC="torch" EXTRAS="dev,gpu"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
# Every package at the version of the lock (regenerate with `bash scripts/lock.sh`), so every machine and CI
# install the same: the golden-bytes test depends on them. CONSTRAINTS= installs the newest releases instead.
CONSTRAINTS ?= constraints.txt
PYTEST_ARGS ?=
# make test runs the suite in this many pytest-xdist workers, each test file whole in one (its module
# fixtures built once); 2 fits the 2-core CI machine (~12 min against ~15 in one process). 0: one process.
TEST_WORKERS ?= 2
MODEL ?=
DATA ?=
GPUS ?= 1
OUT ?= runs

.PHONY: install test test-slow test-gpu gpu-check bench smoke train-tiny train-32k train-256k clean tokenizer experiment-v2pe ladder

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]" $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

test:
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow:
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-gpu:
	$(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

# On an H100/H200, inside one budget (GPU_BUDGET_S seconds, install included; default 470): install, then by
# value kernels, 2B tokens/s/GPU and MFU at 32K, the 128K one-GPU fit, ring throughput, test-gpu. Resumable: with
# the last report at $OUT/gpu_check.json or bench/gpu_check.json, only stages not yet ok run (bench/RESULTS.md).
GPU_BUDGET_S ?=
GPU_CHECK_ARGS ?=
gpu-check:
	$(if $(GPU_BUDGET_S),GPU_BUDGET_S=$(GPU_BUDGET_S)) bash bench/gpu_check.sh $(GPU_CHECK_ARGS)

bench:
	$(PY) bench/bench_build.py
	$(PY) bench/bench_positions.py
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_ring_memory.py
	$(PY) bench/bench_long_mr.py --len 128k

tokenizer:
	$(PY) scripts/make_tokenizer.py

clean:
	rm -rf out/ runs/ build/ dist/ *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

# --- experiments -------------------------------------------------------------------------------
# Small delta (v2pe_rnd) against delta = 1 beyond the training length (docs/experiments/v2pe_delta.md).
# SCALE=cpu on 2 cores; SCALE=gpu on one lent GPU (experiments/v2pe_delta/device.sh runs it within a loan);
# DRY_RUN=1: every stage of the scale at toy size on the CPU. Resumable.
SCALE ?= cpu
DRY_RUN ?=
experiment-v2pe:
	$(PY) -m experiments.v2pe_delta run --scale $(SCALE) --out $(OUT)/v2pe_delta_$(SCALE)$(if $(DRY_RUN),_dry --dry-run)

# The learning ladder (docs/experiments/learning.md): RUNG=a (~2 min on 2 cores, also in make test) ... d; SEEDS=0,1.
RUNG ?= a
SEEDS ?=
ladder:
	$(PY) -m experiments.ladder run --rung $(RUNG) --out $(OUT)/ladder $(if $(SEEDS),--seeds $(SEEDS))

# --- training ----------------------------------------------------------------------------------
TINY_DATA ?= out/tiny_8k
# TINY_SAMPLES and TINY_ARGS (any SECTION.KEY=VALUE) scale it down: the README test runs
# `make train-tiny TINY_SAMPLES=8 TINY_ARGS='optim.max_steps=2'`.
TINY_SAMPLES ?= 32
TINY_ARGS ?=

train-tiny:
	$(VENV)/bin/v2pe-data build long_vqa --len 8k --min-len 2k --num-samples $(TINY_SAMPLES) --shard-size 8 --out $(TINY_DATA) --quiet
	$(VENV)/bin/v2pe-train train --recipe recipes/tiny.yaml --data $(TINY_DATA) --out $(OUT)/tiny --overwrite $(TINY_ARGS)

smoke: train-tiny

train-32k:
	@test -n "$(MODEL)" || { echo "error: train-32k needs MODEL=<native InternVL checkpoint folder> (convert remote-code ones with 'v2pe-train convert'); on a CPU machine try 'make train-tiny'" >&2; exit 2; }
	@test -n "$(DATA)" || { echo "error: train-32k needs DATA=<v2pe-data build folder>, e.g. from 'v2pe-data build --recipe recipes/long_vqa_32k.yaml'; or try 'make train-tiny'" >&2; exit 2; }
	$(VENV)/bin/v2pe-train train --recipe recipes/train_32k.yaml --model $(MODEL) $(foreach d,$(DATA),--data $(d)) --require-gpu --check-only
	$(VENV)/bin/torchrun --nproc_per_node $(GPUS) -m v2pe_train train --recipe recipes/train_32k.yaml --model $(MODEL) $(foreach d,$(DATA),--data $(d)) --out $(OUT)/train_32k --require-gpu

train-256k:
	@test -n "$(MODEL)" || { echo "error: train-256k needs MODEL=<native InternVL checkpoint folder>; on a CPU machine try 'make train-tiny'" >&2; exit 2; }
	@test -n "$(DATA)" || { echo "error: train-256k needs DATA=<v2pe-data build folder of 256K samples>; or try 'make train-tiny'" >&2; exit 2; }
	$(VENV)/bin/v2pe-train train --recipe recipes/train_256k.yaml --model $(MODEL) $(foreach d,$(DATA),--data $(d)) --require-gpu --check-only
	$(VENV)/bin/torchrun --nproc_per_node $(GPUS) -m v2pe_train train --recipe recipes/train_256k.yaml --model $(MODEL) $(foreach d,$(DATA),--data $(d)) --out $(OUT)/train_256k --require-gpu
