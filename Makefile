# ClassifyObjects — `make run` serves the embedded default, `make test` runs the whole suite.
# Both install everything they need into .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := embedded,converter,test,dev,bench

# The proxy reads these from the environment; the defaults match proxy/settings.py.
MODEL_DIR ?= static
MODEL_BASE_PATH ?= models/detector
PORT ?= 8000
export MODEL_DIR MODEL_BASE_PATH PORT

# A SavedModel in MODEL_DIR/saved_model wins over a frozen graph, as a TF2 export would be laid out.
MODEL_INPUT = $(if $(wildcard $(MODEL_DIR)/saved_model/saved_model.pb),$(MODEL_DIR)/saved_model,$(MODEL_DIR)/frozen_inference_graph.pb)

COMPOSE ?= docker compose
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install browser run model convert test lint fix bench up down logs lock protos clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the pinned dependencies

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[$(EXTRAS)]'
	touch $@

browser:  ## install Debian's chromium for the page's browser test (as root; the test is skipped without it)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else \
	    echo "chromium is missing and this is not root: run 'sudo apt-get install chromium' for the browser test"; \
	  fi; }

model: $(STAMP)  ## write the demo model into MODEL_DIR when it has none
	@if [ ! -e "$(MODEL_INPUT)" ]; then $(BIN)/python -m demo_model "$(MODEL_DIR)"; fi

convert: model  ## convert MODEL_DIR's model into MODEL_BASE_PATH unless that version exists already
	$(BIN)/python -m converter "$(MODEL_INPUT)" "$(MODEL_BASE_PATH)" --if-changed

run: convert  ## install, convert, and serve on PORT (embedded TensorFlow unless SERVING_ADDRESS is set)
	$(BIN)/python -m proxy

test: $(STAMP) browser  ## install, then run the lint checks and the whole test suite
	$(BIN)/ruff check proxy converter demo_model bench tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check proxy converter demo_model bench tests
	$(BIN)/ruff format --check proxy converter demo_model bench tests
	$(BIN)/mypy

fix: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix proxy converter demo_model bench tests
	$(BIN)/ruff format proxy converter demo_model bench tests

bench: $(STAMP)  ## measure the proxy against direct Predict and the old way: bench/results.md and results.png
	$(BIN)/python -m bench

up:  ## docker compose: converter, TF Serving and the proxy
	$(COMPOSE) up --build -d

down:  ## stop the compose stack
	$(COMPOSE) down

logs:  ## follow the compose stack's logs
	$(COMPOSE) logs -f

lock: $(STAMP)  ## re-pin every transitive dependency into requirements.lock from the current .venv
	$(BIN)/python -m pip list --format=freeze --exclude-editable --exclude classifyobjects --exclude pip > requirements.lock

clean:  ## remove .venv, converted models and caches (static/ is yours and stays)
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache *.egg-info
