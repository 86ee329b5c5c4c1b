# %% [markdown]
# # Streaming decode
#
# > An SPLM decodes in O(1) work and memory per token: a parallel prefill returns a small recurrent state (the context pools' running sums, positions, the last h_L) and every new token advances it, equal to full recompute; MatchedGPT gets a standard KV cache for a fair comparison.

# %%
#| default_exp streaming

# %% [markdown]
# An SPLM (`semsim.splm`) has no attention. The only way token $t$ sees its prefix is the context $\xi_t$, a causal
# linear filter of the prefix (`semsim.context`), and every pool in semsim is a linear recurrence. So the whole prefix
# can be summarised by a fixed-size state, and decoding one more token needs only that state (semsimula-paper@eb95852: `notebooks/conservative_arch/inference_efficiency/splm_streaming_decode.py`):
#
# 1. **embed** the new token at its position $p$: $h_0 = E[x] + P[p]$ (then LN when `ln_after_step`), $v_0 = 0$;
# 2. **integrate** $L$ steps. At step $\ell$ the force $f_\ell = -\nabla_h V_\theta(\xi_\ell, h_\ell)$ needs the
#    context of *this* token, $\xi_\ell = \mathrm{pool}(h^{(\ell)}_{1..p})$, which the pool's running state gives in
#    O(1): update the state of layer $\ell$ with $h_\ell$ and read $\xi_\ell$;
# 3. **read out** logits $= h_L E^\top$.
#
# How many running states: a vanilla SPLM (`xi_fixed=True`) computes $\xi$ once from $h_0$ — **one** state. The
# SARF-style models recompute $\xi$ from every $h_\ell$ that a force is evaluated at — one state per evaluation layer,
# $\ell = 0..L-1$ (**L** states). The reference counts L + 1 running sums (§8.1) because it also keeps the state of
# $h_L$; the velocity-Verlet integrator evaluates a force at $h_L$, but that force only moves $v_L$, never $h_L$ or the
# logits, so the decoder skips it and needs L states too. The state per sequence is then $L \cdot K \cdot d$ numbers
# (plus a count per channel, the position and the last $h_L$) — independent of the context length.
#
# | symbol | code | meaning |
# |---|---|---|
# | $S^{(\ell)}$ | `cache.states[l]` | running state of the pool for layer $\ell$ (a dict of tensors, rows = sequences) |
# | $p$ | `cache.pos` | next position of every row, (B,) |
# | $h_L$ | `cache.last_h` | final state of every row's last token, (B, d) |
# | $n$ | `cache.n_seen` | columns consumed, padding included (what `generate()` slices by) |
#
# Exactness: with `causal_force=True` (the default) the force on token $t$ depends on tokens $\le t$ only, so the
# streamed logits equal the full-recompute logits up to float rounding (tested below at every step, to 1e-5 relative).
# The historical leak (`causal_force=False`) is *not* causal — token $t$'s force depends on later tokens through
# $\xi$ — and no state can reproduce it: the decoder refuses it with a clear error.

# %%
#| export
from __future__ import annotations
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.modeling_outputs import CausalLMOutputWithPast

from semsim.lm import (check_input_ids, check_position, check_new_tokens_mask, left_pad_lengths, roll_rows, lm_loss,
                       lm_output, resolve_cache, generation_inputs)
from semsim.dynamics import integrate

# %%
#| hide
import warnings; warnings.filterwarnings('ignore', message='IProgress not found')
from fastcore.test import test_eq, test_fail, test_close
import time
import matplotlib.pyplot as plt
import transformers
from transformers import DynamicCache
from semsim.context import make_xi_pool
from semsim.potentials import make_potential
import torch.nn as nn
from semsim.context import XiPool
from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.baselines import MatchedGPTConfig, MatchedGPTForCausalLM, KVCache
from semsim.lm import output_cache
transformers.utils.logging.disable_progress_bar(); transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)  # tiny tensors: threads only add overhead


# %% [markdown]
# ## The state of each context pool
#
# Every pool of `semsim.context` is, per channel $k$ and feature, a linear recurrence; its state after the prefix
# $h_1..h_n$ has a closed form, computed in **one pass** over the prefix (a weighted sum with per-row lengths $n_b$):
#
# | pool | state after $n$ tokens | one-token update | $\xi$ |
# |---|---|---|---|
# | cumulative mean | $S = \sum_{s\le n} h_s$, count $n$ | $S \mathrel{+}= h$, $n \mathrel{+}= 1$ | $S/n$ |
# | EMA | $S_k = \sum_{s \le n} \alpha_k^{n-s} h_s$, $Z_k = \sum_{r<n} \alpha_k^r = \frac{\alpha_k^n - 1}{\alpha_k - 1}$ | $S_k \leftarrow \alpha_k S_k + h$, $Z_k \leftarrow \alpha_k Z_k + 1$ | $S_k / Z_k$ |
# | HiPPO-LegT | $c = \sum_{s \le n} \hat A^{n-s} \hat B\, h_s$ (the pool's kernel) | $c \leftarrow \hat A c + \hat B h$ | $c$ |
# | S4D | $s_k = \sum_{s \le n} \hat A_k^{n-s} h_s$ (complex) | $s_k \leftarrow \hat A_k s_k + h$ | $2\,\mathrm{Re}(\hat B_k s_k)$ |
#
# Each pool implements this recurrence itself (`semsim.context`): `prefix_state(h, n)` is the one-pass state,
# `step` the update, and the state carries the update's constants ($\alpha_k$, $\hat A$, $\hat B$), computed once per
# generation. The normalisers ($n$, $Z_k$) are per row, so rows of different lengths share one batch. The decoder keeps
# states in float64 (float32 on MPS, `state_dtype`): they are a few numbers per channel and accumulate over thousands
# of tokens. A pool class without a one-pass rule consumes the prefix token by token through its own `step`.

