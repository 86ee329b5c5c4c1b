# %% [markdown]
# # Training
#
# > One flat training loop for every semsim model, from a 2-core laptop to a GPU: reference recipes as presets, checkpoints that survive a kill and resume exactly, guards, distributed data parallel.

# %%
#| default_exp train

# %% [markdown]
# Every model of the SPLM family and its attention baseline is trained by the same loop, written here in one flat
# function, `train(cfg)`. It follows the reference's recipe (semsimula-paper@eb95852: `notebooks/conservative_arch/train_splm.py`):
#
# $$J(\theta) = \frac{1}{BT}\sum_{b=1}^{B}\sum_{t=1}^{T} -\log \mathrm{softmax}\big(z_{b,t}\big)[y_{b,t}]
#   \;+\; \lambda_V\,\overline{V_\theta^2},$$
#
# where $x \in \{0..V-1\}^{B\times T}$ (`x`) is a random window of the training stream, $y$ (`y`) the same window
# shifted by one token (so $y_{b,t} = x_{b,t+1}$: **no further shift** is applied, unlike Hugging Face's `labels`
# convention), $z = $ `model(x).logits` $\in\mathbb{R}^{B\times T\times V}$, and $\lambda_V\overline{V^2}$ the energy
# regulariser that an SPLM adds itself (`out.v_reg`, configured by the model option `lambda_v`; absent for MatchedGPT).
# The parameters move by **AdamW** with decoupled weight decay $w$ (`weight_decay`) over all parameters, betas
# $(\beta_1, \beta_2) = (0.9, 0.95)$, after the gradient is **clipped** to global norm $c = 1$ (`grad_clip`):
#
# $$g \leftarrow g\cdot\min\!\big(1, c/\lVert g\rVert_2\big),\quad
#   \mu \leftarrow \beta_1 \mu + (1-\beta_1) g,\quad s \leftarrow \beta_2 s + (1-\beta_2) g^2,\quad
#   \theta \leftarrow \theta(1 - \eta_k w) - \eta_k\,\frac{\mu/(1-\beta_1^k)}{\sqrt{s/(1-\beta_2^k)} + \epsilon},$$
#
# (the objective is $J$ and AdamW's first moment $\mu$, so that $\mathcal L$ stays the Lagrangian and $m$ the mass: *Notation*)
#
# with $k$ the 1-based step count and the learning rate $\eta_k$ (`lr_at`) rising linearly for $W$ (`warmup`) steps and
# then following a cosine to zero at step $S$ (`max_steps`).
#
# Around that core the chapter builds what a long run needs: presets, typed overrides from the command line,
# validation before any work, the causal probe as a start-up guard, a fixed validation set, atomic checkpoints
# (Hugging Face safetensors + optimizer, schedule, data-sampler and RNG state) with an exact resume, a per-step JSONL
# log, a loss-curve plot and a summary, bf16/TF32/`torch.compile` on CUDA and DDP through `torchrun`.

# %%
#| export
from __future__ import annotations
import argparse, contextlib, json, math, os, random, shutil, sys, time
from dataclasses import dataclass, field, fields, asdict, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from semsim.core import atomic_write_text, set_seed, get_device
from semsim.models import MODELS, ModelSpec, model_fields, model_spec
from semsim.train_config import (TrainConfig, RUNTIME_FIELDS, PRESETS, parse_value, make_config, config_from_dict, model_kwargs,
                                 validate_config, lr_at, _max_len_of)
from semsim.runs import (CKPT_PREFIX, latest_checkpoint, save_checkpoint, load_weights, read_log, check_resumable,
                         plot_run, plot_runs, run_record, _rng_state, _set_rng_state, _truncate_log, _jsonable, _config_diff)
from semsim.causal import causal_probe, audit
from semsim.data import tokenize_corpus, get_batch, logfreq_surprisal, gpt2_tokenizer, GPT2_VOCAB_SIZE

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import tempfile, io, contextlib
import matplotlib.pyplot as plt
from semsim.data import load_corpus
from semsim.baselines import MatchedGPTForCausalLM
import transformers

# %%
#| hide
transformers.utils.logging.disable_progress_bar(); transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)  # tiny models: on a busy 2-core machine extra threads only add contention


# %% [markdown]
# ## Data and the compact vocabulary
#
# `prepare_data` tokenizes the corpus with the exact GPT-2 BPE (cached; `semsim.data`) and computes the logfreq
# surprisal $s(v) = -\ln\big((c_v+1)/(N+V)\big)$ of the training split that the `logfreq` mass reads.
#
# **Compact vocabulary (opt-in, a deviation from the reference).** On a CPU the 50,257-row embedding and readout
# dominate the cost of a tiny model: in the `smoke` SPLM ($d = 64$) the embedding holds 3.2M of the 3.26M parameters,
# and the readout $h E^\top$ costs $2dV = 6.4$ MFLOPs per token. With `compact_vocab=True` the ids are renumbered to the $V_c$
# token types that occur in the corpus: compact id $i$ stands for GPT-2 id `vocab_map[i]` (sorted), so
# $V_c = 11{,}706$ for Tiny Shakespeare (11,482 types in train plus 224 seen only in validation). The map is saved with
# every checkpoint (`vocab_map.json`) and `VocabCodec` encodes and decodes through it, so generated text is decoded
# correctly. The model no longer spends probability on the 38,551 GPT-2 tokens that never occur, so its perplexity is
# **not comparable** with a 50,257-way model's: the parity presets keep the full BPE vocabulary.

# %%
#| export
class VocabCodec:
    "Text <-> model ids: GPT-2 BPE, optionally through a compact vocabulary `vocab_map` (model id -> GPT-2 id)."
    def __init__(self, vocab_map:Optional[np.ndarray]=None, tokenizer=None):
        self.tok = tokenizer or gpt2_tokenizer()
        self.vocab_map = None if vocab_map is None else np.asarray(vocab_map, dtype=np.int64)
        if self.vocab_map is not None:
            self.lookup = np.full(max(self.tok.vocab_size, int(self.vocab_map.max()) + 1), -1, dtype=np.int64)
            self.lookup[self.vocab_map] = np.arange(len(self.vocab_map))
    @property
    def vocab_size(self) -> int: return self.tok.vocab_size if self.vocab_map is None else len(self.vocab_map)
    def to_model(self, gpt2_ids) -> np.ndarray:
        "Map GPT-2 ids to model ids; an id outside a compact vocabulary is an error naming the token."
        ids = np.asarray(gpt2_ids, dtype=np.int64)
        if self.vocab_map is None: return ids
        out = self.lookup[ids]
        if (out < 0).any():
            bad = int(ids[np.flatnonzero(out < 0)[0]])
            raise ValueError(f"token {self.tok.decode([bad])!r} (GPT-2 id {bad}) is not in this run's compact vocabulary")
        return out
    def encode(self, text:str) -> list: return self.to_model(self.tok.encode(text)).tolist()
    def decode(self, ids) -> str:
        ids = np.asarray(ids.tolist() if isinstance(ids, Tensor) else ids, dtype=np.int64)
        return self.tok.decode((ids if self.vocab_map is None else self.vocab_map[ids]).tolist())

@dataclass
class RunData:
    "The token streams of a run in model ids, and what the model needs to know about them."
    train: np.ndarray                 # training stream, (N_train,)
    val: np.ndarray                   # validation stream, (N_val,)
    vocab_size: int                   # V of the model
    vocab_map: Optional[np.ndarray]   # compact id -> GPT-2 id, (V,), or None for plain GPT-2 ids
    surprisal: Tensor                 # logfreq surprisal of the training split, (V,)

def compact_vocabulary(*streams:np.ndarray) -> np.ndarray: # GPT-2 id streams
    "The sorted token types occurring in the streams: compact id i stands for GPT-2 id `vocab_map[i]`."
    return np.unique(np.concatenate([np.unique(np.asarray(s)) for s in streams])).astype(np.int64)

# %%
#| export
def prepare_data(cfg:TrainConfig) -> RunData:
    "Tokenize the corpus (cached), optionally compact the vocabulary, and check it against the model's."
    train, val = tokenize_corpus(cfg.corpus, cfg.val_frac)
    vocab_map = None
    if cfg.compact_vocab:
        vocab_map = compact_vocabulary(train, val)
        codec = VocabCodec(vocab_map)
        train, val, V = codec.to_model(train), codec.to_model(val), len(vocab_map)
    else: train, val, V = np.asarray(train), np.asarray(val), GPT2_VOCAB_SIZE
    hi = int(max(train.max(), val.max()))
    if cfg.vocab_size:
        if hi >= cfg.vocab_size:
            raise ValueError(f"the data holds token ids up to {hi} but the model vocabulary is vocab_size={cfg.vocab_size}: "
                             f"set vocab_size >= {hi + 1} (or 0 for the default), or use compact_vocab")
        V = cfg.vocab_size
    if min(len(train), len(val)) <= cfg.block_size:
        raise ValueError(f"block_size {cfg.block_size} needs more tokens than a split holds (train {len(train)}, val {len(val)})")
    return RunData(train, val, V, vocab_map, logfreq_surprisal(train, V))

def build_model(cfg:TrainConfig, data:RunData) -> nn.Module:
    "The model `cfg` names, sized for the data's vocabulary (weights drawn from the current RNG state)."
    spec = MODELS[cfg.model]
    return spec.build(spec.config_cls(**model_kwargs(cfg, data.vocab_size)), data)

def n_params(model:nn.Module) -> int:
    "Number of distinct parameters (a tied embedding counts once)."
    return sum(p.numel() for p in model.parameters())

# %%
data = prepare_data(make_config('smoke', compact_vocab=True))
full = prepare_data(make_config('smoke'))
codec = VocabCodec(data.vocab_map)
test_eq((data.vocab_size, len(data.train), len(data.val)), (11_706, 321_124, 16_901))
test_eq(len(np.unique(data.train)), 11_482)
test_eq(data.vocab_map[data.train[:1000]], full.train[:1000])          # the remap is exactly invertible
test_eq(codec.decode(data.train[:60]), gpt2_tokenizer().decode(full.train[:60]))
s = "ROMEO:\nBut soft, what light through yonder window breaks?"
test_eq(codec.decode(codec.encode(s)), s)
test_fail(lambda: codec.encode('naïve ∑ᵢ'), contains="not in this run's compact vocabulary")
test_fail(lambda: prepare_data(make_config('smoke', vocab_size=50_000)), contains='token ids up to 50255 but the model vocabulary is vocab_size=50000')
test_eq((data.vocab_size - 11_482, GPT2_VOCAB_SIZE - data.vocab_size), (224, 38_551))
smoke = build_model(make_config('smoke'), full)
test_eq(smoke.E.weight.numel(), 3_216_448); assert smoke.E.weight.numel() / n_params(smoke) > 0.98
print(f"smoke SPLM: {n_params(smoke):,} parameters, {smoke.E.weight.numel():,} of them in E; readout 2dV = {2 * 64 * GPT2_VOCAB_SIZE / 1e6:.2f} MFLOPs/token")
print(f"compact vocabulary: {data.vocab_size:,} types; surprisal range [{data.surprisal.min():.3f}, {data.surprisal.max():.3f}] nats")


# %% [markdown]
# ## Optimiser
#
# AdamW over all parameters, as the reference did. With `no_decay_1d=True` the 1-D tensors (biases, LayerNorm gains,
# the scalar mass and damping parameters, EMA decays) are exempt from weight decay, the common practice for
# transformers; it is off by default so that the presets reproduce the reference.
#
# Two steps of the optimizer equal the update written out above, in float64 to round-off:

# %%
#| export
def make_optimizer(model:nn.Module, cfg:TrainConfig) -> torch.optim.AdamW:
    "AdamW, betas (β1, β2), over all trainable parameters; 1-D tensors undecayed with `no_decay_1d`."
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.no_decay_1d:
        groups = [{'params': [p for p in params if p.ndim >= 2], 'weight_decay': cfg.weight_decay},
                  {'params': [p for p in params if p.ndim < 2], 'weight_decay': 0.0}]
    else: groups = [{'params': params, 'weight_decay': cfg.weight_decay}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


# %%
torch.manual_seed(0)
lin = nn.Linear(3, 2).double()
c = make_config(weight_decay=0.1, lr=0.01)
opt = make_optimizer(lin, c)
theta = [p.detach().clone() for p in lin.parameters()]
mom = [torch.zeros_like(p) for p in theta]; sec = [torch.zeros_like(p) for p in theta]
for k in (1, 2):
    grads = [torch.randn_like(p) for p in theta]
    for p, g in zip(lin.parameters(), grads): p.grad = g.clone()
    opt.step()
    for i, g in enumerate(grads):
        mom[i] = 0.9 * mom[i] + 0.1 * g; sec[i] = 0.95 * sec[i] + 0.05 * g * g
        theta[i] = theta[i] * (1 - 0.01 * 0.1) - 0.01 * (mom[i] / (1 - 0.9**k)) / ((sec[i] / (1 - 0.95**k)).sqrt() + 1e-8)
for p, t in zip(lin.parameters(), theta): torch.testing.assert_close(p.detach(), t, atol=1e-15, rtol=0)
test_eq([g['weight_decay'] for g in make_optimizer(lin, make_config(no_decay_1d=True)).param_groups], [0.01, 0.0])
test_eq([p.ndim for p in make_optimizer(lin, make_config(no_decay_1d=True)).param_groups[1]['params']], [1])


# %% [markdown]
# ## Loss
#
# `forward_loss` computes the cross-entropy from the logits itself, against targets that the data loader has already
# shifted (the models' own `labels=` loss shifts again, the Hugging Face way, which would be off by one here), and adds
# the model's energy regulariser `v_reg` $= \lambda_V\overline{V^2}$ when it returns one.
#
# The loss is the mean negative log-probability of the targets, and on the first $T-1$ positions it equals the model's
# own shifted `labels=` loss on the unshifted window; for an SPLM with $\lambda_V > 0$ the total is CE + `v_reg`:

# %%
#| export
def forward_loss(model:nn.Module, x:Tensor, # input ids, (B,T)
                 y:Tensor): # targets: x shifted by one token, (B,T)
    "(total, cross-entropy, output): mean CE of logits[b,t] against y[b,t] (no shift), plus the model's v_reg."
    out = model(x)
    logits = out.logits
    B, T, V = logits.shape
    ce = F.cross_entropy(logits.float().reshape(B * T, V), y.reshape(B * T))
    reg = getattr(out, 'v_reg', None)
    return (ce if reg is None else ce + reg), ce, out


# %%
torch.manual_seed(0)
mg = MODELS['matched-gpt']
gpt = mg.build(mg.config_cls(vocab_size=50, d=16, n_layer=1, n_head=2, max_len=32))
win = torch.randint(0, 50, (3, 13)); x, y = win[:, :-1], win[:, 1:]
total, ce, out = forward_loss(gpt, x, y)
manual = -out.logits.log_softmax(-1).gather(-1, y[..., None]).mean()
test_close(ce.item(), manual.item(), eps=1e-6); assert total is ce
test_close(gpt(x, labels=x).loss.item(), F.cross_entropy(out.logits[:, :-1].reshape(-1, 50), y[:, :-1].reshape(-1)).item(), eps=1e-6)
sp = MODELS['splm-em-ln']
splm = sp.build(sp.config_cls(**sp.config_kwargs({**make_config('smoke').model_args, 'vocab_size': 50, 'd': 16, 'L': 2, 'lambda_v': 0.1})))
total, ce, out = forward_loss(splm, x, y)
test_close((total - ce).item(), out.v_reg.item(), eps=1e-7); assert out.v_reg.item() > 0


# %% [markdown]
# ## Guards
#
# **Causal probe.** Before the first step (and again on resume) the trainer runs `semsim.causal.causal_probe` on the
# real model (semsimula-paper@eb95852: `notebooks/conservative_arch/causal_probe.py`): a token's logits must not change when a later token changes, and the gradient of a
# position's logits with respect to later embeddings must vanish. A model that fails is refused with
# `CausalLeakError` (the command exits with status 2). The probe runs on the CPU copy before the model moves to its
# device, inside `torch.random.fork_rng`, so it changes neither the model, nor its gradients, nor any RNG stream.
#
# **Non-finite values.** A NaN or infinite loss or gradient norm stops the run *before* the update with
# `NonFiniteError`, naming the step; nothing is saved, so `OUT/latest` still names the last good checkpoint (exit
# status 3).

# %%
#| export
class CausalLeakError(RuntimeError):
    "The causal probe found that a token's logits depend on later tokens."

class NonFiniteError(RuntimeError):
    "A non-finite loss or gradient norm: the run stopped and kept its last good checkpoint."

def _check_on(check, model:nn.Module, max_len:int):
    "Run `check` (causal_probe or audit) at T = min(32, max_len), leaving the model's mode, gradients and the global RNG as they were."
    T = min(32, max_len); t_pert = min(20, T - 4) if T > 8 else T // 2
    was = model.training
    with torch.random.fork_rng(devices=[]): rep = check(model, T=T, t_pert=t_pert, seed=0)
    model.train(was); model.zero_grad(set_to_none=True)
    return rep

def audit_model(model:nn.Module, max_len:int):
    "semsim's leak audit on `model`, as the trainer's start-up guard runs it."
    return _check_on(audit, model, max_len)

def probe_model(model:nn.Module, max_len:int):
    "semsim's causal probe on `model`, as the trainer's start-up guard runs it."
    return _check_on(causal_probe, model, max_len)


# %% [markdown]
# ## Log, evaluation and distribution helpers
#
# `OUT/log.jsonl` has one JSON object per step: `step` (1-based count of updates done), `loss` (training CE, the mean
# over ranks), `lr`, `grad_norm` (before clipping), the model's scalars (SPLM: `gamma`, `mass_mean/std/min/max` over
# the batch, `xi_alpha` for EMA pools), `tokens_per_s`, `elapsed` (seconds of training, summed over resumes), and at
# evaluation steps `val_loss` and `val_ppl` $= e^{\text{val\_loss}}$. A resumed run first truncates the log to its
# checkpoint's step; a line torn by a kill mid-write is skipped when read.
#
# **Evaluation** is the mean CE over `eval_iters` validation batches drawn **once**, from a generator seeded with
# `seed + 7919` that nothing else uses, so every evaluation of every run with the same seed, batch and block size
# scores the same windows, whatever the model and however long it trained. Forces that come from `autograd.grad`
# need gradients even in evaluation (semsimula-paper@eb95852: `notebooks/conservative_arch/model.py`), so for those models evaluation runs under
# `torch.enable_grad()` (`create_graph` is off in eval mode); other models evaluate under `torch.no_grad()`.

# %%
#| export
def fixed_val_batches(val:np.ndarray, # validation stream, (N_val,)
                      cfg:TrainConfig, device='cpu') -> list: # eval_iters pairs (x, y), each (batch_size, block_size)
    "The run's validation batches: drawn once from a generator seeded seed + 7919 that nothing else uses."
    g = torch.Generator().manual_seed(cfg.seed + 7_919)
    return [get_batch(val, cfg.batch_size, cfg.block_size, g, device) for _ in range(cfg.eval_iters)]

def evaluate(model:nn.Module, batches:Sequence, # (x, y) pairs, each (B,T)
             autograd_force:bool, amp=contextlib.nullcontext) -> float: # mean validation CE
    "Mean CE over the batches in eval mode; gradients stay enabled for autograd forces."
    was = model.training; model.eval()
    tot = 0.0
    with (torch.enable_grad() if autograd_force else torch.no_grad()):
        for x, y in batches:
            with amp(): logits = model(x).logits
            B, T, V = logits.shape
            tot += F.cross_entropy(logits.detach().float().reshape(B * T, V), y.reshape(B * T)).item()
    model.train(was)
    return tot / max(1, len(batches))


# %% [markdown]
# **Distributed data parallel.** Launched by `torchrun --nproc_per_node N -m semsim.train ...`, each process reads
# its rank from the environment and joins a process group (NCCL on GPUs, Gloo on CPUs). The global batch
# `batch_size` is split evenly: rank $r$ draws `batch_size / N` windows per step from its **own** stream, a generator
# seeded `seed + r`. DDP averages gradients across ranks, so one step equals a single-process step on the union of
# the ranks' windows. The SPLM needs one care: its force is an `autograd.grad` taken *inside* the forward, and with
# DDP's default reducer the gradients of such a model came back **un-reduced** (each rank kept its own half-batch
# gradient: measured while writing this chapter with a 2-process script, the max deviation from the full-batch
# gradient was 0.13 on the positional table, as large as the gradient itself), while MatchedGPT was fine. With `static_graph=True` (all our models use the same parameters
# in the same graph at every step) the reduction is correct for every family: `tests/test_train_ddp.py` checks, with
# 2 Gloo processes under `torchrun`, that one step's gradients and the weights after three AdamW steps equal the
# single-process ones on the same global batches to round-off (≤ 1e-14 in float64), for the multi-ξ SPLM (MLP
# potential, autograd force), the SQ3 SPLM (closed-form force) and MatchedGPT. Rank 0 alone writes the log,
# checkpoints (gathering every rank's generator state into them) and the summary; validation batches are shared out
# across ranks and the losses summed.
#
# **CUDA.** On a GPU the forward runs under bf16 autocast (`amp='auto'`; the loss is computed in float32), matmuls
# and convolutions may use TF32 — except for the models whose force is taken by `autograd.grad` (the MLP potential:
# `tf32_allowed`, from the registry's `autograd_force`). The reference found that TF32 matmuls corrupt that
# second-order force (an em_ln TinyStories run reached 29.47 PPL as a precision artifact) and switched TF32 off for
# it; here it stays off for those models, while MatchedGPT and the closed-form potentials keep it. `bench/device_check.py`
# measures the force and logits difference with TF32 on and off. `torch.compile` is applied where it is valid:
# MatchedGPT and the SPLMs whose potential has a closed-form force (SQ1–SQ3, the Gaussian mixture). The MLP
# potential's force is `autograd.grad(V.sum(), h, create_graph=True)` inside the forward, and training through it
# needs a double backward that `torch.compile` does not support: those models stay eager, and the progress bar and
# the summary say so. `tests/test_train_compile.py` trains every registry member that compiles with `compile='on'`
# on a CPU (traced by dynamo and AOTAutograd) and checks its losses, gradient norms and validation losses against the
# eager run's. By default none of this path runs on a CPU (amp is off, nothing compiles), so CPU runs are bitwise
# reproducible; `compile='on'` compiles there too, and the *Performance* page measures when that pays for a CPU run.

# %%
#| export
def _dist_setup(device:torch.device):
    "(rank, world size, whether this call created the process group), from torchrun's environment."
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world == 1: return 0, 1, False
    import torch.distributed as dist
    if device.type == 'cuda': torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', '0')))  # before NCCL starts
    if dist.is_initialized(): return dist.get_rank(), dist.get_world_size(), False
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return dist.get_rank(), dist.get_world_size(), True

def _all_mean(x:float, world:int) -> float:
    "Mean of a float over ranks (the tensor lives where the backend needs it: GPU for NCCL)."
    if world == 1: return x
    import torch.distributed as dist
    dev = torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')
    t = torch.tensor([x], dtype=torch.float64, device=dev); dist.all_reduce(t)
    return t.item() / world

def _gather_objects(obj, world:int) -> list:
    if world == 1: return [obj]
    import torch.distributed as dist
    lst = [None] * world; dist.all_gather_object(lst, obj)
    return lst

def _interactive() -> bool:
    "True in a terminal or a notebook: live progress bars there, none in logs and pipes."
    return sys.stderr.isatty() or 'ipykernel' in sys.modules

def _tqdm():
    "tqdm.auto (a widget in notebooks that have ipywidgets, text elsewhere), without its warning when they are missing."
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        from tqdm.auto import tqdm
    return tqdm

def _barrier(world:int):
    if world > 1:
        import torch.distributed as dist
        dist.barrier()

# %%
#| export
def wrap_ddp(model:nn.Module, device:torch.device) -> nn.Module:
    "DistributedDataParallel with `static_graph=True`, which reduces the gradients of a force computed inside forward."
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device.type == 'cuda' else None, static_graph=True)

def _amp_ctx(cfg:TrainConfig, device:torch.device):
    "bf16 autocast on CUDA under amp='auto' (anywhere under amp='bf16'); a no-op otherwise."
    if cfg.amp == 'bf16' or (cfg.amp == 'auto' and device.type == 'cuda'):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext

def tf32_allowed(spec:ModelSpec, # the model's registry entry, e.g. model_spec('splm-sq3')
                 model:nn.Module, # the built model (the entry decides from it, e.g. whether V_θ has a closed form)
                 device:torch.device) -> bool: # True: TF32 matmuls and convolutions may be used
    "TF32 on CUDA only, and never where the force is autograd.grad (TF32 corrupts that second-order force)."
    return device.type == 'cuda' and not spec.autograd_force(model)

def _use_compile(cfg:TrainConfig, device:torch.device, autograd_force:bool) -> tuple:
    "(compile?, how): torch.compile cannot trace the double backward of an autograd force, so that path stays eager."
    want = cfg.compile == 'on' or (cfg.compile == 'auto' and device.type == 'cuda')
    if want and autograd_force: return False, 'eager (autograd force: double backward)'
    return want, ('compiled' if want else 'eager')

# %% [markdown]
# ## The loop
#
# `train(cfg)` is the whole procedure, top to bottom: validate; set up the process group; refuse to overwrite an
# existing run unless resuming (and then check the configuration matches the saved one); tokenize; seed and build the
# model, load the checkpoint's weights, probe it; move it to the device; make the optimizer and restore its state, the
# data generator and the RNGs; draw the fixed validation batches; then for each step: learning rate, batch, forward,
# backward, clip, guard, update, log, and on schedule evaluate and checkpoint. At the end it writes the summary.

# %%
#| export
def train(cfg:TrainConfig) -> dict: # the run's summary (rank 0; None on other ranks)
    "Train the model `cfg` describes; see the chapter text for the procedure."
    validate_config(cfg)
    device = get_device(None if cfg.device == 'auto' else cfg.device)
    rank, world, own_pg = _dist_setup(device)
    try: return _train(cfg, device, rank, world)
    finally:
        if own_pg:
            import torch.distributed as dist
            dist.destroy_process_group()

# %%
#| export
def _resume_state(cfg:TrainConfig, out:Path, world:int, master:bool) -> tuple:
    "(latest checkpoint, its trainer state) when resuming, (None, None) for a fresh start; refuses a mismatch."
    ckpt = latest_checkpoint(out)
    if cfg.resume not in (True, False, 'auto'): raise ValueError(f"resume must be True, False or 'auto', got {cfg.resume!r}")
    if ckpt is not None and not cfg.resume:
        raise ValueError(f"{out} already holds a run (latest checkpoint {ckpt.name}): pass --resume to continue it, or choose another --out")
    if ckpt is None and cfg.resume is True:
        raise ValueError(f"--resume: {out} holds no run to continue (no checkpoint {CKPT_PREFIX}N in it); check --out, "
                         f"or start a new run there without --resume")
    if ckpt is None: return None, None
    state = torch.load(ckpt/'trainer_state.pt', map_location='cpu', weights_only=True)
    check_resumable(state, cfg, world, master)
    return ckpt, state

def _setup_model(cfg:TrainConfig, data:RunData, ckpt, state, device:torch.device, T:int) -> nn.Module:
    "Seed, build, load the checkpoint's weights, probe (on the CPU, refusing a leak), move to the device."
    set_seed(cfg.seed)
    model = build_model(cfg, data)
    if state is not None: load_weights(model, ckpt)
    if cfg.probe:
        rep = probe_model(model, _max_len_of(model_kwargs(cfg, data.vocab_size)) or T)
        if not rep.passed: raise CausalLeakError(f"causal probe failed before step {state['step'] if state else 0}: {rep}. "
                                                 "Refusing to train a model whose logits see later tokens.")
        aud = audit_model(model, _max_len_of(model_kwargs(cfg, data.vocab_size)) or T)
        if aud.verdict != 'CLEAN': raise CausalLeakError(f"leak audit before step {state['step'] if state else 0}: {aud}. "
                                                        "Refusing to train a model that is not audited CLEAN.")
    if device.type == 'cuda':   # set both ways: an earlier run in this process must not leave TF32 on for an autograd force
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32_allowed(MODELS[cfg.model], model, device)
    return model.to(device)

def _setup_optimizer(model:nn.Module, cfg:TrainConfig, state, rank:int) -> tuple:
    "(AdamW, this rank's data generator), with their states and the RNGs restored when resuming."
    opt, gen = make_optimizer(model, cfg), torch.Generator().manual_seed(cfg.seed + rank)
    if state is not None:
        opt.load_state_dict(state['optimizer']); gen.set_state(state['gen_states'][rank]); _set_rng_state(state['rng'])
    return opt, gen

# %%
#| export
def _open_log(cfg:TrainConfig, out:Path, data:RunData, state, master:bool):
    "Rank 0: the run folder with its config (and vocabulary map), the log cut back to the resumed step; the log file."
    if not master: return None
    out.mkdir(parents=True, exist_ok=True)
    if state is not None: _truncate_log(out/'log.jsonl', state['step'])
    else: atomic_write_text(out/'log.jsonl', '')
    atomic_write_text(out/'train_config.json', json.dumps(_jsonable(cfg), indent=1))
    if data.vocab_map is not None: atomic_write_text(out/'vocab_map.json', json.dumps(data.vocab_map.tolist()))
    return open(out/'log.jsonl', 'a', encoding='utf-8')

def _non_finite(out:Path, step:int, loss:float, gn:float) -> NonFiniteError:
    "The error for a non-finite loss or gradient norm, naming the last good checkpoint."
    last = latest_checkpoint(out)
    return NonFiniteError(f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} at step {step} "
                          f"(loss {loss}, grad norm {gn}): stopped before the update. "
                          + (f"The last good checkpoint is {last} (continue with --resume, e.g. at a lower lr)."
                             if last else "No checkpoint had been written yet."))

def _trainer_state(n:int, opt, gens:list, elapsed:float, best:float, world:int, cfg:TrainConfig, data:RunData) -> dict:
    "Everything besides the weights that an exact resume needs."
    return {'step': n, 'optimizer': opt.state_dict(), 'gen_states': gens, 'rng': _rng_state(), 'elapsed': elapsed,
            'best_val': best, 'world_size': world, 'config': _jsonable(cfg),
            'vocab_map': None if data.vocab_map is None else data.vocab_map.tolist()}

# %% [markdown]
# With the set-up in those helpers, the loop reads top to bottom:

# %%
#| export
def _train(cfg:TrainConfig, device:torch.device, rank:int, world:int) -> Optional[dict]:
    spec, out, master = MODELS[cfg.model], Path(cfg.out), rank == 0
    if world > 1 and device.type == 'cuda': device = torch.device('cuda', torch.cuda.current_device())
    if cfg.batch_size % world: raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes {world}")
    if cfg.threads: torch.set_num_threads(cfg.threads)
    B, T = cfg.batch_size // world, cfg.block_size
    ckpt, state = _resume_state(cfg, out, world, master)
    if rank != 0: _barrier(world)                                 # rank 0 tokenizes first, the others read its cache
    data = prepare_data(cfg)
    if rank == 0: _barrier(world)
    model = _setup_model(cfg, data, ckpt, state, device, T)
    autograd_force = spec.autograd_force(model)
    (compiled, how), amp = _use_compile(cfg, device, autograd_force), _amp_ctx(cfg, device)
    opt, gen = _setup_optimizer(model, cfg, state, rank)
    val_batches = fixed_val_batches(data.val, cfg, device)
    fwd = wrap_ddp(model, device) if world > 1 else model
    if compiled: fwd = torch.compile(fwd)
    start, elapsed0, best = (state['step'], state['elapsed'], state['best_val']) if state else (0, 0.0, float('inf'))
    if master and state is not None: print(f"{cfg.model}: resumed from step {start} ({ckpt})", flush=True)
    logf = _open_log(cfg, out, data, state, master)
    bar = _tqdm()(total=cfg.max_steps, initial=start, unit='step', desc=f'{cfg.model} ({how})', dynamic_ncols=True,
                  disable=not (master and cfg.progress and _interactive()))
    t0, tok_step = time.time(), cfg.batch_size * T
    model.train()
    try:
        for step in range(start, cfg.max_steps):
            ts, lr = time.time(), lr_at(step, cfg.lr, cfg.warmup, cfg.max_steps)
            for g in opt.param_groups: g['lr'] = lr
            spec.on_step(model, step / cfg.max_steps)
            x, y = get_batch(data.train, B, T, gen, device)
            with amp(): total, ce, _ = forward_loss(fwd, x, y)
            opt.zero_grad(set_to_none=True)
            total.backward()
            gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            loss, n = _all_mean(ce.item(), world), step + 1
            if not (math.isfinite(loss) and math.isfinite(gn)): raise _non_finite(out, n, loss, gn)
            opt.step()
            rec = {'step': n, 'loss': loss, 'lr': lr, 'grad_norm': gn}
            if total is not ce: rec['loss_total'] = _all_mean(total.item(), world)
            rec.update(spec.stats(model, x))
            rec['tokens_per_s'], rec['elapsed'] = tok_step / max(time.time() - ts, 1e-9), elapsed0 + time.time() - t0
            if n % cfg.eval_every == 0 or n == cfg.max_steps:
                mine = val_batches[rank::world]
                rec['val_loss'] = _all_mean(evaluate(model, mine, autograd_force, amp) * len(mine), world) * world / len(val_batches)
                rec['val_ppl'] = math.exp(min(rec['val_loss'], 700.0)); best = min(best, rec['val_loss'])
            if master: logf.write(json.dumps(rec) + '\n'); logf.flush()
            if n % cfg.ckpt_every == 0 or n == cfg.max_steps:
                gens = _gather_objects(gen.get_state(), world)
                if master: save_checkpoint(out, n, model, _trainer_state(n, opt, gens, rec['elapsed'], best, world, cfg, data))
                _barrier(world)
            bar.update(1)
            bar.set_postfix(loss=f'{loss:.3f}', tok_s=f"{rec['tokens_per_s']:,.0f}", **({'val_ppl': f"{rec['val_ppl']:.1f}"} if 'val_ppl' in rec else {}))
    finally:
        bar.close()
        if logf: logf.close()
    summary = write_summary(out, cfg, model, data, {'device': str(device), 'world_size': world, 'compile': how,
                            'amp': 'off' if amp is contextlib.nullcontext else 'bf16'}) if master else None
    _barrier(world)
    return summary

# %% [markdown]
# ## Outputs
#
# At the end rank 0 writes `OUT/summary.json` (parameters, steps, tokens, final and best validation loss/PPL, the
# mean training loss over the last 10 % of steps, wall time, median tokens/s, device, the configuration and a short
# sample), `OUT/summary.md` (the same as a table, with the plot and the sample) and `OUT/loss_curve.png`. `load_run`
# reopens a run (its latest checkpoint) for generation or analysis, with the codec that decodes its vocabulary;
# `sample` draws a continuation by recomputing the context each token (top-k, temperature, seeded).

# %%
#| export
def sample(model:nn.Module, codec:VocabCodec, prompt:str='\n', # text to continue
           max_new_tokens:int=60, temperature:float=0.8, top_k:Optional[int]=40, seed:int=0) -> str:
    "Prompt plus a continuation sampled by the model's own `generate()` (its cache when the text fits max_len)."
    if max_new_tokens < 0 or not temperature > 0: raise ValueError("max_new_tokens must be >= 0 and temperature > 0")
    dev = next(model.parameters()).device
    ids = torch.tensor([codec.encode(prompt) or [0]], dtype=torch.long, device=dev)
    if max_new_tokens == 0: return codec.decode(ids[0])
    ml = _max_len_of(model.config.to_dict()) or ids.shape[1] + max_new_tokens
    fits = ids.shape[1] + max_new_tokens <= ml                             # else: recompute, the context cropped to max_len
    was = model.training; model.eval()
    with torch.random.fork_rng(devices=[dev] if dev.type == 'cuda' else []):
        torch.manual_seed(seed)
        out = model.generate(ids[:, -ml:], max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                             top_k=top_k or 0, pad_token_id=0, use_cache=fits)
    model.train(was)
    return codec.decode(torch.cat([ids[0, :-ml], out[0]]) if ids.shape[1] > ml else out[0])

# %%
#| export
def write_summary(out:Union[str, Path], cfg:TrainConfig, model:nn.Module, data:RunData, info:dict) -> dict:
    "summary.json, summary.md and loss_curve.png in the run folder, from its log."
    import matplotlib.pyplot as plt
    out = Path(out); recs = read_log(out/'log.jsonl')
    ev = [r for r in recs if 'val_loss' in r]
    tail = [r['loss'] for r in recs[-max(1, len(recs) // 10):]]
    steps = recs[-1]['step'] if recs else 0
    s = {'model': cfg.model, 'corpus': cfg.corpus, 'params': n_params(model), 'steps': steps,
         'tokens': steps * cfg.batch_size * cfg.block_size,
         'val_loss': ev[-1]['val_loss'] if ev else None, 'val_ppl': ev[-1]['val_ppl'] if ev else None,
         'best_val_ppl': min(r['val_ppl'] for r in ev) if ev else None,
         'train_loss_tail': float(np.mean(tail)) if tail else None, 'elapsed_s': recs[-1]['elapsed'] if recs else 0.0,
         'tokens_per_s': float(np.median([r['tokens_per_s'] for r in recs])) if recs else None,
         'vocab_size': data.vocab_size, 'compact_vocab': cfg.compact_vocab, **info, 'config': _jsonable(cfg)}
    s['sample'] = sample(model, VocabCodec(data.vocab_map), '\n', 32, seed=cfg.seed)
    atomic_write_text(out/'summary.json', json.dumps(s, indent=1))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    plot_run(recs, cfg.model, ax)
    ax.set_title(f"{cfg.model} on {cfg.corpus}" + (f": val PPL {s['val_ppl']:.2f}" if ev else ''))
    fig.tight_layout(); fig.savefig(out/'loss_curve.png', dpi=110); plt.close(fig)
    rows = [('parameters', f"{s['params']:,}"), ('steps', f"{steps:,}"), ('tokens seen', f"{s['tokens']:,}"),
            ('final val CE / PPL', f"{s['val_loss']:.4f} / {s['val_ppl']:.2f}" if ev else '(no evaluation)'),
            ('best val PPL', f"{s['best_val_ppl']:.2f}" if ev else '-'),
            ('train CE, last 10 % of steps', f"{s['train_loss_tail']:.4f}" if tail else '-'),
            ('training time', f"{s['elapsed_s']:.1f} s"), ('tokens/s (median step)', f"{s['tokens_per_s'] or 0:,.0f}"),
            ('device', f"{info.get('device')} x {info.get('world_size')} ({info.get('compile')}, amp {info.get('amp')})"),
            ('vocabulary', f"{data.vocab_size:,}" + (' (compact: corpus token types; deviates from the reference)' if cfg.compact_vocab else ''))]
    md = [f"# {cfg.model} on {cfg.corpus}", '', '| quantity | value |', '|---|---|', *[f'| {a} | {b} |' for a, b in rows],
          '', '![loss curve](loss_curve.png)', '', '## Sample', '', '```', s['sample'], '```', '',
          '## Configuration', '', '```json', json.dumps(_jsonable(cfg), indent=1), '```', '']
    atomic_write_text(out/'summary.md', '\n'.join(md))
    return s

# %%
#| export
def load_run(path:Union[str, Path]): # a run folder (its latest checkpoint) or a checkpoint folder
    "(model in eval mode, VocabCodec, TrainConfig) of a saved run."
    p = Path(path)
    ck = latest_checkpoint(p) if (p/'latest').exists() else p
    if ck is None or not (ck/'trainer_state.pt').exists(): raise FileNotFoundError(f"no checkpoint in {p}")
    cfg = config_from_dict(json.loads((ck/'train_config.json').read_text()))
    vm = np.array(json.loads((ck/'vocab_map.json').read_text())) if (ck/'vocab_map.json').exists() else None
    spec = MODELS[cfg.model]
    conf = spec.config_cls.from_pretrained(ck)
    model = spec.build(conf, None)
    return load_weights(model, ck).eval(), VocabCodec(vm), cfg

# %% [markdown]
# ## Several runs side by side
#
# `train_together` trains several configurations at once, each in its own process (spawned, so each gets a fresh
# interpreter and its own `threads`), showing one progress bar per run by following the runs' logs; with
# `parallel=False` it trains them one after the other in this process. On a 2-core machine two single-threaded
# processes use the cores better than one process with two threads: for these small models most of the time goes
# into short kernels that do not split well across threads. `plot_runs` draws the runs' curves in one figure.

# %%
#| export
def _train_child(cfg:TrainConfig, q) -> None:
    "Process target: train and report (out, status, summary or message) on the queue."
    try: q.put((cfg.out, 'ok', train(cfg)))
    except BaseException as e: q.put((cfg.out, type(e).__name__, str(e)))

def _last_record(path:Path) -> Optional[dict]:
    "The last complete JSON line of a log (read from its tail only)."
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END); n = f.tell(); f.seek(max(0, n - 8192)); tail = f.read().decode('utf-8', 'replace')
    except OSError: return None
    for line in reversed(tail.splitlines()):
        try: return json.loads(line)
        except json.JSONDecodeError: continue
    return None

ERRORS = {'CausalLeakError': CausalLeakError, 'NonFiniteError': NonFiniteError, 'ValueError': ValueError,
          'FileNotFoundError': FileNotFoundError}  # exceptions re-raised in the parent by name

# %%
#| export
def train_together(cfgs:Sequence[TrainConfig], parallel:bool=True, progress:bool=True) -> list: # summaries, in order
    "Train several runs at once, one spawned process each (or one after the other with parallel=False)."
    if len({c.out for c in cfgs}) != len(cfgs): raise ValueError("each run needs its own `out` folder")
    for c in cfgs: validate_config(c)
    if not parallel: return [train(replace(c, progress=progress and c.progress)) for c in cfgs]
    import multiprocessing as mp, queue
    tqdm = _tqdm()
    ctx = mp.get_context('spawn'); q = ctx.Queue()
    procs = [ctx.Process(target=_train_child, args=(replace(c, progress=False), q)) for c in cfgs]
    for p in procs: p.start()
    bars = [tqdm(total=c.max_steps, desc=f'{c.model:>14s}', position=i, unit='step', dynamic_ncols=True,
                 disable=not (progress and _interactive())) for i, c in enumerate(cfgs)]
    done = {}
    try:
        while len(done) < len(cfgs):
            try: out, status, val = q.get(timeout=0.5); done[out] = (status, val)
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and q.empty() and len(done) < len(cfgs):
                    raise RuntimeError('a training process died without reporting (killed?): '
                                       + ', '.join(c.out for c in cfgs if c.out not in done))
            for b, c in zip(bars, cfgs):
                r = _last_record(Path(c.out)/'log.jsonl')
                if r and r.get('step', 0) > b.n:
                    b.update(r['step'] - b.n)
                    b.set_postfix(loss=f"{r['loss']:.3f}", **({'val_ppl': f"{r['val_ppl']:.1f}"} if 'val_ppl' in r else {}))
    finally:
        for b in bars: b.close()
        for p in procs: p.join(timeout=5)
    for c in cfgs:
        status, val = done[c.out]
        if status != 'ok': raise ERRORS.get(status, RuntimeError)(f"{c.model} ({c.out}): {val}")
    return [done[c.out][1] for c in cfgs]

# %% [markdown]
# ## Example: an SPLM and MatchedGPT on the first act of Tiny Shakespeare
#
# Two tiny models, the multi-ξ SPLM (4 EMA channels, LayerNorm after each step, logfreq mass) and MatchedGPT of the
# same width and depth, trained for 100 steps each on the same windows (same seed) of the first 100,000 characters
# of Tiny Shakespeare (30,645 GPT-2 tokens, 3,735 token types: the compact vocabulary keeps this a seconds-long CPU
# example). The numbers are far from converged; what matters here is that both train and are scored on the same
# fixed validation windows.
#
# The cells after the figure check the run folder (the log, the final checkpoint, the pointer, the plot and the
# summary), the log (one line per step with the SPLM's damping, masses and EMA decays; validation every 25 steps),
# and that scoring is a pure function of the weights: evaluating the reopened checkpoint on the same fixed
# validation windows gives the logged number to round-off, and the reopened model decodes through the saved
# vocabulary map.

# %%
runs = tempfile.TemporaryDirectory()
act1 = Path(runs.name)/'shakespeare-100k.txt'
act1.write_text(load_corpus('tinyshakespeare')[:100_000], encoding='utf-8')
tiny = dict(corpus=str(act1), d=32, L=2, v_hidden=64, v_depth=2, max_len=64, n_head=2, batch_size=8, block_size=32,
            max_steps=100, lr=3e-3, warmup=10, eval_every=25, eval_iters=6, ckpt_every=50, compact_vocab=True, progress=False)
names = ('splm-multixi', 'matched-gpt')
summaries = dict(zip(names, train_together([make_config(model=n, out=f'{runs.name}/{n}', **tiny) for n in names], parallel=False)))
plot_runs([f'{runs.name}/{n}' for n in names], title=f"100 steps of 8 x 32 tokens, compact vocabulary ({summaries['matched-gpt']['vocab_size']:,})")
plt.show()
for name, s in summaries.items():
    print(f"{name:13s} {s['params']:>8,} params  val PPL {s['val_ppl']:8.1f}  {s['tokens_per_s']:>7,.0f} tok/s  sample: {s['sample'][:70]!r}")

# %%
sp_dir = Path(runs.name)/'splm-multixi'
test_eq(sorted(p.name for p in sp_dir.iterdir()),
        ['ckpt-100', 'latest', 'log.jsonl', 'loss_curve.png', 'summary.json', 'summary.md', 'train_config.json', 'vocab_map.json'])
recs = read_log(sp_dir/'log.jsonl')
test_eq([r['step'] for r in recs], list(range(1, 101)))
test_eq([r['step'] for r in recs if 'val_loss' in r], [25, 50, 75, 100])
test_close(recs[-1]['gamma'], 0.30, eps=1e-6)                  # multi-ξ: γ fixed at 0.30
test_eq(len(recs[-1]['xi_alpha']), 4); assert recs[-1]['mass_min'] > 1e-3
test_eq(recs[0]['lr'], 3e-3 / 10); test_eq(recs[-1]['lr'], lr_at(99, 3e-3, 10, 100))
assert all(r['grad_norm'] > 0 for r in recs) and recs[-1]['val_loss'] < recs[24]['val_loss']
test_close(summaries['splm-multixi']['val_ppl'], math.exp(recs[-1]['val_loss']), eps=1e-9)
print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in recs[-1].items()})

# %%
m2, codec2, cfg2 = load_run(sp_dir)
vb = fixed_val_batches(prepare_data(cfg2).val, cfg2)
test_close(evaluate(m2, vb, True), recs[-1]['val_loss'], eps=1e-6)
test_eq([torch.equal(a[0], b[0]) for a, b in zip(vb, fixed_val_batches(prepare_data(cfg2).val, cfg2))], [True] * 6)
test_eq(codec2.decode(codec2.encode('First Citizen:')), 'First Citizen:')
test_eq(sample(m2, codec2, 'First Citizen:', 12, seed=1), sample(m2, codec2, 'First Citizen:', 12, seed=1))
print(sample(m2, codec2, 'First Citizen:', 20, seed=1))
test_fail(lambda: sample(m2, codec2, 'x', 5, temperature=0), contains='temperature > 0')
test_fail(lambda: load_run(runs.name), contains='no checkpoint in')

# %% [markdown]
# ## Resume is exact
#
# A run interrupted after a checkpoint and resumed must produce exactly the loss sequence of an uninterrupted run
# (on a CPU, where every kernel is deterministic). Here the interruption is simulated in-process: a model family whose
# forward raises at its 17th training call stops the run during step 17, after the checkpoint at step 10; resuming
# truncates the log to step 10 and continues. The same property with a real `SIGKILL` of a separate training process
# is tested in `tests/test_train_resume.py`.

# %%
crash = {'at': None, 'calls': 0}
def _crashing_build(conf, data=None):
    m = MODELS['splm-em-ln'].build(conf, data)
    inner = m.forward
    def forward(*a, **k):
        if m.training:
            crash['calls'] += 1
            if crash['calls'] == crash['at']: raise RuntimeError('simulated kill')
        return inner(*a, **k)
    m.forward = forward
    return m
MODELS['test-crashing'] = replace(MODELS['splm-em-ln'], help='splm-em-ln that raises at a chosen training call (tests only)',
                                              build=_crashing_build)
small = dict(tiny, model='test-crashing', d=16, max_steps=30, eval_every=10, ckpt_every=10, probe=False)
train(make_config(out=f'{runs.name}/whole', **small))
crash.update(at=17, calls=0)
test_fail(lambda: train(make_config(out=f'{runs.name}/cut', **small)), contains='simulated kill')
test_eq(latest_checkpoint(f'{runs.name}/cut').name, 'ckpt-10')
test_eq(read_log(f'{runs.name}/cut/log.jsonl')[-1]['step'], 16)
test_fail(lambda: train(make_config(out=f'{runs.name}/cut', **small)), contains='pass --resume')
test_fail(lambda: train(make_config(out=f'{runs.name}/cut', resume=True, **{**small, 'lr': 1e-3})), contains="differs from the saved run's in ['lr']")
test_fail(lambda: train(make_config(out=f'{runs.name}/cut', resume=True, **{**small, 'max_steps': 40})), contains='add --extend')
test_fail(lambda: train(make_config(out=f'{runs.name}/nothing-here', resume=True, **small)), contains='holds no run')
crash['at'] = None
train(make_config(out=f'{runs.name}/cut', resume=True, **small))
whole, cut = read_log(f'{runs.name}/whole/log.jsonl'), read_log(f'{runs.name}/cut/log.jsonl')
test_eq([r['step'] for r in cut], list(range(1, 31)))
test_eq([r['loss'] for r in cut], [r['loss'] for r in whole])                     # bitwise equal floats
test_eq([r.get('val_loss') for r in cut], [r.get('val_loss') for r in whole])
test_eq([r['grad_norm'] for r in cut], [r['grad_norm'] for r in whole])
print(f"30 steps, interrupted in step 17, resumed from step 10: {sum(a['loss'] == b['loss'] for a, b in zip(cut, whole))}/30 losses identical")


# %% [markdown]
# ## A non-finite loss stops the run and keeps the last good checkpoint
#
# A model family whose logits become NaN from its 25th training call: the run stops in step 25 with a message naming
# the step, the log ends at step 24 and `latest` still names the checkpoint of step 20.

# %%
def _nan_build(conf, data=None):
    m = MODELS['matched-gpt'].build(conf, data)
    inner, calls = m.forward, [0]
    def forward(*a, **k):
        o = inner(*a, **k)
        if m.training:
            calls[0] += 1
            if calls[0] >= 25: o.logits = o.logits * float('nan')
        return o
    m.forward = forward
    return m
MODELS['test-nan'] = replace(MODELS['matched-gpt'], help='MatchedGPT whose logits turn NaN (tests only)', build=_nan_build)
test_fail(lambda: train(make_config(out=f'{runs.name}/nan', **{**small, 'model': 'test-nan'})), contains='non-finite loss at step 25')
test_eq(read_log(f'{runs.name}/nan/log.jsonl')[-1]['step'], 24)
test_eq(latest_checkpoint(f'{runs.name}/nan').name, 'ckpt-20')
test_eq(torch.load(latest_checkpoint(f'{runs.name}/nan')/'trainer_state.pt', weights_only=True)['step'], 20)
for k in ('test-crashing', 'test-nan'): del MODELS[k]

# %% [markdown]
# ## The causal guard
#
# An SPLM built with `causal_force=False` reproduces the reference's historical leak (ξ built from the live state),
# and the trainer refuses it before any step; the same model built normally passes the probe and trains.

# %%
leaky = make_config(out=f'{runs.name}/leaky', **{**tiny, 'model': 'splm-em-ln', 'max_steps': 2}, model_args={'causal_force': False})
test_fail(lambda: train(leaky), contains='causal probe failed before step 0')
assert not Path(leaky.out, 'log.jsonl').exists()
test_eq(train(make_config(out=f'{runs.name}/sound', **{**tiny, 'model': 'splm-em-ln', 'max_steps': 2}))['steps'], 2)

# %% [markdown]
# The start-up guard also runs the leak audit (chapter *Causality*), which catches what the probe cannot: here a
# MatchedGPT whose logits also read the window's last token through its id (no gradient path, so the probe's
# gradient test is blind too, and the perturbation never touches the last position). The probe passes it; the
# trainer refuses it:

# %%
class _ReadsLastGPT(MatchedGPTForCausalLM):
    "MatchedGPT whose logits also read the window's last token through its id (a leak with no gradient path)."
    def forward(self, input_ids=None, *a, **k):
        o = super().forward(input_ids, *a, **k)
        if input_ids is not None:
            E = self.get_input_embeddings(); o.logits = o.logits + 1e-3 * (E(input_ids[:, -1:]) @ E.weight.T).detach()
        return o
def _reads_last_build(conf, data=None): return _ReadsLastGPT(conf)
MODELS['test-reads-last'] = replace(MODELS['matched-gpt'], help='MatchedGPT that reads its last token (tests only)', build=_reads_last_build)
cfg_rl = make_config(out=f'{runs.name}/reads-last', **{**tiny, 'model': 'test-reads-last', 'max_steps': 2})
assert probe_model(build_model(cfg_rl, prepare_data(cfg_rl)), 64).passed                  # the probe does not see it
test_fail(lambda: train(cfg_rl), contains='leak audit before step 0')
del MODELS['test-reads-last']
runs.cleanup()

# %% [markdown]
# ## Tiny Shakespeare on this CPU: SPLM em_ln vs MatchedGPT
#
# The reference's Shakespeare comparison is the `shakespeare` preset: about 15 hours per model on a 2-core CPU. The
# recorded CPU run is a stated reduction of it (d 64, L 4, v_hidden 128, v_depth 2, the compact vocabulary, 2000
# steps); its numbers are on the [Results](results.html) page, read from `results/shakespeare-cpu.json`, which
# `make results-shakespeare-cpu` rewrites. The cell below is the same experiment through `train_together` (not run
# when the docs are built):

# %%
#| eval: false
reduced = ['d=64', 'L=4', 'v_hidden=128', 'v_depth=2', 'compact_vocab=true', 'warmup=100', 'threads=1']
cpu_runs = train_together([make_config('shakespeare', reduced, model=m, max_steps=2000, out=f'runs/shakespeare-cpu/{m}')
                           for m in ('splm-em-ln', 'matched-gpt')])
for s in cpu_runs: print(f"{s['model']:12s} val PPL {s['val_ppl']:.2f} (best {s['best_val_ppl']:.2f}), {s['elapsed_s']:.0f} s")


# %% [markdown]
# ## Command line
#
# `semsim train` (and `python -m semsim.train`, which also works under `torchrun`) exposes `train`:
#
# ```sh
# semsim train --preset shakespeare --model splm-multixi --set xi_channels=4 --out runs/x
# semsim train --preset smoke --max-steps 50 --out runs/quick     # --max-steps shortens any preset
# semsim train --out runs/x --resume                              # continue after a kill (the saved settings)
# torchrun --nproc_per_node 2 -m semsim.train --preset smoke --out runs/ddp
# semsim train --list                                             # presets and model families
# ```
#
# Exit status: 0 done, 1 bad input (one line naming the problem), 2 causal leak refused, 3 non-finite loss.
#
# The listing, a resolved configuration, and one-line errors with status 1:

# %%
#| export
def add_train_args(p:argparse.ArgumentParser) -> None:
    "Arguments of `semsim train` (also `python -m semsim.train`)."
    p.add_argument('--preset', help=f"a recipe: {', '.join(PRESETS)} (default smoke; with --resume, the saved run's)")
    p.add_argument('--model', help=f"model family: {', '.join(MODELS)}")
    p.add_argument('--set', dest='sets', action='append', default=[], metavar='KEY=VALUE',
                   help='override a training field or a model-config field (typed); repeatable')
    p.add_argument('--out', help='run folder (default runs/<preset>-<model>)')
    p.add_argument('--max-steps', type=int, help='shorten (or lengthen) the recipe')
    p.add_argument('--resume', action='store_true', help='continue the run in --out from its latest checkpoint (an error if it holds none)')
    p.add_argument('--extend', action='store_true', help='with --resume and --max-steps: train a finished or running run longer (the cosine schedule is stretched)')
    p.add_argument('--device', help="'cpu', 'cuda', 'mps' (default: the best available)")
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--list', action='store_true', help='list presets and model families, then exit')
    p.add_argument('--print-config', action='store_true', help='print the resolved configuration as JSON, then exit')

def config_from_args(args) -> TrainConfig:
    "The TrainConfig a command line describes (a resumed run without --preset starts from its saved configuration)."
    saved = Path(args.out)/'train_config.json' if args.out else None
    base, preset = {}, args.preset or 'smoke'
    if args.resume and not args.out: raise ValueError("--resume needs --out, the folder of the run to continue")
    if args.extend and not (args.resume and args.max_steps): raise ValueError("--extend needs --resume and the new --max-steps")
    if args.resume and (saved is None or not saved.exists()):
        raise ValueError(f"--resume: {args.out} holds no run to continue (no train_config.json in it); check --out, "
                         f"or start a new run there without --resume")
    if args.resume and args.preset is None:
        base, preset = json.loads(saved.read_text()), None
    over = {k: v for k, v in dict(model=args.model, out=args.out, max_steps=args.max_steps, device=args.device).items() if v is not None}
    if args.no_progress: over['progress'] = False
    cfg = make_config(preset, args.sets, **{**base, **over, 'resume': args.resume, 'extend': args.extend})
    if not args.out: cfg.out = f"runs/{preset}-{cfg.model}"
    return cfg

# %%
#| export
def run_train(args) -> int:
    "Run `semsim train`: exit status 0 done, 1 bad input, 2 causal leak refused, 3 non-finite loss."
    if args.list:
        print('presets:')
        for k, v in PRESETS.items(): print(f"  {k:20s} {v['model']}, {v['max_steps']} steps of {v['batch_size']} x {v['block_size']}")
        print('models:')
        for k, s in MODELS.items(): print(f'  {k:20s} {s.help}')
        return 0
    try:
        cfg = config_from_args(args)
        if args.print_config: print(json.dumps(_jsonable(cfg), indent=1)); return 0
        s = train(cfg)
    except CausalLeakError as e: print(f'semsim train: refused: {e}', file=sys.stderr); return 2
    except NonFiniteError as e: print(f'semsim train: stopped: {e}', file=sys.stderr); return 3
    except (ValueError, FileNotFoundError, ConnectionError, ImportError, RuntimeError) as e:
        print(f'semsim train: error: {e}', file=sys.stderr); return 1
    if s is not None:
        ppl = f"val PPL {s['val_ppl']:.2f} (best {s['best_val_ppl']:.2f})" if s['val_ppl'] else 'no evaluation'
        print(f"{cfg.model}: {s['steps']} steps, {ppl}, {s['elapsed_s']:.0f} s; run folder {cfg.out}")
    return 0

def main(argv:Optional[Sequence[str]]=None) -> int:
    "Entry point of `python -m semsim.train` (the same as `semsim train`)."
    p = argparse.ArgumentParser(prog='semsim train', description='Train a semsim language model.')
    add_train_args(p)
    return run_train(p.parse_args(argv))

# %%
#| export
#| eval: false
if __name__ == '__main__': sys.exit(main())

# %%
buf = io.StringIO()
with contextlib.redirect_stdout(buf): test_eq(main(['--list']), 0)
assert 'tinystories-16k' in buf.getvalue() and 'matched-gpt' in buf.getvalue()
buf = io.StringIO()
with contextlib.redirect_stdout(buf): main(['--preset', 'shakespeare', '--model', 'matched-gpt', '--max-steps', '7', '--set', 'seed=3', '--print-config'])
c = json.loads(buf.getvalue())
test_eq((c['model'], c['max_steps'], c['seed'], c['model_args']['d'], c['out']), ('matched-gpt', 7, 3, 128, 'runs/shakespeare-matched-gpt'))
for argv, msg in [(['--preset', 'tiny'], 'unknown preset'), (['--set', 'colour=red'], "unknown option 'colour'"),
                  (['--set', 'block_size=512'], "exceeds the model's max_len")]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err): test_eq(main(argv + ['--out', '/tmp/never-written']), 1)
    assert msg in err.getvalue() and err.getvalue().count('\n') == 1, err.getvalue()
