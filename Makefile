# Two entry points (see README): `make run` runs the pipeline, `make test` runs the tests.
# Each creates the virtual environment and installs what is missing first.
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test drills install browser clean-env

# torch goes in first, pinned exactly: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/content-moderation run

test: $(STAMP) browser
	$(BIN)/python -m pytest

# The server drills (tests/deploy, marker `servers`): PostgreSQL, an S3 server, `mlflow server`, `prefect
# server start` and a process worker on 127.0.0.1 (deploy/local.py), a whole nightly run fired by its cron.
# `make test` runs their light form (tests/deploy/test_servers.py, tests/drills) and leaves these out; the
# server-failure drill's full form (tests/drills/servers.py) runs here too.
drills: $(STAMP)
	$(BIN)/python -m pytest -m servers tests/deploy tests/drills

# The report's browser test (tests/components/test_report.py) drives Debian's chromium headless.
# Installed with apt-get when missing: as root, or through sudo; otherwise it says what to run.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "error: $(CHROMIUM) is missing and there is no apt-get: install Debian's chromium package (the report test needs it)" >&2; exit 1; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "error: $(CHROMIUM) is missing; installing it needs root: run 'make browser' as root, or as root 'apt-get install chromium'" >&2; exit 1; fi; \
	echo "installing Debian's chromium (headless, for the report's browser test)"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation && \
	test -x $(CHROMIUM) && $(CHROMIUM) --version

clean-env:
	rm -rf $(VENV)