# %%
#| export
def state_dtype(device) -> torch.dtype:
    "Running states are float64 (float32 on MPS, which has none): tiny, and they accumulate over the whole context."
    return torch.float32 if device is not None and torch.device(device).type == 'mps' else torch.float64

# %% [markdown]
# The test: for every pool, the state after a prefix of length $n_b$ (taken in one pass, rows of different lengths in
# one batch), advanced token by token, gives at every position the same $\xi$ as the pool's own parallel `forward`
# over the whole sequence (its O(T) scan or FFT) — to float64 rounding, with learnable parameters moved away from
# their initial values so that nothing passes by symmetry.

# %%
torch.manual_seed(0)
pools = [make_xi_pool('cummean'), make_xi_pool('ema', 3, alpha_inits=(0.1, 0.6, 0.97)),
         make_xi_pool('hippo_legt', 4, theta=20.0), make_xi_pool('s4d', 4, init='lin')]
with torch.no_grad():
    for p in pools[3].parameters(): p.add_(0.1 * torch.randn_like(p))
B, T, d = 3, 40, 5
h = torch.randn(B, T, d, dtype=torch.float64)
lens = torch.tensor([7, 12, 1])                                            # prefix length of every row
rows = torch.arange(B)
for pool in pools:
    ref = pool.double()(h)                                                 # the pool's parallel ξ, (B,T,K,d)
    state = pool.prefix_state(h, lens, torch.float64)                                     # rows of different lengths, one pass
    worst = 0.0
    for j in range(T - int(lens.max())):                                   # row b consumes token lens_b + j
        t = lens + j
        xi, state = pool.step(state, h[rows, t])
        worst = max(worst, ((xi - ref[rows, t]).abs().amax((1, 2)) / ref[rows, t].abs().amax((1, 2))).max().item())
    print(f"{type(pool).__name__:20s} max rel err {worst:.1e}")
    assert worst < 1e-10, (type(pool).__name__, worst)


# %% [markdown]
# A pool without a one-pass rule (here a toy "last token" pool, $\xi_t = h_t$) streams through its own `step`; with padding it
# is refused rather than silently wrong.

# %%
class _LastToken(XiPool):
    n_channels = 1
    def forward(self, h): return h[:, :, None, :]
    def init_state(self, B, d, device=None, dtype=torch.float32): return {}
    def step(self, state, h_t): return h_t[:, None, :], {}
pool = _LastToken()
st = pool.prefix_state(h[:, :5], torch.tensor([5, 5, 5]))
xi, st = pool.step(st, h[:, 5])
test_eq(xi[:, 0], h[:, 5])
test_fail(lambda: pool.prefix_state(h[:, :5], torch.tensor([5, 3, 5])), contains='no padded-prefix rule')

# %% [markdown]
# ## Forces without autograd
#
# The reference decoder computed every force with `torch.autograd.grad` — a graph built and walked per layer per
# token. semsim's potentials need none outside training: SQ1–SQ3 have closed-form forces, and the MLP potential (and
# the MLP half of SQ4) computes its force by a hand-written backward pass whenever no graph is kept
# (`Potential.energy_and_force(..., need_energy=False)`, `semsim.potentials`). The decoder calls exactly that.

# %% [markdown]
# ## The recurrent cache
#
# `SPLMCache` holds what the decoder needs and nothing that grows with the context. It follows the parts of the
# transformers cache protocol that `generate()` uses (`get_seq_length`, `reorder_cache` for beam search,
# `batch_repeat_interleave` for several samples per prompt, `is_compileable`, and `is_linear`: a recurrent state,
# which `generate()` never slices by position), so `generate()` can carry it.

