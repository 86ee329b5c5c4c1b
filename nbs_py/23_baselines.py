# %% [markdown]
# # Baselines
#
# > MatchedGPT, the matched pre-LN GPT-2 attention baseline, as a first-class Hugging Face causal LM with the SPLM's interface.

# %%
#| default_exp baselines

# %% [markdown]
# Every SPLM number in semsim is read against an attention model of the same width, depth, vocabulary and training
# recipe: **MatchedGPT** (semsimula-paper@eb95852: `notebooks/conservative_arch/matched_baseline_model.py`). It is a plain decoder-only transformer with pre-LayerNorm GPT-2 blocks.
# With $x \in \mathbb{R}^{B\times T\times d}$ the residual stream (`x`), $d$ = `d` the width, $n_h$ = `n_head` heads
# and $h = $ `mlp_mult`$\cdot d$ the MLP width, one block is
#
# $$x \leftarrow x + W_o\,\mathrm{SDPA}_\text{causal}\big(W_{qkv}\,\mathrm{LN}_1(x)\big), \qquad
#   x \leftarrow x + W_2\,\mathrm{GELU}\big(W_1\,\mathrm{LN}_2(x)\big),$$
#
# where $W_{qkv}$ (`attn.qkv`, $d\to 3d$), $W_o$ (`attn.proj`), $W_1$ (`mlp.fc1`, $d\to h$) and $W_2$ (`mlp.fc2`)
# all carry biases, $\mathrm{SDPA}_\text{causal}$ is softmax attention $\mathrm{softmax}(QK^\top/\sqrt{d/n_h} + M)V$
# per head with the causal mask $M_{ts} = -\infty$ for $s > t$, and the GELU is the exact (erf) one. The stream starts at
# $x_0 = E[\text{ids}] + P[:T]$ with $E \in \mathbb{R}^{V\times d}$ (`E`, the token embedding) and a learned positional
# table $P \in \mathbb{R}^{\text{max\_len}\times d}$ (`P`); after $n_\text{layer}$ blocks a final LayerNorm `ln_f` and
# the **tied** readout give $\text{logits} = \mathrm{LN}_f(x_{n_\text{layer}})\,E^\top$. Dropout is 0. Initialisation:
# every Linear and $E$, $P$ from $\mathcal{N}(0, 0.02^2)$ with zero biases; LayerNorms weight 1, bias 0.
#
# Parameter names mirror the reference's (`E.weight`, `P`, `blocks.N.attn.qkv.weight`, …), so a reference
# checkpoint's state dict loads as it is (see `semsim.reference`).
#
# What every semsim causal LM shares (the loss conventions, id checks, left padding, the cache's names) lives in
# `semsim.lm`; this chapter is the attention model itself and its KV cache.

# %%
#| hide
import warnings; warnings.filterwarnings('ignore', message='IProgress not found')
import torch
from fastcore.test import test_eq, test_fail, test_close
import os, tempfile
from pathlib import Path
import matplotlib.pyplot as plt
import transformers
transformers.utils.logging.disable_progress_bar(); transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)  # tiny tensors: threads only add overhead

# %%
#| export
from __future__ import annotations
from fastcore.basics import patch
import math
from dataclasses import dataclass
from typing import Literal, Optional, Tuple  # Literal: transformers config annotations name it; show_doc evaluates them here

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers import initialization as hf_init
from transformers.modeling_outputs import CausalLMOutput

from semsim.core import check_positive_int, check_positive_ints
from semsim.lm import (lm_loss, reference_loss, IGNORE_INDEX, check_input_ids, embed_inputs, check_position,
                       left_pad_lengths, check_new_tokens_mask, resolve_cache, lm_output, output_cache, generation_inputs)

# %% [markdown]
# ## Configuration
#
# `MatchedGPTConfig` is a `transformers` config (a dataclass in transformers 5): every field below is saved in
# `config.json`. Standard aliases (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
# `max_position_embeddings`) map onto the reference's names. Bad values fail at construction with a message naming
# the field. `MatchedGPTConfig.preset(name, **overrides)` gives the reference's two configurations.

