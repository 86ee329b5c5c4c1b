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
# The chapter also holds the two loss conventions shared by every semsim language model: the Hugging Face one
# (labels are the inputs, shifted inside) and the reference's (targets `y` already shifted by the data loader).

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
import math
from dataclasses import dataclass
from typing import Literal, Optional, Tuple  # Literal: transformers config annotations name it; show_doc evaluates them here

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers import initialization as hf_init
from transformers.modeling_outputs import CausalLMOutput, CausalLMOutputWithPast

# %% [markdown]
# ## Two loss conventions
#
# With logits $z \in \mathbb{R}^{B\times T\times V}$ and integer targets:
#
# - **Hugging Face** (`lm_loss`, what `model(input_ids, labels=...)` returns): `labels` are the input ids themselves and
#   position $t$ predicts token $t+1$, so $\mathcal{L} = \frac{1}{N}\sum_{b}\sum_{t<T-1} -\log \mathrm{softmax}(z_{b,t})[\ell_{b,t+1}]$
#   over the $N$ targets that are not `ignore_index` (-100), exactly as GPT-2 does;
# - **reference** (`reference_loss`): the data loader already returns $y = x$ shifted by one, so
#   $\mathcal{L} = \frac{1}{BT}\sum_{b,t} -\log \mathrm{softmax}(z_{b,t})[y_{b,t}]$ with **no** shift. The reference
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
    use_cache: bool = True         # generate() decodes with a KV cache (semsim.streaming.KVCache); False: full recompute

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_semsim()

    def validate_semsim(self):
        "Raise ValueError naming the first invalid field."
        for k in ('vocab_size', 'd', 'max_len', 'n_layer', 'n_head', 'mlp_mult'):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1: raise ValueError(f"{k} must be a positive integer, got {v!r}")
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
                ) -> Tensor: # attention output, (B,T,d)
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
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
    def forward(self, x:Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


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
def check_input_ids(input_ids:Tensor, vocab_size:int, max_len:int) -> Tensor:
    "Validate token ids (B,T): integer, within [0, vocab_size), T <= max_len."
    if not isinstance(input_ids, Tensor): raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    if input_ids.ndim == 1: input_ids = input_ids[None]
    if input_ids.ndim != 2: raise ValueError(f"input_ids must be (B,T), got shape {tuple(input_ids.shape)}")
    if input_ids.shape[1] == 0: raise ValueError("input_ids is empty (T=0)")
    if input_ids.shape[1] > max_len: raise ValueError(f"sequence length T={input_ids.shape[1]} exceeds max_len={max_len} (the positional table)")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size: raise ValueError(f"token ids must lie in [0, {vocab_size}), found range [{lo}, {hi}]")
    return input_ids

def check_inputs_embeds(inputs_embeds:Tensor, d:int, max_len:int) -> Tensor:
    "Validate token embeddings (B,T,d)."
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != d:
        raise ValueError(f"inputs_embeds must be (B,T,d) with d={d}, got shape {tuple(inputs_embeds.shape)}")
    if inputs_embeds.shape[1] > max_len: raise ValueError(f"sequence length T={inputs_embeds.shape[1]} exceeds max_len={max_len}")
    return inputs_embeds

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

def prepare_generation_inputs(input_ids:Tensor, max_len:int, **kwargs) -> dict:
    "Cache-free generation: feed the whole context each step, cropped to the last max_len tokens."
    return {'input_ids': input_ids[:, -max_len:]}


# %% [markdown]
# ### The cache under its two names
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

    @torch.no_grad()
    def _init_weights(self, module:nn.Module):
        "Reference init: Linear and E ~ N(0, init_std²), P ~ N(0, pos_init_std²), zero biases, LN (1, 0)."
        c = self.config
        if isinstance(module, nn.Linear):
            hf_init.normal_(module.weight, mean=0.0, std=c.init_std)
            if module.bias is not None: hf_init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding): hf_init.normal_(module.weight, mean=0.0, std=c.init_std)
        elif isinstance(module, nn.LayerNorm):
            hf_init.ones_(module.weight); hf_init.zeros_(module.bias)
        elif isinstance(module, MatchedGPTForCausalLM): hf_init.normal_(module.P, mean=0.0, std=c.pos_init_std)

    def get_input_embeddings(self) -> nn.Embedding: return self.E
    def set_input_embeddings(self, value:nn.Embedding): self.E = value
    def get_output_embeddings(self): return None  # the readout is E itself: nothing separate to tie

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool: return False   # generate(): the model makes its own KVCache

    def prepare_inputs_for_generation(self, input_ids:Tensor, **kwargs) -> dict:
        "use_cache: a KVCache and, once it exists, only the new token; else the last max_len tokens (semsim.streaming)."
        from semsim.streaming import gpt_generation_inputs
        return gpt_generation_inputs(self, input_ids, **kwargs)

    def forward(self, input_ids:Optional[Tensor]=None, # token ids, (B,T)
                labels:Optional[Tensor]=None, # ids for the shifted HF loss, (B,T); -100 ignored
                inputs_embeds:Optional[Tensor]=None, # token embeddings E[ids] without positions, (B,T,d)
                output_hidden_states:Optional[bool]=None, # return x_0 ... x_L
                return_dict:Optional[bool]=None,
                attention_mask:Optional[Tensor]=None, # (B,T) left padding, 1 = token; rows then run as if alone
                cache=None, # a KVCache (or transformers Cache): attend over it (semsim.streaming)
                use_cache:Optional[bool]=None, # True: keep and return the keys and values
                logits_to_keep:int=0, # with a cache or padding: 0 all positions, k the last k
                past_key_values=None, # the cache under its pre-5.24 name (either works)
                **kwargs) -> CausalLMOutput:
        "Logits (B,T,V), optional loss and the n_layer+1 residual states."
        cache = resolve_cache(cache, past_key_values)
        if cache is not None or use_cache or (attention_mask is not None and not bool(attention_mask.all())):
            if inputs_embeds is not None or output_hidden_states: raise ValueError("inputs_embeds / output_hidden_states are not supported with a KV cache or padding")
            from semsim.streaming import gpt_forward   # KV cache, or left padding (semsim.streaming)
            return gpt_forward(self, input_ids, cache, attention_mask, bool(use_cache), logits_to_keep, labels)
        c = self.config
        input_ids, inputs_embeds = embed_inputs(self.E, input_ids, inputs_embeds, c.vocab_size, c.d, c.max_len)
        B, T, d = inputs_embeds.shape
        x = self.drop(inputs_embeds + self.P[:T])
        states = [x]
        for blk in self.blocks:
            x = blk(x); states.append(x)
        logits = F.linear(self.ln_f(x), self.E.weight)
        loss = lm_loss(logits, labels) if labels is not None else None
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
# **Generation** by default decodes with the KV cache of `semsim.streaming` (positions past `max_len` are an error
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
