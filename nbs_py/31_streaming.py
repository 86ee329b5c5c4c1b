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
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from transformers.modeling_outputs import CausalLMOutputWithPast

from semsim.context import XiPool, CumulativeMeanPool, EMAPool, HiPPOLegTPool, S4DPool
from semsim.potentials import Potential, MLPPotential, SQ4Potential
from semsim.dynamics import damped_euler_step, first_order_step, verlet_kick, verlet_kick_drift
from semsim.splm import SPLMForCausalLM
from semsim.baselines import MatchedGPTForCausalLM, lm_loss, lm_output, resolve_cache

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
from semsim.splm import SPLMConfig
from semsim.baselines import MatchedGPTConfig, output_cache
transformers.utils.logging.disable_progress_bar(); transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)  # tiny tensors: threads only add overhead


# %% [markdown]
# ## Left padding
#
# A batch of prompts of different lengths arrives left-padded, with `attention_mask` 0 on the padding and 1 on the
# tokens (the Hugging Face convention for decoder-only generation). Every row must then behave as if it were alone:
# its first real token sits at position 0 and padding never enters its context. The SPLM needs no mask inside the
# model for this: rotating each row left by its padding count moves the tokens to positions $0..n_b-1$ and the
# padding to the end, where causality keeps it out of every real token's context. `left_pad_lengths` validates the
# mask (left padding only; right or inner padding is refused with a message) and returns $n_b$; `roll_rows` rotates.

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
# The normalisers ($n$, $Z_k$) are per row, so rows of different lengths share one batch. The constants
# ($\alpha_k$, $\hat A$, $\hat B$) are computed once per generation. States are kept in float64 (float32 on MPS): they
# are a few numbers per channel and accumulate over thousands of tokens. A pool class without a rule here falls back
# to its own `init_state`/`step`, consuming the prefix token by token.

# %%
#| export
def state_dtype(device) -> torch.dtype:
    "Running states are float64 (float32 on MPS, which has none): tiny, and they accumulate over the whole context."
    return torch.float32 if device is not None and torch.device(device).type == 'mps' else torch.float64

class PoolStream:
    "Streaming rule of one context pool: the state after a prefix (one pass), and the one-token update."
    def __init__(self, pool:XiPool, # the model's context pool
                 device=None, # where states live
                 dtype=torch.float32): # dtype of the returned ξ (the model's)
        self.pool, self.device, self.dtype, self.sdt = pool, device, dtype, state_dtype(device)
    def prefix_state(self, h:Tensor, # prefix states, row b's tokens at [0, n_b) (padding after), (B,T,d)
                     n:Tensor, # real tokens per row, (B,)
                    ) -> dict: # the state after each row's n_b tokens
        "State after the prefix, in one pass."
        raise NotImplementedError
    def step(self, state:dict, h_t:Tensor, # the new token's hidden state, (B,d)
            ) -> tuple: # (xi_t (B,K,d), new state)
        "Advance by one token: O(K d) work per row."
        raise NotImplementedError
    def _lag(self, h, n):
        "(n_b - 1 - s clamped at 0, s < n_b) for every row and prefix position, (B,T) each."
        s = torch.arange(h.shape[1], device=h.device)
        lag = n[:, None] - 1 - s[None]
        return lag.clamp(min=0), lag >= 0


# %%
#| export
class CumMeanStream(PoolStream):
    "Cumulative mean: running sum S and per-row count n, ξ = S/n."
    def prefix_state(self, h, n):
        _, valid = self._lag(h, n)
        return {'sum': (h.to(self.sdt) * valid[..., None]).sum(1), 'n': n.to(self.sdt)[:, None]}
    def step(self, state, h_t):
        S, c = state['sum'] + h_t.to(self.sdt), state['n'] + 1
        return (S / c).to(self.dtype)[:, None, :], {'sum': S, 'n': c}

class EMAStream(PoolStream):
    "Normalised EMA: numerators S_k, denominators Z_k per row, ξ_k = S_k/Z_k."
    def __init__(self, pool, device=None, dtype=torch.float32):
        super().__init__(pool, device, dtype)
        self.la = pool.log_alpha(self.sdt).detach().to(device)            # ln α_k, (K,)
        self.a = self.la.exp()
    def prefix_state(self, h, n):
        lag, valid = self._lag(h, n)
        W = torch.exp(lag[..., None].to(self.sdt) * self.la) * valid[..., None]   # α_k^(n-1-s), (B,T,K)
        Z = torch.expm1(n[:, None].to(self.sdt) * self.la) / torch.expm1(self.la)  # Σ_{r<n} α^r, (B,K)
        return {'S': torch.einsum('btk,btd->bkd', W, h.to(self.sdt)), 'Z': Z}
    def step(self, state, h_t):
        S = self.a[None, :, None] * state['S'] + h_t.to(self.sdt)[:, None, :]
        Z = self.a * state['Z'] + 1
        return (S / Z[..., None]).to(self.dtype), {'S': S, 'Z': Z}

