# %% [markdown]
# # Causal-LM plumbing
#
# > What every semsim language model shares, written once: the two loss conventions, token and embedding checks, left padding and positions, and the decoding cache under both of transformers' names.

# %%
#| default_exp lm

# %% [markdown]
# semsim's models — the scalar-potential family (`semsim.splm`) and the matched attention baseline
# (`semsim.baselines`) — are different machines behind one interface: Hugging Face causal LMs that take token ids
# (B, T), return next-token logits (B, T, V), train with the same loss and decode through `generate()` with a cache of
# their own. This chapter holds the parts of that interface that do not depend on the machine, so that each model
# chapter contains only its own mathematics. Nothing here imports a model.
#
# | symbol | code | meaning |
# |---|---|---|
# | $B, T, V$ | `B, T, V` | batch size, sequence length, vocabulary size |
# | $z$ | `logits` | next-token scores, (B, T, V) |
# | $\ell$ | `labels` | the input ids themselves (Hugging Face convention), (B, T); `IGNORE_INDEX` = -100 skips a target |
# | $y$ | `y` | targets already shifted by the data loader (the reference's convention), (B, T) |
# | $n_b$ | `n` | real (non-padding) tokens of row $b$, (B,) |

# %%
#| hide
import warnings; warnings.filterwarnings('ignore', message='IProgress not found')
import torch
from fastcore.test import test_eq, test_fail, test_close
import transformers
torch.set_num_threads(1)  # tiny tensors: threads only add overhead

# %%
#| export
from __future__ import annotations
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from transformers.modeling_outputs import CausalLMOutputWithPast

# %% [markdown]
# ## Two loss conventions
#
# With logits $z \in \mathbb{R}^{B\times T\times V}$ and integer targets:
#
# - **Hugging Face** (`lm_loss`, what `model(input_ids, labels=...)` returns): `labels` are the input ids themselves and
#   position $t$ predicts token $t+1$, so $\mathrm{CE} = \frac{1}{N}\sum_{b}\sum_{t<T-1} -\log \mathrm{softmax}(z_{b,t})[\ell_{b,t+1}]$
#   over the $N$ targets that are not `ignore_index` (-100), exactly as GPT-2 does;
# - **reference** (`reference_loss`): the data loader already returns $y = x$ shifted by one, so
#   $\mathrm{CE} = \frac{1}{BT}\sum_{b,t} -\log \mathrm{softmax}(z_{b,t})[y_{b,t}]$ with **no** shift. The reference
#   fixtures' `loss` is this one.
#
# With $y_t = x_{t+1}$ they agree on the first $T-1$ positions: `lm_loss(z, x) == reference_loss(z[:, :-1], y[:, :-1])`.

# %%
#| export
IGNORE_INDEX = -100  # label value skipped by the loss (Hugging Face convention)

def _check_logits_targets(logits:Tensor, targets:Tensor, name:str):
    "Shape and dtype checks shared by the two losses."
    if logits.ndim != 3: raise ValueError(f"logits must be (B,T,V), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"{name} must have shape (B,T)={tuple(logits.shape[:2])} matching the logits, got {tuple(targets.shape)}")
    if targets.dtype.is_floating_point: raise ValueError(f"{name} must hold integer token ids, got dtype {targets.dtype}")

def lm_loss(logits:Tensor, # next-token scores, (B,T,V)
            labels:Tensor, # the input ids (or -100 to ignore), (B,T); shifted inside
            ignore_index:int=IGNORE_INDEX) -> Tensor: # scalar mean cross-entropy
    "Hugging Face causal-LM loss: position t predicts labels[t+1]."
    _check_logits_targets(logits, labels, 'labels')
    B, T, V = logits.shape
    z, y = logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1).to(logits.device)
    return F.cross_entropy(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z, y, ignore_index=ignore_index)

def reference_loss(logits:Tensor, # next-token scores, (B,T,V)
                   y:Tensor) -> Tensor: # targets already shifted by the data loader, (B,T)
    "The reference's loss: mean cross-entropy of logits[t] against y[t], no shift."
    _check_logits_targets(logits, y, 'y')
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1).to(logits.device))


