# %% [markdown]
# # Attention hybrids
#
# > Attention blocks and SPLM steps in one stack: Variant A (k attention blocks, then m steps of one shared V_θ) and the Helmholtz hybrid Q9d (any schedule over {A, S}, the velocity carried through both kinds), decoding with a KV cache for the A-part and the O(1) recurrent state for the S-part.

# %%
#| default_exp hybrid

# %% [markdown]
# The family's strongest members keep attention for routing and hand the rest of the depth to the conservative
# dynamics. Two layouts from the reference (semsimula-paper@eb95852):
#
# **Variant A** (`hybrid/model_hybrid.py`, "two-stage HSPLM"): $k$ pre-LN GPT-2 blocks with distinct weights, a
# boundary LayerNorm with affine parameters, the non-affine LN, then $m$ damped steps of one shared $V_\theta$ with the
# velocity buffer starting at 0,
#
# $$h \leftarrow \mathrm{Block}_i(h)\ (i = 1..k),\qquad h \leftarrow \mathrm{LN}(\mathrm{LN}_b(h)),\ v = 0,\qquad
#   \xi = \mathrm{pool}(\mathrm{sg}(h)),\ v \leftarrow \frac{v + \Delta t f/m}{1 + \Delta t\gamma},\ h \leftarrow \mathrm{LN}(h + \Delta t\, v)\ (j = 1..m).$$
#
# **Helmholtz hybrid Q9d** (`helmholtz/model_helmholtz.py`): a schedule $\sigma \in \{A, S\}^L$; an S-block takes the
# velocity from the positions, $\delta = h - h_{\text{prev}}$,
#
# $$h_{\text{new}} = \mathrm{LN}\Big(h + \frac{\delta}{1 + \Delta t\gamma} + \frac{\Delta t^2}{m(1 + \Delta t\gamma)} f\Big),\qquad f = -\nabla_h V_\theta(\xi, h),$$
#
# an A-block is a standard pre-LN block with its own weights, and $h_{\text{prev}}$ is carried across *both* kinds (an
# S-block after an A-block starts with the A-block's displacement as its velocity). One $V_\theta$ is shared by all
# S-blocks. **Variant B**, the interleaved stripe the reference planned but never wrote, is the schedule `SASASASA` of
# this model: semsim treats it as exactly that and has no separate class.
#
# | symbol | code | meaning |
# |---|---|---|
# | $\sigma$ | `schedule` | the layer types, a string over {A, S}; Variant A's is `'A' * n_attn + 'S' * n_splm` |
# | $k$, $m$ | `n_attn`, `n_splm` | Variant A's split (4, 4) |
# | $\mathrm{Block}_i$ | `blocks[i]` (`semsim.baselines.GPTBlock`) | pre-LN attention + MLP, `n_head` heads, MLP `mlp_mult`·d |
# | $\mathrm{LN}_b$ | `boundary_ln` | Variant A's affine boundary LayerNorm |
# | $V_\theta$, $\xi$, $m$, $\gamma$, $\Delta t$ | `V_theta`, `xi_module`, `mass`, `gamma`, `dt` | as in the SPLM (chapter *SPLM*): the hybrid *is* an `SPLMForCausalLM` whose integration loop interleaves attention |
# | $\delta$ | `h - h_prev` | Q9d's velocity, reconstructed from positions after the LN |
# | $L$ | `L` = `len(schedule)` | the depth, derived from the schedule (semsim's `L` counts blocks of both kinds here) |
#
# The two S-updates differ only in where the velocity lives: Variant A keeps the buffer $v$ (not normalised, as
# em_ln), Q9d rebuilds it from the normalised positions, $v = \delta/\Delta t$. Both go through the one
# `damped_euler_step` of chapter *Dynamics*. The reference's Variant A docstring says ξ is "computed once from
# $h_k$", but its loop recomputes ξ from $h$ at every step; semsim follows the code (`xi_fixed=False`).

