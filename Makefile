# semsim — two commands do all set-up: `make demo` and `make test` (both create .venv and install if needed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13.0 is on disk on the project's machines; an unpinned torch pulls GBs of CUDA packages.
# The package itself accepts any torch >= 2.2: override TORCH_SPEC to install another (e.g. a CUDA build).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.semsim-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.PHONY: install demo test nbs export clean-nbs sync readme docs site bench help

help:
	@echo "make demo   — create .venv, install, run the main job"
	@echo "make test   — create .venv, install, run the whole suite (ends with 'N passed, N failed')"
	@echo "make docs   — build the docs (Quarto when installed, else the offline renderer into _site/)"
	@echo "make nbs NB=nbs/05_data.ipynb — sync from nbs_py/, execute (store outputs), clean, export"
	@echo "make bench  — run the benchmarks in bench/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) setup.py settings.ini
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/semsim demo

test: $(STAMP)
	$(PY) tools/suite.py

# --- developer helpers -------------------------------------------------------------------------------
# Edit nbs_py/*.py (py:percent) or the notebooks; `make sync` brings the pairs together (newest wins).
sync: $(STAMP)
	@for py in nbs_py/*.py nbs_py/tutorials/*.py; do rel=$${py#nbs_py/}; f=nbs/$${rel%.py}.ipynb; \
	  if [ ! -f $$f ] || [ $$py -nt $$f ]; then $(BIN)/jupytext --quiet --update --to ipynb -o $$f $$py || exit 1; \
	  elif [ $$f -nt $$py ]; then $(BIN)/jupytext --quiet --to py:percent -o $$py $$f || exit 1; fi; done

export: $(STAMP)
	$(BIN)/nbdev_export

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

# Export (so that notebooks importing semsim see the edited code), execute the notebooks so their outputs (figures)
# are stored, then clean, re-sync the text pairs and export again.
# NB takes notebook paths (nbs/NAME.ipynb); a newer nbs_py/NAME.py is synced into the notebook first.
NB ?= $(wildcard nbs/*.ipynb nbs/tutorials/*.ipynb)
nbs: $(STAMP)
	@for f in $(NB); do rel=$${f#nbs/}; py=nbs_py/$${rel%.ipynb}.py; \
	  if [ -f $$py ] && [ ! -f $$f ]; then $(BIN)/jupytext --quiet --to ipynb -o $$f $$py || exit 1; \
	  elif [ -f $$py ] && [ $$py -nt $$f ]; then $(BIN)/jupytext --quiet --update --to ipynb -o $$f $$py || exit 1; fi; done
	$(BIN)/nbdev_export
	$(PY) tools/run_nbs.py $(NB)
	@for f in $(NB); do rel=$${f#nbs/}; $(BIN)/nbdev_clean --fname $$f && \
	  $(BIN)/jupytext --quiet --to py:percent -o nbs_py/$${rel%.ipynb}.py $$f || exit 1; done
	$(BIN)/nbdev_export

readme: $(STAMP)
	$(PY) tools/docs.py --readme

site: $(STAMP)
	$(PY) tools/docs.py --site

docs: $(STAMP)
	@if command -v quarto >/dev/null; then $(BIN)/nbdev_docs; else echo "quarto not found: rendering offline into _site/"; $(PY) tools/docs.py --site --readme; fi

bench: $(STAMP)
	@for f in bench/bench_*.py; do [ -e "$$f" ] || continue; echo "== $$f"; $(PY) $$f || exit 1; done