class LegTStream(PoolStream):
    "HiPPO-LegT: Legendre coefficients c ← Â c + B̂ h, per feature."
    def __init__(self, pool, device=None, dtype=torch.float32):
        super().__init__(pool, device, dtype)
        Ad, Bd = pool.discrete(device)
        self.Ad, self.Bd = Ad.detach().to(device=device, dtype=self.sdt), Bd.detach().to(device=device, dtype=self.sdt)
    def prefix_state(self, h, n):
        lag, valid = self._lag(h, n)
        M = self.pool.kernel(h.shape[1], h.device, torch.float64).detach().to(self.sdt)  # Â^j B̂, (T,K)
        return {'c': torch.einsum('btk,btd->bkd', M[lag] * valid[..., None], h.to(self.sdt))}
    def step(self, state, h_t):
        c = torch.einsum('nm,bmd->bnd', self.Ad, state['c']) + self.Bd[None, :, None] * h_t.to(self.sdt)[:, None, :]
        return c.to(self.dtype), {'c': c}

class S4DStream(PoolStream):
    "S4D: complex modes s_k ← Â_k s_k + h, ξ_k = 2 Re(B̂_k s_k)."
    def __init__(self, pool, device=None, dtype=torch.float32):
        super().__init__(pool, device, dtype)
        la, Bd = pool.discrete(self.sdt)
        self.la, self.Bd = la.detach().to(device), Bd.detach().to(device)
        self.A = self.la.exp()
    def prefix_state(self, h, n):
        lag, valid = self._lag(h, n)
        W = torch.exp(lag[..., None].to(self.la.dtype) * self.la) * valid[..., None]   # Â_k^(n-1-s), (B,T,K)
        return {'s': torch.einsum('btk,btd->bkd', W, h.to(self.la.dtype))}
    def step(self, state, h_t):
        s = self.A[None, :, None] * state['s'] + h_t.to(self.la.dtype)[:, None, :]
        return (2 * (self.Bd[None, :, None] * s).real).to(self.dtype), {'s': s}

class GenericStream(PoolStream):
    "Any other pool: its own `init_state`/`step`, the prefix consumed token by token (equal-length rows only)."
    def prefix_state(self, h, n):
        B, T, d = h.shape
        if not bool((n == T).all()):
            raise ValueError(f"{type(self.pool).__name__} has no padded-prefix rule: pass prompts of equal length (no padding)")
        st = self.pool.init_state(B, d, device=h.device, dtype=h.dtype)
        for t in range(T): _, st = self.pool.step(st, h[:, t])
        return st
    def step(self, state, h_t):
        xi, st = self.pool.step(state, h_t)
        return xi.to(self.dtype), st

STREAM_RULES = {CumulativeMeanPool: CumMeanStream, EMAPool: EMAStream, HiPPOLegTPool: LegTStream, S4DPool: S4DStream}

def pool_stream(pool:XiPool, # a context pool
                device=None, dtype=torch.float32) -> PoolStream:
    "The streaming rule of `pool`, its constants (α, Â, B̂) computed once."
    if not isinstance(pool, XiPool): raise TypeError(f"pool must be a semsim.context.XiPool, got {type(pool).__name__}")
    return STREAM_RULES.get(type(pool), GenericStream)(pool, device, dtype)


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
    rule = pool_stream(pool, None, torch.float64)
    state = rule.prefix_state(h, lens)                                     # rows of different lengths, one pass
    worst = 0.0
    for j in range(T - int(lens.max())):                                   # row b consumes token lens_b + j
        t = lens + j
        xi, state = rule.step(state, h[rows, t])
        worst = max(worst, ((xi - ref[rows, t]).abs().amax((1, 2)) / ref[rows, t].abs().amax((1, 2))).max().item())
    print(f"{type(pool).__name__:20s} max rel err {worst:.1e}")
    assert worst < 1e-10, (type(pool).__name__, worst)


# %% [markdown]
# A pool without a rule (here a toy "last token" pool, $\xi_t = h_t$) streams through its own `step`; with padding it
# is refused rather than silently wrong.

# %%
class _LastToken(XiPool):
    n_channels = 1
    def forward(self, h): return h[:, :, None, :]
    def init_state(self, B, d, device=None, dtype=torch.float32): return {}
    def step(self, state, h_t): return h_t[:, None, :], {}
