# deepscope — two commands on a fresh machine: `make demo` and `make test`.
PY       := .venv/bin/python
PIP      := .venv/bin/pip -q --disable-pip-version-check
STATIC   := src/deepscope/server/static
WEB_SRC  := $(shell find web/src -type f 2>/dev/null) web/index.html web/package.json web/vite.config.ts

.PHONY: all setup web chromium lint test test-fast demo bench clean

all: setup

setup: .venv/.installed web

.venv/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev]"
	touch $@

web: $(STATIC)/index.html

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

$(STATIC)/index.html: web/node_modules/.installed $(WEB_SRC)
	cd web && npm run build

chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

lint: .venv/.installed
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/ruff format --check src tests benchmarks scripts

test: setup chromium lint
	cd web && npm run check
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: .venv/.installed
	$(PY) -m pytest -q -p no:cacheprovider -m "not browser and not slow"

demo: setup
	.venv/bin/deepscope demo

bench: setup chromium
	for f in benchmarks/bench_*.py; do $(PY) -m benchmarks.$$(basename $$f .py) || exit 1; done

clean:
	rm -rf .venv web/node_modules $(STATIC)