# %%
#| export
class MatchedGPTConfig(PretrainedConfig):
    "Configuration of the matched pre-LN GPT-2 attention baseline (semsimula-paper@eb95852: `notebooks/conservative_arch/matched_baseline_model.py`)."
    model_type = 'semsim-matched-gpt'
    attribute_map = {'hidden_size': 'd', 'num_hidden_layers': 'n_layer', 'num_attention_heads': 'n_head',
                     'max_position_embeddings': 'max_len'}
    vocab_size: int = 50257        # V, tokens (GPT-2 BPE)
    d: int = 128                   # width of the residual stream
    max_len: int = 256             # rows of the learned positional table P (longest sequence)
    n_layer: int = 8               # number of transformer blocks
    n_head: int = 4                # attention heads per block (d must be divisible by n_head)
    mlp_mult: int = 4              # MLP hidden width = mlp_mult * d
    dropout: float = 0.0           # dropout on attention weights and residual branches (reference: 0)
    ln_eps: float = 1e-5           # LayerNorm epsilon
    init_std: float = 0.02         # std of every Linear weight and of the token embedding E at initialisation
    pos_init_std: float = 0.02     # std of the positional table P at initialisation (0.02 for attention models)
    tie_word_embeddings: bool = True  # readout is E^T (always true for this model; kept for transformers)
    use_cache: bool = True         # generate() decodes with a KV cache (KVCache); False: full recompute

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_semsim()

    def validate_semsim(self):
        "Raise ValueError naming the first invalid field."
        check_positive_ints(self, ('vocab_size', 'd', 'max_len', 'n_layer', 'n_head', 'mlp_mult'))
        if self.d % self.n_head: raise ValueError(f"d={self.d} must be divisible by n_head={self.n_head}")
        if not 0 <= self.dropout < 1: raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for k in ('ln_eps', 'init_std', 'pos_init_std'):
            if not getattr(self, k) > 0: raise ValueError(f"{k} must be > 0, got {getattr(self, k)!r}")
        if not self.tie_word_embeddings: raise ValueError("MatchedGPT always ties its readout to E: tie_word_embeddings must be True")

    PRESETS = {'shakespeare': dict(d=128, n_layer=8, n_head=4, mlp_mult=4, max_len=256),   # 8,052,096 params
               'tinystories': dict(d=256, n_layer=8, n_head=4, mlp_mult=4, max_len=1024)}  # 19,446,528 params

    @classmethod
    def preset(cls, name:str, **overrides) -> 'MatchedGPTConfig':
        "A named reference configuration, with optional field overrides."
        if name not in cls.PRESETS: raise ValueError(f"unknown MatchedGPT preset {name!r}; known: {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})


# %% [markdown]
# Defaults are the Shakespeare configuration; bad values are refused:

# %%
cfg = MatchedGPTConfig()
test_eq((cfg.d, cfg.n_layer, cfg.n_head, cfg.hidden_size, cfg.num_hidden_layers), (128, 8, 4, 128, 8))
test_fail(lambda: MatchedGPTConfig(d=130, n_head=4), contains='divisible by n_head')
test_fail(lambda: MatchedGPTConfig(n_layer=0), contains='n_layer must be a positive integer')
test_fail(lambda: MatchedGPTConfig(dropout=1.5), contains='dropout')
test_fail(lambda: MatchedGPTConfig.preset('gpt5'), contains='unknown MatchedGPT preset')


# %% [markdown]
# ## The model
#
# The block is written with `F.scaled_dot_product_attention(..., is_causal=True)`: attention costs $O(T^2 d)$ and the
# causal mask makes token $t$'s output independent of tokens $s > t$ (the causal probe checks this).

# %%
#| export
class CausalSelfAttention(nn.Module):
    "Multi-head causal self-attention with a fused qkv projection."
    def __init__(self, d:int, n_head:int, dropout:float=0.0):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv, self.proj = nn.Linear(d, 3*d), nn.Linear(d, d)
    def forward(self, x:Tensor, # normalised stream, (B,T,d)
                cache=None, # a KVCache (or transformers Cache): this block's keys/values are appended and attended over
                layer_idx:int=0, # this block's index in the cache
                attn_mask:Optional[Tensor]=None, # boolean mask (B or 1, 1, T, past+T), True = may attend; None: causal
                ) -> Tensor: # attention output, (B,T,d)
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0 if cache is None else cache.get_seq_length(layer_idx)
        if cache is not None: k, v = cache.update(k, v, layer_idx)
        causal = attn_mask is None and past == 0 and T > 1                # one new token after a cache sees every key
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))