# %%
torch.manual_seed(0)
z, x = torch.randn(2, 6, 11, dtype=torch.float64), torch.randint(0, 11, (2, 7))
y = x[:, 1:]; x = x[:, :-1]
test_close(lm_loss(z, x), reference_loss(z[:, :-1], y[:, :-1]), eps=1e-12)
# the shifted loss ignores the last position's logits and the first label, and honours ignore_index
z2 = z.clone(); z2[:, -1] += 100.
test_close(lm_loss(z2, x), lm_loss(z, x), eps=1e-12)
lab = x.clone(); lab[0, 3] = IGNORE_INDEX
manual = torch.stack([F.cross_entropy(z[b, t], x[b, t+1]) for b in range(2) for t in range(5) if (b, t+1) != (0, 3)]).mean()
test_close(lm_loss(z, lab), manual, eps=1e-12)
test_fail(lambda: lm_loss(z, x[:, :3]), contains='shape (B,T)')
test_fail(lambda: reference_loss(z[0], y), contains='(B,T,V)')
test_fail(lambda: reference_loss(z, y.double()), contains='integer')


# %% [markdown]
# ## Token ids, embeddings and positions
#
# One validator for token ids serves the full forward (the whole sequence must fit the positional table, `max_len`)
# and the decoding step (new tokens only, whose positions are checked by `check_position`). Positions index the
# learned table $P$ row by row: past `max_len` is an error, never a silent wrap or crop. Models may take embeddings
# instead of ids (`inputs_embeds`, the token embeddings $E[\text{ids}]$ *before* positions are added; the causal
# probe differentiates through them), or both (the logfreq mass still needs the ids).

# %%
#| export
def check_input_ids(input_ids:Tensor, # token ids, (B,T) or (T,)
                    vocab_size:int, # V: ids must lie in [0, V)
                    max_len:Optional[int]=None, # longest allowed T (the positional table); None: not checked
                    name:str='input_ids') -> Tensor: # (B,T)
    "Validate token ids: a tensor of integers in [0, vocab_size), shape (B,T) with 1 ≤ T ≤ max_len."
    if not isinstance(input_ids, Tensor): raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"{name} must be integer token ids, got dtype {input_ids.dtype}")
    if input_ids.ndim == 1: input_ids = input_ids[None]
    if input_ids.ndim != 2 or input_ids.shape[1] == 0: raise ValueError(f"{name} must have shape (B,T) with T ≥ 1, got {tuple(input_ids.shape)}")
    if max_len is not None and input_ids.shape[1] > max_len:
        raise ValueError(f"sequence length T={input_ids.shape[1]} exceeds max_len={max_len} (the positional table)")
    if torch.compiler.is_compiling():   # under torch.compile: checked on the device, no host sync and no graph break
        torch._assert_async(((input_ids >= 0) & (input_ids < vocab_size)).all(), f"{name}: token ids must lie in [0, {vocab_size})")
        return input_ids
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size: raise ValueError(f"{name}: token ids must lie in [0, {vocab_size}), found range [{lo}, {hi}]")
    return input_ids

def check_inputs_embeds(inputs_embeds:Tensor, d:int, max_len:int) -> Tensor:
    "Validate token embeddings (B,T,d)."
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != d:
        raise ValueError(f"inputs_embeds must be (B,T,d) with d={d}, got shape {tuple(inputs_embeds.shape)}")
    if inputs_embeds.shape[1] > max_len: raise ValueError(f"sequence length T={inputs_embeds.shape[1]} exceeds max_len={max_len}")
    return inputs_embeds

def check_position(max_len:int, # rows of the positional table P
                   last_pos:int): # the largest position about to be used
    "Positions are rows of P: past max_len is an error, never a silent wrap."
    if last_pos >= max_len:
        raise ValueError(f"position {last_pos} is past max_len={max_len}: the positional table P has {max_len} rows and the "
                         f"decoder never wraps or crops; keep prompt + new tokens ≤ {max_len}, or use a model with a larger max_len")