# %%
#| export
class SPLMCache:
    "Recurrent decode state of an SPLM: pool states per force-evaluation layer, positions, last h_L — O(1) in the context length."
    is_compileable = False   # transformers: do not torch.compile generate() around it
    is_croppable = False     # a recurrent state cannot be rolled back by tokens
    is_linear = (True,)      # transformers ≥ 5.24: a recurrent (linear-time) layer, not key/value attention
    def __init__(self, states:list, # pool states (semsim.context): 1 if ξ is fixed from h_0, else one per force-evaluation layer (L)
                 pos:Tensor, # next position of every row, (B,)
                 n_seen:int, # columns consumed, padding included
                 last_h:Tensor): # h_L of every row's last token, (B,d)
        self.states, self.pos, self.n_seen, self.last_h = states, pos, n_seen, last_h
        self.max_pos = int(pos.max())  # largest next position (a Python int: no tensor reduction per token)
    def get_seq_length(self, layer_idx:int=0) -> int: return self.n_seen
    def advance(self, last_h:Tensor): # h_L of the token just decoded, (B,d)
        "Every row has consumed one more token."
        self.last_h, self.pos, self.n_seen, self.max_pos = last_h, self.pos + 1, self.n_seen + 1, self.max_pos + 1
    @property
    def batch_size(self) -> int: return self.pos.shape[0]
    @property
    def nbytes(self) -> int:
        "Bytes held by the per-row state (independent of the context length; the pools' constants not counted)."
        ts = [t for st in self.states for t in st.values() if isinstance(t, Tensor)] + [self.pos, self.last_h]
        return sum(t.numel() * t.element_size() for t in ts)
    def copy(self) -> 'SPLMCache':
        "An independent copy (decoding from it leaves this one as it is)."
        return SPLMCache([dict(s) for s in self.states], self.pos.clone(), self.n_seen, self.last_h)
    def _map_rows(self, fn):
        B = self.batch_size
        f = lambda t: fn(t) if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == B else t   # rows only: not the constants
        self.states = [{k: f(t) for k, t in st.items()} for st in self.states]
        self.pos, self.last_h = f(self.pos), f(self.last_h)
        self.max_pos = int(self.pos.max())
    def reorder_cache(self, beam_idx:Tensor):
        "Select or reorder rows (beam search)."
        self._map_rows(lambda t: t.index_select(0, beam_idx.to(t.device)))
    def batch_select_indices(self, indices:Tensor): self.reorder_cache(indices)
    def batch_repeat_interleave(self, repeats:int):
        "Repeat every row (several sequences per prompt)."
        self._map_rows(lambda t: t.repeat_interleave(repeats, 0))
    def __repr__(self):
        pos = self.pos.tolist() if self.batch_size <= 8 else '...'
        return f"SPLMCache(batch={self.batch_size}, states={len(self.states)}, seen={self.n_seen}, positions={pos}, bytes={self.nbytes})"

# %% [markdown]
# ## Prefill and decode
#
# `splm_prefill` runs the prompt once, in parallel, through the model's own integrator (`SPLMForCausalLM.integrate`:
# the same arithmetic as `forward`), on the rows rotated so that padding is at the end; it keeps the states
# $h_0..h_{L-1}$ of the prompt only long enough to build the pool states. `splm_decode_step` then advances every row by
# one token per call: embed at the row's own position, then the $L$ steps of the configured integrator (Euler,
# velocity-Verlet with Strang damping, first order), each force from the pool state of its layer, LN after each step
# when configured, masses from the token (global, embed-head or log-frequency). Positions past `max_len` are an error:
# the positional table has `max_len` rows and the decoder never wraps or crops.

# %%
#| export
SPLM_MODEL_TYPE = 'semsim-splm'   # SPLMConfig.model_type: what the decoder accepts (it imports no model class)

def check_streamable(model): # an SPLMForCausalLM
    "Raise a clear error for models that no recurrent state can reproduce."
    if getattr(getattr(model, 'config', None), 'model_type', None) != SPLM_MODEL_TYPE:
        raise TypeError(f"expected an SPLMForCausalLM (config.model_type {SPLM_MODEL_TYPE!r}), got {type(model).__name__}")
    if not model.config.causal_force:
        raise ValueError("causal_force=False (the historical leak) is not causal: token t's force depends on later tokens "
                         "through ξ, so no streaming state can reproduce it; use use_cache=False (full recompute)")

def rolled_prompt(model, # a semsim causal LM (config with vocab_size and max_len)
                  input_ids:Tensor, # prompt, (B,T)
                  attention_mask:Optional[Tensor]=None, # (B,T): 1 token, 0 left padding
                 ) -> tuple: # (rolled ids (B,T), tokens per row n (B,), padding per row (B,))
    "Check a prompt and roll every row so that its tokens sit at [0, n_b): prefill runs as if each row were alone."
    c = model.config
    ids = check_input_ids(input_ids, c.vocab_size)
    B, T = ids.shape
    n = left_pad_lengths(attention_mask, B, T, ids.device)
    check_position(c.max_len, T - 1)
    return roll_rows(ids, T - n), n, T - n