# %%
#| export
from __future__ import annotations
import math
from typing import Literal, Optional  # Literal: transformers config annotations name it; show_doc evaluates them here

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM
from transformers import initialization as hf_init
from fastcore.basics import patch

from semsim.core import check_positive_ints
from semsim.dynamics import damped_euler_step
from semsim.streaming import SPLMCache, state_dtype, rolled_prompt, prompt_readout, decode_ids, streaming_forward
from semsim.baselines import GPTBlock, KVCache
from semsim.splm import SPLMConfig, SPLMForCausalLM, SARF_LOGFREQ

# %%
import json
from pathlib import Path
import pandas as pd
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_close, test_fail
from semsim.lm import output_cache

# %% [markdown]
# ## Configuration
#
# `HybridConfig` is an `SPLMConfig` (potential, ξ pool, mass, γ, causality switches) plus the attention blocks and the
# layout. The defaults are the reference's `HSPLMConfig` / `HelmholtzConfig`: d 128, max_len 256, 4 heads, MLP 4,
# $V_\theta$ hidden 512 depth 3, γ free from 0.15, logfreq mass, LN after each S-step, positions $\mathcal N(0, 0.02^2)$
# as for the other attention models.

# %%
#| export
HYBRID_BASE = dict(d=128, max_len=256, v_hidden=512, v_depth=3, xi_pool='cummean', xi_fixed=False, mass_mode='logfreq',
                   ln_after_step=True, init_gamma=0.15, pos_init_std=0.02)   # HSPLMConfig / HelmholtzConfig defaults
HYBRID_KINDS = ('two_stage', 'helmholtz')

class HybridConfig(SPLMConfig):
    "SPLM configuration plus attention blocks and their layout (semsimula-paper@eb95852: `hybrid/model_hybrid.py`, `helmholtz/model_helmholtz.py`)."
    model_type = 'semsim-hybrid'
    kind: str = 'helmholtz'         # 'two_stage' (Variant A: k A-blocks, boundary LN, m S-steps) or 'helmholtz' (Q9d)
    schedule: str = 'AAAASSSS'      # 'helmholtz': layer types over {A, S}; 'two_stage': derived, 'A'*n_attn + 'S'*n_splm
    n_attn: int = 4                 # 'two_stage': attention blocks k
    n_splm: int = 4                 # 'two_stage': SPLM steps m
    n_head: int = 4                 # attention heads per block (d must be divisible by n_head)
    mlp_mult: int = 4               # attention blocks' MLP width = mlp_mult * d
    # --- the SPLM fields keep their meaning; these take the hybrids' defaults (L is len(schedule), set from it)
    max_len: int = 256              # rows of P
    xi_fixed: bool = False          # ξ recomputed from h at every S-step (required)
    mass_mode: str = 'logfreq'      # per-token mass from the unigram surprisal
    ln_after_step: bool = True      # non-affine LN after every S-step
    init_gamma: float = 0.15        # γ free from 0.15
    pos_init_std: float = 0.02      # P ~ N(0, 0.02²), as for the attention models

    def __post_init__(self, **kwargs):
        if self.kind == 'two_stage' and isinstance(self.n_attn, int) and isinstance(self.n_splm, int):
            self.schedule = 'A' * self.n_attn + 'S' * self.n_splm
        if isinstance(self.schedule, str) and self.schedule: self.L = len(self.schedule)
        super().__post_init__(**kwargs)

