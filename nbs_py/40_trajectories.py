# %% [markdown]
# # Trajectories
#
# > One call reads a sentence's hidden-state trajectory out of any causal language model: along the token axis at a chosen layer, along the depth axis through every layer, before and after the final LayerNorm, with the per-token next-token loss.

# %%
#| default_exp trajectories

# %% [markdown]
# The descriptive half of Semantic Simulation treats the hidden states of a pretrained transformer as the positions of
# a particle. For one sentence of $T$ tokens $x_0, \dots, x_{T-1}$ and a model with $L$ blocks there are two axes
# (semsimula-paper@eb95852: `notebooks/stp_loss/energy_landscape_validation.ipynb`, `notebooks/conservative_arch/trajectory_extraction.py`):
#
# - **token axis** (time = token position): $h_t^{(\ell)} \in \mathbb{R}^d$, $t = 0, \dots, T-1$, at a fixed depth
#   $\ell$ (`layer`, default the last). This is the trajectory the STP–acceleration study reads (next chapter);
# - **depth axis** (time = layer): $h_t^{(0)}, h_t^{(1)}, \dots, h_t^{(L)}$ for a fixed token, the trajectory the
#   shared-potential separator reads. $h^{(0)}$ is the embedding, $h^{(\ell)}$ the residual stream after block $\ell$.
#
# The energy proxy that goes with a trajectory is the **per-token next-token loss**
# $\ell_t = -\ln \mathrm{softmax}(z_t)_{x_{t+1}}$, $t = 0, \dots, T-2$, where $z_t$ (`logits[t]`) are the logits at
# position $t$: a vector of $T-1$ numbers (`loss`), whose mean is exactly the loss a Hugging Face model reports for
# `labels=input_ids`.
#
# | symbol | code | shape |
# |---|---|---|
# | $x_t$ | `Trajectory.ids` | (T,) |
# | $h_t^{(\ell)}$, $\ell$ = `layer` | `Trajectory.h` | (T, d) |
# | $h_t^{(0..L)}$ as Hugging Face returns them | `Trajectory.depth` | (L+1, T, d) |
# | residual stream before the final norm, $\tilde h_t^{(L)}$ | `Trajectory.h_prenorm` | (T, d) |
# | after the final norm, $\mathrm{LN}_f(\tilde h_t^{(L)})$, what the unembedding reads | `Trajectory.h_postnorm` | (T, d) |
# | $h_t^{(0..L)}$ all before any final norm | `Trajectory.residual` | (L+1, T, d) |
# | $\ell_t$ | `Trajectory.loss` | (T−1,) |
#
# **The trap.** Hugging Face's `out.hidden_states` has $L+1$ entries, but the last one is *not* the output of block $L$:
# GPT-2 (`transformer.ln_f`) and Pythia (`gpt_neox.final_layer_norm`) apply their final LayerNorm first, so
# `hidden_states[-1]` $= \mathrm{LN}_f(\tilde h^{(L)})$ and the pre-norm residual $\tilde h^{(L)}$ appears nowhere in the
# output. **The reference study used `out.hidden_states[-1][0]`, i.e. the post-`ln_f` states** (semsimula-paper@eb95852: `notebooks/stp_loss/energy_landscape_validation.ipynb`); semsim
# keeps that as `h` (with `layer=-1`) so its numbers are comparable, and captures $\tilde h^{(L)}$ with a forward hook
# on the final norm as `h_prenorm`. The two are different geometric objects: LayerNorm removes each state's mean and
# rescales it to norm $\approx \sqrt d$ (times the gain), so lengths and angles along the two trajectories differ.

# %%
#| export
from __future__ import annotations
import contextlib, json, os, re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semsim.core import data_dir, DATA_ENV

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import tempfile
import matplotlib.pyplot as plt
import transformers
from semsim.splm import SPLMConfig
from semsim.baselines import MatchedGPTConfig

# %%
#| hide
transformers.logging.set_verbosity_error(); transformers.logging.disable_progress_bar()
torch.set_num_threads(1)  # tiny tensors: one thread is fastest, above all on a shared machine

# %% [markdown]
# ## Loading a model
#
# `load_model` takes whatever names a model and always goes through 🤗 `transformers`' own loading code:
#
# - a **Hub name** (`"gpt2"`, `"EleutherAI/pythia-160m"`): `AutoModelForCausalLM.from_pretrained(name)`; when the
#   weights are neither in the local 🤗 cache nor downloadable (no network, or `HF_HUB_OFFLINE=1`), the error says
#   which model, and that it needs the internet once or a local folder;
# - a **local folder** written by `save_pretrained`: `from_pretrained(folder)`;
# - a **config** (`GPT2Config(...)`, `GPTNeoXConfig(...)`): `AutoModelForCausalLM.from_config(config)`, randomly
#   initialised under `seed`. This is how tests and CI get small stand-ins that take the same code path as the real
#   models;
# - an **`nn.Module`** already built (semsim's own models, which follow the Hugging Face conventions): returned as is.
#
# The model is put in `eval()` mode (no dropout), in `dtype` (fp32 by default, as the reference on CPU) on `device`.

