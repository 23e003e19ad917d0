# Two commands do everything on a fresh machine with only Python:
#   make demo   create .venv, write the demo corpus, run the main job on it (report under runs/demo)
#   make test   create .venv, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= configs/constraints-cpu.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo

.PHONY: demo test env bench clean

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_C) -e '.[test]'
	touch $@

# The peer SAE libraries (sae-lens, eai-sparsify) are test oracles only, and Ray (the [cluster] extra)
# is optional for users: both are installed for `make test`, so CI exercises them.
$(BIN)/.peers: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_C) -e '.[test,peers,cluster]'
	touch $@

env: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/run-overlay --demo --out $(DEMO_OUT) --overwrite

# Gates first (seconds): ruff, and the layer contract of ARCHITECTURE.md (import-linter, pyproject.toml).
test: $(BIN)/.peers
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_sae.py
	$(BIN)/python benchmarks/bench_scoring.py
	$(BIN)/python benchmarks/bench_inventory.py

clean:
	rm -rf $(VENV) runs .pytest_cache