class GPTMLP(nn.Module):
    "Position-wise MLP d -> mult*d -> d with exact GELU."
    def __init__(self, d:int, mult:int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, mult*d), nn.Linear(mult*d, d)
    def forward(self, x:Tensor) -> Tensor: return self.fc2(F.gelu(self.fc1(x)))

class GPTBlock(nn.Module):
    "Pre-LN GPT-2 block: x + attn(LN1 x), then x + mlp(LN2 x)."
    def __init__(self, d:int, n_head:int, mult:int, dropout:float=0.0, eps:float=1e-5):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.attn, self.mlp = CausalSelfAttention(d, n_head, dropout), GPTMLP(d, mult)
        self.drop = nn.Dropout(dropout)
    def forward(self, x:Tensor, # residual stream, (B,T,d)
                cache=None, layer_idx:int=0, attn_mask:Optional[Tensor]=None) -> Tensor: # (B,T,d)
        x = x + self.drop(self.attn(self.ln1(x), cache, layer_idx, attn_mask))
        return x + self.drop(self.mlp(self.ln2(x)))


# %% [markdown]
# ## The KV cache
#
# For a fair comparison the attention baseline decodes the standard way: every block caches the keys and values of
# all previous tokens, and a new token computes its own $q, k, v$, appends $k, v$ and attends over the cache, so the
# per-token work grows linearly with the context $T$ ($4dT$ multiply-adds per block for $qK^\top$ and the weighted
# sum). The cache lives inside the attention above (`cache.update(k, v, layer_idx)`), so there is one block and one
# forward for training, evaluation and decoding. `KVCache` stores the keys and values in per-layer buffers that grow by
# doubling, so appending a token never copies the past (the reference's `torch.cat` cache did, which inflated its
# attention timings). Any cache with the transformers `update(k, v, layer_idx)` / `get_seq_length()` API works too
# (e.g. `DynamicCache`). Left padding is handled with per-row positions (`cumsum(mask) - 1`) and a key mask
# (`attention_layout`); padding queries attend to themselves only, so no row of the softmax is empty.

# %%
#| export
class KVCache:
    "Keys and values of every attention block, in buffers that grow by doubling (append never copies the past)."
    is_compileable = False
    is_croppable = False
    def __init__(self, n_layers:int, # number of attention blocks
                 capacity:int=0): # initial buffer length in tokens (0: sized by the first update)
        self.n_layers, self.capacity = check_positive_int('n_layers', n_layers), int(capacity)
        self.k, self.v, self.lens = [None] * n_layers, [None] * n_layers, [0] * n_layers
    def update(self, k:Tensor, # new keys, (B,H,n,dh)
               v:Tensor, # new values, (B,H,n,dh)
               layer_idx:int) -> tuple: # every key and value of the layer so far, (B,H,T,dh) each
        "Append one layer's new keys/values and return all of them (the transformers `Cache.update` API)."
        n, T0, buf = k.shape[2], self.lens[layer_idx], self.k[layer_idx]
        if buf is None or T0 + n > buf.shape[2]:
            cap = max(self.capacity, T0 + n, 2 * (buf.shape[2] if buf is not None else 0))
            nk, nv = k.new_empty(*k.shape[:2], cap, k.shape[3]), v.new_empty(*v.shape[:2], cap, v.shape[3])
            if buf is not None: nk[:, :, :T0], nv[:, :, :T0] = buf[:, :, :T0], self.v[layer_idx][:, :, :T0]
            self.k[layer_idx], self.v[layer_idx] = nk, nv
        self.k[layer_idx][:, :, T0:T0 + n], self.v[layer_idx][:, :, T0:T0 + n] = k, v
        self.lens[layer_idx] = T0 + n
        return self.k[layer_idx][:, :, :T0 + n], self.v[layer_idx][:, :, :T0 + n]
    def get_seq_length(self, layer_idx:int=0) -> int: return self.lens[layer_idx]
    @property
    def is_linear(self) -> list: return [False] * self.n_layers   # transformers ≥ 5.24: key/value layers, sliced by position
    @property
    def nbytes(self) -> int:
        "Bytes of the cached keys and values, 2·L·B·T·d·itemsize (grows with the context)."
        return sum(2 * k[:, :, :n].numel() * k.element_size() for k, n in zip(self.k, self.lens) if k is not None)
    def _map_rows(self, fn):
        for i in range(self.n_layers):
            if self.k[i] is not None: self.k[i], self.v[i] = fn(self.k[i]), fn(self.v[i])
    def reorder_cache(self, beam_idx:Tensor): self._map_rows(lambda t: t.index_select(0, beam_idx.to(t.device)))
    def batch_select_indices(self, indices:Tensor): self.reorder_cache(indices)
    def batch_repeat_interleave(self, repeats:int): self._map_rows(lambda t: t.repeat_interleave(repeats, 0))
    def __repr__(self): return f"KVCache(layers={self.n_layers}, seen={self.lens[0]}, bytes={self.nbytes})"