# %%
#| export
@patch
def validate_semsim(self:HybridConfig):
    "Raise ValueError naming the first invalid field (the layout's, then the SPLM's)."
    if self.kind not in HYBRID_KINDS: raise ValueError(f"kind must be one of {HYBRID_KINDS}, got {self.kind!r}")
    if not (isinstance(self.schedule, str) and self.schedule and set(self.schedule) <= {'A', 'S'}):
        raise ValueError(f"schedule must be a non-empty string over {{A, S}}, got {self.schedule!r}")
    if self.kind == 'two_stage':
        for k in ('n_attn', 'n_splm'):
            v = getattr(self, k)
            if not (isinstance(v, int) and v >= 0): raise ValueError(f"{k} must be an int >= 0, got {v!r}")
        if self.schedule != 'A' * self.n_attn + 'S' * self.n_splm:
            raise ValueError(f"kind='two_stage' has the schedule 'A'*n_attn + 'S'*n_splm, got {self.schedule!r}")
    check_positive_ints(self, ('n_head', 'mlp_mult'))
    if self.d % self.n_head: raise ValueError(f"d={self.d} must be divisible by n_head={self.n_head}")
    if self.L != len(self.schedule): raise ValueError(f"L is the depth len(schedule) = {len(self.schedule)}, got {self.L}")
    if self.xi_fixed: raise ValueError("a hybrid recomputes ξ from h at every S-step: xi_fixed must be False")
    if self.integrator != 'euler': raise ValueError(f"the hybrids' S-steps are the damped Euler step: integrator must be 'euler', got {self.integrator!r}")
    SPLMConfig.validate_semsim(self)

HybridConfig.PRESETS = {
    'hybrid_a': {**HYBRID_BASE, 'kind': 'two_stage', 'n_attn': 4, 'n_splm': 4},        # Variant A k4m4: 7,916,420 params
    'helmholtz_q9d': {**HYBRID_BASE, 'kind': 'helmholtz', 'schedule': 'AAAASSSS'},    # Q9d: 7,916,164 params
}
HybridConfig.TINYSTORIES = dict(d=256, max_len=1024, v_hidden=1024)   # the scale-up sizes (logfreq, as above)

@patch(cls_method=True)
def preset(cls:HybridConfig, name:str, **overrides) -> 'HybridConfig':
    "A named reference configuration (see `HybridConfig.PRESETS`), with optional field overrides."
    if name not in cls.PRESETS: raise ValueError(f"unknown hybrid preset {name!r}; known: {sorted(cls.PRESETS)}")
    return cls(**{**cls.PRESETS[name], **overrides})

# %%
c = HybridConfig.preset('hybrid_a', n_attn=2, n_splm=6)
test_eq((c.schedule, c.L), ('AASSSSSS', 8))
test_eq(HybridConfig.preset('helmholtz_q9d', schedule='SASASASA').L, 8)
test_fail(lambda: HybridConfig(schedule='AAXS'), contains='schedule')
test_fail(lambda: HybridConfig(d=130, n_head=4), contains='divisible')
test_fail(lambda: HybridConfig(xi_fixed=True), contains='xi_fixed')
test_fail(lambda: HybridConfig(kind='two_stage', n_attn=-1), contains='n_attn')

# %% [markdown]
# ## The model
#
# `HybridForCausalLM` subclasses `SPLMForCausalLM`: embedding, positions, ξ pool, $V_\theta$, masses, γ, the causal
# force (`_force`, with `causal_force` and `xi_grad` exactly as in the SPLM) and the readout are the SPLM's. It adds the
# attention blocks and replaces the integration loop by the schedule. $h_0 = E[x] + P$ with no LayerNorm (an attention
# block normalises its own input; Variant A normalises at the boundary).

# %%
#| export
class HybridForCausalLM(SPLMForCausalLM):
    "SPLM whose layers follow a schedule of attention blocks (A) and damped V_θ steps (S) (semsimula-paper@eb95852: `helmholtz/model_helmholtz.py`)."
    config_class = HybridConfig
    base_model_prefix = 'hybrid'
    _no_split_modules = ['GPTBlock']

    def __init__(self, config:HybridConfig):
        super().__init__(config)
        c = config
        self.blocks = nn.ModuleList(GPTBlock(c.d, c.n_head, c.mlp_mult, 0.0, c.ln_eps) for _ in range(c.schedule.count('A')))
        if c.kind == 'two_stage': self.boundary_ln = nn.LayerNorm(c.d, eps=c.ln_eps)
        self.post_init()

