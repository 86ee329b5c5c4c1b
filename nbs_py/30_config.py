# %% [markdown]
# # Training configuration
#
# > A run is one typed `TrainConfig`: the reference's recipes as presets (deltas from one base each), typed `--set` overrides that reach the model's own config, and the learning-rate schedule.

# %%
#| default_exp train_config

# %% [markdown]
# Everything that makes a training run lives in one dataclass, `TrainConfig`, saved beside every checkpoint: the model
# family (a name of `semsim.models.MODELS`) and its config, the data, the optimiser and its schedule, evaluation
# and checkpoint cadence, hardware and run control. The model's config is composed in, not copied field by field:
# `model_args` holds the fields of the model's own config the run sets (its sizes under the shared names of
# `semsim.models.SHARED_SIZES`, and any other field, e.g. `xi_channels`), and `model_kwargs` lays the family
# member's preset and `model_args` on top of each other. The loop itself is in the *Training* chapter.

# %%
#| hide
import warnings; warnings.filterwarnings('ignore', message='IProgress not found')
from fastcore.test import test_eq, test_fail, test_close
import tempfile
import numpy as np
import matplotlib.pyplot as plt
import torch
import transformers
transformers.utils.logging.disable_progress_bar(); transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)

# %%
#| export
from __future__ import annotations
import json, math
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence, Union

from semsim.core import check_positive_ints
from semsim.models import MODELS, SHARED_SIZES, model_fields, model_spec

# %% [markdown]
# ## Configuration
#
# A run is described by one `TrainConfig`. Its `model_args` start from `BASE_SIZES`, the reference's Shakespeare
# sizes under the shared names (`d`, `L`, `v_hidden`, `v_depth`, `max_len`, `n_head`), which each family member maps
# onto its own config (for MatchedGPT, `L` is its number of blocks `n_layer`, and the potential's `v_hidden`,
# `v_depth` are dropped); `make_config(d=64)` and `--set d=64` reach them as if they were fields. `RUNTIME_FIELDS` may
# differ when a run is resumed; every other field must match the saved run.
#
# The presets are the reference's configurations (semsimula-paper@eb95852: `notebooks/conservative_arch/scaleup/`), plus `demo`, the CPU-sized recipe of `make demo`:
#
# | preset | model | batch × block | steps | lr | wd | warm-up | eval | reference result |
# |---|---|---|---|---|---|---|---|---|
# | `smoke` | d 64, L 4, vh 128, vd 2, max_len 128 | 8 × 64 | 300 | 1e-3 | 0 | 20 | 50 / 20 | minutes on CPU |
# | `shakespeare` | d 128, L 8, vh 512, vd 3, max_len 256 | 16 × 128 | 4000 | 5e-4 | 0.01 | 200 | 200 / 40 | em_ln **173.59**, MatchedGPT **149.80 ± 7.21** |
# | `tinystories-pilot` | d 256, L 8, vh 1024, vd 3, max_len 1024 | 16 × 512 | 4000 | 5e-4 | 0.01 | 200 | 200 / 40 | multi-ξ **14.78** |
# | `tinystories-scaleup` | same | 16 × 512 | 8000 | 5e-4 | 0.01 | 400 | 400 / 40 | MatchedGPT **7.81** |
# | `tinystories-16k` | same, SQ3 K_mix 8, λ_V 0.01 | 16 × 512 | 16,000 | 5e-4 | 0.01 | 400 | 400 / 40 | SQ3 A2 **13.33** |
# | `demo` | d 64, L 4, vh 128, vd 2, compact vocabulary | 8 × 64 | 1200 | 2e-3 | 0.01 | 60 | 100 / 20 | (CPU, this repo) |
#
# TinyStories is the reference's split: the first train shard capped at 5M tokens, the whole validation split.

# %%
#| export
BASE_SIZES = dict(d=128, L=8, v_hidden=512, v_depth=3, max_len=256, n_head=4)  # the reference's Shakespeare sizes