# %%
#| export
def attention_layout(attention_mask:Optional[Tensor], # (B, past+n): 1 token, 0 left padding; None: none
                     B:int, past:int, n:int, device=None) -> tuple: # (positions (B or 1, n), attn_mask or None)
    "Positions of the n new tokens and the attention mask, for a left-padded batch after `past` cached columns."
    q_pos = torch.arange(past, past + n, device=device)
    if attention_mask is None:
        if n == 1 or past == 0: return q_pos[None], None                   # plain causal attention, no mask needed
        k_pos = torch.arange(past + n, device=device)
        return q_pos[None], (k_pos[None, None] <= q_pos[None, :, None])[:, None]
    km = torch.as_tensor(attention_mask, device=device)
    left_pad_lengths(km, B, past + n, device)                              # validates the shape and the left padding
    km = km.bool()
    pos = (km.long().cumsum(-1) - 1).clamp(min=0)[:, past:]                # each row counts its own tokens from 0
    k_pos = torch.arange(past + n, device=device)
    allowed = (k_pos[None, None] <= q_pos[None, :, None]) & km[:, None, :]  # causal and not padding, (B,n,T)
    allowed = allowed | (k_pos[None, None] == q_pos[None, :, None])          # a padding query sees itself
    return pos, allowed[:, None]


# %%
kv = KVCache(2, capacity=1)
for t in range(5): k, v = kv.update(torch.full((1, 1, 1, 3), float(t)), torch.zeros(1, 1, 1, 3), 0)
test_eq(k[0, 0, :, 0].tolist(), [0, 1, 2, 3, 4]); test_eq(kv.get_seq_length(), 5); test_eq(kv.k[0].shape[2], 8)   # doubled 1→2→4→8
pos, mask = attention_layout(torch.tensor([[0, 1, 1], [1, 1, 1]]), 2, 0, 3)
test_eq(pos, torch.tensor([[0, 0, 1], [0, 1, 2]]))
test_eq(mask[0, 0].long(), torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]]))   # row 0: padding sees itself, tokens skip it
test_fail(lambda: KVCache(0), contains='n_layers must be a positive integer')
test_fail(lambda: attention_layout(torch.ones(2, 3), 2, 1, 3), contains='shape (B,T)=(2, 4)')

# %% [markdown]
# `MatchedGPTForCausalLM` is a `PreTrainedModel` with `GenerationMixin`. Its forward takes `input_ids` (B,T) and/or
# `inputs_embeds` (B,T,d) = the token embeddings $E[\text{ids}]$ *before* positions are added, which replace the lookup
# (the causal probe differentiates through them; the SPLM takes both the same way), and returns `loss` (Hugging Face shifted convention) when `labels` are given, the
# logits, and with `output_hidden_states=True` the $n_\text{layer}+1$ residual-stream states $x_0 \dots x_{n_\text{layer}}$
# (before `ln_f`). The readout is computed with $E$ itself, so there is one tensor and nothing to re-tie after loading.
# `_init_weights` sets the reference's scales; transformers 5 calls it on construction and for any weight missing from a
# checkpoint (loaded weights are never overwritten).

