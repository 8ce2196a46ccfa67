# The README's commands: `make run` (the whole stack) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The venv's interpreter: Debian's, which every user can run. Started as root,
# `make run`'s services run as user baton (README.md, "Isolation"), and a Python
# under /root (pyenv's) is out of that user's reach.
BASE_PYTHON := $(firstword $(wildcard /usr/bin/python3) python3)

.PHONY: run cluster test test-churn image-test lock fresh-check setup system-packages proto proto-check docs lint format pytest bench clean

run: setup
	$(PY) -m deploy.local_stack

# A whole cluster on this machine, worker hosts in network namespaces (root
# only; deploy/README.md).
cluster: setup
	$(PY) -m deploy.cluster

test: setup lint pytest

# The issue's 200 create/delete cycles against `make run` (a few minutes): nothing
# leaks, memory stays flat; prints its figures. CI runs it after `make test`.
test-churn: setup
	$(BIN)/pytest -m churn -s tests/deploy/test_churn.py

# The container image built and run for real with podman (root; a few minutes):
# each service's container healthy, the composed cluster showing a session's page
# through an edge container. CI runs it after test-churn (deploy/README.md).
image-test: setup
	$(BIN)/pytest -m image tests/image

# Re-pin the image's Python dependencies (deploy/requirements.lock) from
# pyproject.toml's runtime dependencies, in a throw-away venv.
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	python3 -m venv "$$tmp/venv" && "$$tmp/venv/bin/pip" install -q . && \
	{ sed -n '1,/^$$/{/^#/p}' deploy/requirements.lock; \
	  "$$tmp/venv/bin/pip" freeze --exclude baton; } > "$$tmp/lock" && \
	mv "$$tmp/lock" deploy/requirements.lock

# `make test` in a fresh clone of HEAD: passes only with no test skipped.
fresh-check:
	deploy/fresh-clone-check.sh

setup: system-packages $(VENV)/.ready
# Puppeteer, for the test of an agent connecting with it (tests/edge/test_cdp.py).
setup: tests/edge/puppeteer/node_modules/.installed
# The browser client package, built (clients/js/README.md); the edge serves its
# bundle at /assets/clients/baton.js.
setup: clients/js/dist/.built

system-packages:
	@deploy/install-system-packages.sh

# A venv made from another Python (an older checkout's) is made again.
$(VENV)/.ready: pyproject.toml
	grep -qsx 'home = $(patsubst %/,%,$(dir $(BASE_PYTHON)))' $(VENV)/pyvenv.cfg || \
	  { rm -rf $(VENV) && $(BASE_PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

tests/edge/puppeteer/node_modules/.installed: tests/edge/puppeteer/package.json tests/edge/puppeteer/package-lock.json
	npm ci --prefix tests/edge/puppeteer --no-audit --no-fund
	touch $@

clients/js/node_modules/.installed: clients/js/package.json clients/js/package-lock.json
	npm ci --prefix clients/js --no-audit --no-fund
	touch $@

clients/js/dist/.built: clients/js/node_modules/.installed clients/js/tsconfig.json \
		clients/js/scripts/bundle.js $(wildcard clients/js/src/*.ts)
	npm --prefix clients/js run --silent build
	touch $@

proto:
	$(PY) protos/generate.py

# Regenerating must change nothing: the committed code matches the protos.
proto-check:
	@$(PY) protos/generate.py --check

# docs/openapi.json, the repository's copy of the edge's /openapi.json
# (tests/docs/test_rest_contract.py keeps the two equal).
docs:
	$(PY) -m services.edge.openapi docs/openapi.json

# clients/js: its REST types current with docs/openapi.json, it and its examples
# type-checked against the built declarations.
lint: proto-check clients/js/dist/.built
	npm --prefix clients/js run --silent check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd protos/.. && $(BIN)/buf lint
	$(BIN)/hadolint deploy/Dockerfile

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

pytest:
	$(BIN)/pytest

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