# %%
#| export
HUB_MODELS = {'gpt2': 'gpt2', 'gpt2-small': 'gpt2', 'pythia-160m': 'EleutherAI/pythia-160m'}  # short names -> Hub ids

def _looks_like_path(s:str) -> bool:
    "True for strings that can only be a filesystem path, not a Hub id."
    return s.startswith(('/', './', '../', '~', '.\\')) or s.count('/') > 1 or '\\' in s

def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype): return dtype
    names = {'float32': torch.float32, 'fp32': torch.float32, 'float16': torch.float16, 'fp16': torch.float16,
             'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float64': torch.float64}
    if dtype not in names: raise ValueError(f"unknown dtype {dtype!r}: use one of {sorted(names)}")
    return names[dtype]

def _register_semsim(config_file:Path):
    "Import semsim's model modules (they register with the Auto classes) when the config names a semsim model."
    try: mt = json.loads(Path(config_file).read_text()).get('model_type', '')
    except (OSError, ValueError): return
    if str(mt).startswith('semsim'):
        import importlib
        for mod in ('semsim.splm', 'semsim.baselines'):
            try: importlib.import_module(mod)
            except ImportError: pass

# %%
#| export
def load_model(model, # Hub name, local folder (save_pretrained), a transformers config, or an nn.Module
               dtype='float32', # weights' dtype
               device='cpu', # where to run it
               seed:int=0) -> nn.Module: # seed of the random init when `model` is a config
    "A causal LM in eval mode, loaded with `transformers`' own code; clear errors when it cannot be had."
    from transformers import AutoModelForCausalLM, PretrainedConfig
    dt = _dtype(dtype)
    if isinstance(model, nn.Module): m = model
    elif isinstance(model, PretrainedConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            m = AutoModelForCausalLM.from_config(model)
    elif isinstance(model, (str, Path)):
        s = str(model); p = Path(s).expanduser()
        if p.exists():
            if not p.is_dir(): raise ValueError(f"model path {p} is a file; pass the folder written by save_pretrained")
            if not (p/'config.json').is_file(): raise FileNotFoundError(f"model folder {p} has no config.json: not a folder written by save_pretrained")
            _register_semsim(p/'config.json')
            try: m = AutoModelForCausalLM.from_pretrained(p, dtype=dt)
            except (OSError, ValueError) as e: raise ValueError(f"could not load the model in {p}: {str(e).splitlines()[0]}") from None
        elif _looks_like_path(s): raise FileNotFoundError(f"model folder not found: {p}")
        else:
            name = HUB_MODELS.get(s, s)
            try: m = AutoModelForCausalLM.from_pretrained(name, dtype=dt)
            except OSError as e:
                offline = os.environ.get('HF_HUB_OFFLINE', '0') not in ('0', '', 'false', 'False')
                raise ConnectionError(
                    f"cannot load model {name!r}: its weights are not in the local 🤗 cache and could not be downloaded"
                    f"{' (HF_HUB_OFFLINE=1)' if offline else ''}. Loading it needs the internet once, or pass a local "
                    f"folder written by save_pretrained. ({str(e).splitlines()[0]})") from None
    else: raise TypeError(f"model must be a Hub name, a folder, a transformers config or an nn.Module, got {type(model).__name__}")
    return m.to(device=device, dtype=dt).eval()

def model_label(model:nn.Module) -> str:
    "A short human-readable name: the Hub id or folder it came from, else its class name."
    cfg = getattr(model, 'config', None)
    name = getattr(cfg, 'name_or_path', '') or getattr(cfg, '_name_or_path', '')
    return name or type(model).__name__

# %% [markdown]
# The CI stand-ins are GPT-2 and GPT-NeoX (Pythia's architecture) with two blocks of width 64 and random weights. They
# have the real vocabularies (50,257 and Pythia's padded 50,304) so that real token ids go through them.

# %%
#| export
def tiny_gpt2_config(n_layer:int=2, n_embd:int=64, n_head:int=4, n_positions:int=256):
    "A small GPT-2 configuration (real vocabulary, random weights): the CI stand-in for `gpt2`."
    from transformers import GPT2Config
    return GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions, vocab_size=50_257)

def tiny_neox_config(n_layer:int=2, hidden_size:int=64, n_head:int=4, n_positions:int=256):
    "A small GPT-NeoX configuration (Pythia's architecture and padded vocabulary): the CI stand-in for Pythia-160M."
    from transformers import GPTNeoXConfig
    return GPTNeoXConfig(num_hidden_layers=n_layer, hidden_size=hidden_size, num_attention_heads=n_head,
                         intermediate_size=4*hidden_size, max_position_embeddings=n_positions, vocab_size=50_304)


# %%
gpt2_tiny = load_model(tiny_gpt2_config(), seed=0)
neox_tiny = load_model(tiny_neox_config(), seed=0)
print(type(gpt2_tiny).__name__, sum(p.numel() for p in gpt2_tiny.parameters()), 'parameters;',
      type(neox_tiny).__name__, sum(p.numel() for p in neox_tiny.parameters()), 'parameters')
assert not gpt2_tiny.training

# %% [markdown]
# A folder written by `save_pretrained` loads back to the same weights; the same seed gives the same stand-in:

# %%
with tempfile.TemporaryDirectory() as d:
    gpt2_tiny.save_pretrained(d)
    back = load_model(d)
    for (n, p), (_, q) in zip(gpt2_tiny.state_dict().items(), back.state_dict().items()): test_eq(torch.equal(p, q), True)
    test_fail(lambda: load_model(Path(d)/'config.json'), contains='is a file')
    test_fail(lambda: load_model(Path(d)/'nothing-here'), contains='model folder not found')
torch.testing.assert_close(load_model(tiny_gpt2_config(), seed=0).lm_head.weight, gpt2_tiny.lm_head.weight)
test_fail(lambda: load_model(3), contains='must be a Hub name')
test_fail(lambda: load_model(tiny_gpt2_config(), dtype='fp8'), contains='unknown dtype')

# %% [markdown]
# Without the network the real weights cannot be fetched, and the error says so plainly (this runs whenever
# `HF_HUB_OFFLINE=1`, as in CI):

# %%
if os.environ.get('HF_HUB_OFFLINE') == '1':
    for name in ['gpt2', 'EleutherAI/pythia-160m']:
        try: load_model(name); raise AssertionError('offline load must fail')
        except ConnectionError as e: msg = str(e)
        assert name in msg and 'needs the internet' in msg and 'save_pretrained' in msg
    print(msg)

# %% [markdown]
# ## Tokenizers
#
# Sentences are turned into ids by the model's own tokenizer. For the GPT-2 family that is semsim's exact GPT-2 BPE
# (`semsim.data.gpt2_tokenizer`, which works offline), and also for any model with exactly GPT-2's 50,257 ids, such as
# semsim's own models; otherwise the tokenizer saved next to the model, or the Hub's
# (`AutoTokenizer`; Pythia has its own, the GPT-NeoX-20B BPE). Only `encode(text) -> list[int]` is needed, so any
# object with that method can be passed. The CI stand-in for Pythia reads GPT-2 ids (they are valid ids of its
# 50,304-entry table): **its token counts are GPT-2's, not Pythia's** (the reference's Pythia run has 1,249 triplets,
# GPT-2's 1,314).

# %%
#| export
_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'tokenizer.model')
_GPT2_TYPES = ('gpt2',)   # model types that use the GPT-2 BPE; so does any model with exactly its 50,257 ids

def load_tokenizer(model=None, # the model (its config says the family) or None
                   tokenizer=None): # None/'auto', 'gpt2', a Hub name or folder, or an object with `.encode`
    "A tokenizer with `encode(text) -> list[int]` for `model`; clear errors when offline."
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        if not callable(getattr(tokenizer, 'encode', None)): raise TypeError("tokenizer must have an encode(text) -> list[int] method")
        return tokenizer
    from semsim.data import gpt2_tokenizer
    if tokenizer in ('gpt2', 'gpt2-bpe'): return gpt2_tokenizer()
    if tokenizer in (None, 'auto'):
        cfg = getattr(model, 'config', None)
        src = getattr(cfg, 'name_or_path', '') or getattr(cfg, '_name_or_path', '')
        if src and Path(src).is_dir() and any((Path(src)/f).is_file() for f in _TOKENIZER_FILES): tokenizer = src
        elif cfg is None or getattr(cfg, 'model_type', None) in _GPT2_TYPES or getattr(cfg, 'vocab_size', None) == 50_257:
            return gpt2_tokenizer()
        elif src and not Path(src).exists(): tokenizer = src
        else: raise ValueError(f"no tokenizer found for this {getattr(cfg, 'model_type', type(model).__name__)} model "
                               f"(its folder {src or '(none)'} holds no tokenizer files): pass one, e.g. tokenizer='gpt2'")
    from transformers import AutoTokenizer
    try: return AutoTokenizer.from_pretrained(str(tokenizer))
    except (OSError, ValueError) as e:
        raise ConnectionError(f"cannot load the tokenizer {str(tokenizer)!r}: not in the local 🤗 cache and could not be "
                              f"downloaded; it needs the internet once, or a folder holding it. ({str(e).splitlines()[0]})") from None

def encode(tokenizer, # anything with `encode(text) -> list[int]`
           text:str, # one sentence
           max_length:int=256) -> Tensor: # token ids, (T,) with T <= max_length
    "Token ids of one sentence, truncated to `max_length` (the reference: `truncation=True, max_length=256`)."
    if not isinstance(text, str): raise TypeError(f"text must be a string, got {type(text).__name__}")
    if max_length < 1: raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids = list(tokenizer.encode(text))[:max_length]
    if not ids: raise ValueError(f"sentence {text!r} has no tokens")
    return torch.tensor(ids, dtype=torch.long)


# %%
tok = load_tokenizer(gpt2_tiny)
test_eq(encode(tok, 'Hello world').tolist(), [15496, 995])
test_eq(load_tokenizer(neox_tiny, 'gpt2'), tok)
test_eq(len(encode(tok, 'word ' * 400)), 256)   # truncation at 256 tokens
test_fail(lambda: encode(tok, ''), contains='has no tokens')
test_fail(lambda: load_tokenizer(neox_tiny), contains="pass one, e.g. tokenizer='gpt2'")  # random NeoX: no tokenizer of its own
test_fail(lambda: load_tokenizer(None, object()), contains='encode(text)')