rule = pool_stream(_LastToken())
st = rule.prefix_state(h[:, :5], torch.tensor([5, 5, 5]))
xi, st = rule.step(st, h[:, 5])
test_eq(xi[:, 0], h[:, 5].float())
test_fail(lambda: rule.prefix_state(h[:, :5], torch.tensor([5, 3, 5])), contains='no padded-prefix rule')
test_fail(lambda: pool_stream(nn.Linear(2, 2)), contains='XiPool')

# %% [markdown]
# ## Forces without autograd
#
# The reference decoder computed every force with `torch.autograd.grad` — a graph built and walked per layer per
# token. The structured potentials SQ1–SQ3 already have closed-form forces (`semsim.potentials`). For the MLP
# potential $V = w_{D}^\top \mathrm{GELU}(z_{D-1}) + b_D$, $z_i = W_i a_{i-1} + b_i$, $a_0 = [\xi; h]$, the force is
# the hand-written backward pass
#
# $$g_{D-1} = w_D, \qquad g_{i-1} = W_i^\top\big(g_i \odot \mathrm{GELU}'(z_i)\big), \qquad
#   f = -\big(W_1^\top (g_1 \odot \mathrm{GELU}'(z_1))\big)_{h}, \qquad \mathrm{GELU}'(z) = \Phi(z) + z\,\varphi(z),$$
#
# with $\Phi, \varphi$ the standard normal CDF and density (exact, erf GELU) and only the $h$ columns of $W_1$ used in
# the last product. It is the same arithmetic autograd would do, without the graph; $\Phi(z)$ is computed once per
# layer and gives both $\mathrm{GELU}(z) = z\,\Phi(z)$ for the next layer and $\mathrm{GELU}'(z)$ for the way back, and
# the first layer multiplies $\xi$ and $h$ by their own column blocks of $W_1$ instead of concatenating
# $[\xi; h]$, so each layer takes fewer and smaller operations (the decoding latencies are measured in
# `bench/bench_vs_attention.py`). `fast_energy_and_force` uses it
# for `MLPPotential` and the MLP half of `SQ4Potential`, the closed form for the others. The streaming decoder uses it;
# training keeps autograd (it needs the second-order graph).

# %%
#| export
_GELU_CONSTS = {}   # (dtype, device) -> (1/√2, 1/2, -1/2) as 0-d tensors: a Python float operand costs a dtype conversion per op

def gelu_and_prime(z:Tensor) -> tuple: # (GELU(z), GELU'(z)), each shaped like z
    "The exact GELU and its derivative together, sharing Φ(z): GELU = zΦ, GELU' = Φ + zφ."
    key = (z.dtype, z.device)
    if key not in _GELU_CONSTS: _GELU_CONSTS[key] = tuple(torch.tensor(x, dtype=z.dtype, device=z.device) for x in (0.7071067811865476, 0.5, -0.5))
    r2, half, mhalf = _GELU_CONSTS[key]
    Phi = torch.erf(z * r2).mul_(half).add_(half)                          # Φ(z)
    return z * Phi, torch.addcmul(Phi, z, torch.exp(z * z * mhalf), value=0.3989422804014327)   # zΦ, Φ + z e^{-z²/2}/√(2π)

def mlp_energy_and_force(pot:MLPPotential, # the MLP potential
                         xi:Tensor, # context, (..., D_xi), e.g. (B,T,D_xi)
                         h:Tensor, # hidden states, (..., d)
                         need_energy:bool=True, # False: skip V's last product (decoding needs only f)
                        ) -> tuple: # (V (...) or None, f (..., d)), no graph
    "V and f = -∂V/∂h of an MLP potential by a hand-written backward pass."
    lins = [m for m in pot.net if isinstance(m, nn.Linear)]
    D, d, W1 = xi.shape[-1], h.shape[-1], lins[0].weight
    if (D, d) != (pot.d_xi, pot.d) or xi.shape[:-1] != h.shape[:-1]:
        raise ValueError(f"xi {tuple(xi.shape)} and h {tuple(h.shape)} must share their leading axes and end in D_xi={pot.d_xi}, d={pot.d}")
    x, y = xi.reshape(-1, D), h.reshape(-1, d)                             # tokens flattened, (N,D_xi), (N,d)
    a, gp = gelu_and_prime(torch.addmm(torch.addmm(lins[0].bias, x, W1[:, :D].t()), y, W1[:, D:].t()))  # W₁[ξ;h]+b₁, no concatenation (out of place: FlopCounterMode misses addmm_)
    gps = [gp]
    for lin in lins[1:-1]:
        a, gp = gelu_and_prime(torch.addmm(lin.bias, a, lin.weight.t())); gps.append(gp)
    V = F.linear(a, lins[-1].weight, lins[-1].bias).reshape(h.shape[:-1]) if need_energy else None
    g = lins[-1].weight * gps[-1]                                          # ∂V/∂z_{D-1}, (N,hidden)
    for lin, gp in zip(lins[-2:0:-1], gps[-2::-1]): g = (g @ lin.weight).mul_(gp)   # ∂V/∂z_{i-1} = (∂V/∂z_i Wᵢ) ⊙ GELU'(z_{i-1})
    return V, (g @ W1[:, D:]).neg_().reshape(h.shape)                     # only the h columns of W₁

