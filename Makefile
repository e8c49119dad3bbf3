# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
DEMO_DIR ?= runs/demo

.PHONY: demo test test-learning test-browser lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

# The tests check converters and layers against the official PyTorch code: the CPU build of torch
# (pinned in constraints.txt) comes in with the `torch` extra; the ONNX export with the `onnx`
# extra and jax2onnx, whose declared dependencies do not fit this project's (pyproject.toml).
$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dev,torch,onnx]'
	$(PIP) --no-deps jax2onnx
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m aiaic_jax.demo --workdir $(DEMO_DIR)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# That the method learns: every stage of the tiny model, then its evaluation (about 3 minutes).
test-learning: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m learning tests/test_learning.py

# The page of `aiaic serve` in headless chromium (Debian's chromium and chromedriver, installed
# with apt-get when missing).
test-browser: $(VENV)/.installed-dev
	command -v chromium > /dev/null && command -v chromedriver > /dev/null || \
		(apt-get update -q && apt-get install -y -q --no-install-recommends chromium chromium-driver)
	$(BIN)/python -m pytest -q -m browser tests/test_browser.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check aiaic_jax tests bench configs train.py eval.py
	$(BIN)/ruff format --check aiaic_jax tests bench configs train.py eval.py

format: $(VENV)/.installed-dev
	$(BIN)/ruff format aiaic_jax tests bench configs train.py eval.py
	$(BIN)/ruff check --fix aiaic_jax tests bench configs train.py eval.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