@dataclass
class TrainConfig:
    "One training run. Every field can be set from the command line with `--set key=value`."
    # --- model
    model: str = 'splm-em-ln'     # model family, a key of MODELS
    model_args: dict = field(default_factory=lambda: dict(BASE_SIZES))  # the model config's fields: sizes, xi_channels, ...
    # --- data
    corpus: str = 'tinyshakespeare'  # corpus name or text-file path (semsim.data.load_corpus)
    val_frac: float = 0.05        # last fraction of the tokens held out (TinyStories has its own split)
    compact_vocab: bool = False   # remap ids to the corpus's token types (CPU speed; deviates from the reference)
    vocab_size: int = 0           # model vocabulary; 0 = the tokenizer's 50,257 (or the compact size)
    # --- optimisation
    batch_size: int = 16          # B, sequences per step (global: split evenly over DDP ranks)
    block_size: int = 128         # T, tokens per sequence
    max_steps: int = 4000         # optimizer steps S
    lr: float = 5e-4              # peak learning rate η
    warmup: int = 200             # W, linear warm-up steps, then cosine to 0
    weight_decay: float = 0.01    # w, AdamW decoupled weight decay
    no_decay_1d: bool = False     # exempt biases, norm gains and other 1-D tensors from decay (reference: decay all)
    beta1: float = 0.9            # AdamW β1
    beta2: float = 0.95           # AdamW β2
    grad_clip: float = 1.0        # c, global gradient-norm clip
    # --- evaluation, logging, checkpoints
    eval_every: int = 200         # steps between evaluations (and at the last step)
    eval_iters: int = 40          # fixed validation batches per evaluation
    ckpt_every: int = 200         # steps between checkpoints (and at the last step)
    seed: int = 0                 # seeds torch, numpy, python and the data stream (rank r draws with seed + r)
    # --- hardware and run control
    device: str = 'auto'          # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
    amp: str = 'auto'             # 'auto' (bf16 autocast on CUDA only), 'bf16' or 'off'
    compile: str = 'auto'         # torch.compile: 'auto' (CUDA, where valid), 'on' or 'off'
    threads: int = 0              # torch CPU threads; 0 = torch's default
    probe: bool = True            # causal probe before the first step; a leaking model is refused
    progress: bool = True         # live progress bar (in a terminal or notebook)
    out: str = 'runs/train'       # run folder: log.jsonl, checkpoints, plots, summary
    resume: Union[bool, str] = False  # True: continue the run in `out` (an error if it holds none); 'auto': continue if any, else start
    extend: bool = False          # on resume, accept a new (larger) max_steps: the cosine schedule is stretched to it

# %%
#| export
RUNTIME_FIELDS = ('device', 'threads', 'probe', 'progress', 'out', 'resume', 'extend', 'ckpt_every')  # free to change on resume

SMALL_RUN = dict(model_args={**BASE_SIZES, 'd': 64, 'L': 4, 'v_hidden': 128, 'v_depth': 2, 'max_len': 128},
                 batch_size=8, block_size=64, eval_iters=20)                     # CPU-sized
REFERENCE_RUN = dict(lr=5e-4, weight_decay=0.01, eval_iters=40)                 # the reference's optimiser recipe
TINYSTORIES_RUN = {**REFERENCE_RUN, 'corpus': 'tinystories', 'batch_size': 16, 'block_size': 512,
                   'model_args': {**BASE_SIZES, 'd': 256, 'v_hidden': 1024, 'max_len': 1024}}  # its TinyStories runs

PRESETS = {   # each a delta from one of the bases above
    'smoke': {**SMALL_RUN, 'model': 'splm-em-ln', 'max_steps': 300, 'lr': 1e-3, 'weight_decay': 0.0, 'warmup': 20,
              'eval_every': 50, 'ckpt_every': 100},
    'shakespeare': {**REFERENCE_RUN, 'model': 'splm-em-ln', 'batch_size': 16, 'block_size': 128, 'max_steps': 4000, 'warmup': 200, 'eval_every': 200, 'ckpt_every': 200},
    'tinystories-pilot': {**TINYSTORIES_RUN, 'model': 'splm-multixi', 'max_steps': 4000, 'warmup': 200, 'eval_every': 200,
                          'ckpt_every': 200},
    'tinystories-scaleup': {**TINYSTORIES_RUN, 'model': 'matched-gpt', 'max_steps': 8000, 'warmup': 400, 'eval_every': 400,
                            'ckpt_every': 400},
    'tinystories-16k': {**TINYSTORIES_RUN, 'model': 'splm-sq3', 'max_steps': 16000, 'warmup': 400, 'eval_every': 400,
                        'ckpt_every': 400},
    # the hybrids: the Shakespeare recipe of the rest of the family, and the TinyStories scale-up (AdamW (0.9, 0.95),
    # lr 5e-4 cosine, warm-up 400, wd 0.01, clip 1.0; TF32 stays off because the MLP V_θ force is autograd.grad)
    'shakespeare-hybrid-a': {**REFERENCE_RUN, 'model': 'hybrid-a', 'batch_size': 16, 'block_size': 128, 'max_steps': 4000,
                             'warmup': 200, 'eval_every': 200, 'ckpt_every': 200},
    'shakespeare-q9d': {**REFERENCE_RUN, 'model': 'helmholtz-q9d', 'batch_size': 16, 'block_size': 128, 'max_steps': 4000,
                        'warmup': 200, 'eval_every': 200, 'ckpt_every': 200},
    'tinystories-hybrid-a': {**TINYSTORIES_RUN, 'model': 'hybrid-a', 'max_steps': 8000, 'warmup': 400, 'eval_every': 400,
                             'ckpt_every': 400},
    'tinystories-q9d': {**TINYSTORIES_RUN, 'model': 'helmholtz-q9d', 'max_steps': 8000, 'warmup': 400, 'eval_every': 400,
                        'ckpt_every': 400},
    'demo': {**SMALL_RUN, 'model': 'splm-multixi', 'compact_vocab': True, 'max_steps': 1200, 'lr': 2e-3, 'weight_decay': 0.01,
             'warmup': 60, 'eval_every': 100, 'ckpt_every': 200, 'threads': 1},
}