def fast_energy_and_force(pot:Potential, # any semsim potential
                          xi:Tensor, # context, (B,T,D_xi)
                          h:Tensor, # hidden states, (B,T,d)
                          need_energy:bool=True, # False: the MLP skips its last product (V may then be None)
                         ) -> tuple: # (V (B,T), f (B,T,d)), no graph
    "Energy and force for inference: closed form where the potential has one, a manual backward for MLPs."
    if type(pot) is MLPPotential: return mlp_energy_and_force(pot, xi, h, need_energy)
    if type(pot) is SQ4Potential:
        Vs, gs = pot.sq1.energy_and_grad(xi, h)
        Vm, fm = mlp_energy_and_force(pot.mlp, xi, h)
        return Vs + pot.alpha * Vm, -gs + pot.alpha * fm
    return pot.energy_and_force(xi, h)


# %% [markdown]
# Tests, in float64 with weights large enough that the GELUs work in their curved region: `gelu_and_prime` equals `F.gelu` and
# autograd's derivative of `F.gelu`, and `fast_energy_and_force` equals `Potential.energy_and_force` (autograd for the
# MLP and SQ4, closed form for SQ1–SQ3) for every potential.

# %%
torch.manual_seed(1)
z = torch.linspace(-6, 6, 101, dtype=torch.float64, requires_grad=True)
g, = torch.autograd.grad(F.gelu(z).sum(), z)
G, Gp = gelu_and_prime(z.detach())
test_close(G, F.gelu(z.detach()), eps=1e-14); test_close(Gp, g, eps=1e-14)   # GELU and autograd's GELU'
test_close(gelu_and_prime(z.detach().float())[1], g.float(), eps=1e-6)     # float32 too (its constants are cached per dtype)
for kind in ('mlp', 'sq1', 'sq2', 'sq3', 'sq4'):
    torch.manual_seed(2)
    pot = make_potential(kind, 12, 6).double()
    with torch.no_grad():
        for m in pot.modules():
            if isinstance(m, nn.Linear): m.weight.normal_(0, 0.5)
    xi, hh = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    with torch.no_grad(): V, f = fast_energy_and_force(pot, xi, hh)
    V_ref, f_ref = pot.energy_and_force(xi, hh)
    test_close(V, V_ref, eps=1e-12); test_close(f, f_ref, eps=1e-12 * f_ref.abs().max().item())
    print(f"{kind}: |f| max {f_ref.abs().max().item():7.2f}, max |Δf| {(f - f_ref).abs().max().item():.1e}")
pot = make_potential('mlp', 12, 6).double()                                # any leading axes: tokens flattened, (N, ·)
with torch.no_grad(): V2, f2 = mlp_energy_and_force(pot, xi.reshape(-1, 12), hh.reshape(-1, 6))
test_eq(f2.shape, (10, 6)); test_close(f2.reshape(2, 5, 6), pot.force(xi, hh), eps=1e-12); test_close(V2.reshape(2, 5), pot.energy(xi, hh), eps=1e-12)
test_fail(lambda: mlp_energy_and_force(pot, xi[:, :4], hh), contains='leading axes')
test_fail(lambda: mlp_energy_and_force(pot, xi[..., :8], hh), contains='D_xi=12')


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
    def __init__(self, stream:PoolStream, # the pool's streaming rule
                 states:list, # pool states: 1 if ξ is fixed from h_0, else one per force-evaluation layer (L)
                 pos:Tensor, # next position of every row, (B,)
                 n_seen:int, # columns consumed, padding included
                 last_h:Tensor): # h_L of every row's last token, (B,d)
        self.stream, self.states, self.pos, self.n_seen, self.last_h = stream, states, pos, n_seen, last_h
        self.max_pos = int(pos.max())  # largest next position (a Python int: no tensor reduction per token)
    def get_seq_length(self, layer_idx:int=0) -> int: return self.n_seen
    @property
    def batch_size(self) -> int: return self.pos.shape[0]
    @property
    def nbytes(self) -> int:
        "Bytes held by the state (independent of the context length)."
        ts = [t for st in self.states for t in st.values()] + [self.pos, self.last_h]
        return sum(t.numel() * t.element_size() for t in ts)
    def _map_rows(self, fn):
        B = self.batch_size
        f = lambda t: fn(t) if t.dim() > 0 and t.shape[0] == B else t
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
def check_streamable(model:SPLMForCausalLM):
    "Raise a clear error for models that no recurrent state can reproduce."
    if not all(hasattr(model, a) for a in ('integrate', 'V_theta', 'xi_module', 'E', 'P')):   # duck-typed: notebooks redefine the class
        raise TypeError(f"expected an SPLMForCausalLM, got {type(model).__name__}")
    if not model.config.causal_force:
        raise ValueError("causal_force=False (the historical leak) is not causal: token t's force depends on later tokens "
                         "through ξ, so no streaming state can reproduce it; use use_cache=False (full recompute)")

