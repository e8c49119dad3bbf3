# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
DEMO_DIR ?= runs/demo

.PHONY: demo test test-learning test-browser browser-tools lint format bench clean

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
	@# librosa's numba kernels compile when its modules are first imported (about 20 s on one core)
	@# and are cached in the venv: once here, not in the first test that compares with librosa.
	$(BIN)/python -c "import librosa.util.utils, librosa.core.spectrum, librosa.core.audio, librosa.core.pitch"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m aiaic_jax.demo --workdir $(DEMO_DIR)

test: $(VENV)/.installed-dev browser-tools
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# That the method learns, alone (part of `make test` too): every stage of the tiny model, then
# its evaluation (about 2 minutes).
test-learning: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m learning tests/test_learning.py

# The page of `aiaic serve` in headless chromium alone (also part of `make test`).
test-browser: $(VENV)/.installed-dev browser-tools
	$(BIN)/python -m pytest -q -m browser tests/test_serve.py

# Debian's chromium and chromedriver for the browser tests (tests/test_serve.py), installed with
# apt-get when missing and this is root on a Debian-like system; otherwise those tests are skipped
# and say why (`.ci/run` sets AIAIC_REQUIRE_BROWSER=1, which makes them fail instead).
browser-tools:
	@command -v chromium > /dev/null && command -v chromedriver > /dev/null || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null && \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends \
		chromium chromium-driver > /dev/null; } || \
		echo "chromium and chromedriver are not installed: the browser tests will be skipped"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check aiaic_jax tests bench configs train.py eval.py
	$(BIN)/ruff format --check aiaic_jax tests bench configs train.py eval.py

format: $(VENV)/.installed-dev
	$(BIN)/ruff format aiaic_jax tests bench configs train.py eval.py
	$(BIN)/ruff check --fix aiaic_jax tests bench configs train.py eval.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