# %% [markdown]
# ## The final norm and the pre-norm residual
#
# `find_final_norm` returns the module applied between the last block and the unembedding: known names first
# (`transformer.ln_f` for GPT-2, `gpt_neox.final_layer_norm` for Pythia, `model.norm` for Llama-style models,
# `model.decoder.final_layer_norm` for OPT, `ln_f` / `final_norm` for semsim's models), otherwise the last module
# whose name ends in a norm-like word (`ln_f`, `final_layer_norm`, `norm_f`, `final_norm`, `norm`) and whose class
# is a norm. A forward hook on it records its input, $\tilde h^{(L)}$, and its output.

# %%
#| export
FINAL_NORM_NAMES = ('transformer.ln_f', 'gpt_neox.final_layer_norm', 'model.norm', 'model.final_layernorm',
                    'model.decoder.final_layer_norm', 'ln_f', 'final_norm', 'norm_f')
_NORM_LEAF = re.compile(r'^(ln_f|final_layer_?norm|final_norm|norm_f|norm)$')

def find_final_norm(model:nn.Module, # a causal LM
                    name:Optional[str]=None): # force a module name
    "(name, module) of the final norm before the unembedding, or (None, None) when the model has none."
    mods = dict(model.named_modules())
    if name is not None:
        if name not in mods: raise ValueError(f"model has no module named {name!r}")
        return name, mods[name]
    for n in FINAL_NORM_NAMES:
        if n in mods: return n, mods[n]
    cands = [n for n, m in mods.items() if n and _NORM_LEAF.match(n.split('.')[-1]) and 'norm' in type(m).__name__.lower()]
    return (cands[-1], mods[cands[-1]]) if cands else (None, None)


# %%
test_eq(find_final_norm(gpt2_tiny)[0], 'transformer.ln_f')
test_eq(find_final_norm(neox_tiny)[0], 'gpt_neox.final_layer_norm')
class _Wrapped(nn.Module):  # generic lookup: a norm under an unfamiliar parent
    def __init__(self): super().__init__(); self.body = nn.Module(); self.body.lin = nn.Linear(4, 4); self.body.norm_f = nn.LayerNorm(4)
test_eq(find_final_norm(_Wrapped())[0], 'body.norm_f')
test_eq(find_final_norm(nn.Linear(3, 3)), (None, None))
test_fail(lambda: find_final_norm(gpt2_tiny, 'transformer.nope'), contains='no module named')


# %% [markdown]
# ## One call: `trajectory`
#
# `trajectory(model, text)` runs one sentence (no padding, batch of one) with `output_hidden_states=True` and returns a
# `Trajectory`. Everything is detached and moved to the CPU in fp32 (the model may run in fp16 on a GPU). For
# 🤗 models the forward runs under `torch.no_grad()`; any other module is called as is, because semsim's own models
# compute their forces with autograd even at evaluation (semsimula-paper@eb95852: `notebooks/conservative_arch/model.py`).
#
# Whether the last `hidden_states` entry is the norm's output is *checked*, not assumed (`last_is_post_norm`): for
# GPT-2 and Pythia it is, and `residual` then swaps in the hooked input so that every depth is pre-norm. Models
# differ here (semsim's matched attention baseline returns pre-norm states, see below), which is why the hook's input
# and output are both kept, as `h_prenorm` and `h_postnorm`.

# %%
#| export
@dataclass
class Trajectory:
    "Hidden states of one sentence read out of a causal LM (CPU, fp32)."
    ids: Tensor                 # token ids x_t, (T,)
    h: Tensor                   # token axis: hidden states at `layer`, (T,d)
    depth: Tensor               # depth axis: every `hidden_states` entry, (L+1,T,d)
    loss: Tensor                # per-token next-token loss l_t = CE(logits_t, x_{t+1}), (T-1,)
    layer: int                  # index into `depth` that `h` is
    h_prenorm: Optional[Tensor] = None  # input of the final norm (residual stream after block L), (T,d)
    h_postnorm: Optional[Tensor] = None # output of the final norm (what the unembedding reads), (T,d)
    last_is_post_norm: bool = False     # True when depth[-1] is the final norm's output (GPT-2, Pythia)
    norm_name: Optional[str] = None     # the hooked module
    text: str = ''              # the sentence
    meta: dict = field(default_factory=dict)  # e.g. {'domain': ..., 'model': ...}

    @property
    def T(self) -> int: return self.ids.shape[0]
    @property
    def residual(self) -> Tensor:
        "Depth axis with no final norm anywhere: depth[:-1] then the pre-norm residual, (L+1,T,d)."
        if self.last_is_post_norm and self.h_prenorm is not None: return torch.cat([self.depth[:-1], self.h_prenorm[None]])
        return self.depth
    def states(self, which:str='h') -> Tensor:
        "The token-axis trajectory to analyse: 'h' (at `layer`, the reference's choice), 'prenorm' or 'postnorm', (T,d)."
        if which == 'h': return self.h
        if which in ('prenorm', 'postnorm'):
            v = self.h_prenorm if which == 'prenorm' else self.h_postnorm
            if v is None: raise ValueError(f"this model has no final norm: there is no {which} state (use which='h')")
            return v
        raise ValueError(f"which must be 'h', 'prenorm' or 'postnorm', got {which!r}")
    def __repr__(self):
        return (f"Trajectory(T={self.T}, d={self.h.shape[-1]}, layers={self.depth.shape[0]}, layer={self.layer}, "
                f"prenorm={'yes' if self.h_prenorm is not None else 'no'}, mean loss={self.loss.mean().item():.3f}, text={self.text[:40]!r})")


