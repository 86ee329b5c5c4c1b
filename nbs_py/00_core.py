# %% [markdown]
# # Core
#
# > Shared plumbing every semsim module relies on: where data lives, seeding, devices, checksums and atomic writes.

# %%
#| default_exp core

# %% [markdown]
# semsim trains models for hours and writes checkpoints while it does; it reads corpora that may sit in a shared
# folder, a user cache, or nowhere yet. This chapter holds the few pieces of plumbing that every later chapter uses,
# so that each is written once:
#
# - **where data lives**: `$SEMSIM_DATA_DIR` (a folder you supply, e.g. a shared read-only copy), then the user cache
#   `$SEMSIM_CACHE_DIR` (default `~/.cache/semsim`);
# - **reproducibility**: one call seeds Python, NumPy and torch;
# - **integrity**: files are checked against a SHA-256 before use;
# - **nothing is lost**: every file semsim writes (token caches, checkpoints, logs' summaries) goes to a temporary file in
#   the same folder and is renamed into place, so a kill at any moment leaves either the old file or the new one,
#   never a torn one.

# %%
#| export
from __future__ import annotations
import contextlib, hashlib, numbers, os, random, tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close

# %% [markdown]
# ## Where data lives
#
# `data_dir()` is the folder named by `$SEMSIM_DATA_DIR`, or `None` when the variable is unset. A variable that names
# a folder that does not exist is an error, not a silent fallback: a typo there would otherwise trigger a download.

# %%
#| export
DATA_ENV = 'SEMSIM_DATA_DIR'    # env var: a folder holding corpora / tokenizer files supplied by the user
CACHE_ENV = 'SEMSIM_CACHE_DIR'  # env var: where semsim caches downloads and token files

def data_dir() -> Optional[Path]:
    "The user-supplied data folder `$SEMSIM_DATA_DIR`, or None when unset."
    v = os.environ.get(DATA_ENV)
    if not v: return None
    p = Path(v).expanduser()
    if not p.is_dir(): raise FileNotFoundError(f"${DATA_ENV} is set to {v!r}, which is not a folder")
    return p

def cache_dir(sub:str='') -> Path: # sub-folder of the cache, created if missing
    "semsim's writable cache folder: `$SEMSIM_CACHE_DIR`, else `$XDG_CACHE_HOME/semsim`, else `~/.cache/semsim`."
    base = os.environ.get(CACHE_ENV) or Path(os.environ.get('XDG_CACHE_HOME', Path.home()/'.cache'))/'semsim'
    p = Path(base).expanduser()/sub
    p.mkdir(parents=True, exist_ok=True)
    return p


# %% [markdown]
# The cache follows the usual XDG convention; setting `$SEMSIM_CACHE_DIR` moves it (tests point it at a temporary folder).

# %%
with tempfile.TemporaryDirectory() as d:
    old = os.environ.get(CACHE_ENV); os.environ[CACHE_ENV] = d
    try: test_eq(cache_dir('tokens'), Path(d)/'tokens'); assert (Path(d)/'tokens').is_dir()
    finally:
        if old is None: del os.environ[CACHE_ENV]
        else: os.environ[CACHE_ENV] = old

# %%
old = os.environ.get(DATA_ENV)
try:
    os.environ[DATA_ENV] = '/no/such/folder'
    test_fail(data_dir, contains='not a folder')
    del os.environ[DATA_ENV]; test_eq(data_dir(), None)
finally:
    if old is not None: os.environ[DATA_ENV] = old


# %% [markdown]
# ## Checksums

# %%
#| export
def sha256_file(path:Union[str, Path], # file to hash
                chunk:int=1<<20) -> str:
    "Hex SHA-256 of a file, read in chunks."
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for b in iter(lambda: f.read(chunk), b''): h.update(b)
    return h.hexdigest()


