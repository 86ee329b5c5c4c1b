# %% [markdown]
# # semsim
#
# > Semantic Simulation: a physics of meaning in which tokens move as particles under a learned scalar energy.

# %% [markdown]
# semsim is a notebook-first, literate research library for *Semantic Simulation* (Gueorguiev, 2026). Each chapter
# of these docs derives one ingredient, implements it in a few short exported cells, shows it on a small example and
# tests the mathematics; the `semsim` package is generated from those notebooks with
# [nbdev](https://nbdev.fast.ai).
#
# The chapters, in reading order:
#
# - **00–09 core library**: plumbing (`semsim.core`), the [notation](01_notation.html) every chapter follows, corpora and the GPT-2 tokenizer (`semsim.data`), what every causal LM shares (`semsim.lm`), the command line (`semsim.cli`);
# - **10–19 formal ingredients**: signature matrix, energy wells, Lagrangian dynamics, PARF/SARF forces;
# - **20–29 models**: the conservative-by-construction SPLM family and its matched attention baseline;
# - **30–39 training and inference**; **40–49 analysis** of hidden-state trajectories;
# - **[results](results.html)**: what semsim's models measured when trained, read from small JSON records in `results/`;
# - **tutorials**: end-to-end notebooks that open in Colab.
#
# **Sources.** The theory is that of the paper, Gueorguiev (2026), *Semantic Simulation: A Prescriptive Lagrangian
# Framework*; the numbers semsim reproduces come from its public companion repository
# [`dimitarpg13/semsimula-paper`](https://github.com/dimitarpg13/semsimula-paper). The chapters cite it as
# `semsimula-paper@COMMIT: path`, a path relative to the repository's root at that commit: `eb95852` (2026-05-07)
# for most of it, later commits (`44cc714` for the structured potentials) where a model appeared only there.

# %% [markdown]
# ## Install and run
#
# Two commands do all set-up on a fresh machine (each creates `.venv` if missing and installs the package into it):
#
# ```sh
# make demo   # the main job
# make test   # the whole suite; ends with one line "N passed, N failed"
# ```
#
# To use semsim in your own work: `pip install -e .` from a clone (Python ≥ 3.10, torch ≥ 2.2, transformers ≥ 5.4; tested on Python 3.11 with the versions in `requirements/lock.txt`, and with transformers 5.4 by `make test-oldest`). Data is found in
# `$SEMSIM_DATA_DIR` when you set it, else in the user cache (`~/.cache/semsim`), else downloaded; the GPT-2
# tokenizer works offline.