# %% [markdown]
# ## Model families
#
# `--model` names a member of the model family: a key of `semsim.models.MODELS` (chapter *Model registry*), whose
# `ModelSpec` says how to make its config from the generic sizes of a `TrainConfig`, how to build it, whether its
# force is an `autograd.grad` inside the forward, and which scalars to log.

# %% [markdown]
# ## Options from the command line
#
# `--set key=value` reaches any `TrainConfig` field and any field of the chosen model's config. The value is parsed
# into the type of the field's current value (booleans accept `true/false/1/0/yes/no`; tuples accept `0.1,0.5` or
# JSON). A key that is neither is an error that lists every valid key.
#
# A preset, a typed training override and a model option (the EMA decays of the multi-ξ pool, whose default is
# `None`, so the comma list is read as numbers):

# %%
#| export
def parse_value(text:str, like:Any, name:str='value'):
    "Parse the string `text` into the type of `like` (the field's current value)."
    t = text.strip()
    try:
        if isinstance(like, bool):
            if t.lower() in ('1', 'true', 'yes', 'on'): return True
            if t.lower() in ('0', 'false', 'no', 'off'): return False
            raise ValueError
        if isinstance(like, int): return int(t)
        if isinstance(like, float): return float(t)
        if isinstance(like, (tuple, list)):
            items = json.loads(t) if t.startswith('[') else [s for s in t.strip('()').split(',') if s.strip()]
            el = type(like[0]) if len(like) else None
            return type(like)(parse_value(str(s), el(), name) if el in (int, float, bool) else s for s in items)
        if isinstance(like, dict): return dict(json.loads(t))
        if isinstance(like, str): return t
        try: return json.loads(t)                                           # a field whose default is None
        except json.JSONDecodeError:
            if ',' in t: return [json.loads(s) for s in t.strip('()').split(',') if s.strip()]
            return t
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ValueError(f"option {name}: cannot parse {text!r} as {type(like).__name__}") from None

# %%
#| export
def _is_model_key(model:str, k:str) -> bool: return k in model_fields(model)

def make_config(preset:Optional[str]=None, # a key of PRESETS; None starts from the TrainConfig defaults
                sets:Sequence[str]=(), # 'key=value' strings naming TrainConfig or model-config fields
                **overrides) -> TrainConfig: # TrainConfig fields, or model-config fields (they go into model_args)
    "A TrainConfig from a preset, keyword overrides and typed `key=value` strings (applied last)."
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    tfields = [f.name for f in fields(TrainConfig)]
    pre = PRESETS[preset] if preset else {}
    base = {**pre, **{k: v for k, v in overrides.items() if k in tfields}}
    model = base.get('model', TrainConfig.model); model_spec(model)
    margs = {**pre.get('model_args', BASE_SIZES), **overrides.get('model_args', {})}   # merged, not replaced
    for k, v in overrides.items():
        if k in tfields: continue
        if not _is_model_key(model, k):
            raise ValueError(f"unknown field {k!r}: neither a TrainConfig field ({', '.join(tfields)}) nor a field of the {model} config")
        margs[k] = v
    cfg = TrainConfig(**{**base, 'model_args': margs})
    for s in sets:
        if '=' not in s: raise ValueError(f"--set expects key=value, got {s!r}")
        k, v = (x.strip() for x in s.split('=', 1))
        if k in tfields and k != 'model_args': setattr(cfg, k, parse_value(v, getattr(cfg, k), k)); continue
        mf = model_fields(cfg.model)
        if k not in mf:
            raise ValueError(f"unknown option {k!r}: neither a training field nor a field of the {cfg.model} config. "
                             f"Training fields: {', '.join(f for f in tfields if f != 'model_args')}. "
                             f"{cfg.model} fields: {', '.join(sorted(mf))}")
        like = cfg.model_args.get(k, mf[k])
        cfg.model_args[k] = parse_value(v, like if like is not None else mf[k], k)
    return cfg