@patch
@torch.no_grad()
def _init_weights(self:HybridForCausalLM, module:nn.Module):
    "The SPLM's init, and the attention blocks' reference init: Linear N(0, init_std²), zero bias, LN (1, 0)."
    attn = [m for m in (getattr(self, 'blocks', None), getattr(self, 'boundary_ln', None)) if m is not None]
    if any(module is sub for a in attn for sub in a.modules()):
        if isinstance(module, nn.Linear):
            hf_init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None: hf_init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm): hf_init.ones_(module.weight); hf_init.zeros_(module.bias)
        return
    SPLMForCausalLM._init_weights(self, module)

@patch
def _initial_state(self:HybridForCausalLM, x:Tensor) -> Tensor: return x   # h_0 = E[x] + P: no LN before the first block

# %% [markdown]
# The schedule loop is one function for the parallel forward and for decoding: `attend(i, h)` runs A-block $i$ (over
# the whole window, or one token against the KV cache) and `force(j, h)` evaluates S-step $j$'s force (ξ from the
# window, or from the pool's running state).

# %%
#| export
def run_schedule(model, h0:Tensor, # E[x] + P, (B,T,d)
                 m:Tensor, # masses, (B,T,1)
                 gamma:Tensor, # damping, scalar
                 attend, # (i, h) -> A-block i's output, (B,T,d)
                 force, # (j, h) -> (f (B,T,d), V (B,T) or None) of S-step j
                ) -> dict: # positions [h_0 .. h_L], velocities [v_0 .. v_L], energies [V at each S-step]
    "The hybrid's layers in schedule order; δ = h − h_prev carried across both kinds (Q9d) or the buffer v (Variant A)."
    c = model.config
    P = model._ln
    h = h_prev = h0
    v, hs, vs, Vs, i, j = torch.zeros_like(h0), [h0], [torch.zeros_like(h0)], [], 0, 0
    for kind in c.schedule:
        if kind == 'A':
            h_prev, h = h, attend(i, h); i += 1
        else:
            if c.kind == 'two_stage' and j == 0: h_prev = h = P(model.boundary_ln(h)); v = torch.zeros_like(h)
            f, V = force(j, h); Vs.append(V); j += 1
            vel = v if c.kind == 'two_stage' else (h - h_prev) / c.dt
            h_new, v = damped_euler_step(h, vel, f, m, gamma, c.dt)
            h_prev, h = h, P(h_new)
        hs.append(h); vs.append((h - h_prev) / c.dt if c.kind == 'helmholtz' or kind == 'A' else v)
    if c.kind == 'two_stage' and j == 0: hs[-1] = P(model.boundary_ln(h))   # k = L, m = 0: the boundary still closes the stack
    return {'positions': hs, 'velocities': vs, 'energies': Vs}

@patch
def integrate(self:HybridForCausalLM, h0:Tensor, m:Tensor, gamma:Tensor, need_final_energy:bool=False) -> dict:
    "The parallel pass: every A-block over the window, every S-step's force from ξ of the (detached) window."
    grad = torch.is_grad_enabled()
    st = {'leak': not self.config.causal_force, 'create_graph': self.training and grad, 'grad': grad, 'xi': None}
    with torch.enable_grad():
        tr = run_schedule(self, h0, m, gamma, lambda i, h: self.blocks[i](h), lambda j, h: self._force(h, st))
    tr['final_energy'] = None
    return tr

@patch
def forward(self:HybridForCausalLM, input_ids:Optional[Tensor]=None, labels:Optional[Tensor]=None,
            inputs_embeds:Optional[Tensor]=None, output_hidden_states:Optional[bool]=None, output_mechanics:bool=False, **kwargs):
    "The SPLM's forward (logits, loss, `output_hidden_states`: the L+1 block boundaries); no mechanics: A-blocks have none."
    if output_mechanics: raise ValueError("output_mechanics: a hybrid's attention blocks have no mass, force or energy; "
                                          "read output_hidden_states (h after every block) instead")
    return SPLMForCausalLM.forward(self, input_ids, labels, inputs_embeds, output_hidden_states, False, **kwargs)

