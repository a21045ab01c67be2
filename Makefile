# The two commands: `make run` (serve the embedded default extensions/) and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml or the pins change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PINS   := .ci/constraints.txt

.PHONY: run test lint imports typecheck docs unit bench validate clean

$(STAMP): pyproject.toml $(PINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input -c $(PINS) -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/spctl serve --extensions extensions

validate: $(STAMP)
	$(BIN)/spctl validate --extensions extensions

lint: $(STAMP)
	$(BIN)/ruff check supervisor worker tests extensions
	$(BIN)/ruff format --check supervisor worker tests extensions

# The dependency rules of DESIGN.md §2 ([tool.importlinter] in pyproject.toml).
imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link or a page left
# out of the nav. No -q: mkdocs then drops the warnings that --strict counts. Built outside
# the tree.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d $(VENV)/site

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test: lint imports typecheck docs
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
