# %% [markdown]
# # Runs: checkpoints and logs
#
# > A training run is a folder that survives a kill at any moment: atomic checkpoints in Hugging Face format with everything an exact resume needs, a step log that tolerates a torn last line, and the rule that decides whether a resume may continue.

# %%
#| default_exp runs

# %% [markdown]
# A run folder `OUT/` holds `train_config.json`, `log.jsonl`, the checkpoints `ckpt-<step>/` with the pointer `latest`,
# and at the end `summary.json`, `summary.md` and the loss curve. This chapter is the code that reads and writes
# them; the loop that produces them is in the *Training* chapter.

# %%
#| hide
import warnings; warnings.filterwarnings('ignore', message='IProgress not found')
from fastcore.test import test_eq, test_fail, test_close
import tempfile, math
from pathlib import Path
import matplotlib.pyplot as plt
from semsim.models import MODELS, build_model
from semsim.train_config import make_config
import torch
import transformers
transformers.utils.logging.disable_progress_bar(); transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)

# %%
#| export
from __future__ import annotations
import json, os, random, shutil
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from semsim.core import atomic_write_text
from semsim.train_config import TrainConfig, RUNTIME_FIELDS, lr_at

# %%
mg, sp = MODELS['matched-gpt'], MODELS['splm-em-ln']
torch.manual_seed(0)
gpt = build_model('matched-gpt', vocab_size=50, d=16, n_layer=1, n_head=2, max_len=32)
splm = build_model('splm-em-ln', vocab_size=50, d=16, L=2, v_hidden=32)

# %% [markdown]
# ## Checkpoints
#
# A checkpoint is a folder `OUT/ckpt-<step>/` holding the model in Hugging Face format (`config.json`,
# `model.safetensors`; `from_pretrained` opens it) and `trainer_state.pt` with everything else a resume needs: the
# optimizer state, the step (the schedule is a function of it), every rank's data-sampler generator state, the
# Python/NumPy/torch(/CUDA) RNG states, elapsed time, tokens seen, the best validation loss, the configuration and the
# compact vocabulary map. It is written so that a kill at any moment leaves the last good checkpoint readable:
#
# 1. everything is written into a hidden temporary folder `OUT/.ckpt-<step>.tmp` and flushed to disk;
# 2. the folder is renamed to `OUT/ckpt-<step>` (`os.replace`: it appears complete or not at all);
# 3. the small pointer file `OUT/latest` is replaced atomically (`semsim.core.atomic_write_text`) to name it;
# 4. only then are older checkpoint folders deleted.
#
# A reader follows `OUT/latest`, never a directory listing, so a half-written folder is never opened.
#
# A checkpoint round-trips the weights bit for bit; a crash while the next one is being written (here: a stale
# temporary folder) leaves `latest` on the good one, and the next save clears the debris and the older folder:

# %%
#| export
CKPT_PREFIX = 'ckpt-'  # checkpoint folders OUT/ckpt-<step>/; OUT/latest names the newest complete one

def latest_checkpoint(out:Union[str, Path]) -> Optional[Path]:
    "The checkpoint folder named by `OUT/latest`, or None when the run has none yet."
    p = Path(out)/'latest'
    if not p.exists(): return None
    ck = Path(out)/p.read_text().strip()
    if not (ck/'trainer_state.pt').exists(): raise FileNotFoundError(f"{p} names {ck}, which is not a complete checkpoint")
    return ck

def _rng_state() -> dict:
    "Python, NumPy, torch (and CUDA) RNG states, in types `torch.load(weights_only=True)` accepts."
    st = np.random.get_state()
    r = {'python': random.getstate(), 'numpy': [st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])],
         'torch': torch.get_rng_state()}
    if torch.cuda.is_available(): r['cuda'] = torch.cuda.get_rng_state_all()
    return r

def _set_rng_state(r:dict) -> None:
    random.setstate((r['python'][0], tuple(r['python'][1]), r['python'][2]))
    n = r['numpy']; np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(r['torch'])
    if 'cuda' in r and torch.cuda.is_available(): torch.cuda.set_rng_state_all(r['cuda'])

def _quiet_save(model:nn.Module, folder:Path):
    "`save_pretrained` without transformers' per-shard progress bar."
    from transformers.utils import logging as hf_logging
    on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try: model.save_pretrained(folder)
    finally:
        if on: hf_logging.enable_progress_bar()