def check_token_ids(model, ids:Tensor, # token ids, (B,T) or (T,)
                    name:str='input_ids') -> Tensor: # (B,T)
    "Validate token ids against the model's vocabulary, naming the problem."
    if not isinstance(ids, Tensor): raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool: raise ValueError(f"{name} must be integer token ids, got dtype {ids.dtype}")
    if ids.dim() == 1: ids = ids[None]
    if ids.dim() != 2 or ids.shape[1] == 0: raise ValueError(f"{name} must have shape (B,T) with T ≥ 1, got {tuple(ids.shape)}")
    V = model.config.vocab_size
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= V: raise ValueError(f"{name} must lie in [0, {V}), found range [{lo}, {hi}]")
    return ids

def check_position(model, last_pos:int):
    "Positions are rows of P: past max_len is an error, never a silent wrap."
    L = model.config.max_len
    if last_pos >= L:
        raise ValueError(f"position {last_pos} is past max_len={L}: the positional table P has {L} rows and the streaming "
                         f"decoder never wraps or crops; keep prompt + new tokens ≤ {L}, or use a model with a larger max_len")

def _h0_mass(model, ids:Tensor, # (B,T)
             pos:Tensor, # positions, (T,) or (B,T)
            ) -> tuple: # (h_0 (B,T,d), m (B,T,1))
    "Initial states and masses exactly as the model's forward builds them."
    emb = model.E(ids)
    return model._ln(emb + model.P[pos]), model.mass(ids, emb)


# %%
#| export
@torch.no_grad()
def splm_prefill(model:SPLMForCausalLM, # a causal SPLM
                 input_ids:Tensor, # prompt, (B,T)
                 attention_mask:Optional[Tensor]=None, # (B,T): 1 token, 0 left padding
                 logits_to_keep:int=0, # 0: logits of every position; k: of the last k positions
                ) -> tuple: # (logits (B,T or k,V), SPLMCache)
    "Run the prompt in one parallel pass; return its logits and the recurrent state after it."
    check_streamable(model)
    ids = check_token_ids(model, input_ids)
    B, T = ids.shape
    n = left_pad_lengths(attention_mask, B, T, ids.device)
    check_position(model, T - 1)
    shift = T - n                                                          # padding per row
    r_ids = roll_rows(ids, shift)                                          # row b's tokens at [0, n_b)
    h0, m = _h0_mass(model, r_ids, torch.arange(T, device=ids.device))
    hs = model.integrate(h0, m, model.gamma())['positions']                # h_0 .. h_L, (B,T,d) each
    c = model.config
    stream = pool_stream(model.xi_module, ids.device, h0.dtype)
    states = [stream.prefix_state(hs[l], n) for l in ([0] if c.xi_fixed else range(c.L))]
    hL = hs[-1]
    last = hL.gather(1, (n - 1).view(B, 1, 1).expand(B, 1, hL.shape[-1]))[:, 0]
    if logits_to_keep == 1: logits = F.linear(last, model.E.weight)[:, None]   # generate(): the last token only
    else:
        logits = roll_rows(F.linear(hL, model.E.weight), -shift)           # back to the left-padded layout
        if logits_to_keep: logits = logits[:, -logits_to_keep:]
    return logits, SPLMCache(stream, states, n.clone(), T, last)