# %%
#| export
class MatchedGPTForCausalLM(PreTrainedModel, GenerationMixin):
    "Pre-LN GPT-2 decoder with learned positions, tied readout and a final LayerNorm (semsimula-paper@eb95852: `notebooks/conservative_arch/matched_baseline_model.py`)."
    config_class = MatchedGPTConfig
    base_model_prefix = 'matched_gpt'
    main_input_name = 'input_ids'
    _supports_sdpa = True
    _no_split_modules = ['GPTBlock']
    def __init__(self, config:MatchedGPTConfig):
        super().__init__(config)
        config.validate_semsim()
        d = config.d
        self.E = nn.Embedding(config.vocab_size, d)
        self.P = nn.Parameter(torch.zeros(config.max_len, d))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(GPTBlock(d, config.n_head, config.mlp_mult, config.dropout, config.ln_eps)
                                    for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(d, eps=config.ln_eps)
        self.post_init()
    def get_input_embeddings(self) -> nn.Embedding: return self.E
    def set_input_embeddings(self, value:nn.Embedding): self.E = value
    def get_output_embeddings(self): return None  # the readout is E itself: nothing separate to tie


# %%
#| export
@patch
@torch.no_grad()
def _init_weights(self:MatchedGPTForCausalLM, module:nn.Module):
    "Reference init: Linear and E ~ N(0, init_std²), P ~ N(0, pos_init_std²), zero biases, LN (1, 0)."
    c = self.config
    if isinstance(module, nn.Linear):
        hf_init.normal_(module.weight, mean=0.0, std=c.init_std)
        if module.bias is not None: hf_init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding): hf_init.normal_(module.weight, mean=0.0, std=c.init_std)
    elif isinstance(module, nn.LayerNorm):
        hf_init.ones_(module.weight); hf_init.zeros_(module.bias)
    elif isinstance(module, MatchedGPTForCausalLM): hf_init.normal_(module.P, mean=0.0, std=c.pos_init_std)

@patch(cls_method=True)
def _supports_default_dynamic_cache(cls:MatchedGPTForCausalLM) -> bool: return False   # generate(): the model makes its own KVCache

@patch
def prepare_inputs_for_generation(self:MatchedGPTForCausalLM, input_ids:Tensor, **kwargs) -> dict:
    "use_cache: a fresh KVCache and, once it holds the prompt, only the new token; else the last max_len tokens."
    return generation_inputs(self, input_ids, lambda: KVCache(self.config.n_layer), **kwargs)