# %%
#| export
def _field(out, key):
    "`out.key` or `out[key]` from a model output."
    v = out.get(key) if isinstance(out, dict) else getattr(out, key, None)
    if v is None: raise ValueError(f"the model's output has no {key!r}: it must follow the 🤗 convention model(ids, output_hidden_states=True).{key}")
    return v

def token_losses(logits:Tensor, # next-token logits, (T,V)
                 ids:Tensor) -> Tensor: # token ids, (T,)
    "Per-token next-token loss l_t = -log softmax(logits_t)[x_{t+1}], (T-1,)."
    return F.cross_entropy(logits[:-1].float(), ids[1:].to(logits.device), reduction='none')

# %%
#| export
def trajectory(model:nn.Module, # a causal LM following the 🤗 output conventions
               text, # a sentence (str) or its token ids, (T,)
               tokenizer=None, # used when `text` is a string; default: the model's (`load_tokenizer`)
               layer:int=-1, # depth index of the token-axis trajectory `h` (-1: the last entry, post-norm)
               max_length:int=256, # truncation (tokens)
               final_norm:Optional[str]=None, # module name of the final norm, if the lookup cannot find it
               meta:Optional[dict]=None) -> Trajectory:
    "Token- and depth-axis hidden states, pre-norm residual and per-token loss of one sentence."
    from transformers import PreTrainedModel
    if isinstance(text, str): ids, s = encode(tokenizer or load_tokenizer(model), text, max_length), text
    else: ids, s = torch.as_tensor(text, dtype=torch.long).flatten()[:max_length], ''
    T = ids.shape[0]
    if T < 1: raise ValueError("empty sequence")
    norm_name, norm = find_final_norm(model, final_norm)
    seen = {}
    def hook(mod, inp, outp): seen['in'], seen['out'] = inp[0].detach(), (outp[0] if isinstance(outp, tuple) else outp).detach()
    handle = norm.register_forward_hook(hook) if norm is not None else None
    dev = next(model.parameters()).device
    ctx = torch.no_grad() if isinstance(model, PreTrainedModel) else contextlib.nullcontext()
    try:
        with ctx: out = model(ids[None].to(dev), output_hidden_states=True)
    finally:
        if handle is not None: handle.remove()
    hs = _field(out, 'hidden_states'); logits = _field(out, 'logits')
    depth = torch.stack([x[0].detach().float().cpu() for x in hs])  # (L+1,T,d)
    if depth.shape[1] != T: raise ValueError(f"hidden_states have {depth.shape[1]} positions for {T} tokens")
    if not -depth.shape[0] <= layer < depth.shape[0]: raise ValueError(f"layer {layer} out of range for {depth.shape[0]} hidden-state entries")
    pre, post, post_last = None, None, False
    if 'in' in seen and seen['in'].shape[-2] == T:
        pre, post = seen['in'][0].float().cpu(), seen['out'][0].float().cpu()
        post_last = bool(torch.allclose(post, depth[-1], rtol=1e-4, atol=1e-5))
    loss = token_losses(logits[0].detach(), ids).float().cpu()
    return Trajectory(ids=ids, h=depth[layer], depth=depth, loss=loss, layer=layer % depth.shape[0], h_prenorm=pre,
                      h_postnorm=post, last_is_post_norm=post_last, norm_name=norm_name if pre is not None else None, text=s,
                      meta={'model': model_label(model), **(meta or {})})

# %%
tr = trajectory(gpt2_tiny, 'The fundamental theorem of calculus links differentiation and integration.')
print(tr)
T, d = tr.h.shape
test_eq(tr.depth.shape, (3, T, 64)); test_eq(tr.loss.shape, (T - 1,)); test_eq(tr.h_prenorm.shape, (T, 64))
test_eq((tr.layer, tr.norm_name, tr.last_is_post_norm), (2, 'transformer.ln_f', True))
test_eq(tr.h_postnorm, tr.h); test_eq(tr.states('postnorm'), tr.h)

# %% [markdown]
# The tests check the readout against the model's own arithmetic. The trap first: the last `hidden_states` entry is
# exactly `ln_f` of the hooked residual, and differs from it:

# %%
with torch.no_grad():
    torch.testing.assert_close(gpt2_tiny.transformer.ln_f(tr.h_prenorm), tr.h)
    torch.testing.assert_close(tr.residual[-1], tr.h_prenorm); torch.testing.assert_close(tr.residual[:-1], tr.depth[:-1])
    assert (tr.h_prenorm - tr.h).norm() > 1.0
    # depth[0] is the embedding: token + position tables (GPT-2 has no norm there)
    torch.testing.assert_close(tr.depth[0], gpt2_tiny.transformer.wte(tr.ids) + gpt2_tiny.transformer.wpe(torch.arange(T)))
    # the residual after block L is the last block applied to the residual after block L-1
    o = gpt2_tiny.transformer.h[-1](tr.depth[-2][None]); o = o[0] if isinstance(o, tuple) else o
    torch.testing.assert_close(o[0], tr.h_prenorm, rtol=1e-5, atol=1e-5)

