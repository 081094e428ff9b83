# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.coop_fast-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
# pip lists every local index folder it skips; keep the log readable
QUIET := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: install demo test sync layers nbtest pytest docs clean

$(STAMP): setup.py settings.ini constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel 2>&1 | $(QUIET)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]' 2>&1 | $(QUIET)
	# data for the tiny CLIP (coop_fast.tiny); its metadata asks for tensorflow, which it never imports
	$(BIN)/python -m pip install -q --no-deps animal-mnist==0.4 2>&1 | $(QUIET)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/coop-fast demo

## notebooks and library in sync, notebooks clean, README from nbs/index.ipynb
sync: install
	@shopt -s globstar; before=$$(cat coop_fast/**/*.py nbs/*.ipynb README.md | md5sum); \
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean && $(BIN)/python tools/readme.py; \
	after=$$(cat coop_fast/**/*.py nbs/*.ipynb README.md | md5sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "Out of sync: nbdev_export / nbdev_clean / tools/readme.py changed these files:"; git status --short coop_fast nbs README.md; exit 1; \
	else echo "Notebooks, library and README are in sync; notebooks are clean."; fi

nbtest: install
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	$(BIN)/python -m pytest tests -q

## modules import only downwards through the layers, without cycles or private names (tools/layers.py)
layers: install
	$(BIN)/python tools/layers.py

test: sync layers nbtest pytest

## the documentation site in _docs/: nbdev_docs when Quarto is installed, else tools/docs.py (registry packages only;
## `make docs EXECUTE=1` first runs the notebooks that have no stored outputs). tests/test_docs.py checks it in Chromium.
docs: install
	@if command -v quarto >/dev/null 2>&1; then PATH="$(abspath $(BIN)):$$PATH" $(BIN)/nbdev_docs; \
	else $(BIN)/python tools/docs.py $(if $(EXECUTE),--execute); fi

clean:
	rm -rf _docs _proc build dist *.egg-info