# %%
#| export
@patch
def forward(self:MatchedGPTForCausalLM, input_ids:Optional[Tensor]=None, # token ids, (B,T)
            labels:Optional[Tensor]=None, # ids for the shifted HF loss, (B,T); -100 ignored
            inputs_embeds:Optional[Tensor]=None, # token embeddings E[ids] without positions, (B,T,d)
            output_hidden_states:Optional[bool]=None, # return x_0 ... x_L
            return_dict:Optional[bool]=None,
            attention_mask:Optional[Tensor]=None, # (B,T) left padding, 1 = token; rows then run as if alone
            cache=None, # a KVCache (or transformers Cache): attend over it and append the new keys/values
            use_cache:Optional[bool]=None, # True: keep and return the keys and values
            logits_to_keep:int=0, # with a cache or padding: 0 all positions, k the last k
            past_key_values=None, # the cache under its pre-5.24 name (either works)
            **kwargs) -> CausalLMOutput:
    "Logits (B,T,V), optional loss and the n_layer+1 residual states."
    c, cache = self.config, resolve_cache(cache, past_key_values)
    cached = cache is not None or bool(use_cache) or (attention_mask is not None and not bool(attention_mask.all()))
    if cached and (inputs_embeds is not None or output_hidden_states):
        raise ValueError("inputs_embeds / output_hidden_states are not supported with a KV cache or padding")
    if cached:                                                         # decoding, or a left-padded batch
        ids = check_input_ids(input_ids, c.vocab_size)
        B, n = ids.shape
        if cache is None and use_cache: cache = KVCache(c.n_layer)
        past = cache.get_seq_length() if cache is not None else 0
        pos, mask = attention_layout(attention_mask, B, past, n, ids.device)
        check_position(c.max_len, int(pos.max()))
        x = self.drop(self.E(ids) + self.P[pos])
    else:
        input_ids, inputs_embeds = embed_inputs(self.E, input_ids, inputs_embeds, c.vocab_size, c.d, c.max_len)
        x, mask = self.drop(inputs_embeds + self.P[:inputs_embeds.shape[1]]), None
    states = [x]
    for i, blk in enumerate(self.blocks):
        x = blk(x, cache, i, mask); states.append(x)
    if logits_to_keep: x = x[:, -logits_to_keep:]
    logits = F.linear(self.ln_f(x), self.E.weight)
    loss = lm_loss(logits, labels) if labels is not None else None
    if cached: return lm_output(logits, loss, cache if use_cache else None)
    out_hs = output_hidden_states if output_hidden_states is not None else c.output_hidden_states
    return CausalLMOutput(loss=loss, logits=logits, hidden_states=tuple(states) if out_hs else None)


# %%
#| export
AutoConfig.register(MatchedGPTConfig.model_type, MatchedGPTConfig, exist_ok=True)
AutoModelForCausalLM.register(MatchedGPTConfig, MatchedGPTForCausalLM, exist_ok=True)

# %% [markdown]
# ## A small example
#
# A two-block model over a 97-token vocabulary, its logits, and the size of the residual stream through the blocks.
# Random weights make the later blocks dominate.

# %%
torch.manual_seed(0)
tiny = MatchedGPTConfig(vocab_size=97, d=32, max_len=64, n_layer=4, n_head=4)
model = MatchedGPTForCausalLM(tiny).eval()
ids = torch.randint(0, 97, (2, 24))
out = model(ids, labels=ids, output_hidden_states=True)
test_eq(out.logits.shape, (2, 24, 97))
test_eq(len(out.hidden_states), tiny.n_layer + 1)
print(f"loss at init {out.loss.item():.4f} vs ln V = {math.log(97):.4f}")
norms = torch.stack([h.norm(dim=-1).mean(0) for h in out.hidden_states])  # (L+1, T)
fig, ax = plt.subplots(1, 2, figsize=(9, 3))
for t in (0, 5, 23): ax[0].plot(norms[:, t].detach(), marker='o', label=f't={t}')
ax[0].set(xlabel='block ℓ', ylabel='‖x_ℓ‖ (batch mean)', title='residual stream'); ax[0].legend()
ax[1].imshow(out.logits[0].detach().T, aspect='auto', cmap='magma'); ax[1].set(xlabel='position t', ylabel='token', title='logits, sequence 0')
plt.tight_layout(); plt.show()

# %% [markdown]
# At initialisation the logits are tiny (E has std 0.02 and $\mathrm{LN}_f(x)$ has unit scale), so the loss is
# $\approx \ln V$:

# %%
test_close(out.loss.item(), math.log(97), eps=0.01)


# %% [markdown]
# ## Tests
#
# **Parameter counts** of the reference configurations (semsimula-paper@eb95852: `notebooks/conservative_arch/matched_baseline_model.py`): 8,052,096 (Shakespeare) and 19,446,528
# (TinyStories). Built on the meta device, so nothing is allocated.

# %%
def n_params(m): return sum(p.numel() for p in m.parameters())
with torch.device('meta'):
    test_eq(n_params(MatchedGPTForCausalLM(MatchedGPTConfig.preset('shakespeare'))), 8_052_096)
    test_eq(n_params(MatchedGPTForCausalLM(MatchedGPTConfig.preset('tinystories'))), 19_446_528)