# %% [markdown]
# A tiny Q9d, its states, and the check that it is the SPLM when the schedule has no A: with `schedule='SSSS'` and
# the same weights, Q9d's δ-form equals the SPLM's em_ln loop *except* that the SPLM keeps the unnormalised velocity
# buffer; without the LN the two are the same update, so they agree to rounding.

# %%
TINY_H = dict(vocab_size=61, d=16, max_len=48, v_hidden=32, v_depth=2, n_head=2)
torch.manual_seed(0)
q9d = HybridForCausalLM(HybridConfig(**TINY_H, schedule='AASS')).eval()
ids = torch.randint(0, 61, (2, 12))
out = q9d(ids, output_hidden_states=True)
test_eq(out.logits.shape, (2, 12, 61)); test_eq(len(out.hidden_states), 5)

torch.manual_seed(1)
s_only = HybridForCausalLM(HybridConfig(**TINY_H, schedule='SSSS', ln_after_step=False, mass_mode='global')).double().eval()
splm = SPLMForCausalLM(SPLMConfig(**{k: v for k, v in TINY_H.items() if k != 'n_head'}, L=4, xi_fixed=False,
                                  init_gamma=0.15, pos_init_std=0.02)).double().eval()
splm.load_state_dict(s_only.state_dict())
torch.testing.assert_close(s_only(ids).logits, splm(ids).logits, atol=1e-12, rtol=0)
test_fail(lambda: q9d(ids, output_mechanics=True), contains='output_mechanics')

# %% [markdown]
# **h_prev is carried through the A-blocks.** In `AASS` the first S-step starts from the second A-block's
# displacement: with zero force and γ = 0 it moves $h$ by exactly that displacement (before the LN).

# %%
torch.manual_seed(2)
free = HybridForCausalLM(HybridConfig(**TINY_H, schedule='AAS', ln_after_step=False, fixed_gamma=0.0, mass_mode='global')).double().eval()
with torch.no_grad():
    for p in free.V_theta.parameters(): p.zero_()                      # V ≡ 0: no force
hs = free(ids, output_hidden_states=True).hidden_states
torch.testing.assert_close(hs[3] - hs[2], hs[2] - hs[1], atol=1e-12, rtol=0)

# %% [markdown]
# ## Decoding: a KV cache for the A-part, the recurrent state for the S-part
#
# The reference's attention blocks accepted a KV cache its code never built; semsim's do. `HybridCache` is the
# SPLM's recurrent cache (one ξ-pool state per S-step, positions, the last state) plus a `KVCache` of every A-block and
# the validity of each cached column, so a left-padded prompt's padding is never attended to. Per new token the
# S-part costs $O(1)$ and the A-part $O(T)$, as attention must; at d 128 the cache grows at half MatchedGPT's rate
# (4 of 8 blocks keep keys and values), measured by `bench/bench_hybrid_decode.py` on the *Performance* page.

# %%
#| export
class HybridCache(SPLMCache):
    "SPLMCache (pool states per S-step) plus the A-blocks' KVCache and the valid cached columns, (B, seen)."
    def __init__(self, states:list, pos:Tensor, n_seen:int, last_h:Tensor, kv:KVCache, valid:Tensor):
        super().__init__(states, pos, n_seen, last_h)
        self.kv, self.valid = kv, valid
    @property
    def nbytes(self) -> int: return super().nbytes + self.kv.nbytes + self.valid.numel() * self.valid.element_size()
    def copy(self) -> 'HybridCache':
        kv = KVCache(self.kv.n_layers)
        kv.k, kv.v, kv.lens = [t.clone() if t is not None else None for t in self.kv.k], [t.clone() if t is not None else None for t in self.kv.v], list(self.kv.lens)
        return HybridCache([dict(s) for s in self.states], self.pos.clone(), self.n_seen, self.last_h, kv, self.valid.clone())
    def _map_rows(self, fn):
        super()._map_rows(fn)
        self.kv._map_rows(fn); self.valid = fn(self.valid)
    def __repr__(self): return f"HybridCache(batch={self.batch_size}, S-states={len(self.states)}, A-layers={self.kv.n_layers}, seen={self.n_seen}, bytes={self.nbytes})"

