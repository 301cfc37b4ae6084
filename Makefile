# servicemap — the single source of set-up. `make run` and `make test` install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_MAJOR ?= 15
# What the project needs from Debian, as "what to look for:package providing it": PostgreSQL +
# PostGIS (embedded cluster), Chromium + CJK fonts (browser tests and their screenshots), GDAL's
# tools and QGIS's Python bindings (the OGC client tests), npm (front-end assets; Debian's npm
# brings nodejs), wrk (HTTP benchmarks). A path is checked for existence, a bare name on PATH —
# so a Node.js from elsewhere counts as installed.
NEEDS := /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_ctl:postgresql-$(PG_MAJOR) \
	/usr/share/postgresql/$(PG_MAJOR)/extension/postgis.control:postgresql-$(PG_MAJOR)-postgis-3 \
	/usr/bin/chromium:chromium /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc:fonts-noto-cjk \
	ogrinfo:gdal-bin npm:npm wrk:wrk /usr/lib/python3/dist-packages/qgis/core/__init__.py:python3-qgis

.PHONY: install system python assets run test lint bench clean

install: system python assets

# System packages, only when missing and only as root (otherwise say what to install).
system:
	@missing=""; for need in $(NEEDS); do what=$${need%%:*}; pkg=$${need##*:}; \
	  if [ "$${what#/}" != "$$what" ]; then [ -e "$$what" ] || missing="$$missing $$pkg"; \
	  else command -v "$$what" >/dev/null 2>&1 || missing="$$missing $$pkg"; fi; done; \
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
	@if [ -f web/node_modules/.package-lock.json ] && \
	  [ ! web/package-lock.json -nt web/node_modules/.package-lock.json ]; then \
	  echo "front-end assets up to date (web/node_modules)"; \
	else \
	  npm ci --prefix web --no-audit --no-fund --loglevel=error && \
	  touch web/node_modules/.package-lock.json; \
	fi

run: install
	$(BIN)/servicemap demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .data
