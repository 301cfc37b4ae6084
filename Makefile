# servicemap — the single source of set-up. `make run` and `make test` install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_MAJOR ?= 15
# Debian packages the project needs: PostgreSQL + PostGIS (embedded cluster), Chromium (browser
# tests), GDAL's tools (the OGC client test), Node.js + npm (front-end assets)
DEB_PACKAGES := postgresql postgresql-$(PG_MAJOR)-postgis-3 chromium gdal-bin nodejs npm

.PHONY: install system python assets run test lint bench clean

install: system python assets

# System packages, only when missing and only as root (otherwise say what to install).
system:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; fi; \
	fi

python: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev,bench]'
	touch $(STAMP)

# Front-end assets installed from the npm registry at set-up time (never committed).
assets:
	@true

run: install
	$(BIN)/servicemap demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .data