def prompt_readout(model, hL:Tensor, # final states of the rolled prompt, (B,T,d)
                   n:Tensor, shift:Tensor, # from `rolled_prompt`
                   logits_to_keep:int=0) -> tuple: # (h_L of each row's last token (B,d), logits (B,T or k,V))
    "The last token's state (for the cache) and the prompt's logits back in the left-padded layout."
    B, T, d = hL.shape
    last = hL.gather(1, (n - 1).view(B, 1, 1).expand(B, 1, d))[:, 0]
    if logits_to_keep == 1: return last, F.linear(last, model.E.weight)[:, None]   # generate(): the last token only
    logits = roll_rows(F.linear(hL, model.E.weight), -shift)
    return last, (logits[:, -logits_to_keep:] if logits_to_keep else logits)

def decode_ids(model, cache, # the model and the cache the new tokens extend
               next_ids:Tensor) -> Tensor: # (B,) or (B,n) -> (B,n)
    "Check the new tokens against the vocabulary, the cache's batch and the positional table."
    ids = check_input_ids(next_ids, model.config.vocab_size, name='next_ids')
    if next_ids.dim() == 1: ids = ids.reshape(-1, 1)                      # (B,): one token per row
    B, n = ids.shape
    if B != cache.batch_size: raise ValueError(f"next_ids has batch size {B} but the cache holds {cache.batch_size} sequences")
    check_position(model.config.max_len, cache.max_pos + n - 1)
    return ids

def _h0_mass(model, ids:Tensor, # (B,T)
             pos:Tensor, # positions, (T,) or (B,T)
            ) -> tuple: # (h_0 (B,T,d), m (B,T,1))
    "Initial states and masses exactly as the model's forward builds them."
    emb = model.E(ids)
    return model._ln(emb + model.P[pos]), model.mass(ids, emb)

# %%
#| export
@torch.no_grad()
def splm_prefill(model, # a causal SPLMForCausalLM
                 input_ids:Tensor, # prompt, (B,T)
                 attention_mask:Optional[Tensor]=None, # (B,T): 1 token, 0 left padding
                 logits_to_keep:int=0, # 0: logits of every position; k: of the last k positions
                ) -> tuple: # (logits (B,T or k,V), SPLMCache)
    "Run the prompt in one parallel pass; return its logits and the recurrent state after it."
    check_streamable(model)
    c = model.config
    r_ids, n, shift = rolled_prompt(model, input_ids, attention_mask)     # row b's tokens at [0, n_b)
    T = r_ids.shape[1]
    h0, m = _h0_mass(model, r_ids, torch.arange(T, device=r_ids.device))
    hs = model.integrate(h0, m, model.gamma())['positions']                # h_0 .. h_L, (B,T,d) each
    sdt = state_dtype(r_ids.device)
    states = [model.xi_module.prefix_state(hs[l], n, sdt) for l in ([0] if c.xi_fixed else range(c.L))]
    last, logits = prompt_readout(model, hs[-1], n, shift, logits_to_keep)
    return logits, SPLMCache(states, n.clone(), T, last)

# %%
#| export
@torch.no_grad()
def splm_decode_step(model, # the SPLMForCausalLM the cache was built with
                     cache:SPLMCache, # state after the previous tokens (updated in place)
                     next_ids:Tensor, # one new token per row (B,), or several (B,n)
                    ) -> tuple: # (logits (B,n,V), cache)
    "Advance every row by its new token(s): O(L) work per token at any context length."
    c = model.config
    ids = decode_ids(model, cache, next_ids)
    B, n = ids.shape
    gamma, pool, pot, states, out = model.gamma(), model.xi_module, model.V_theta, cache.states, []
    for j in range(n):
        h0, m = _h0_mass(model, ids[:, j:j + 1], cache.pos[:, None])       # (B,1,d), (B,1,1)
        if c.xi_fixed:
            xi0, states[0] = pool.step(states[0], h0[:, 0])
        def force(l, h):
            "Force at layer l: ξ from that layer's pool state (or the fixed ξ), then the potential (no graph)."
            if c.xi_fixed: xi = xi0
            else: xi, states[l] = pool.step(states[l], h[:, 0])
            return pot.energy_and_force(xi.reshape(B, 1, -1), h, need_energy=False)[1], None
        h = integrate(force, h0, m, gamma, c.dt, c.L, c.integrator, project=model._ln if c.ln_after_step else None,
                      final_force=False, velocity=c.velocity)['positions'][-1]                  # the same loop as the parallel forward
        cache.advance(h[:, 0])
        out.append(F.linear(h, model.E.weight))
    return torch.cat(out, 1), cache

# %% [markdown]
# ### Exactness for every option
#
# A covering set of configurations — every context pool, every potential, every integrator, ξ fixed and recomputed,
# LN on and off, every mass mode — each with a tiny model whose potential weights are scaled up so that forces move
# the states substantially (tested: the logits change by more than 10 % when the forces are switched off). For each:
# prefill 6 tokens, decode 18 more one at a time (batch of 2), and compare with `model(ids).logits` of the full
# sequence at **every** position. The error measure is the largest difference over the largest reference logit.