# %%
#| export
def save_checkpoint(out:Union[str, Path], step:int, model:nn.Module, state:dict, keep:int=1) -> Path:
    "Write OUT/ckpt-<step>/ completely (HF safetensors + trainer state), point OUT/latest at it, drop older ones."
    out = Path(out)
    final, tmp = out/f'{CKPT_PREFIX}{step}', out/f'.{CKPT_PREFIX}{step}.tmp'
    if tmp.exists(): shutil.rmtree(tmp)
    _quiet_save(model, tmp)
    torch.save(state, tmp/'trainer_state.pt')
    (tmp/'train_config.json').write_text(json.dumps(state['config'], indent=1))
    if state.get('vocab_map') is not None: (tmp/'vocab_map.json').write_text(json.dumps(state['vocab_map']))
    for f in tmp.iterdir():
        with open(f, 'rb') as fh: os.fsync(fh.fileno())
    if final.exists(): shutil.rmtree(final)
    os.replace(tmp, final)                                  # 2. the folder appears complete or not at all
    atomic_write_text(out/'latest', final.name + '\n')      # 3. then the pointer moves, atomically
    ckpts = sorted((p for p in out.glob(f'{CKPT_PREFIX}*') if p.is_dir() and p.name[len(CKPT_PREFIX):].isdigit()),
                   key=lambda p: int(p.name[len(CKPT_PREFIX):]))
    for p in ckpts[:-keep]:                                 # 4. older checkpoints go last
        if p != final: shutil.rmtree(p, ignore_errors=True)
    for p in out.glob(f'.{CKPT_PREFIX}*.tmp'): shutil.rmtree(p, ignore_errors=True)
    return final

def load_weights(model:nn.Module, folder:Union[str, Path]) -> nn.Module:
    "Load the safetensors weights of a checkpoint into `model`; tied weights come back through their twin."
    from safetensors.torch import load_file
    folder = Path(folder)
    idx = folder/'model.safetensors.index.json'
    files = sorted(set(json.loads(idx.read_text())['weight_map'].values())) if idx.exists() else ['model.safetensors']
    sd = {}
    for f in files: sd.update(load_file(folder/f))
    try: missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e: raise ValueError(f"checkpoint {folder} does not fit the model: {e}") from None
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in sd if k in own}
    really = [k for k in missing if own[k].data_ptr() not in loaded]
    if really or unexpected: raise ValueError(f"checkpoint {folder} does not fit the model: missing {really}, unexpected {unexpected}")
    return model

# %%
with tempfile.TemporaryDirectory() as d:
    st = {'step': 3, 'config': {'model': 'matched-gpt'}, 'vocab_map': None}
    save_checkpoint(d, 3, gpt, st)
    (Path(d)/'.ckpt-6.tmp').mkdir(); (Path(d)/'.ckpt-6.tmp'/'model.safetensors').write_bytes(b'half a file')
    test_eq(latest_checkpoint(d).name, 'ckpt-3')
    twin = mg.build(gpt.config); load_weights(twin, latest_checkpoint(d))
    for (k, a), b in zip(gpt.state_dict().items(), twin.state_dict().values()): torch.testing.assert_close(a, b, rtol=0, atol=0)
    save_checkpoint(d, 6, gpt, {**st, 'step': 6})
    test_eq(sorted(p.name for p in Path(d).iterdir()), ['ckpt-6', 'latest'])
    test_eq(torch.load(latest_checkpoint(d)/'trainer_state.pt', weights_only=True)['step'], 6)
    test_fail(lambda: load_weights(MODELS['splm-em-ln'].build(splm.config), latest_checkpoint(d)), contains='does not fit the model')


# %% [markdown]
# ## The log
#
# `log.jsonl` holds one JSON record per step (see the Training chapter for its fields). A kill in the middle of a
# write leaves a torn last line, which `read_log` skips; a resumed run first truncates the log to its checkpoint's
# step (`_truncate_log`), so the log of a resumed run is the log of an uninterrupted one.

# %%
#| export
def read_log(path:Union[str, Path]) -> list:
    "The records of a log.jsonl (a torn last line, left by a kill mid-write, is skipped)."
    p, recs = Path(path), []
    if not p.exists(): return recs
    for line in p.read_text(encoding='utf-8').splitlines():
        try: recs.append(json.loads(line))
        except json.JSONDecodeError: pass
    return recs

