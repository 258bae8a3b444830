# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pin torch on the CPU path: an unpinned torch pulls a multi-GB CUDA build. GPU users bring their own.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/reasontune demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=15

bench: $(STAMP)
	$(BIN)/python bench/rewards.py
	$(BIN)/python bench/grpo_step.py --steps 3

clean:
	rm -rf $(VENV) runs