# %% [markdown]
# **Init scales survive `_init_weights`** (transformers 5 initialises through it): weights std 0.02, biases 0, LN (1, 0),
# positions 0.02.

# %%
torch.manual_seed(0)
m = MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=2000, d=64, n_layer=2, max_len=512))
test_close(m.E.weight.std().item(), 0.02, eps=1e-3)
test_close(m.P.std().item(), 0.02, eps=1e-3)
test_close(m.blocks[0].mlp.fc1.weight.std().item(), 0.02, eps=1e-3)
test_eq(m.blocks[1].attn.qkv.bias.abs().max().item(), 0.0)
test_eq((m.ln_f.weight.min().item(), m.ln_f.bias.abs().max().item()), (1.0, 0.0))
m2 = AutoModelForCausalLM.from_config(m.config)
test_close(m2.P.std().item(), 0.02, eps=1e-3); test_close(m2.blocks[1].attn.proj.weight.std().item(), 0.02, eps=1e-3)

# %% [markdown]
# **The block is the equation.** One block written out by hand (explicit masked softmax per head) equals the module.

# %%
torch.manual_seed(1)
blk = GPTBlock(16, 4, 4).double()
xx = torch.randn(2, 7, 16, dtype=torch.float64)
def block_by_hand(b, x):
    B, T, d = x.shape; nh = 4; hd = d // nh
    a = F.layer_norm(x, (d,), b.ln1.weight, b.ln1.bias, 1e-5)
    q, k, v = (a @ b.attn.qkv.weight.T + b.attn.qkv.bias).split(d, -1)
    out = torch.zeros_like(x)
    for hh in range(nh):
        sl = slice(hh*hd, (hh+1)*hd)
        s = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))
        out[..., sl] = s.softmax(-1) @ v[..., sl]
    x = x + out @ b.attn.proj.weight.T + b.attn.proj.bias
    m_ = F.layer_norm(x, (d,), b.ln2.weight, b.ln2.bias, 1e-5)
    return x + b.mlp.fc2(0.5 * b.mlp.fc1(m_) * (1 + torch.erf(b.mlp.fc1(m_) / math.sqrt(2))))
torch.testing.assert_close(blk(xx), block_by_hand(blk, xx), atol=1e-12, rtol=0)

# %% [markdown]
# **Causality**: changing the last token leaves every earlier logit unchanged (a full probe with gradients is in
# `semsim.causal`), and `inputs_embeds` is the same computation as `input_ids`.

# %%
torch.manual_seed(2)
m = MatchedGPTForCausalLM(tiny).double().eval()
a = torch.randint(0, 97, (1, 20)); b = a.clone(); b[0, 15] = (b[0, 15] + 17) % 97
la, lb = m(a).logits, m(b).logits
test_eq((la[:, :15] - lb[:, :15]).abs().max().item() < 1e-12, True)
assert (la[:, 15:] - lb[:, 15:]).abs().max() > 1e-6
torch.testing.assert_close(m(inputs_embeds=m.E(a)).logits, la, atol=1e-12, rtol=0)

# %% [markdown]
# **Agreement with the reference implementation.** The fixture `matched_gpt.pt` was produced by the reference code in
# float64 with random weights; its parameter names are ours, so the state dict loads directly. Logits, the (unshifted)
# loss, the train-mode loss and the gradient of that loss with respect to the embedding matrix all match to 1e-8.
# (Skipped when `$SEMSIM_FIXTURES_DIR` is not set: the library never needs the fixtures.)