# %%
#| export
def embed_inputs(E:nn.Embedding, # the token embedding
                 input_ids:Optional[Tensor], # token ids, (B,T), or None
                 inputs_embeds:Optional[Tensor], # embeddings, (B,T,d), or None (then E(input_ids))
                 vocab_size:int, d:int, max_len:int) -> tuple: # (input_ids, inputs_embeds), validated
    "Validate ids and/or embeddings (both may be given: the logfreq mass needs the ids) and embed the ids if needed."
    if input_ids is None and inputs_embeds is None: raise ValueError("pass input_ids, inputs_embeds, or both")
    if input_ids is not None: input_ids = check_input_ids(input_ids, vocab_size, max_len)
    if inputs_embeds is None: return input_ids, E(input_ids)
    check_inputs_embeds(inputs_embeds, d, max_len)
    if input_ids is not None and input_ids.shape != inputs_embeds.shape[:2]:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and inputs_embeds {tuple(inputs_embeds.shape)} disagree on (B,T)")
    return input_ids, inputs_embeds


# %%
E = nn.Embedding(11, 4)
ids, emb = embed_inputs(E, torch.tensor([1, 2, 3]), None, 11, 4, 8)
test_eq(ids.shape, (1, 3)); test_eq(emb.shape, (1, 3, 4))
test_fail(lambda: check_input_ids(torch.tensor([[1, 11]]), 11), contains='must lie in [0, 11)')
test_fail(lambda: check_input_ids(torch.zeros(1, 9, dtype=torch.long), 11, 8), contains='exceeds max_len=8')
test_fail(lambda: check_input_ids(torch.zeros(1, 2), 11), contains='integer token ids')
test_fail(lambda: check_input_ids([1, 2], 11, name='next_ids'), contains='next_ids must be a torch.Tensor')
test_fail(lambda: check_input_ids(torch.zeros(1, 0, dtype=torch.long), 11), contains='T ≥ 1')
test_fail(lambda: embed_inputs(E, None, None, 11, 4, 8), contains='pass input_ids')
test_fail(lambda: embed_inputs(E, torch.tensor([[1, 2]]), torch.zeros(1, 3, 4), 11, 4, 8), contains='disagree')
check_position(8, 7); test_fail(lambda: check_position(8, 8), contains='past max_len=8')

# %% [markdown]
# Under `torch.compile` the range of the ids is checked on the device (`torch._assert_async`) instead of by reading
# the smallest and largest id back to the host: a compiled forward stays one graph (`fullgraph=True` below would
# fail on a graph break) with no host synchronisation per step, and a bad id fails with the same message.

# %%
ids_checked = torch.compile(lambda x: check_input_ids(x, 11, 8) * 1, backend='aot_eager', fullgraph=True)
test_eq(ids_checked(torch.tensor([[1, 10]])), torch.tensor([[1, 10]]))
test_fail(lambda: ids_checked(torch.tensor([[1, 11]])), contains='token ids must lie in [0, 11)')
test_fail(lambda: ids_checked(torch.tensor([[-1, 2]])), contains='token ids must lie in [0, 11)')
torch._dynamo.reset()   # drop the compiled code (it holds this notebook's namespace)


# %% [markdown]
# ## Left padding
#
# A batch of prompts of different lengths arrives left-padded, with `attention_mask` 0 on the padding and 1 on the
# tokens (the Hugging Face convention for decoder-only generation). Every row must then behave as if it were alone:
# its first real token sits at position 0 and padding never enters its context. `left_pad_lengths` validates the
# mask (left padding only; right or inner padding is refused with a message) and returns $n_b$; `roll_rows` rotates
# each row left by its padding count, which moves the tokens to positions $0..n_b-1$ and the padding to the end (the
# SPLM then needs no mask at all: causality keeps the padding out of every real token's context).

