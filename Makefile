# The two set-up commands (see README):  make demo   |   make test
# Both create .venv and install the pinned stack on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test browser-deps bench-preprocess bench-inference bench-serve bench-control clean-runs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# Debian's chromium + chromedriver for the serving page's browser test (tests/test_serve.py);
# installed only when missing and when we are root (CI is); otherwise the test says what to install.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "browser-deps: not root; install chromium and chromium-driver to run the browser test"; \
	  fi; \
	fi

bench-preprocess: $(STAMP)
	$(BIN)/python benchmarks/preprocess.py

bench-inference: $(STAMP)
	$(BIN)/python benchmarks/inference.py

bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serving.py

# The controllability benchmark: sample data -> preprocess -> train (main + ablations) -> evaluate,
# then docs/RESULTS.md, docs/results.json and the shipped models/livephoto-mini (about 100 min on a
# 2-core CPU; a re-run resumes from the last finished stage, --fresh starts over).
bench-control: $(STAMP)
	$(BIN)/python benchmarks/controllability.py --ship

clean-runs:
	rm -rf runs