# %% [markdown]
# The per-token loss is the cross-entropy of each position against the next token, and its mean is the loss 🤗
# computes with `labels=input_ids`:

# %%
with torch.no_grad():
    out = gpt2_tiny(tr.ids[None], labels=tr.ids[None])
    lp = torch.log_softmax(out.logits[0].double(), -1)
test_close(tr.loss.mean().item(), out.loss.item(), eps=1e-5)
test_close(tr.loss[3].item(), -lp[3, tr.ids[4]].item(), eps=1e-5)
test_close(tr.loss.mean().item(), torch.log(torch.tensor(50_257.)).item(), eps=0.1)  # a random model is near uniform: ln V

# %% [markdown]
# `layer` picks the token-axis trajectory along depth; a bad `layer` or an output without hidden states fails clearly:

# %%
test_eq(trajectory(gpt2_tiny, tr.ids, layer=1).h, tr.depth[1])
test_eq(trajectory(gpt2_tiny, tr.ids, layer=0).layer, 0)
test_fail(lambda: trajectory(gpt2_tiny, tr.ids, layer=3), contains='out of range')
test_fail(lambda: tr.states('post'), contains="'h', 'prenorm' or 'postnorm'")

# %% [markdown]
# The same call works on Pythia's architecture (the hook lands on `gpt_neox.final_layer_norm`), and on any module that
# follows the 🤗 output conventions, such as semsim's own models. Below, a two-line toy model with no final norm:
# there `h_prenorm` is `None` and `residual` is `depth`.

# %%
trn = trajectory(neox_tiny, tr.ids)
test_eq((trn.norm_name, trn.last_is_post_norm), ('gpt_neox.final_layer_norm', True))
with torch.no_grad(): torch.testing.assert_close(neox_tiny.gpt_neox.final_layer_norm(trn.h_prenorm), trn.h)

class ToyLM(nn.Module):
    "Embedding, one residual tanh step, tied unembedding; returns hidden_states and logits like a 🤗 model."
    def __init__(self, V=50_257, d=8):
        super().__init__(); self.emb = nn.Embedding(V, d); self.lin = nn.Linear(d, d)
    def forward(self, ids, output_hidden_states=False):
        h0 = self.emb(ids); h1 = h0 + torch.tanh(self.lin(h0))
        return {'hidden_states': (h0, h1), 'logits': h1 @ self.emb.weight.T}
torch.manual_seed(0); toy = ToyLM()
trt = trajectory(toy, 'A toy model reads this sentence.')
test_eq((trt.h_prenorm, trt.norm_name, trt.depth.shape[0]), (None, None, 2))
test_eq(trt.residual is trt.depth, True)
test_fail(lambda: trt.states('prenorm'), contains='no final norm')
test_fail(lambda: trajectory(nn.Sequential(nn.Embedding(10, 4)), torch.tensor([1, 2, 3])), contains="output_hidden_states")

# %% [markdown]
# ### semsim's own models
#
# The scalar-potential LM (chapter *SPLM*) and the matched attention baseline (chapter *Baselines*) are 🤗
# `PreTrainedModel`s, so the same call reads them, and `load_model` takes their configs and saved folders:
#
# - **SPLM**: `hidden_states` are the integrator's positions $h_0, \dots, h_L$ and the readout is $E\,h_L$; there is no
#   final-norm module, so `h_prenorm` is `None`. Its forces need autograd even at evaluation: the model turns
#   gradients on inside its own forward, so running it under `trajectory`'s `no_grad` is safe.
# - **Matched GPT**: `hidden_states` are the residual states $x_0, \dots, x_L$, *all before* `ln_f`, unlike 🤗 GPT-2.
#   The check catches it (`last_is_post_norm` is False): `h` is pre-norm there, and the reference's post-norm
#   choice is `which='postnorm'` (`h_postnorm`).
#
# In both cases the per-token loss is recomputed from the state the readout uses, which pins down what each entry is.

# %%
splm = load_model(SPLMConfig(d=16, max_len=64, L=3, v_hidden=32, v_depth=2), seed=0)
trs = trajectory(splm, 'The cat sat on the mat because it was warm.')
print(trs)
test_eq((trs.depth.shape[0], trs.h_prenorm, trs.norm_name, trs.last_is_post_norm), (4, None, None, False))
torch.testing.assert_close(token_losses(trs.h @ splm.E.weight.T.detach(), trs.ids), trs.loss, rtol=1e-5, atol=1e-5)