def _truncate_log(path:Path, step:int) -> list:
    "Keep the records up to `step`: a resumed run redoes everything after its checkpoint."
    recs = [r for r in read_log(path) if r.get('step', 0) <= step]
    atomic_write_text(path, ''.join(json.dumps(r) + '\n' for r in recs))
    return recs

def _jsonable(cfg:TrainConfig) -> dict: return json.loads(json.dumps(asdict(cfg)))

def _flat_config(c:dict) -> dict: # a saved config; the model's fields are named as themselves
    return {**{k: v for k, v in c.items() if k != 'model_args'}, **c.get('model_args', {})}

def _config_diff(a:dict, b:dict) -> list:
    "Fields (other than RUNTIME_FIELDS) on which two configurations differ; a model-config field by its own name."
    a, b = _flat_config(a), _flat_config(b)
    return sorted(k for k in set(a) | set(b) if k not in RUNTIME_FIELDS and a.get(k) != b.get(k))


# %% [markdown]
# **Resuming and extending.** A resumed run must have the saved configuration, except the `RUNTIME_FIELDS`. The one
# change a researcher needs is to train *longer*: `--resume --extend --max-steps N` (or `extend=True`) accepts a new
# `max_steps` at or beyond the step reached. The cosine schedule is defined by `max_steps`, so extending stretches
# it: every later step gets the learning rate of the longer schedule, which at the resume step is higher than the
# saved schedule's (a finished run restarts from lr 0 to a positive lr). `check_resumable` prints that consequence.

# %%
#| export
def check_resumable(state:dict, # the checkpoint's trainer state
                    cfg:TrainConfig, world:int, verbose:bool=True):
    "Refuse a resume whose configuration differs from the saved run's (bar RUNTIME_FIELDS and an explicit extension)."
    saved, step = state['config'], state['step']
    diff = _config_diff(saved, _jsonable(cfg))
    if diff == ['max_steps'] and cfg.extend:
        if cfg.max_steps < step: raise ValueError(f"--extend: max_steps={cfg.max_steps} is below the {step} steps the run has done")
        if verbose:
            old, new = (lr_at(step, cfg.lr, cfg.warmup, n) for n in (saved['max_steps'], cfg.max_steps))
            print(f"extending the run from {saved['max_steps']} to {cfg.max_steps} steps: the cosine schedule is stretched, "
                  f"so the learning rate at step {step} is {new:.3g} (the saved schedule had {old:.3g}) and reaches 0 at step "
                  f"{cfg.max_steps}", flush=True)
    elif diff:
        how = (" To train longer, add --extend (extend=True) with the new --max-steps; the cosine learning-rate schedule "
               "is then stretched to the new length." if 'max_steps' in diff and len(diff) == 1 else '')
        raise ValueError(f"--resume: the configuration differs from the saved run's in {diff}; resume with the saved "
                         f"settings ({Path(cfg.out)/'train_config.json'}).{how}")
    if state['world_size'] != world: raise ValueError(f"--resume: the run used {state['world_size']} processes, now {world}")


# %% [markdown]
# ## Curves
#
# `plot_run` draws one run's training cross-entropy (raw, faint, and smoothed) and its validation points;
# `plot_runs` puts several run folders in one figure.

