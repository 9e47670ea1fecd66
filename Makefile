# The two commands of the quick start: `make demo` and `make test`. Both need only Python >= 3.11.
PYTHON ?= python3
VENV := .venv
# uv lives in a bootstrap environment of its own, so `uv sync` (which removes what the lock does not
# list) never uninstalls it from the project environment.
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test lint typecheck contracts install clean bench

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Installs exactly what uv.lock pins (dependencies and dev tools) into .venv.
$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --quiet --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/datapoort demo $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

contracts: install
	$(VENV)/bin/lint-imports

test: lint typecheck contracts
	$(VENV)/bin/pytest -n 2 --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/python benchmarks/demo_query.py --quick

clean:
	rm -rf $(VENV) $(UV_HOME) .pytest_cache .mypy_cache .ruff_cache .coverage