# %%
#| export
@torch.no_grad()
def hybrid_prefill(model, input_ids:Tensor, # prompt, (B,T)
                   attention_mask:Optional[Tensor]=None, # (B,T): 1 token, 0 left padding
                   logits_to_keep:int=0) -> tuple: # (logits, HybridCache)
    "One parallel pass over the prompt (rows rolled so each starts at position 0), filling the KV cache and the pool states."
    c = model.config
    if not c.causal_force: raise ValueError("causal_force=False (the leak) cannot be decoded with a cache: use use_cache=False")
    r_ids, n, shift = rolled_prompt(model, input_ids, attention_mask)     # tokens at [0, n_b), padding after them
    B, T = r_ids.shape
    emb = model.E(r_ids)
    kv, st = KVCache(max(len(model.blocks), 1)), {'leak': False, 'create_graph': False, 'grad': False, 'xi': None}
    s_in = []
    def force(j, h): s_in.append(h); return model._force(h, st)
    tr = run_schedule(model, emb + model.P[:T], model.mass(r_ids, emb), model.gamma(), lambda i, h: model.blocks[i](h, kv, i), force)
    states = [model.xi_module.prefix_state(h, n, state_dtype(r_ids.device)) for h in s_in]
    last, logits = prompt_readout(model, tr['positions'][-1], n, shift, logits_to_keep)
    valid = torch.arange(T, device=r_ids.device)[None] < n[:, None]         # real columns of the cache
    return logits, HybridCache(states, n.clone(), T, last, kv, valid)

# %%
#| export
@torch.no_grad()
def hybrid_decode_step(model, cache:HybridCache, # state after the previous tokens (updated in place)
                       next_ids:Tensor, # one new token per row (B,), or several (B,n)
                      ) -> tuple: # (logits (B,n,V), cache)
    "Advance every row by its new token(s): attention against the cached keys, the S-steps from the pool states."
    c = model.config
    ids = decode_ids(model, cache, next_ids)
    B, n = ids.shape
    gamma, pool, out = model.gamma(), model.xi_module, []
    for t in range(n):
        emb = model.E(ids[:, t:t + 1])
        cache.valid = torch.cat([cache.valid, cache.valid.new_ones(B, 1)], 1)
        mask = cache.valid[:, None, None, :]                                  # (B,1,1,seen+1): no padding column
        def force(j, h):
            "S-step j: ξ from this step's pool state, then the potential's force (no graph)."
            xi, cache.states[j] = pool.step(cache.states[j], h[:, 0])
            return model.V_theta.energy_and_force(xi.reshape(B, 1, -1), h, need_energy=False)[1], None
        tr = run_schedule(model, emb + model.P[cache.pos][:, None], model.mass(ids[:, t:t + 1], emb), gamma,
                          lambda i, h: model.blocks[i](h, cache.kv, i, mask), force)
        h = tr['positions'][-1]
        cache.advance(h[:, 0])
        out.append(F.linear(h, model.E.weight))
    return torch.cat(out, 1), cache

@patch
def _stream(self:HybridForCausalLM, *args, **kwargs):
    "The forward with a HybridCache: parallel prefill, then one token at a time."
    return streaming_forward(self, *args, prefill=hybrid_prefill, decode=hybrid_decode_step, cache_cls=HybridCache, **kwargs)

AutoConfig.register(HybridConfig.model_type, HybridConfig, exist_ok=True)
AutoModelForCausalLM.register(HybridConfig, HybridForCausalLM, exist_ok=True)

# %% [markdown]
# Cached decoding equals full recompute, for both layouts, token by token and for a left-padded batch (the padding
# columns are masked out of every later attention):