# %% [markdown]
# ## What is inside
#
# | module | what it gives you | chapter |
# |---|---|---|
# | `semsim.data` | Tiny Shakespeare / TinyStories / any text, the exact GPT-2 BPE (offline), cached token streams, batches, log-frequency surprisal | [Data](05_data.html) |
# | `semsim.lm` | what every causal LM shares: the two loss conventions, token checks, left padding, the cache under both transformers names | [Causal-LM plumbing](06_lm.html) |
# | `semsim.signature`, `semsim.wells`, `semsim.dynamics`, `semsim.forces` | signature matrix and H*, the seven energy wells with fits, Lagrangian dynamics, integrators and the SPLM's L-step loop, PARF/SARF forces | [Signature](10_signature.html), [Wells](11_wells.html), [Dynamics](12_dynamics.html), [Forces](13_forces.html) |
# | `semsim.context`, `semsim.potentials`, `semsim.splm`, `semsim.baselines` | the SPLM family (ξ pools with their streaming recurrence, MLP SQ1–SQ4 and Gaussian-mixture potentials with graph-free forces, mass modes, integrators) and the matched GPT baseline with its KV cache, as Hugging Face models | [SPLM](22_splm.html) |
# | `semsim.parf` | the PARF-augmented SPLM (Q9c), SparsePARFLM (straight-through Gumbel top-k) and multi-ξ PARFLM, with a source cache for decoding and live pair gradients | [PARF](27_parf.html) |
# | `semsim.fock` | Fock-PARFLM: PARF plus M prefix-causal registers (creation gate, lifecycle, reverse channel), O(1) register state per token when decoding; the leaky full-window variant for forensics | [Fock-PARFLM](28_fock.html) |
# | `semsim.hybrid` | the attention hybrids: Variant A (k attention blocks, m shared-V_θ steps) and the Helmholtz hybrid Q9d (any A/S schedule), decoding with a KV cache for the A-part and the recurrent state for the S-part | [Attention hybrids](29_hybrid.html) |
# | `semsim.models` | every family member by name: `build_model('splm-multixi', d=64)` | [Model registry](26_models.html) |
# | `semsim.reference`, `semsim.causal` | loading the reference repository's checkpoints; the causal-violation probe | [Reference](24_reference.html), [Causality](25_causal.html) |
# | `semsim.train_config`, `semsim.runs`, `semsim.train`, `semsim.streaming`, `semsim.flops` | typed run configs and presets; checkpoints and logs that survive a kill; one trainer from laptop to GPU; O(1)-per-token decoding behind `generate()`; FLOP counts | [Configuration](30_config.html), [Runs](30_runs.html), [Training](30_train.html), [Streaming](31_streaming.html) |
# | `semsim.trajectories`, `semsim.stp` | hidden-state trajectories of any causal LM; the STP–acceleration identity and statistics | [STP](41_stp.html) |
# | `semsim.separator` | the shared-potential separator (one V_ψ for all layers), its oracle, capacity sweep, token axis, Jacobian-symmetry test, the sub-stack test of hybrids and the generalised pair test (a learned pair potential over the prefix) | [Separator](42_separator.html) |
# | `semsim.retrofit` | the conservative retro-fit menu E1–E5: wells, damping, first-order flow, curl and gauge terms against the static null | [Retro-fit menu](43_retrofit.html) |
# | `semsim.markov_order` | the Markov-order test of last-layer token trajectories (kernel ridge, leave-one-sentence-out, decision letter) | [Markov order](44_markov_order.html) |
# | `semsim.mechanics` | energy along depth: H = kinetic + potential per layer, its drift slope and bandwidth; the integrators' order at γ = 0 | [Mechanics](45_mechanics.html) |
# | `semsim.attractors` | attractors of V_θ by the model's own dynamics and by anchored descent, KMeans basins decoded through the LM head, SQ3 basins from the parameters | [Attractors](46_attractors.html) |
#
# From the command line:
#
# ```sh
# semsim data tinyshakespeare                                     # corpus statistics
# semsim train --preset shakespeare --model splm-multixi --set xi_channels=4 --out runs/x
# semsim train --resume --out runs/x                              # continue after an interruption
# semsim analyze stp --model gpt2 --corpus stp_corpus_50.json --out out/stp
# semsim analyze separator --model gpt2 --corpus stp_corpus_50.json --out out/separator --jacobian
# ```

# %% [markdown]
# ## A first look
#
# Tiny Shakespeare, tokenized with the exact GPT-2 BPE and split as in the reference system:

# %%
from semsim.data import corpus_stats
from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.causal import causal_probe
import torch

# %%
stats = corpus_stats('tinyshakespeare')
print(f"{stats['tokens']:,} tokens: {stats['train_tokens']:,} train, {stats['val_tokens']:,} validation; "
      f"{stats['train_types']:,} token types seen in train")

# %% [markdown]
# A scalar-potential language model is a Hugging Face causal LM whose tokens move under one learned energy; it is
# causal by construction, which the probe checks:

# %%
torch.manual_seed(0)
model = SPLMForCausalLM(SPLMConfig.preset('multixi', d=32, L=4, v_hidden=64, v_depth=2, max_len=64))
ids = torch.randint(0, model.config.vocab_size, (1, 16))
out = model(ids, labels=ids, output_hidden_states=True)
print(f"loss {out.loss.item():.2f}; {len(out.hidden_states)} integration states h_0..h_L; "
      f"causal probe passed: {causal_probe(model).passed}")

# %% [markdown]
# ## Developing semsim
#
# Each chapter has one hand-edited source, its py:percent text `nbs_py/NN_name.py`; the notebook `nbs/NN_name.ipynb`
# is made from it (keeping its stored outputs) and `semsim/` from the notebooks by `nbdev_export`
# (CONTRIBUTING.md has the details):
#
# ```sh
# make sync                       # notebooks from their text sources (one-way, by content)
# make nbs NB=nbs/05_data.ipynb   # sync, execute (store outputs for the docs), clean, export
# make update                     # carry a fix made directly in semsim/ back into the chapter
# make lab                        # JupyterLab: either form opens, saving writes both
# make test-latest                # the suite on the newest allowed dependencies (make test uses the lock)
# make docs                       # Quarto when installed, else the offline renderer into _site/
# make bench                      # benchmarks in bench/
# ```