def config_from_dict(saved:dict) -> TrainConfig:
    "The TrainConfig of a saved `train_config.json` (runs saved before `model_args` held the sizes are read too)."
    saved = dict(saved); margs = dict(saved.pop('model_args', {}))
    for k in SHARED_SIZES:
        if k in saved: margs[k] = saved.pop(k)       # the sizes were TrainConfig fields once
    return TrainConfig(**saved, model_args=margs)

# %%
cfg = make_config('shakespeare', ['max_steps=50', 'no_decay_1d=true', 'xi_alpha_inits=0,0.5,0.9,0.99', 'lr=1e-3'],
                  model='splm-multixi')
test_eq((cfg.max_steps, cfg.no_decay_1d, cfg.lr, cfg.model_args['d'], cfg.batch_size), (50, True, 1e-3, 128, 16))
test_eq(cfg.model_args, {**BASE_SIZES, 'xi_alpha_inits': [0, 0.5, 0.9, 0.99]})
test_eq(make_config('smoke', ['xi_channels=4'], model='splm-multixi').model_args,
        {**PRESETS['smoke']['model_args'], 'xi_channels': 4})
test_eq([make_config('smoke', ['d=32'], L=2).model_args[k] for k in ('d', 'L', 'v_hidden')], [32, 2, 128])
test_eq(config_from_dict({'model': 'matched-gpt', 'd': 16, 'L': 2, 'model_args': {'n_head': 2}}).model_args,
        {'n_head': 2, 'd': 16, 'L': 2})                      # a run saved with the sizes as fields
test_fail(lambda: make_config('smoke', dd=3), contains="unknown field 'dd'")
test_fail(lambda: make_config('shakespear'), contains="unknown preset 'shakespear'; known presets: smoke, shakespeare")
test_fail(lambda: make_config('smoke', ['xi_chanels=4']), contains="unknown option 'xi_chanels'")
test_fail(lambda: make_config('smoke', ['xi_chanels=4']), contains="xi_channels")   # the message lists the valid keys
test_fail(lambda: make_config('smoke', ['max_steps=many']), contains="cannot parse 'many' as int")
test_fail(lambda: make_config('smoke', ['probe=maybe']), contains="as bool")
test_fail(lambda: make_config('smoke', ['max_steps']), contains='key=value')


# %% [markdown]
# ## Validation before any work
#
# Bad values fail at once, before the corpus is tokenized or a model built, with a message naming the field: sizes and
# counts must be positive integers, `block_size` may not exceed the model's positional table, and model options are
# checked against the model's config class (which validates its own values when built). A data vocabulary larger
# than the model's is refused by `prepare_data` below.

# %%
#| export
def model_kwargs(cfg:TrainConfig, vocab_size:int) -> dict:
    "Keyword arguments of the model config: the member's preset, then `model_args`, then the vocabulary."
    return {**model_spec(cfg.model).config_kwargs(cfg.model_args), 'vocab_size': vocab_size}

def _max_len_of(kw:dict) -> Optional[int]:
    for k in ('max_len', 'n_positions', 'max_position_embeddings'):
        if k in kw: return int(kw[k])
    return None