# %%
for kw in (dict(kind='two_stage', n_attn=2, n_splm=2), dict(schedule='SASA'), dict(schedule='ASSA')):
    torch.manual_seed(3)
    mdl = HybridForCausalLM(HybridConfig(**TINY_H, **kw)).double().eval()
    full = mdl(ids).logits
    o = mdl(ids[:, :5], use_cache=True); cache = output_cache(o)
    steps = [o.logits] + [mdl(ids[:, t:t + 1], cache=cache, use_cache=True).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-10, rtol=0)
    g = mdl.generate(ids[:, :4], max_new_tokens=6, do_sample=False)
    g_ref = mdl.generate(ids[:, :4], max_new_tokens=6, do_sample=False, use_cache=False)
    test_eq(g, g_ref)
    mask = torch.ones(2, 8, dtype=torch.long); mask[1, :3] = 0                    # row 1: 3 padding columns
    o = mdl(ids[:, :8], attention_mask=mask, use_cache=True); lp, cp = o.logits, output_cache(o)
    torch.testing.assert_close(lp[1, 3:], mdl(ids[1:, 3:8]).logits[0], atol=1e-10, rtol=0)
    nxt = mdl(ids[:, 8:9], cache=cp, use_cache=True).logits[1, 0]
    torch.testing.assert_close(nxt, mdl(torch.cat([ids[1:, 3:8], ids[1:, 8:9]], 1)).logits[0, -1], atol=1e-10, rtol=0)
print(cache)

# %% [markdown]
# ## Parameter counts
#
# The reference's counts (§5.9, §5.11 of its results): Variant A (global mass; logfreq adds its one extra scalar)
# (k, m) = (0, 8) 7,123,331, (2, 6) 7,519,875, (4, 4) 7,916,419, (8, 0) 8,709,507; Q9d AAAASSSS 7,916,163, SSSSSSSS
# 7,123,075, AAAAAAAA 8,709,251. Every one of them is reproduced with the global mass (two scalars, m and γ; the
# logfreq mass has b and α: one more). The reference builds $V_\theta$ and the boundary LN even when no block uses them,
# and so does semsim.

# %%
REF_COUNTS = {('two_stage', 0, 8): 7_123_331, ('two_stage', 2, 6): 7_519_875, ('two_stage', 4, 4): 7_916_419, ('two_stage', 8, 0): 8_709_507,
              'AAAASSSS': 7_916_163, 'SSSSSSSS': 7_123_075, 'AAAAAAAA': 8_709_251}
def n_params(conf): 
    with torch.device('meta'): return sum(p.numel() for p in HybridForCausalLM(conf).parameters())
for key, want in REF_COUNTS.items():
    kw = dict(kind='two_stage', n_attn=key[1], n_splm=key[2]) if isinstance(key, tuple) else dict(schedule=key)
    conf = HybridConfig(**{**HYBRID_BASE, **kw, 'mass_mode': 'global'})
    test_eq(n_params(conf), want)
    test_eq(n_params(HybridConfig(**{**HYBRID_BASE, **kw})), want + 1)      # logfreq: one scalar more
counts_ts = {k: n_params(HybridConfig.preset(k, **HybridConfig.TINYSTORIES)) for k in HybridConfig.PRESETS}
print('TinyStories scale-up (d 256, max_len 1024, v_hidden 1024, logfreq):', {k: f'{v:,}' for k, v in counts_ts.items()})

# %% [markdown]
# At the TinyStories scale-up the reference records no hybrid count; semsim's follow from the same structure (one
# more check: E, P, the blocks and $V_\theta$ add up).

# %%
d, V_, T_ = 256, 50257, 1024
blk = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
v_theta = (2 * d * 1024 + 1024) + 2 * (1024 * 1024 + 1024) + (1024 + 1)
test_eq(counts_ts['helmholtz_q9d'], V_ * d + T_ * d + 4 * blk + v_theta + 3)
test_eq(counts_ts['hybrid_a'], counts_ts['helmholtz_q9d'] + 2 * d)