mgpt = load_model(MatchedGPTConfig(d=16, n_layer=2, n_head=2, max_len=64), seed=0)
trm = trajectory(mgpt, trs.ids)
test_eq((trm.norm_name, trm.last_is_post_norm), ('ln_f', False))
test_eq(trm.h_prenorm, trm.h)                              # the last entry is the residual x_L ...
with torch.no_grad(): torch.testing.assert_close(mgpt.ln_f(trm.h), trm.h_postnorm)   # ... and the readout reads ln_f(x_L)
torch.testing.assert_close(token_losses(trm.h_postnorm @ mgpt.E.weight.T.detach(), trm.ids), trm.loss, rtol=1e-5, atol=1e-5)

# %%
with tempfile.TemporaryDirectory() as d:        # saved semsim models load back through the same code path
    splm.save_pretrained(d)
    torch.testing.assert_close(trajectory(load_model(d), trs.ids).depth, trs.depth)

# %% [markdown]
# ## The evaluation corpus
#
# The reference's 50 hand-written sentences, 10 in each of 5 domains (mathematics, narrative, scientific,
# code_description, conversational), are in `$SEMSIM_DATA_DIR/stp_corpus_50.json` as `{"domains": {name: [sentences]}}`.
# `load_stp_corpus` reads that format, a JSON list of sentences, a text file with one sentence per line, or a Python
# list / dict, and returns `{domain: [sentences]}` (a plain list becomes the single domain `"all"`).

# %%
#| export
STP_CORPUS_FILE = 'stp_corpus_50.json'  # the reference's 50-sentence corpus, looked up in $SEMSIM_DATA_DIR

def _check_corpus(c:dict, src:str) -> dict:
    out = {}
    for dom, sents in c.items():
        if not isinstance(sents, list): raise ValueError(f"corpus {src}: domain {dom!r} must be a list of sentences, got {type(sents).__name__}")
        for i, s in enumerate(sents):
            if not isinstance(s, str) or not s.strip(): raise ValueError(f"corpus {src}: domain {dom!r} item {i} is not a non-empty string: {s!r}")
        if sents: out[str(dom)] = list(sents)
    if not out: raise ValueError(f"corpus {src} holds no sentences")
    return out