@torch.no_grad()
def splm_decode_step(model:SPLMForCausalLM, # the model the cache was built with
                     cache:SPLMCache, # state after the previous tokens (updated in place)
                     next_ids:Tensor, # one new token per row (B,), or several (B,n)
                    ) -> tuple: # (logits (B,n,V), cache)
    "Advance every row by its new token(s): O(L) work per token at any context length."
    ids = check_token_ids(model, next_ids, 'next_ids')
    if next_ids.dim() == 1: ids = next_ids[:, None]
    B, n = ids.shape
    if B != cache.batch_size: raise ValueError(f"next_ids has batch size {B} but the cache holds {cache.batch_size} sequences")
    check_position(model, cache.max_pos + n - 1)
    c, out = model.config, []
    gamma, dt, pot, stream, states = model.gamma(), c.dt, model.V_theta, cache.stream, cache.states
    for j in range(n):
        h, m = _h0_mass(model, ids[:, j:j + 1], cache.pos[:, None])        # (B,1,d), (B,1,1)
        if c.xi_fixed:
            xi0, states[0] = stream.step(states[0], h[:, 0])
            xi0 = xi0.reshape(B, 1, -1)
        def force(l, h):
            "Force at layer l: ξ from that layer's state (or the fixed ξ), then the potential."
            if c.xi_fixed: xi = xi0
            else:
                xi, states[l] = stream.step(states[l], h[:, 0])
                xi = xi.reshape(B, 1, -1)
            return fast_energy_and_force(pot, xi, h, need_energy=False)[1]
        v = torch.zeros_like(h)
        if c.integrator == 'verlet':                                       # the same steps as SPLMForCausalLM.integrate
            f = force(0, h)
            for l in range(c.L):
                h, v = verlet_kick_drift(h, v, f, m, gamma, dt)
                h = model._ln(h)
                if l + 1 < c.L:                                            # the force at h_L only moves v_L: skipped
                    f = force(l + 1, h)
                    v = verlet_kick(v, f, m, gamma, dt)
        else:
            for l in range(c.L):
                f = force(l, h)
                if c.integrator == 'euler': h, v = damped_euler_step(h, v, f, m, gamma, dt)
                else: h = first_order_step(h, f, m, dt)
                h = model._ln(h)
        cache.last_h, cache.pos, cache.n_seen, cache.max_pos = h[:, 0], cache.pos + 1, cache.n_seen + 1, cache.max_pos + 1
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
# `past_key_values` before; see `semsim.baselines.CACHE_FIELD`), so `generate()` carries it on either without a
# deprecation warning, and `output_cache(out)` reads it back. `splm_generation_inputs` is the matching `prepare_inputs_for_generation`: with `use_cache=True` it
# passes the model's own cache class and, once the cache exists, only the tokens it has not seen (the last token);
# with `use_cache=False` it passes the whole window (the last `max_len` tokens) for full recompute, as before.
# `SPLMForCausalLM` routes to these when `use_cache` is on or a cache is passed.

# %%
#| export
def _check_new_tokens_mask(attention_mask, B:int, past:int, n:int):
    "During decoding the mask must cover cached + new columns, and new tokens cannot be padding."
    if attention_mask is None: return
    m = torch.as_tensor(attention_mask)
    if m.shape != (B, past + n): raise ValueError(f"attention_mask must cover the cached and new tokens, shape {(B, past + n)}, got {tuple(m.shape)}")
    if not bool((m[:, past:] == 1).all()): raise ValueError("tokens after the prompt cannot be padding: attention_mask[:, past:] must be all ones")

def streaming_forward(model:SPLMForCausalLM, # a causal SPLM
                      input_ids:Optional[Tensor]=None, # the prompt (no cache) or the new tokens, (B,n)
                      cache:Optional[SPLMCache]=None, # state so far; None: prefill
                      attention_mask:Optional[Tensor]=None, # (B, past+n): 1 token, 0 left padding
                      use_cache:bool=True, # return the state
                      labels:Optional[Tensor]=None, # ids for the shifted loss on the returned logits
                      logits_to_keep:int=0, # 0: all positions; k: the last k
                      inputs_embeds:Optional[Tensor]=None,
                      past_key_values:Optional[SPLMCache]=None, # `cache` under its pre-5.24 name
                      **kwargs) -> CausalLMOutputWithPast:
    "SPLM forward with a recurrent cache: parallel prefill that returns the state, then O(1)-per-token steps."
    if inputs_embeds is not None: raise ValueError("the streaming SPLM needs input_ids (masses and cache follow token ids); inputs_embeds is not supported with a cache")
    if input_ids is None: raise ValueError("pass input_ids")
    past = resolve_cache(cache, past_key_values)
    if past is None: logits, cache = splm_prefill(model, input_ids, attention_mask, logits_to_keep)
    else:
        if not all(hasattr(past, a) for a in ('stream', 'states', 'pos')):
            raise TypeError(f"the cache must be the SPLMCache of an earlier call with use_cache=True, got {type(past).__name__}")
        ids = input_ids if input_ids.dim() == 2 else input_ids[None]
        _check_new_tokens_mask(attention_mask, ids.shape[0], past.get_seq_length(), ids.shape[1])
        logits, cache = splm_decode_step(model, past, ids)
        if logits_to_keep: logits = logits[:, -logits_to_keep:]
    loss = lm_loss(logits, labels) if labels is not None else None
    return lm_output(logits, loss, cache if use_cache else None)

