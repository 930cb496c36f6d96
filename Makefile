# Two commands on a fresh clone: `make smoke` (set up, then train the smoke recipe) and
# `make test` (set up, then run the test suite, as CI does). Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On a machine without an NVIDIA GPU, the pinned CPU build of torch: an unpinned torch would
# pull a multi-GB CUDA build. With a GPU, pip's default torch (CUDA) is the right one.
CPU_TORCH := torch==2.13.0
# All cores for the one CPU process (accelerate otherwise picks a value and says so).
NPROC := $(shell nproc 2>/dev/null || echo 1)

.PHONY: smoke test setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/python -m pip install --quiet "$(CPU_TORCH)"; fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip list 2>/dev/null | grep -iE "^(torch|trl|transformers|peft|datasets|accelerate|bitsandbytes) "
	touch $@

smoke: setup
	HF_HUB_OFFLINE=1 $(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml \
		--num_cpu_threads_per_process $(NPROC) -m recipes.run recipes/smoke.yaml

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest
