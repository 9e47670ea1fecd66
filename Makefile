# The two commands of the quick start: `make demo` and `make test`. Both need only Python >= 3.11.
PYTHON ?= python3
VENV := .venv
# uv lives in a bootstrap environment of its own, so `uv sync` (which removes what the lock does not
# list) never uninstalls it from the project environment.
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test lint typecheck contracts install browser clean bench

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

# The console's browser tests drive Debian's Chromium, never a browser a test tool downloads. Installed
# here where absent (as root, from Debian's packages); where that cannot be done, those tests skip and say so.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
	      || echo "chromium could not be installed: the browser tests will skip"; \
	  else \
	    echo "no $(CHROMIUM), and no root to install Debian's chromium: the browser tests will skip"; \
	  fi; \
	fi

test: lint typecheck contracts browser
	$(VENV)/bin/pytest -n 2 --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/python benchmarks/demo_query.py --quick

clean:
	rm -rf $(VENV) $(UV_HOME) .pytest_cache .mypy_cache .ruff_cache .coverage