# %%
VOCAB = 97
def tiny_splm(seed=0, **kw):
    "A tiny SPLM with strong forces (potential weights N(0, 0.3²)) for exactness tests."
    cfg = dict(vocab_size=VOCAB, d=16, max_len=256, L=3, v_hidden=32, v_depth=2, K_mix=3, init_std=0.3, pos_init_std=0.3)
    cfg.update(kw)
    torch.manual_seed(seed)
    m = SPLMForCausalLM(SPLMConfig(**cfg)).eval()
    with torch.no_grad():
        for mod in m.V_theta.modules():
            if isinstance(mod, nn.Linear): mod.weight.normal_(0, 0.3)
    if m.config.mass_mode == 'logfreq': m.set_logfreq_surprisal(torch.rand(VOCAB) * 5)
    return m

def stream_error(model, ids, T0):
    "Largest relative logit error of prefill(ids[:, :T0]) + one-token steps vs the full forward, over all positions."
    full = model(ids).logits
    lg, cache = splm_prefill(model, ids[:, :T0])
    errs = [((lg - full[:, :T0]).abs().max() / full[:, :T0].abs().max()).item()]
    for t in range(T0, ids.shape[1]):
        lg, cache = splm_decode_step(model, cache, ids[:, t])
        errs.append(((lg[:, 0] - full[:, t]).abs().max() / full[:, t].abs().max()).item())
    return max(errs)

CONFIGS = [dict(),                                                         # vanilla: cummean ξ fixed from h_0, Euler
           dict(xi_fixed=False),                                           # SARF
           dict(xi_fixed=False, ln_after_step=True, mass_mode='logfreq'),  # em_ln
           dict(xi_pool='ema', xi_channels=3, xi_fixed=False, ln_after_step=True, mass_mode='logfreq', fixed_gamma=0.3),
           dict(xi_pool='ema', xi_channels=2, xi_fixed=True, integrator='verlet'),
           dict(xi_pool='hippo_legt', xi_channels=4, xi_fixed=False, xi_theta=20.0, mass_mode='embed_head'),
           dict(xi_pool='s4d', xi_channels=4, xi_fixed=False, integrator='verlet', ln_after_step=True),
           dict(xi_pool='s4d', xi_channels=2, xi_s4d_init='lin', integrator='first_order', ln_after_step=True),
           dict(potential='sq1', xi_fixed=False, mass_mode='embed_head'),
           dict(potential='sq2', integrator='verlet', xi_pool='hippo_legt', xi_channels=3),
           dict(potential='sq3', xi_pool='ema', xi_channels=4, xi_fixed=False, ln_after_step=True, mass_mode='logfreq', fixed_gamma=0.3),
           dict(potential='sq3', integrator='first_order', xi_fixed=False, ln_after_step=True),
           dict(potential='sq4', xi_pool='ema', xi_channels=2, xi_fixed=False, integrator='verlet', mass_mode='logfreq')]
torch.manual_seed(3)
ids = torch.randint(0, VOCAB, (2, 24))
errors = {}
for i, kw in enumerate(CONFIGS):
    m = tiny_splm(i, **kw)
    errors[i] = stream_error(m, ids, 6)
    assert errors[i] < 1e-5, (kw, errors[i])
print(f"{len(CONFIGS)} configurations, worst relative logit error {max(errors.values()):.1e}")

# %%
# the forces matter in these tests: switching them off changes the logits by far more than the tolerance
m = tiny_splm(0, **CONFIGS[2])
with_f = m(ids).logits
with torch.no_grad():
    for mod in m.V_theta.modules():
        if isinstance(mod, nn.Linear): mod.weight.zero_()
no_f = m(ids).logits
rel = ((with_f - no_f).abs().max() / with_f.abs().max()).item()
print(f"relative logit change without forces: {rel:.2f}")
assert rel > 0.1

# %% [markdown]
# Bad input gets a clear error: the leak mode, positions past `max_len`, a batch that does not match the cache,
# out-of-vocabulary ids, right padding.

# %%
m = tiny_splm(0, max_len=12)
lg, cache = splm_prefill(m, ids[:, :10])
lg, cache = splm_decode_step(m, cache, ids[:, 10])
lg, cache = splm_decode_step(m, cache, ids[:, 11])                         # position 11 = max_len - 1: fine
test_fail(lambda: splm_decode_step(m, cache, ids[:, 12]), contains='past max_len=12')
test_fail(lambda: splm_prefill(m, ids[:, :13]), contains='past max_len=12')
test_fail(lambda: splm_decode_step(m, cache, ids[:1, 0]), contains='batch size 1')
test_fail(lambda: splm_prefill(m, ids[:, :4] + VOCAB), contains='must lie in [0, 97)')
test_fail(lambda: splm_prefill(m, ids[:, :4].float()), contains='integer token ids')
test_fail(lambda: splm_prefill(m, ids[:, :4], torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])), contains='LEFT padding')
test_fail(lambda: splm_prefill(tiny_splm(0, causal_force=False), ids[:, :4]), contains='not causal')