# %%
with tempfile.TemporaryDirectory() as d:
    p = Path(d)/'x.txt'; p.write_bytes(b'abc')
    test_eq(sha256_file(p), hashlib.sha256(b'abc').hexdigest())
    test_eq(sha256_file(p, chunk=1), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')  # FIPS 180-2 test vector


# %% [markdown]
# ## Atomic writes
#
# `atomic_path(path)` yields a temporary path in the destination folder; when the block finishes without error the
# temporary file is flushed to disk and renamed over `path` (`os.replace`, atomic on POSIX and Windows). When the block
# raises, the temporary file is removed and `path` is untouched. `atomic_write_bytes`, `atomic_write_text` and
# `atomic_torch_save` are the three writes built on it.

# %%
#| export
@contextlib.contextmanager
def atomic_path(path:Union[str, Path]) -> Iterator[Path]: # final destination; its folder is created
    "Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd); tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, 'rb+') as f: os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists(): tmp.unlink()

def atomic_write_bytes(path:Union[str, Path], data:bytes) -> Path:
    "Write `data` to `path` atomically."
    with atomic_path(path) as tmp: tmp.write_bytes(data)
    return Path(path)

def atomic_write_text(path:Union[str, Path], text:str) -> Path:
    "Write UTF-8 `text` to `path` atomically."
    return atomic_write_bytes(path, text.encode('utf-8'))

def atomic_torch_save(obj, path:Union[str, Path]) -> Path:
    "`torch.save(obj, path)` atomically: a kill mid-write leaves the previous file intact."
    with atomic_path(path) as tmp: torch.save(obj, tmp)
    return Path(path)


# %% [markdown]
# The property that matters is what happens on failure: the old content survives and no temporary file is left behind.

# %%
with tempfile.TemporaryDirectory() as d:
    p = Path(d)/'ckpt.pt'
    atomic_torch_save({'step': 1}, p)
    def crash():
        with atomic_path(p) as tmp:
            tmp.write_bytes(b'half a checkpoint')
            raise RuntimeError('killed mid-write')
    test_fail(crash, contains='killed mid-write')
    test_eq(torch.load(p, weights_only=True), {'step': 1})
    test_eq(sorted(x.name for x in Path(d).iterdir()), ['ckpt.pt'])
    atomic_write_text(Path(d)/'sub'/'a.txt', 'héllo')
    test_eq((Path(d)/'sub'/'a.txt').read_text(encoding='utf-8'), 'héllo')


# %% [markdown]
# ## Seeds and devices
#
# `set_seed` seeds every generator semsim draws from. `get_device` picks CUDA, then Apple MPS, then the CPU, unless told.

# %%
#| export
def set_seed(seed:int) -> None:
    "Seed Python's `random`, NumPy and torch (all devices)."
    random.seed(seed); np.random.seed(seed % 2**32); torch.manual_seed(seed)

def get_device(device:Optional[str]=None) -> torch.device: # 'cpu', 'cuda', 'cuda:1', 'mps' or None for the best available
    "The requested device, or the best available one."
    if device is not None:
        d = torch.device(device)
        if d.type == 'cuda' and not torch.cuda.is_available(): raise RuntimeError(f"device {device!r} requested but CUDA is not available")
        return d
    if torch.cuda.is_available(): return torch.device('cuda')
    if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available(): return torch.device('mps')
    return torch.device('cpu')


# %%
set_seed(0); a = (random.random(), np.random.rand(), torch.rand(3))
set_seed(0); b = (random.random(), np.random.rand(), torch.rand(3))
test_eq(a[0], b[0]); test_eq(a[1], b[1]); torch.testing.assert_close(a[2], b[2], rtol=0, atol=0)
test_eq(get_device('cpu').type, 'cpu')
if not torch.cuda.is_available(): test_fail(lambda: get_device('cuda'), contains='CUDA is not available')


# %% [markdown]
# ## Validating arguments
#
# Bad input gets an error that names the argument, the expected kind and the value received. Every module checks
# counts and sizes with these two, so the wording is the same everywhere.

# %%
#| export
def check_positive_int(name:str, # the argument's name, as the user wrote it
                       v, # the value received
                      ) -> int:
    "Return `v` if it is a positive integer (a bool is not); else raise ValueError naming `name`."
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1: raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)

def check_positive_ints(obj, # a config (or any object) with the fields as attributes
                        names): # field names that must hold positive integers
    "Check several fields of one object with `check_positive_int`."
    for k in names: check_positive_int(k, getattr(obj, k))


# %%
test_eq(check_positive_int('L', 3), 3)
for bad in (0, -1, 2.0, True, '3', None): test_fail(lambda: check_positive_int('L', bad), contains='L must be a positive integer')
class _C: d, L = 4, 0
test_fail(lambda: check_positive_ints(_C, ('d', 'L')), contains='L must be a positive integer, got 0')