# %%
fx = os.environ.get('SEMSIM_FIXTURES_DIR')
fpath = Path(fx)/'reference'/'matched_gpt.pt' if fx else None
if fpath is not None and fpath.exists():
    ck = torch.load(fpath, weights_only=True)
    rc, st = ck['model_cfg'], ck['semsim_test']
    ref_cfg = MatchedGPTConfig(vocab_size=rc['vocab_size'], d=rc['d'], max_len=rc['max_len'], n_layer=rc['n_layer'],
                               n_head=rc['n_head'], mlp_mult=rc['mlp_mult'], dropout=rc['dropout'])
    ref = MatchedGPTForCausalLM(ref_cfg).double()
    ref.load_state_dict(ck['model_state_dict'])
    ref.eval()
    z = ref(st['x']).logits
    torch.testing.assert_close(z, st['logits'], atol=1e-8, rtol=0)
    test_close(reference_loss(z, st['y']), st['loss'], eps=1e-8)
    ref.train(); ref.zero_grad()
    tl = reference_loss(ref(st['x']).logits, st['y']); tl.backward()
    test_close(tl, st['train_loss'], eps=1e-8)
    torch.testing.assert_close(ref.E.weight.grad, st['embedding_grad'], atol=1e-8, rtol=0)
    print('matched_gpt fixture: max |Δlogits| =', (z - st['logits']).abs().max().item(),
          ' max |Δgrad| =', (ref.E.weight.grad - st['embedding_grad']).abs().max().item())
else: print('SEMSIM_FIXTURES_DIR not set: fixture comparison skipped')

# %% [markdown]
# **Save / load round trip** through safetensors with the Auto classes: identical logits, identical weights, and the
# tied readout still shares $E$.

# %%
torch.manual_seed(3)
m = MatchedGPTForCausalLM(tiny).eval()
with tempfile.TemporaryDirectory() as d:
    m.save_pretrained(d)
    assert (Path(d)/'model.safetensors').exists()
    m2 = AutoModelForCausalLM.from_pretrained(d).eval()
assert type(m2) is MatchedGPTForCausalLM
ids = torch.randint(0, 97, (2, 12))
torch.testing.assert_close(m2(ids).logits, m(ids).logits, atol=0, rtol=0)
for (k, p), (k2, p2) in zip(m.state_dict().items(), m2.state_dict().items()): test_eq(k, k2); torch.testing.assert_close(p, p2, atol=0, rtol=0)

# %% [markdown]
# **Generation** by default decodes with its KV cache (`KVCache`, above) (positions past `max_len` are an error
# there). Without a cache (`use_cache=False`): greedy decoding equals an explicit argmax loop, sampling is
# reproducible under a seed, contexts longer than `max_len` are cropped to the last `max_len` tokens, and the cached
# decoder gives the same tokens.

# %%
torch.manual_seed(4)
m = MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=97, d=32, max_len=16, n_layer=2, n_head=4)).eval()
prompt = torch.randint(0, 97, (2, 5))
g = m.generate(prompt, max_new_tokens=14, do_sample=False, pad_token_id=0, use_cache=False)
seq = prompt.clone()
with torch.no_grad():
    for _ in range(14): seq = torch.cat([seq, m(seq[:, -16:]).logits[:, -1].argmax(-1, keepdim=True)], 1)
test_eq(g, seq)
test_eq(m.generate(prompt, max_new_tokens=11, do_sample=False, pad_token_id=0), g[:, :16])   # KV cache: same tokens
torch.manual_seed(5); s1 = m.generate(prompt, max_new_tokens=6, do_sample=True, top_k=20, pad_token_id=0)
torch.manual_seed(5); s2 = m.generate(prompt, max_new_tokens=6, do_sample=True, top_k=20, pad_token_id=0)
test_eq(s1, s2); test_eq(s1.shape, (2, 11))

# %% [markdown]
# **Bad input** is refused with a message that names the problem.

# %%
m = MatchedGPTForCausalLM(tiny)
test_fail(lambda: m(torch.randint(0, 97, (1, 65))), contains='exceeds max_len')
test_fail(lambda: m(torch.tensor([[1, 2, 97]])), contains='token ids must lie in [0, 97)')
test_fail(lambda: m(torch.rand(1, 4)), contains='integer token ids')
test_fail(lambda: m(), contains='pass input_ids, inputs_embeds, or both')
test_fail(lambda: m(torch.tensor([[1, 2, 3]]), inputs_embeds=torch.randn(1, 4, 32)), contains='disagree')
test_fail(lambda: m(inputs_embeds=torch.randn(1, 4, 31)), contains='inputs_embeds must be (B,T,d)')
test_fail(lambda: m(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2]])), contains='labels must have shape')
