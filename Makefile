# Two entry points (see README): `make run` runs the pipeline, `make test` runs the tests.
# Each creates the virtual environment and installs what is missing first.
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install clean-env

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

test: $(STAMP)
	$(BIN)/python -m pytest

clean-env:
	rm -rf $(VENV)