def generation_inputs(model, input_ids:Tensor, # all ids so far, (B,T)
                      new_cache, # callable () -> empty cache (or None to let the model's forward make it)
                      cache=None, attention_mask=None, use_cache=None, logits_to_keep=None,
                      next_sequence_length=None, past_key_values=None, **kwargs) -> dict:
    "`prepare_inputs_for_generation`: with a cache, the unseen (last) tokens only; without, the last max_len tokens."
    past_key_values = resolve_cache(cache, past_key_values)               # generate() passes `cache` (≥ 5.24) or `past_key_values`
    use_cache = model.config.use_cache if use_cache is None else use_cache
    if not use_cache:
        L = model.config.max_len
        out = {'input_ids': input_ids[:, -L:], 'use_cache': False}
        if attention_mask is not None and not bool(attention_mask[:, -L:].all()): out['attention_mask'] = attention_mask[:, -L:]
        return out
    if past_key_values is None: past_key_values = new_cache()
    ids = input_ids
    if next_sequence_length is not None: ids = input_ids[:, -next_sequence_length:]
    elif past_key_values is not None and past_key_values.get_seq_length() > 0: ids = input_ids[:, past_key_values.get_seq_length():]
    out = {'input_ids': ids, 'cache': past_key_values, 'attention_mask': attention_mask, 'use_cache': True}
    if logits_to_keep is not None: out['logits_to_keep'] = logits_to_keep
    return out

def splm_generation_inputs(model:SPLMForCausalLM, input_ids:Tensor, **kwargs) -> dict:
    "The SPLM's `prepare_inputs_for_generation` (the cache is created by the prefill; the leak mode always recomputes)."
    if not model.config.causal_force: kwargs['use_cache'] = False          # no state can reproduce the acausal leak
    return generation_inputs(model, input_ids, lambda: None, **kwargs)


# %% [markdown]
# ## MatchedGPT with a KV cache
#
# For a fair comparison the attention baseline decodes the standard way: every block caches the keys and values of
# all previous tokens, and a new token computes its own $q, k, v$, appends $k, v$ and attends over the cache, so the
# per-token work grows linearly with the context $T$ ($4dT$ multiply-adds per block for $qK^\top$ and the weighted
# sum). `KVCache` stores them in per-layer buffers that grow by doubling, so appending a token never copies the past
# (the reference's `torch.cat` cache did, which inflated its attention timings). Any cache with the transformers
# `update(k, v, layer_idx)` / `get_seq_length()` API works too (e.g. `DynamicCache`). Left padding is handled with
# per-row positions (`cumsum(mask) - 1`) and a key mask; padding queries attend to themselves only, so no row of
# the softmax is empty.

# %%
#| export
class KVCache:
    "Keys and values of every attention block, in buffers that grow by doubling (append never copies the past)."
    is_compileable = False
    is_croppable = False
    def __init__(self, n_layers:int, # number of attention blocks
                 capacity:int=0): # initial buffer length in tokens (0: sized by the first update)
        if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1: raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
        self.n_layers, self.capacity = n_layers, int(capacity)
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
def _key_mask(attention_mask, B:int, past:int, n:int, device) -> Optional[Tensor]:
    "Valid keys per row from a left-padding mask over cached + new columns, (B, past+n); None without a mask."
    if attention_mask is None: return None
    m = torch.as_tensor(attention_mask, device=device)
    if m.shape != (B, past + n): raise ValueError(f"attention_mask must cover the cached and new tokens, shape {(B, past + n)}, got {tuple(m.shape)}")
    left_pad_lengths(m, B, past + n, device)
    return m.bool()