# %% [markdown]
# ## A tiny example: where the velocity goes
#
# The figure follows the tokens through a tiny Q9d `AAAASSSS` at initialisation: the mean step length
# $\lVert h_{\ell+1} - h_\ell\rVert$ per block. The attention blocks move the small embeddings by their residual
# updates. The first S-step is dominated by its LayerNorm, which lifts $h$ from the embeddings' scale onto the
# normalised sphere (its length is that of $\mathrm{LN}(h_4) - h_4$ up to the small force); the later S-steps inherit
# their velocity through $\delta$ and the damping shrinks it step by step. The cell checks both readings.

# %%
torch.manual_seed(4)
demo = HybridForCausalLM(HybridConfig(**TINY_H, schedule='AAAASSSS')).eval()
hs = torch.stack(demo(ids, output_hidden_states=True).hidden_states)       # (L+1,B,T,d)
steps = (hs[1:] - hs[:-1]).norm(dim=-1).mean((1, 2)).detach()
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.bar(range(1, 9), steps, color=['tab:blue'] * 4 + ['tab:orange'] * 4)
ax.set_xticks(range(1, 9), list('AAAASSSS')); ax.set_ylabel('mean ‖h_{ℓ+1} − h_ℓ‖'); ax.set_yscale('log')
ax.set_title('Q9d AAAASSSS at init'); plt.tight_layout(); plt.show()
lift = (F.layer_norm(hs[4], (hs.shape[-1],)) - hs[4]).norm(dim=-1).mean().detach()
print('step lengths', steps.numpy().round(4), '| ‖LN(h_4) − h_4‖', round(float(lift), 4))
test_close(steps[4], lift, eps=0.05 * float(lift))              # the first S-step: the LN's lift onto the sphere
assert steps[5] > steps[6] > steps[7]                           # then the inherited velocity decays under damping

# %% [markdown]
# ## Measured: the hybrids beside MatchedGPT on Tiny Shakespeare (CPU)
#
# From the family table (the *Results* page, `python experiments/family.py --reuse`): the demo recipe (d 64, 600 steps
# of 8 × 64 tokens, compact vocabulary), the hybrids with their 8-block schedules, MatchedGPT at 4 blocks (the recipe's
# L) and at 8 (the hybrids' depth). The reference's anchors are at d 128, 4,000 steps: Variant A k4m4 147.40, Q9d
# AAAASSSS 145.86, AASSSSSS 149.10 (5 seeds), SASASASA 189.64 (seed 0), MatchedGPT 149.80 (5 seeds).

# %%
RESULTS = next(p/'results' for p in (Path.cwd(), *Path.cwd().parents) if (p/'results').is_dir())
fam = json.loads((RESULTS/'family-shakespeare-cpu.json').read_text())
rows = [r for r in fam['table'] if r['model'] in ('hybrid-a', 'helmholtz-q9d', 'matched-gpt')]
hy = pd.DataFrame([{'member': r['member'], 'params': r['params'], 'seeds': r['seeds'], 'val PPL mean': round(r['val_ppl_mean'], 2),
                    'sd': None if r['val_ppl_sd'] is None else round(r['val_ppl_sd'], 2),
                    'Δ vs MatchedGPT (paired)': None if 'vs_matched_gpt' not in r else round(r['vs_matched_gpt']['mean_diff'], 2),
                    'p': None if 'vs_matched_gpt' not in r else round(r['vs_matched_gpt']['paired_t_p'], 3),
                    'reference': r['reference']} for r in rows]).set_index('member')
hy

# %%
ppl = hy['val PPL mean']
print('ordering:', ' < '.join(f'{m} {v:.1f}' for m, v in ppl.sort_values().items()))
print(f"SASASASA / AAAASSSS: {ppl['Q9d SASASASA'] / ppl['Q9d AAAASSSS']:.2f} here, {189.64 / 135.03:.2f} in the reference (seed 0)")
assert ppl['Q9d SASASASA'] > ppl['Q9d AAAASSSS']   # the interleaved stripe is the worst layout, as in the reference
