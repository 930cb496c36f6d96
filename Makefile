# A fresh clone needs two commands: `make smoke` (set up, then train the smoke recipe) and
# `make test` (set up, then run the whole suite, as CI does). Both create or reuse .venv,
# installed from the lock in requirements/ (the exact versions the suite passed with).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The one place to move torch or the installer: then `make lock`.
TORCH_VERSION := 2.13.0
UV_VERSION := 0.13.10
# All cores for the one CPU process (accelerate otherwise picks a value and says so).
NPROC := $(shell nproc 2>/dev/null || echo 1)

.PHONY: setup smoke test test-fast test-latest lock

setup: $(VENV)/.installed

$(VENV)/bin/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: $(VENV)/bin/uv pyproject.toml requirements/cpu.txt requirements/gpu.txt requirements/build.txt
	sh requirements/install.sh $(VENV) locked
	touch $@

smoke: setup
	HF_HUB_OFFLINE=1 $(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml \
		--num_cpu_threads_per_process $(NPROC) -m recipes.run recipes/smoke.yaml

# Everything, as CI runs it (35-56 minutes on 2 cores: bench/results/ci_rehearsal_*.json).
test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The edit loop (under 3 minutes on 2 cores): recipe parsing, masking, one smoke training.
test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

# Drift on purpose: the newest versions pyproject.toml allows (torch kept at the locked build)
# in a separate .venv-latest, then the whole suite. Run it before a release or a lock update.
test-latest:
	rm -rf $(VENV)-latest
	$(MAKE) VENV=$(VENV)-latest $(VENV)-latest/bin/uv
	sh requirements/install.sh $(VENV)-latest latest
	HF_HUB_OFFLINE=1 $(VENV)-latest/bin/python -m pytest

# Re-resolve the locks from pyproject.toml's ranges (the newest versions inside them) after
# changing a range or TORCH_VERSION; then `make test` and commit requirements/.
lock: $(VENV)/bin/uv
	sh requirements/lock.sh $(VENV) $(TORCH_VERSION)
