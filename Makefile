# Two commands do everything on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint docs prepare bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

prepare: $(VENV)/.installed
	cd testproject && ../$(PY) manage.py migrate --noinput
	cd testproject && ../$(PY) manage.py collectstatic --noinput --verbosity 0
	cd testproject && ../$(PY) manage.py createdemouser

serve: prepare
	cd testproject && ../$(PY) manage.py serve $(HOST):$(PORT)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) scripts/gen_settings_doc.py --check

test: lint
	PYTHONDEVMODE=1 $(PY) -W error::ResourceWarning -m pytest

docs: $(VENV)/.installed
	$(PY) scripts/gen_settings_doc.py

bench: $(VENV)/.installed
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)
	$(PY) benchmarks/protocols.py --output docs/benchmarks-protocols.md
	$(PY) benchmarks/protocols.py --app hello --output docs/benchmarks-protocols-hello.md

bench-quick: $(VENV)/.installed
	$(PYTHON) benchmarks/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) testproject/staticfiles testproject/db.sqlite3 benchmarks/.work