# %%
#| export
def left_pad_lengths(attention_mask:Optional[Tensor], # (B,T): 1 = token, 0 = left padding; None: no padding
                     B:int, T:int, device=None) -> Tensor: # real tokens per row n_b, (B,)
    "Number of real tokens per row, checking that the mask is left padding (zeros, then ones)."
    if attention_mask is None: return torch.full((B,), T, dtype=torch.long, device=device)
    m = torch.as_tensor(attention_mask, device=device)
    if m.shape != (B, T): raise ValueError(f"attention_mask must have shape (B,T)={(B, T)} like input_ids, got {tuple(m.shape)}")
    m = m.long()
    if ((m != 0) & (m != 1)).any(): raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    n = m.sum(1)
    if (n == 0).any(): raise ValueError(f"rows {torch.nonzero(n == 0).flatten().tolist()} of attention_mask are all padding: every sequence needs at least one token")
    ar = torch.arange(T, device=m.device)
    if not torch.equal(m, (ar[None] >= (T - n)[:, None]).long()):
        raise ValueError("attention_mask must be LEFT padding (zeros first, then ones, in every row); right or inner "
                         "padding is not supported: set tokenizer.padding_side = 'left'")
    return n

def roll_rows(x:Tensor, # (B,T,...)
              shift:Tensor, # per-row left rotation, (B,)
             ) -> Tensor: # y[b, j] = x[b, (j + shift_b) mod T], (B,T,...)
    "Rotate every row left by its own shift (moves left padding to the right end; -shift undoes it)."
    B, T = x.shape[:2]
    idx = (torch.arange(T, device=x.device)[None] + shift[:, None]) % T
    return x.gather(1, idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x))

def check_new_tokens_mask(attention_mask:Optional[Tensor], # (B, past+n) or None
                          B:int, past:int, n:int):
    "During decoding the mask must cover cached + new columns, and new tokens cannot be padding."
    if attention_mask is None: return
    m = torch.as_tensor(attention_mask)
    if m.shape != (B, past + n): raise ValueError(f"attention_mask must cover the cached and new tokens, shape {(B, past + n)}, got {tuple(m.shape)}")
    if not bool((m[:, past:] == 1).all()): raise ValueError("tokens after the prompt cannot be padding: attention_mask[:, past:] must be all ones")


# %%
mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
n = left_pad_lengths(mask, 3, 4)
test_eq(n, torch.tensor([2, 4, 1]))
x = torch.arange(12).view(3, 4)
r = roll_rows(x, 4 - n)
test_eq(r, torch.tensor([[2, 3, 0, 1], [4, 5, 6, 7], [11, 8, 9, 10]]))   # tokens first, padding last
test_eq(roll_rows(r, -(4 - n)), x)                                        # and back
test_fail(lambda: left_pad_lengths(torch.tensor([[1, 1, 0]]), 1, 3), contains='LEFT padding')
test_fail(lambda: left_pad_lengths(torch.tensor([[0, 0]]), 1, 2), contains='all padding')
test_fail(lambda: left_pad_lengths(torch.tensor([[1, 2]]), 1, 2), contains='only 0')
test_fail(lambda: left_pad_lengths(torch.ones(2, 3), 2, 4), contains='shape')
check_new_tokens_mask(torch.tensor([[0, 1, 1]]), 1, 2, 1)
test_fail(lambda: check_new_tokens_mask(torch.tensor([[1, 1, 0]]), 1, 2, 1), contains='cannot be padding')
test_fail(lambda: check_new_tokens_mask(torch.tensor([[1, 1]]), 1, 2, 1), contains='cover the cached and new tokens')


# %% [markdown]
# ## The decoding cache under its two names
#
# transformers 5.24 renamed the decoding cache from `past_key_values` to `cache`: in the model outputs (a field of
# `CausalLMOutputWithPast` and of `generate()`'s outputs), in `prepare_inputs_for_generation` and in the forward
# call. The old name still works there but logs a deprecation warning, and earlier releases know only the old one.
# semsim's models speak both: their forward and `prepare_inputs_for_generation` take the cache under either name
# (`resolve_cache`), the outputs carry it under the name of the installed release (`CACHE_FIELD`, read from the
# output class's dataclass fields, public API), and `output_cache(out)` reads it from any output without a warning.

# %%
#| export
CACHE_FIELD = 'cache' if 'cache' in getattr(CausalLMOutputWithPast, '__dataclass_fields__', {}) else 'past_key_values'

