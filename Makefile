# ClassifyObjects — `make run` serves the default detector, `make test` runs the whole suite.
# Both install everything they need into .venv first (pinned by pyproject.toml and requirements.lock).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
RUN_EXTRAS := embedded,converter
ALL_EXTRAS := embedded,converter,test,dev,bench

# The proxy reads these from the environment; the defaults match proxy/settings.py.
MODEL_DIR ?= static
MODEL_BASE_PATH ?= models/detector
PORT ?= 8000
export MODEL_DIR MODEL_BASE_PATH PORT

# The newest Python the project supports, for the suite's `make run` check on it (CI proves the oldest and newest).
# The first candidate that runs (pyenv's shims exist for every installed version but run only the active ones).
ifndef PYTHON_NEWEST
PYTHON_NEWEST := $(shell for p in $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $$(command -v python3.13); do \
	"$$p" -c '' 2>/dev/null && { echo "$$p"; break; }; done)
endif
export PYTHON_NEWEST

COMPOSE ?= docker compose
PYTEST_ARGS ?=
LINTED := proxy converter odapi demo_model harness bench scripts tests

.DEFAULT_GOAL := help
.PHONY: help python install run default-model demo model convert test clients browser lint fix bench up up-gpu down \
	logs lock protos clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

python:  ## check that PYTHON is one this project supports (3.11 to 3.13)
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null || { \
	  echo "ClassifyObjects needs Python 3.11, 3.12 or 3.13, and $(PYTHON) is $$($(PYTHON) --version 2>&1 || echo missing): pick one with PYTHON=..., e.g. make run PYTHON=python3.12" >&2; \
	  exit 1; }

# What running needs (TensorFlow, the converter); the suite's tools come with `make test`.
# The installer shows its progress (the first time it downloads TensorFlow, about 600 MB) instead of minutes of silence.
$(VENV)/.run: pyproject.toml requirements.lock | python
	@echo "make: installing into $(VENV) what running needs (the first time: TensorFlow, about 600 MB)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(BIN)/uv pip install --python $(BIN)/python -c requirements.lock -e '.[$(RUN_EXTRAS)]'
	@touch $@

$(VENV)/.test: $(VENV)/.run
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c requirements.lock -e '.[$(ALL_EXTRAS)]'
	touch $@

install: $(VENV)/.test  ## create .venv and install every pinned dependency

default-model: $(VENV)/.run  ## put the default COCO detector into MODEL_DIR unless it holds a model of its own
	@$(BIN)/python -m converter default "$(MODEL_DIR)"

demo: $(VENV)/.run  ## write the coloured-shape demo detector into MODEL_DIR (offline; make run then serves it)
	$(BIN)/python -m demo_model "$(MODEL_DIR)"

model: $(VENV)/.run  ## fetch a TF1 zoo detector into MODEL_DIR: make model NAME=ssdlite_mobilenet_v2_coco [FORCE=1]
	@test -n "$(NAME)" || { echo "make model needs NAME=..., one of: $$($(BIN)/python -c \
	  'from converter.zoo import MODELS; print(", ".join(MODELS))')" >&2; exit 1; }
	$(BIN)/python -m converter fetch "$(NAME)" "$(MODEL_DIR)" $(if $(FORCE),--force)

# Each step says what it did in one line (the converter's stdout, the version's directory, is for scripts).
convert: default-model  ## convert MODEL_DIR's model into MODEL_BASE_PATH unless that version exists already
	@$(BIN)/python -m converter "$(MODEL_DIR)" "$(MODEL_BASE_PATH)" --if-changed >/dev/null

run: convert  ## install, convert, and serve on PORT (embedded TensorFlow unless SERVING_ADDRESS is set)
	@$(BIN)/python -m proxy

clients: $(VENV)/.run  ## the DeepStack clients the suite runs: Python libraries in .venv/clients, the Node-RED node
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target $(VENV)/clients \
	  deepstack-python==0.9 codeproject-ai-api==0.1
	cd tests/clients && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error

browser:  ## install Debian's chromium for the page's browser test (as root; the test is skipped without it)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else \
	    echo "chromium is missing and this is not root: run 'sudo apt-get install chromium' for the browser test"; \
	  fi; }

test: $(VENV)/.test browser clients  ## install, then run the lint checks (those of make lint) and the whole test suite
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	@# mypy runs beside the suite (its 20 s of one core overlap the suite's start-up); either failing fails the target.
	@$(BIN)/mypy > .mypy.out 2>&1 & mypy=$$!; \
	  $(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS); tests=$$?; \
	  wait $$mypy; typed=$$?; echo "mypy:"; cat .mypy.out; rm -f .mypy.out; \
	  test $$tests -eq 0 && test $$typed -eq 0

lint: $(VENV)/.test  ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

fix: $(VENV)/.test  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

bench: $(VENV)/.test  ## measure the proxy against direct Predict: bench/results.md and bench/results.png
	$(BIN)/python -m bench

up:  ## docker compose: converter, TF Serving and the proxy
	$(COMPOSE) up --build -d

up-gpu:  ## the same, TF Serving on the NVIDIA GPUs (docker-compose.gpu.yml)
	$(COMPOSE) -f docker-compose.yml -f docker-compose.gpu.yml up --build -d

down:  ## stop the compose stack
	$(COMPOSE) down

logs:  ## follow the compose stack's logs
	$(COMPOSE) logs -f

lock: $(VENV)/.test  ## re-pin every transitive dependency into requirements.lock from the current .venv
	$(BIN)/uv pip freeze --python $(BIN)/python --exclude-editable | grep -v -i -E '^(uv|pip)==' > requirements.lock

protos: $(VENV)/.test  ## regenerate proxy/_proto/ from proxy/_proto/protos/
	$(BIN)/python scripts/gen_protos.py

clean:  ## remove .venv, converted models and caches (static/ is yours and stays)
	rm -rf $(VENV) .venv-newest models .pytest_cache .mypy_cache .ruff_cache *.egg-info tests/clients/node_modules