# %% [markdown]
# ### Batches of different prompt lengths
#
# Three prompts of lengths 3, 7 and 5 in one left-padded batch, 40 tokens decoded together: at every step each row's
# logits equal those of the same row run alone, unpadded, with full recompute.

# %%
m = tiny_splm(4, **CONFIGS[3])
torch.manual_seed(5)
lens, n_new = [3, 7, 5], 40
seqs = [torch.randint(0, VOCAB, (l + n_new,)) for l in lens]
T = max(lens)
batch, mask = torch.zeros(3, T, dtype=torch.long), torch.zeros(3, T, dtype=torch.long)
for b, l in enumerate(lens): batch[b, T - l:], mask[b, T - l:] = seqs[b][:l], 1
lg, cache = splm_prefill(m, batch, mask)
worst = max(((lg[b, T - l:] - m(seqs[b][None, :l]).logits[0]).abs().max() / lg[b, T - l:].abs().max()).item()
            for b, l in enumerate(lens))
for j in range(n_new):
    lg, cache = splm_decode_step(m, cache, torch.stack([s[l + j] for s, l in zip(seqs, lens)]))
    for b, l in enumerate(lens):
        ref = m(seqs[b][None, :l + j + 1]).logits[0, -1]
        worst = max(worst, ((lg[b, 0] - ref).abs().max() / ref.abs().max()).item())
print(cache, f"worst relative error {worst:.1e}")
assert worst < 1e-5


# %% [markdown]
# ## Behind `generate()`
#
# `streaming_forward` is the SPLM's forward the transformers way: without a `cache` it is the parallel
# prefill and returns the new `SPLMCache` in a `CausalLMOutputWithPast`; with one it runs the decode step on the new
# token(s) only. The cache goes in and out under the name of the installed transformers release (`cache` from 5.24,
# `past_key_values` before; see `semsim.lm.CACHE_FIELD`), so `generate()` carries it on either without a
# deprecation warning, and `output_cache(out)` reads it back. `splm_generation_inputs` is the matching `prepare_inputs_for_generation`: with `use_cache=True` it
# passes the model's own cache class and, once the cache exists, only the tokens it has not seen (the last token);
# with `use_cache=False` it passes the whole window (the last `max_len` tokens) for full recompute, as before.
# `SPLMForCausalLM` routes to these when `use_cache` is on or a cache is passed.

# %%
#| export
def streaming_forward(model, # a causal SPLMForCausalLM
                      input_ids:Optional[Tensor]=None, # the prompt (no cache) or the new tokens, (B,n)
                      cache:Optional[SPLMCache]=None, # state so far; None: prefill
                      attention_mask:Optional[Tensor]=None, # (B, past+n): 1 token, 0 left padding
                      use_cache:bool=True, # return the state
                      labels:Optional[Tensor]=None, # ids for the shifted loss on the returned logits
                      logits_to_keep:int=0, # 0: all positions; k: the last k
                      inputs_embeds:Optional[Tensor]=None,
                      past_key_values:Optional[SPLMCache]=None, # `cache` under its pre-5.24 name
                      prefill=None, # (model, ids, mask, logits_to_keep) -> (logits, cache); None: splm_prefill
                      decode=None, # (model, cache, ids) -> (logits, cache); None: splm_decode_step
                      cache_cls:type=SPLMCache, # the cache type `decode` continues (a subclass's own, e.g. PARFCache)
                      **kwargs) -> CausalLMOutputWithPast:
    "A forward with a cache: parallel prefill that returns the state, then token steps (the SPLM's, or a subclass's pair)."
    if inputs_embeds is not None: raise ValueError(f"the streaming {type(model).__name__} needs input_ids (masses and cache follow token ids); inputs_embeds is not supported with a cache")
    if input_ids is None: raise ValueError("pass input_ids")
    past = resolve_cache(cache, past_key_values)
    if past is None: logits, cache = (prefill or splm_prefill)(model, input_ids, attention_mask, logits_to_keep)
    else:
        if not isinstance(past, cache_cls):
            raise TypeError(f"the cache must be the {cache_cls.__name__} of an earlier call with use_cache=True, got {type(past).__name__}")
        ids = input_ids if input_ids.dim() == 2 else input_ids[None]
        check_new_tokens_mask(attention_mask, ids.shape[0], past.get_seq_length(), ids.shape[1])
        logits, cache = (decode or splm_decode_step)(model, past, ids)
        if logits_to_keep: logits = logits[:, -logits_to_keep:]
    loss = lm_loss(logits, labels) if labels is not None else None
    return lm_output(logits, loss, cache if use_cache else None)

