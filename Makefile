# Two entry points, both from a fresh clone (Python 3.11 and a Rust toolchain, nothing else):
#   make demo   builds everything and runs an agent on this repository
#   make test   builds everything and runs the whole test suite (Rust and Python)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TASK   ?= Which code strips ANSI escape sequences (ECMA-48 CSI and OSC) from tool output?
WORKSPACE ?= .

.PHONY: demo test install

install: $(VENV)/.installed

# The editable install runs maturin, which builds the Rust extension raygent._native; it is
# redone whenever the Rust sources or the package metadata change.
$(VENV)/.installed: pyproject.toml Cargo.toml $(wildcard rust/src/*.rs rust/src/*/*.rs)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

demo: install
	$(BIN)/raygent run "$(TASK)" --workspace "$(WORKSPACE)"

# The benchmarks run once each as checks (every case verifies its result before timing);
# timing them is `raygent bench`'s job.
test: install
	cargo test --quiet
	$(BIN)/python -m mypy.stubtest raygent._native
	$(BIN)/python -m mypy python/raygent
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest benches --benchmark-disable -q
