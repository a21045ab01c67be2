# The two commands: `make run` (serve the embedded default extensions/) and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml or the pins change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PINS   := .ci/constraints.txt
TOOLS  := $(VENV)/tools
TOOLS_STAMP := $(TOOLS)/.installed

.PHONY: run test test-exec lint imports typecheck docs unit bench soak validate clean

$(STAMP): pyproject.toml $(PINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input -c $(PINS) -e '.[dev]'
	touch $(STAMP)

# import-linter and mkdocs live in a venv of their own: what they pull in (rich, pygments,
# colorama) would otherwise be picked up by structlog and typer in spctl itself.
$(TOOLS_STAMP): .ci/tools.txt $(PINS)
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --no-input -c $(PINS) -r .ci/tools.txt
	touch $(TOOLS_STAMP)

run: $(STAMP)
	$(BIN)/spctl serve --extensions extensions

validate: $(STAMP)
	$(BIN)/spctl validate --extensions extensions

lint: $(STAMP)
	$(BIN)/ruff check supervisor worker tests extensions
	$(BIN)/ruff format --check supervisor worker tests extensions

# The dependency rules of DESIGN.md §2 ([tool.importlinter] in pyproject.toml).
imports: $(TOOLS_STAMP)
	PYTHONPATH=. $(TOOLS)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link or a page left
# out of the nav. No -q: mkdocs then drops the warnings that --strict counts. Built outside
# the tree.
docs: $(TOOLS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(TOOLS)/bin/mkdocs build --strict -d $(VENV)/site

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# The supervision, limits and confinement suites once more with the zygote off (every worker
# exec'd, as with `spctl serve --no-zygote`): ~1 min on 2 cores.
EXEC_SUITES := tests/integration/test_limits.py tests/integration/test_chaos.py \
	tests/integration/test_keeper.py tests/integration/test_stop_while_starting.py \
	tests/chaos/test_kill_during_calls.py tests/chaos/test_confinement.py

# The tests run on JOBS pytest-xdist workers, a file per worker at a time (a file's module
# fixtures are set up once); the few marked `serial` (they count every pid on the machine or
# plant a stale cgroup any serve would sweep) run alone afterwards.
JOBS ?= 2
PARALLEL := -n $(JOBS) --dist loadfile

test: lint imports typecheck docs
	$(BIN)/pytest -q $(PARALLEL) -m 'not serial'
	$(BIN)/pytest -q -m serial
	$(MAKE) test-exec

test-exec: $(STAMP)
	SPCTL_ZYGOTE=off $(BIN)/pytest -q $(PARALLEL) -m 'not serial' $(EXEC_SUITES)
	SPCTL_ZYGOTE=off $(BIN)/pytest -q -m serial $(EXEC_SUITES)

bench: $(STAMP)
	$(BIN)/python -m tests.bench

# Not in CI (minutes): 1,000 crash cycles and 10,000 calls with kill -9s; exits 1 on a leak.
soak: $(STAMP)
	$(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