def splm_generation_inputs(model, input_ids:Tensor, **kwargs) -> dict:
    "The SPLM's `prepare_inputs_for_generation` (the cache is created by the prefill; the leak mode always recomputes)."
    if not model.config.causal_force: kwargs['use_cache'] = False          # no state can reproduce the acausal leak
    return generation_inputs(model, input_ids, lambda: None, **kwargs)

# %% [markdown]
# The attention baseline, for comparison: its cached decode (the KV cache inside its attention, `semsim.baselines`)
# equals the full forward at every position, with `KVCache` and with transformers' `DynamicCache`,
# and a left-padded batch equals its rows run alone:

# %%
torch.manual_seed(6)
gpt = MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=VOCAB, d=16, n_layer=3, n_head=2, max_len=256)).eval()
full = gpt(ids).logits
for make in (lambda: KVCache(3), DynamicCache):
    out = gpt(ids[:, :6], cache=make(), use_cache=True)
    worst = (out.logits - full[:, :6]).abs().max().item()
    for t in range(6, ids.shape[1]):
        out = gpt(ids[:, t:t + 1], cache=output_cache(out), use_cache=True)
        worst = max(worst, (out.logits[:, 0] - full[:, t]).abs().max().item())
    print(type(output_cache(out)).__name__, f"max |Δlogit| {worst:.1e}")
    assert worst < 1e-5 * full.abs().max()
out = gpt(batch, attention_mask=mask, use_cache=True)
cache, worst = output_cache(out), 0.0
for b, l in enumerate(lens): worst = max(worst, (out.logits[b, T - l:] - gpt(seqs[b][None, :l]).logits[0]).abs().max().item())
for j in range(10):
    mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
    out = gpt(torch.stack([s[l + j] for s, l in zip(seqs, lens)])[:, None], cache=cache, attention_mask=mask, use_cache=True)
    for b, l in enumerate(lens): worst = max(worst, (out.logits[b, 0] - gpt(seqs[b][None, :l + j + 1]).logits[0, -1]).abs().max().item())
print(cache, f"padded batch: max |Δlogit| {worst:.1e}")
assert worst < 1e-5
test_eq(cache.nbytes, 2 * 3 * (T + 10) * 3 * 16 * 4)                       # 2·L·T·B·d·4 bytes
test_fail(lambda: gpt(ids[:, :4], attention_mask=torch.ones(2, 3), use_cache=True), contains='shape (B,T)=(2, 4)')
test_fail(lambda: KVCache(0), contains='positive integer')

# %% [markdown]
# ### `generate()`: identical tokens, identical logits
#
# The model classes are wired to these functions (`semsim.splm`; MatchedGPT's KV cache lives inside its attention,
# `semsim.baselines`): `_supports_default_dynamic_cache` is False (the model makes its own cache),
# `prepare_inputs_for_generation` calls `splm_generation_inputs` (MatchedGPT: `semsim.lm.generation_inputs` with a
# fresh `KVCache`), and the SPLM's `forward` routes to `streaming_forward` when a cache is in play or the batch is
# left-padded. `use_cache` defaults to True in both configurations, so `generate()` takes the fast path
# unless told otherwise; the leak mode (`causal_force=False`) always recomputes.

# %% [markdown]
# 200 greedy tokens from a 16-token prompt (batch of 2) with `use_cache=True` and `use_cache=False`: the same tokens,
# and the logits of every step equal to 1e-5 relative; the same for a left-padded batch (whose rows also equal the
# rows generated alone), for sampling with a fixed seed, and for beam search. The cache-free run re-runs the whole
# window at every step; the timing printed is the point of this chapter.

# %%
sm = tiny_splm(7, **CONFIGS[3])
torch.manual_seed(8)
prompt = torch.randint(0, VOCAB, (2, 16))
kw = dict(max_new_tokens=200, do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
t0 = time.perf_counter(); fast = sm.generate(prompt, use_cache=True, **kw); t_fast = time.perf_counter() - t0
t0 = time.perf_counter(); slow = sm.generate(prompt, use_cache=False, **kw); t_slow = time.perf_counter() - t0
test_eq(fast.sequences, slow.sequences)
step_err = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(fast.logits, slow.logits)]
print(f"200 tokens: identical; worst relative logit error {max(step_err):.1e}; {t_fast:.2f} s streaming vs {t_slow:.2f} s recompute")
assert max(step_err) < 1e-5 and type(output_cache(fast)).__name__ == 'SPLMCache'

