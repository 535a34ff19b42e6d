# videonote-dl: `make run` arranca el daemon con ./config.yaml; `make test` corre toda la suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: run test lint bench bench-smoke install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/videonote-dl run --config config.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check daemon tests bench
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check daemon tests bench

clean:
	rm -rf var .pytest_cache .ruff_cache
