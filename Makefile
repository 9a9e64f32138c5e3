# The two set-up commands (see README):  make demo   |   make test
# Both create .venv and install the pinned stack on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench-preprocess bench-inference clean-runs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench-preprocess: $(STAMP)
	$(BIN)/python benchmarks/preprocess.py

bench-inference: $(STAMP)
	$(BIN)/python benchmarks/inference.py

clean-runs:
	rm -rf runs