def resolve_cache(cache=None, # the cache under its current name (transformers ≥ 5.24)
                  past_key_values=None): # the same under its earlier name (still accepted)
    "The one cache a caller passed, under either name; passing both is an error."
    if cache is not None and past_key_values is not None:
        raise ValueError("pass the decoding cache once, as `cache` (or the older name `past_key_values`), not both")
    return cache if cache is not None else past_key_values

def lm_output(logits:Tensor, # (B,T,V)
              loss:Optional[Tensor]=None, cache=None) -> CausalLMOutputWithPast:
    "A causal-LM output holding `cache` under the installed transformers' field name."
    return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache})

def output_cache(out): # a model forward or generate(return_dict_in_generate=True) output
    "The cache held by an output, whichever name the installed transformers gives it (no deprecation warning)."
    return out.get(CACHE_FIELD)


# %%
out = lm_output(torch.zeros(1, 2, 3), cache='state')
test_eq(output_cache(out), 'state')
test_eq(output_cache(lm_output(torch.zeros(1, 2, 3))), None)
test_eq(resolve_cache(past_key_values='old'), 'old'); test_eq(resolve_cache(cache='new'), 'new')
test_fail(lambda: resolve_cache('a', 'b'), contains='not both')
print(f"transformers {transformers.__version__}: the cache is the output field {CACHE_FIELD!r}")


# %% [markdown]
# ## What `generate()` feeds the model
#
# `generation_inputs` is the body of every semsim model's `prepare_inputs_for_generation`. With `use_cache=True` it
# passes the model's cache (made by `new_cache`, or by the model's own first forward when `new_cache` returns None)
# and, once the cache holds the prompt, only the tokens it has not seen — the last one. With `use_cache=False` it
# passes the whole window, cropped to the last `max_len` tokens, for full recompute. The cache is passed as `cache`,
# which semsim's forwards accept on every transformers release.

# %%
#| export
def generation_inputs(model, # a semsim causal LM (its config has use_cache and max_len)
                      input_ids:Tensor, # all ids so far, (B,T)
                      new_cache, # callable () -> empty cache (or None to let the model's forward make it)
                      cache=None, attention_mask=None, use_cache=None, logits_to_keep=None,
                      next_sequence_length=None, past_key_values=None, **kwargs) -> dict:
    "`prepare_inputs_for_generation`: with a cache, the unseen (last) tokens only; without, the last max_len tokens."
    cache = resolve_cache(cache, past_key_values)                          # generate() passes `cache` (≥ 5.24) or `past_key_values`
    use_cache = model.config.use_cache if use_cache is None else use_cache
    if not use_cache:
        L = model.config.max_len
        out = {'input_ids': input_ids[:, -L:], 'use_cache': False}
        if attention_mask is not None and not bool(attention_mask[:, -L:].all()): out['attention_mask'] = attention_mask[:, -L:]
        return out
    if cache is None: cache = new_cache()
    ids = input_ids
    if next_sequence_length is not None: ids = input_ids[:, -next_sequence_length:]
    elif cache is not None and cache.get_seq_length() > 0: ids = input_ids[:, cache.get_seq_length():]
    out = {'input_ids': ids, 'cache': cache, 'attention_mask': attention_mask, 'use_cache': True}
    if logits_to_keep is not None: out['logits_to_keep'] = logits_to_keep
    return out


# %%
class _Cfg: use_cache, max_len = True, 4
class _Model: config = _Cfg()
class _Cache:
    def __init__(self, n): self.n = n
    def get_seq_length(self, layer_idx=0): return self.n
ids = torch.arange(6)[None]
test_eq(generation_inputs(_Model(), ids, lambda: _Cache(0))['input_ids'], ids)                # prefill: everything
test_eq(generation_inputs(_Model(), ids, None, cache=_Cache(5))['input_ids'], ids[:, 5:])      # then the unseen token
test_eq(generation_inputs(_Model(), ids, None, past_key_values=_Cache(5))['input_ids'], ids[:, 5:])  # either name
test_eq(generation_inputs(_Model(), ids, None, use_cache=False)['input_ids'], ids[:, -4:])     # recompute: last max_len