def load_stp_corpus(source=None) -> dict: # path (JSON or text), list of sentences, dict, or None for $SEMSIM_DATA_DIR/stp_corpus_50.json
    "The evaluation corpus as `{domain: [sentences]}`."
    if isinstance(source, dict): return _check_corpus(source['domains'] if 'domains' in source else source, '(dict)')
    if isinstance(source, (list, tuple)): return _check_corpus({'all': list(source)}, '(list)')
    if source is None:
        dd = data_dir()
        if dd is None: raise FileNotFoundError(f"no corpus given and ${DATA_ENV} is not set: pass the path of {STP_CORPUS_FILE} or a list of sentences")
        source = dd/STP_CORPUS_FILE
    p = Path(source).expanduser()
    if not p.exists(): raise FileNotFoundError(f"corpus file not found: {p}")
    if p.is_dir(): raise IsADirectoryError(f"corpus path is a folder, not a file: {p}")
    try: text = p.read_text(encoding='utf-8')
    except UnicodeDecodeError: raise ValueError(f"corpus file {p} is not UTF-8 text") from None
    if p.suffix.lower() == '.json' or text.lstrip()[:1] in ('{', '['):
        try: obj = json.loads(text)
        except json.JSONDecodeError as e: raise ValueError(f"corpus file {p} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        if isinstance(obj, dict):
            if 'domains' not in obj or not isinstance(obj['domains'], dict):
                raise ValueError(f"corpus file {p}: expected {{\"domains\": {{name: [sentences]}}}} or a list of sentences")
            return _check_corpus(obj['domains'], str(p))
        if isinstance(obj, list): return _check_corpus({'all': obj}, str(p))
        raise ValueError(f"corpus file {p}: expected a JSON object or list, got {type(obj).__name__}")
    return _check_corpus({'all': [l.strip() for l in text.splitlines() if l.strip()]}, str(p))

def corpus_items(corpus) -> list: # `{domain: [sentences]}` or anything `load_stp_corpus` takes
    "Flat list of (domain, sentence) pairs in corpus order."
    return [(dom, s) for dom, sents in load_stp_corpus(corpus).items() for s in sents]


# %%
corpus = load_stp_corpus()
test_eq({k: len(v) for k, v in corpus.items()},
        {'mathematics': 10, 'narrative': 10, 'scientific': 10, 'code_description': 10, 'conversational': 10})
lens = [len(encode(tok, s)) for _, s in corpus_items(corpus)]
print(f"{len(lens)} sentences, {sum(lens):,} GPT-2 tokens (min {min(lens)}, max {max(lens)}), "
      f"{sum(l - 2 for l in lens):,} consecutive triplets")
test_eq(sum(l - 2 for l in lens), 1_314)   # the reference's GPT-2 triplet count (semsimula-paper@eb95852: `notebooks/stp_loss/results/experiment_results.json`), from the tokenizer alone

# %% [markdown]
# The 1,314 consecutive triplets of the reference's GPT-2 table follow from the corpus and the tokenizer alone: this
# corpus file is the one the stp notebook used. Bad corpora fail with a message that names the problem:

# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    (d/'bad.json').write_text('{"domains": {"a": ["x",]}}')
    (d/'shape.json').write_text('{"sentences": ["x"]}')
    (d/'item.json').write_text('{"domains": {"a": ["ok", 3]}}')
    (d/'lines.txt').write_text('First sentence.\n\nSecond one.\n')
    test_fail(lambda: load_stp_corpus(d/'bad.json'), contains='not valid JSON')
    test_fail(lambda: load_stp_corpus(d/'shape.json'), contains='expected {"domains"')
    test_fail(lambda: load_stp_corpus(d/'item.json'), contains="item 1 is not a non-empty string")
    test_fail(lambda: load_stp_corpus(d/'missing.json'), contains='not found')
    test_eq(load_stp_corpus(d/'lines.txt'), {'all': ['First sentence.', 'Second one.']})
test_eq(load_stp_corpus(['a b', 'c d']), {'all': ['a b', 'c d']})
test_eq(len(corpus_items(['a', 'b'])), 2)


# %% [markdown]
# ## A whole corpus
#
# `corpus_trajectories` runs `trajectory` on every sentence, one at a time, and records each sentence's domain.

# %%
#| export
def corpus_trajectories(model:nn.Module, # a causal LM
                        corpus, # `{domain: [sentences]}`, a list of sentences, or a corpus path
                        tokenizer=None, # default: the model's (`load_tokenizer`)
                        layer:int=-1, # depth index of the token-axis trajectory
                        max_length:int=256, # truncation (tokens)
                        final_norm:Optional[str]=None) -> list: # module name of the final norm, if needed
    "One `Trajectory` per sentence, in corpus order."
    tok = load_tokenizer(model, tokenizer)
    return [trajectory(model, s, tok, layer=layer, max_length=max_length, final_norm=final_norm, meta={'domain': dom})
            for dom, s in corpus_items(corpus)]


# %%
trajs = corpus_trajectories(gpt2_tiny, corpus)
test_eq(len(trajs), 50); test_eq(sum(t.T - 2 for t in trajs), 1_314)
test_eq(trajs[0].meta, {'model': 'GPT2LMHeadModel', 'domain': 'mathematics'})
trajs_neox = corpus_trajectories(neox_tiny, corpus, tokenizer='gpt2')
test_eq([t.T for t in trajs_neox], [t.T for t in trajs])

# %% [markdown]
# A look at the two trajectories of one sentence in the stand-in (a random two-block model, not GPT-2): along the
# token axis the post-norm states all have norm $\approx\sqrt d = 8$ (LayerNorm with unit gain, zero bias), the pre-norm
# residual is much shorter and varies more in relative terms; along the depth axis the jump at the last entry of
# `hidden_states` is the final LayerNorm, not block $L$: the pre-norm residual shows no jump.

# %%
t0 = trajs[0]
fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
ax[0].plot(t0.h.norm(dim=-1), 'o-', label='post-ln_f  (hidden_states[-1], the reference)')
ax[0].plot(t0.h_prenorm.norm(dim=-1), 's-', label='pre-ln_f residual (hook)')
ax[0].set(xlabel='token position t', ylabel=r'$\|h_t\|$', title='token axis (stand-in GPT-2)'); ax[0].legend(fontsize=8)
ax[1].plot(t0.depth.norm(dim=-1).mean(1), 'o-', label='hidden_states (last: post-norm)')
ax[1].plot(t0.residual.norm(dim=-1).mean(1), 's--', label='residual (all pre-norm)')
ax[1].set(xlabel='depth entry', ylabel=r'mean$_t\ \|h^{(\ell)}_t\|$', title='depth axis'); ax[1].legend(fontsize=8)
ax[1].set_xticks(range(t0.depth.shape[0]))
plt.tight_layout(); plt.show()
n_post, n_pre = t0.h.norm(dim=-1), t0.h_prenorm.norm(dim=-1)
print(f"post-ln_f norms {n_post.mean():.3f} ± {n_post.std():.4f}; pre-ln_f norms {n_pre.mean():.3f} ± {n_pre.std():.4f}")
test_close(n_post.mean().item(), 8.0, eps=0.05)
assert n_pre.mean() < n_post.mean() / 5 and n_pre.std() / n_pre.mean() > 10 * n_post.std() / n_post.mean()
res = t0.residual.norm(dim=-1).mean(1)
assert (res[-1] - res[-2]).abs() < 0.5 * res[-2] and t0.depth.norm(dim=-1).mean(1)[-1] > 5 * res[-2]

# %% [markdown]
# ## Real weights
#
# The cells below load the real models and read the reference's corpus. They need the weights (about 500 MB for GPT-2
# small, 300 MB for Pythia-160M), so they are marked `#| eval: false`: CI cannot download them and skips these cells.
# Run them on a machine with the internet once (the 🤗 cache keeps the weights afterwards).

# %%
#| eval: false
gpt2 = load_model('gpt2')
real = corpus_trajectories(gpt2, load_stp_corpus())   # GPT-2 BPE: 1,314 triplets
pythia = load_model('EleutherAI/pythia-160m')
real_pythia = corpus_trajectories(pythia, load_stp_corpus(), tokenizer='EleutherAI/pythia-160m')  # reference: 1,249 triplets
print(sum(t.T - 2 for t in real), sum(t.T - 2 for t in real_pythia))