# %%
#| export
def plot_run(records:Sequence[dict], label:str='', ax=None, color='C0'):
    "Training CE (raw, faint, and smoothed) and validation CE against step."
    import matplotlib.pyplot as plt
    if ax is None: _, ax = plt.subplots(figsize=(6, 3.5))
    st, lo = np.array([r['step'] for r in records]), np.array([r['loss'] for r in records])
    ax.plot(st, lo, color=color, alpha=0.2, lw=0.8)
    k = max(1, len(lo) // 30)
    if len(lo) >= k: ax.plot(st[k - 1:], np.convolve(lo, np.ones(k) / k, mode='valid'), color=color, label=f'{label} train')
    ev = [(r['step'], r['val_loss']) for r in records if 'val_loss' in r]
    if ev: ax.plot(*zip(*ev), 'o--', color=color, label=f'{label} val')
    ax.set(xlabel='step', ylabel='cross-entropy (nats)'); ax.legend()
    return ax

def plot_runs(run_dirs:Sequence[Union[str, Path]], path:Optional[Union[str, Path]]=None, title:str=''):
    "Training and validation curves of several runs in one figure; saved to `path` when given."
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, d in enumerate(run_dirs):
        cfg = json.loads((Path(d)/'train_config.json').read_text())
        plot_run(read_log(Path(d)/'log.jsonl'), cfg['model'], ax, f'C{i}')
    ax.set_title(title); fig.tight_layout()
    if path is not None: fig.savefig(path, dpi=110)
    return fig


# %% [markdown]
# A synthetic log, written and read back through the run folder's own files, as `plot_run` draws it (in a real run
# the records come from the loop; the *Training* chapter shows one):

# %%
with tempfile.TemporaryDirectory() as d:
    recs = [{'step': k, 'loss': 1.5 + 3 * math.exp(-k / 60) + 0.15 * math.sin(1.7 * k)} for k in range(1, 301)]
    for r in recs[49::50]: r['val_loss'] = r['loss'] + 0.2
    atomic_write_text(Path(d)/'log.jsonl', ''.join(json.dumps(r) + '\n' for r in recs) + '{"step": 301, "lo')   # a torn last line
    back = read_log(Path(d)/'log.jsonl')
    test_eq(len(back), 300); test_eq(_truncate_log(Path(d)/'log.jsonl', 120)[-1]['step'], 120)
ax = plot_run(back, 'synthetic'); plt.show()


# %% [markdown]
# ## A run as a result record
#
# A measured result that takes long to produce (hours of training) is kept as a small JSON record, never as a
# checkpoint: `run_record` reads a finished run folder (its `summary.json`, `log.jsonl` and `train_config.json`)
# and returns what a results page reports: the size, the validation perplexity at every evaluation, the final and
# best values with the step of the best, the wall time, and the last logged value of the model's scalars (γ).
# `tools/results.py` writes such records into `results/`, and the *Results* page reads them.

# %%
#| export
def run_record(run_dir:Union[str, Path]) -> dict:
    "The results-page record of a finished run folder (summary, per-evaluation validation PPL, final scalars)."
    d = Path(run_dir)
    if not (d/'summary.json').exists(): raise ValueError(f"{d} holds no finished run (no summary.json): train it to the end first")
    s, recs = json.loads((d/'summary.json').read_text()), read_log(d/'log.jsonl')
    ev = [r for r in recs if 'val_ppl' in r]
    best = min(ev, key=lambda r: r['val_ppl']) if ev else None
    last = recs[-1] if recs else {}
    return {'model': s['model'], 'params': s['params'], 'vocab_size': s['vocab_size'], 'steps': s['steps'],
            'tokens': s['tokens'], 'val_ppl': s['val_ppl'], 'best_val_ppl': s['best_val_ppl'],
            'best_step': best['step'] if best else None, 'elapsed_s': s['elapsed_s'], 'device': s.get('device'),
            'val_ppl_at': {str(r['step']): r['val_ppl'] for r in ev},
            'final_scalars': {k: last[k] for k in ('gamma', 'mass_mean', 'xi_alpha') if k in last},
            'config': s['config']}

# %% [markdown]
# A folder that has not finished is refused by name; a finished one (here a synthetic summary and log) gives its record:

# %%
with tempfile.TemporaryDirectory() as d:
    test_fail(lambda: run_record(d), contains='no summary.json')
    recs = [{'step': k, 'loss': 5.0 - k / 100, 'gamma': 1 - k / 1000, 'elapsed': k / 10} for k in range(1, 201)]
    for r, ppl in zip(recs[49::50], (300.0, 250.0, 240.0, 245.0)): r['val_ppl'] = ppl
    atomic_write_text(Path(d)/'log.jsonl', ''.join(json.dumps(r) + '\n' for r in recs))
    atomic_write_text(Path(d)/'summary.json', json.dumps({'model': 'splm-em-ln', 'params': 1000, 'vocab_size': 50, 'steps': 200,
        'tokens': 200 * 64, 'val_ppl': 245.0, 'best_val_ppl': 240.0, 'elapsed_s': 20.0, 'config': {}}))
    rec = run_record(d)
test_eq((rec['best_step'], rec['val_ppl_at'], rec['final_scalars']), (150, {'50': 300.0, '100': 250.0, '150': 240.0, '200': 245.0}, {'gamma': 0.8}))