# %%
pad_prompt, pad_mask = prompt.clone(), torch.ones_like(prompt)
pad_prompt[0, :5], pad_mask[0, :5] = 0, 0                                  # row 0: an 11-token prompt, left-padded
kw = dict(max_new_tokens=30, do_sample=False, pad_token_id=0)
a = sm.generate(pad_prompt, attention_mask=pad_mask, use_cache=True, **kw)
b = sm.generate(pad_prompt, attention_mask=pad_mask, use_cache=False, **kw)
alone = sm.generate(prompt[:1, 5:], use_cache=False, **kw)
test_eq(a, b); test_eq(a[0, 5:], alone[0])
torch.manual_seed(9); s1 = sm.generate(prompt, max_new_tokens=12, do_sample=True, top_k=10, pad_token_id=0, use_cache=True)
torch.manual_seed(9); s2 = sm.generate(prompt, max_new_tokens=12, do_sample=True, top_k=10, pad_token_id=0, use_cache=False)
test_eq(s1, s2)
test_eq(sm.generate(prompt, max_new_tokens=8, num_beams=3, pad_token_id=0, use_cache=True),
        sm.generate(prompt, max_new_tokens=8, num_beams=3, pad_token_id=0, use_cache=False))
test_fail(lambda: sm.generate(prompt, max_new_tokens=250, use_cache=True, pad_token_id=0), contains='past max_len=256')
test_eq(sm.config.use_cache, True)                                         # the default: generate() streams
test_eq(sm.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0), fast.sequences[:, :21])
leaky = tiny_splm(7, **CONFIGS[3], causal_force=False)                     # the leak: generate() recomputes
test_eq(leaky.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0),
        leaky.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0, use_cache=False))

# %%
cg = gpt
kw = dict(max_new_tokens=200, do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
fast, slow = cg.generate(prompt, use_cache=True, **kw), cg.generate(prompt, use_cache=False, **kw)
test_eq(fast.sequences, slow.sequences)
print(f"MatchedGPT, 200 tokens: identical; worst relative logit error "
      f"{max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(fast.logits, slow.logits)):.1e}", output_cache(fast))
kw = dict(max_new_tokens=30, do_sample=False, pad_token_id=0)
a, alone = cg.generate(pad_prompt, attention_mask=pad_mask, use_cache=True, **kw), cg.generate(prompt[:1, 5:], use_cache=False, **kw)
test_eq(a[0, 5:], alone[0])

# %% [markdown]
# ## Cost per token as the context grows
#
# A small live measurement (tiny models, one CPU thread; the full-size measurements are the benchmarks in `bench/`
# and the *Performance* page): the time to produce one token at context $T$, streaming vs recomputing the window, and
# the bytes each decoder keeps — the SPLM state against MatchedGPT's keys and values.

# %%
m = tiny_splm(10, **CONFIGS[2], max_len=512)
g2 = MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=VOCAB, d=16, n_layer=3, n_head=2, max_len=512)).eval()
torch.manual_seed(11)
seq = torch.randint(0, VOCAB, (1, 512))
Ts = [16, 64, 128, 256, 384, 511]
def per_token(fn, reps=5):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]
stream_ms, full_ms, splm_bytes, kv_bytes = [], [], [], []
for T in Ts:
    _, cache = splm_prefill(m, seq[:, :T - 1])                             # state after T-1 tokens
    def one_step(c0=cache, T=T):                                           # token T on a fresh copy of that state
        splm_decode_step(m, c0.copy(), seq[:, T - 1])
    stream_ms.append(1e3 * per_token(one_step))
    full_ms.append(1e3 * per_token(lambda: m(seq[:, :T]), reps=3))
    splm_bytes.append(cache.nbytes)
    kv_bytes.append(output_cache(g2(seq[:, :T], use_cache=True)).nbytes)
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
a1.plot(Ts, full_ms, 'o-', label='full recompute (use_cache=False)'); a1.plot(Ts, stream_ms, 's-', label='streaming (SPLMCache)')
a1.set_xlabel('context T (tokens)'); a1.set_ylabel('ms per new token'); a1.set_title('tiny SPLM, 1 thread'); a1.legend()
a2.plot(Ts, kv_bytes, 'o-', label='MatchedGPT KVCache'); a2.plot(Ts, splm_bytes, 's-', label='SPLMCache')
a2.set_xlabel('context T (tokens)'); a2.set_ylabel('bytes held by the decoder'); a2.set_yscale('log'); a2.legend()
plt.tight_layout(); plt.show()
print('streaming ms/token:', [f'{x:.2f}' for x in stream_ms]); print('recompute ms/token:', [f'{x:.2f}' for x in full_ms])
test_eq(len(set(splm_bytes)), 1)                                           # the SPLM state does not grow
test_eq(kv_bytes, [2 * 3 * T * 16 * 4 for T in Ts])                        # KV: 2·L·T·d·4 bytes

# %% [markdown]
# The state of this em_ln-style model (ξ recomputed at each of the $L = 3$ steps, $d = 16$) is a constant few hundred
# bytes; the KV cache grows by $2 L d \cdot 4$ bytes per token. Full recompute grows with $T$ while streaming does not.
# The measured ratios at the reference sizes (d = 128, L = 8, 50,257-token vocabulary), the crossover with the KV
# cache, and the FLOP accounting are in `bench/` and on the *Performance* page.