def validate_config(cfg:TrainConfig) -> None:
    "Refuse bad values before any work, naming the field."
    if cfg.model not in MODELS: raise ValueError(f"unknown model {cfg.model!r}; known models: {', '.join(MODELS)}")
    check_positive_ints(cfg, ('batch_size', 'block_size', 'max_steps', 'eval_every', 'eval_iters', 'ckpt_every'))
    for k in ('warmup', 'weight_decay', 'vocab_size', 'threads'):
        if getattr(cfg, k) < 0: raise ValueError(f"{k} must be >= 0, got {getattr(cfg, k)!r}")
    for k in ('lr', 'grad_clip'):
        if not getattr(cfg, k) > 0: raise ValueError(f"{k} must be > 0, got {getattr(cfg, k)!r}")
    if not (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1): raise ValueError(f"beta1 and beta2 must lie in [0, 1), got {cfg.beta1}, {cfg.beta2}")
    if not 0 < cfg.val_frac < 1: raise ValueError(f"val_frac must lie in (0, 1), got {cfg.val_frac}")
    if cfg.amp not in ('auto', 'bf16', 'off'): raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {cfg.amp!r}")
    if cfg.compile not in ('auto', 'on', 'off'): raise ValueError(f"compile must be 'auto', 'on' or 'off', got {cfg.compile!r}")
    mf = model_fields(cfg.model)
    bad = [k for k in cfg.model_args if k not in mf]
    if bad: raise ValueError(f"unknown option(s) {bad} for the {cfg.model} config; valid: {', '.join(sorted(mf))}")
    ml = _max_len_of(model_kwargs(cfg, 1))
    if ml is not None and cfg.block_size > ml:
        raise ValueError(f"block_size {cfg.block_size} exceeds the model's max_len {ml} (its positional table): "
                         f"lower block_size or raise max_len")
    MODELS[cfg.model].config_cls(**model_kwargs(cfg, max(cfg.vocab_size, 1)))   # the model's own checks


# %%
validate_config(make_config('shakespeare'))
for p in PRESETS: validate_config(make_config(p))
test_fail(lambda: validate_config(make_config('smoke', ['block_size=256'])), contains="block_size 256 exceeds the model's max_len 128")
test_fail(lambda: validate_config(make_config('smoke', model='splm-em-lm')), contains="unknown model 'splm-em-lm'")
test_fail(lambda: validate_config(make_config('smoke', ['batch_size=0'])), contains='batch_size must be a positive integer')
test_fail(lambda: validate_config(make_config('smoke', ['d=0'])), contains='d must be a positive integer')
test_fail(lambda: validate_config(make_config('smoke', ['lr=-1'])), contains='lr must be > 0')
test_fail(lambda: validate_config(make_config('smoke', ['amp=fp8'])), contains="amp must be 'auto', 'bf16' or 'off'")
test_fail(lambda: validate_config(make_config('smoke', ['xi_pool=gaussian'])), contains='xi_pool must be one of')
test_fail(lambda: validate_config(make_config('smoke', ['n_head=3'], model='matched-gpt')), contains='divisible by n_head')


# %% [markdown]
# ## Learning-rate schedule
#
# With peak rate $\eta$ (`lr`), $W$ warm-up steps and $S$ steps in all, step $k = 0, 1, \dots$ (0-based) uses
#
# $$\eta_k = \eta\,\frac{k+1}{W} \;\; (k < W), \qquad
#   \eta_k = \tfrac12\,\eta\,\Big(1 + \cos\big(\pi\,\tfrac{k - W}{S - W}\big)\Big) \;\; (k \ge W).$$
#
# The schedule reaches the peak exactly at the end of warm-up, is continuous there, passes half the peak at the
# midpoint of the cosine and ends at zero:

# %%
#| export
def lr_at(step:int, # optimizer step k, 0-based
          lr:float, warmup:int, max_steps:int) -> float:
    "Linear warm-up lr·(k+1)/W, then cosine 0.5·lr·(1+cos(π·(k-W)/(S-W))) down to 0 at k = S."
    if step < warmup: return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# %%
lr, W, S = 5e-4, 200, 4000
test_close(lr_at(0, lr, W, S), lr / W, eps=1e-15)
test_close(lr_at(W - 1, lr, W, S), lr, eps=1e-15); test_close(lr_at(W, lr, W, S), lr, eps=1e-15)
test_close(lr_at(W + (S - W) // 2, lr, W, S), lr / 2, eps=1e-15)
test_close(lr_at(S, lr, W, S), 0.0, eps=1e-15)
ks = np.arange(S)
etas = np.array([lr_at(k, lr, W, S) for k in ks])
assert np.all(np.diff(etas[:W]) > 0) and np.all(np.diff(etas[W:]) <= 0)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(ks, etas); ax.axvline(W, ls=':', c='gray')
ax.set(xlabel='step k', ylabel='η_k', title='shakespeare preset: warm-up 200, cosine to 0 at 4000'); plt.tight_layout(); plt.show()