@torch.no_grad()
def gpt_forward(model:MatchedGPTForCausalLM, # the attention baseline
                input_ids:Tensor, # prompt or new tokens, (B,n)
                cache=None, # KVCache (or a transformers Cache); None: a new KVCache when use_cache
                attention_mask:Optional[Tensor]=None, # (B, past+n): 1 token, 0 left padding
                use_cache:bool=True, # keep and return the cache
                logits_to_keep:int=0, # 0: every position; k: the last k
                labels:Optional[Tensor]=None, # ids for the shifted loss
                past_key_values=None, # `cache` under its pre-5.24 name
                **kwargs) -> CausalLMOutputWithPast:
    "MatchedGPT forward with a KV cache; positions and keys follow the left-padding mask."
    if not all(hasattr(model, a) for a in ('blocks', 'ln_f', 'E', 'P')): raise TypeError(f"expected a MatchedGPTForCausalLM, got {type(model).__name__}")
    c = model.config
    ids = check_token_ids(model, input_ids)
    B, n = ids.shape
    cache = resolve_cache(cache, past_key_values)
    if cache is None and use_cache: cache = KVCache(c.n_layer)
    past = cache.get_seq_length() if cache is not None else 0
    km = _key_mask(attention_mask, B, past, n, ids.device)
    pos = torch.arange(past, past + n, device=ids.device)[None] if km is None else (km.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
    check_position(model, int(pos.max()))
    x = model.drop(model.E(ids) + model.P[pos])
    d, H = c.d, c.n_head
    mask, causal = None, km is None and n > 1 and past == 0
    if km is not None or (n > 1 and past > 0):
        q_pos, k_pos = torch.arange(past, past + n, device=ids.device), torch.arange(past + n, device=ids.device)
        allowed = k_pos[None, None] <= q_pos[None, :, None]                # causal, (1,n,T)
        if km is not None: allowed = (allowed & km[:, None, :]) | (k_pos[None, None] == q_pos[None, :, None])
        mask = allowed[:, None]                                            # (B or 1, 1, n, T)
    for i, blk in enumerate(model.blocks):
        q, k, v = blk.attn.qkv(blk.ln1(x)).split(d, dim=-1)
        q, k, v = (t.view(B, n, H, d // H).transpose(1, 2) for t in (q, k, v))
        if cache is not None: k, v = cache.update(k, v, i)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        x = x + blk.drop(blk.attn.proj(y.transpose(1, 2).reshape(B, n, d)))
        x = x + blk.drop(blk.mlp(blk.ln2(x)))
    if logits_to_keep: x = x[:, -logits_to_keep:]
    logits = F.linear(model.ln_f(x), model.E.weight)
    loss = lm_loss(logits, labels) if labels is not None else None
    return lm_output(logits, loss, cache if use_cache else None)

def gpt_generation_inputs(model:MatchedGPTForCausalLM, input_ids:Tensor, **kwargs) -> dict:
    "MatchedGPT's `prepare_inputs_for_generation`: a fresh KVCache, then the last token only."
    return generation_inputs(model, input_ids, lambda: KVCache(model.config.n_layer), **kwargs)


# %% [markdown]
# The cached decode equals the full forward at every position, with `KVCache` and with transformers' `DynamicCache`,
# and a left-padded batch equals its rows run alone:

# %%
torch.manual_seed(6)
gpt = MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=VOCAB, d=16, n_layer=3, n_head=2, max_len=256)).eval()
full = gpt(ids).logits
for make in (lambda: KVCache(3), DynamicCache):
    out = gpt_forward(gpt, ids[:, :6], make())
    worst = (out.logits - full[:, :6]).abs().max().item()
    for t in range(6, ids.shape[1]):
        out = gpt_forward(gpt, ids[:, t:t + 1], output_cache(out))
        worst = max(worst, (out.logits[:, 0] - full[:, t]).abs().max().item())
    print(type(output_cache(out)).__name__, f"max |Δlogit| {worst:.1e}")
    assert worst < 1e-5 * full.abs().max()
out = gpt_forward(gpt, batch, attention_mask=mask)
cache, worst = output_cache(out), 0.0
for b, l in enumerate(lens): worst = max(worst, (out.logits[b, T - l:] - gpt(seqs[b][None, :l]).logits[0]).abs().max().item())
for j in range(10):
    mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
    out = gpt_forward(gpt, torch.stack([s[l + j] for s, l in zip(seqs, lens)])[:, None], cache, attention_mask=mask)
    for b, l in enumerate(lens): worst = max(worst, (out.logits[b, 0] - gpt(seqs[b][None, :l + j + 1]).logits[0, -1]).abs().max().item())
print(cache, f"padded batch: max |Δlogit| {worst:.1e}")
assert worst < 1e-5
test_eq(cache.nbytes, 2 * 3 * (T + 10) * 3 * 16 * 4)                       # 2·L·T·B·d·4 bytes
test_fail(lambda: gpt_forward(gpt, ids[:, :4], attention_mask=torch.ones(2, 3)), contains='cover the cached and new tokens')
test_fail(lambda: KVCache(0), contains='positive integer')

# %% [markdown]
# ### `generate()`: identical tokens, identical logits
#
# The model classes are wired to these functions (`semsim.splm`, `semsim.baselines`): `_supports_default_dynamic_cache`
# is False (the model makes its own cache), `prepare_inputs_for_generation` calls `splm_generation_inputs` /
# `gpt_generation_inputs`, and `forward` routes to `streaming_forward` / `gpt_forward` when a cache is in play or the
# batch is left-padded. `use_cache` defaults to True in both configurations, so `generate()` takes the fast path
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
        c = SPLMCache(c0.stream, [dict(s) for s in c0.states], c0.pos.clone(), c0.n_seen, c0.last_h)
        splm_decode_step(m, c, seq[:, T - 1])
    stream_ms.append(1e3 * per_token(one_step))
    full_ms.append(1e3 * per_token(lambda: m(seq[:, :T]), reps=3))
    splm_bytes.append(cache.nbytes)
    kv_bytes.append(output_cache(gpt_forward(g2, seq[:, :T])).nbytes)
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
