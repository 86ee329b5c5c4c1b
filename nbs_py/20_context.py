# %% [markdown]
# # Context pools
#
# > Causal summaries ξ of the prefix — cumulative mean, K-channel normalised EMA, HiPPO-LegT and S4D — each computed in O(T) per channel, equal to its dense definition, and streamable one token at a time.

# %%
#| default_exp context

# %% [markdown]
# In a scalar-potential language model (SPLM) the energy of token $t$ depends on its own hidden state $h_t$ and on a
# *context* $\xi_t$ that summarises the prefix $h_1, \dots, h_t$ (semsimula-paper@eb95852: `notebooks/conservative_arch/model.py`, `notebooks/conservative_arch/multixi/model_multixi.py`). Every context in semsim is a
# set of $K$ causal linear filters applied to each feature independently:
#
# $$\xi^{k}_{t} = \sum_{s \le t} W_k[t, s]\, h_s, \qquad k = 1, \dots, K,$$
#
# where $h_s \in \mathbb{R}^d$ is the hidden state of token $s$ (code: `h`, shape (B, T, d)), $W_k$ the lower-triangular
# weight matrix of channel $k$ and $\xi^k_t \in \mathbb{R}^d$ its output (code: `xi`, shape (B, T, K, d)). The
# potential later sees the $K$ channels flattened, $\xi_t \in \mathbb{R}^{K d}$.
#
# Two rules hold for every pool in this chapter:
#
# 1. **Pure and causal.** A pool is a function of its input only, and $W_k[t,s] = 0$ for $s > t$. Whether the input
#    is detached is the model's decision (`semsim.splm`): it passes `h.detach()` so that no force sees a later token.
# 2. **O(T) per channel.** `forward` never builds a $T \times T$ matrix: it uses a cumulative sum, a chunked linear
#    scan or an FFT convolution. The dense matrix exists only in `dense_weights(T)` / `forward_dense(h)`, which the
#    tests use as the definition that `forward` must equal.
#
# Each pool can also be run as a recurrence, one token at a time (`init_state`, `step`), for streaming decoding.
#
# | pool | `kind` | channels | weights $W_k[t,s]$, $s \le t$ | learnable |
# |---|---|---|---|---|
# | `CumulativeMeanPool` | `'cummean'` | 1 | $1/t$ (1-indexed $t$) | — |
# | `EMAPool` | `'ema'` | K | $\alpha_k^{t-s} / \sum_{r \le t} \alpha_k^{t-r}$ | $\alpha_k$ |
# | `HiPPOLegTPool` | `'hippo_legt'` | K | $(\hat A^{t-s} \hat B)_k$ | optionally $\Delta$ |
# | `S4DPool` | `'s4d'` | K | $2\,\mathrm{Re}(\hat B_k \hat A_k^{t-s})$ | $\lambda_k, B_k, \Delta$ |

# %%
#| export
from __future__ import annotations
from fastcore.basics import patch
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from semsim.core import check_positive_int

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import time
import matplotlib.pyplot as plt


# %% [markdown]
# ## The base class
#
# `XiPool` fixes the interface: `forward(h) -> xi` with `h` (B, T, d) and `xi` (B, T, K, d), `K = n_channels`;
# `dense_weights(T)` returns the (K, T, T) matrices of the definition; `forward_dense(h)` applies them (tests and
# benchmarks only: O(T²)); `init_state` / `step` run the same filter as a recurrence, one token at a time, and
# `prefix_state(h, n)` gives the recurrence's state after each row's first $n_b$ tokens in **one pass** over the
# prefix (rows of different lengths in one batch) — the streaming decoder (`semsim.streaming`) starts from it. Every
# pool writes its recurrence once, here: its state carries the update's constants (`stream_constants`: decays,
# transition matrices), computed once per decode, and `step` returns ξ in the input's dtype while the state keeps
# its own (the decoder keeps it in float64: a few numbers that accumulate over thousands of tokens). `rel_err` is the
# error measure the tests use: the largest absolute difference divided by the largest absolute value of the
# reference, per channel.

# %%
#| export
def check_h(h:Tensor, # hidden states, (B,T,d)
            name:str='h'):
    "Check that `h` is a floating (B,T,d) tensor with T ≥ 1, naming the problem otherwise."
    if not isinstance(h, Tensor): raise TypeError(f"{name} must be a torch.Tensor of shape (B,T,d), got {type(h).__name__}")
    if h.dim() != 3: raise ValueError(f"{name} must have shape (B,T,d), got {tuple(h.shape)}")
    if not h.is_floating_point(): raise TypeError(f"{name} must be a floating tensor, got dtype {h.dtype}")
    if h.shape[1] < 1: raise ValueError(f"{name} has no positions (T = 0)")

def rel_err(a:Tensor, # computed, (..., K, d) or any shape
            b:Tensor, # reference, same shape
            dim:Optional[int]=-2) -> float: # channel axis (errors normalised per channel); None: globally
    "Largest |a-b| over the largest |b|, per channel along `dim`, maximised over channels."
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    if dim is None: return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
    dims = [i for i in range(b.dim()) if i != dim % b.dim()]
    return ((a - b).abs().amax(dims) / b.abs().amax(dims).clamp_min(1e-300)).max().item()

def _work_dtype(h:Tensor):
    "Pools compute in float32 at least: half precision is upcast (FFTs and scans need it)."
    return torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype

# %%
#| export
class XiPool(nn.Module):
    "Base class of causal context pools: `forward(h)` (B,T,d) -> `xi` (B,T,K,d), K = `n_channels`."
    n_channels: int = 1
    def dense_weights(self, T:int, device=None, dtype=torch.float64) -> Tensor: # (K,T,T), zero above the diagonal
        "The pool's weight matrices W_k[t,s] (tests and benchmarks only: O(T²) memory)."
        raise NotImplementedError
    def forward_dense(self, h:Tensor, # hidden states, (B,T,d)
                     ) -> Tensor: # xi, (B,T,K,d)
        "Reference O(T²) computation of `forward` from `dense_weights` (tests and benchmarks only)."
        check_h(h)
        W = self.dense_weights(h.shape[1], device=h.device, dtype=h.dtype)
        return torch.einsum('kts,bsd->btkd', W, h)
    def stream_constants(self, device=None, dtype=torch.float64) -> dict:
        "Constants of the one-token update (decays, transition matrices), computed once per decode; none by default."
        return {}
    def init_state(self, B:int, d:int, device=None, dtype=torch.float32) -> dict:
        "Empty streaming state for a batch of B sequences of width d, kept in `dtype`."
        raise NotImplementedError
    def prefix_state(self, h:Tensor, # prefix states, row b's tokens at [0, n_b) (padding after), (B,T,d)
                     n:Tensor, # real tokens per row, (B,)
                     dtype=None) -> dict: # the state after each row's n_b tokens, in `dtype` (default h's)
        "State after a prefix. This default consumes it token by token (rows without padding only)."
        B, T, d = h.shape
        if not bool((n == T).all()):
            raise ValueError(f"{type(self).__name__} has no padded-prefix rule: pass prompts of equal length (no padding)")
        st = self.init_state(B, d, device=h.device, dtype=dtype or h.dtype)
        for t in range(T): _, st = self.step(st, h[:, t])
        return st
    def step(self, state:dict, h_t:Tensor, # new token's hidden state, (B,d)
            ) -> tuple: # (xi_t (B,K,d) in h_t's dtype, new state)
        "Advance the streaming state by one token: O(1) in the sequence length."
        raise NotImplementedError
    def reset_parameters(self): "Re-initialise learnable parameters (called by the model's `_init_weights`)."
    def extra_repr(self): return f"n_channels={self.n_channels}"

def _check_step(pool, state, h_t):
    if not isinstance(h_t, Tensor) or h_t.dim() != 2: raise ValueError(f"h_t must have shape (B,d), got {tuple(getattr(h_t, 'shape', ()))}")
    if not isinstance(state, dict): raise TypeError(f"state must be the dict returned by {type(pool).__name__}.init_state")

# %%
#| export
def prefix_lags(n:Tensor, # real tokens per row, (B,)
                T:int) -> tuple: # (lag (B,T) = n_b - 1 - s clamped at 0, valid (B,T) = s < n_b)
    "How many tokens after position s each row's last real token is, for the one-pass prefix states."
    lag = n[:, None] - 1 - torch.arange(T, device=n.device)[None]
    return lag.clamp(min=0), lag >= 0

# %% [markdown]
# ## Cumulative mean
#
# The SPLM's original context (semsimula-paper@eb95852: `notebooks/conservative_arch/model.py`): the running average of the prefix, with 1-indexed position $t$,
#
# $$\xi_t = \frac{1}{t} \sum_{s \le t} h_s ,$$
#
# a cumulative sum divided by `arange(1, T+1)`. Streaming keeps the running sum $S_t = S_{t-1} + h_t$ and the count.

# %%
#| export
class CumulativeMeanPool(XiPool):
    "ξ_t = (1/t) Σ_{s≤t} h_s: one channel, computed with a cumulative sum."
    n_channels = 1
    def forward(self, h:Tensor, # hidden states, (B,T,d)
               ) -> Tensor: # xi, (B,T,1,d)
        check_h(h)
        B, T, d = h.shape
        x = h.to(_work_dtype(h))
        n = torch.arange(1, T + 1, device=h.device, dtype=x.dtype)
        return (x.cumsum(1) / n[:, None])[:, :, None, :].to(h.dtype)
    def dense_weights(self, T:int, device=None, dtype=torch.float64) -> Tensor: # (1,T,T)
        t = torch.arange(1, T + 1, device=device, dtype=dtype)
        return (torch.ones(T, T, device=device, dtype=dtype).tril() / t[:, None])[None]
    def init_state(self, B:int, d:int, device=None, dtype=torch.float32) -> dict:
        return {'sum': torch.zeros(B, d, device=device, dtype=dtype), 'n': torch.zeros(B, 1, device=device, dtype=dtype)}
    def prefix_state(self, h:Tensor, n:Tensor, dtype=None) -> dict:
        dtype = dtype or h.dtype
        _, valid = prefix_lags(n, h.shape[1])
        return {'sum': (h.to(dtype) * valid[..., None]).sum(1), 'n': n.to(dtype)[:, None]}
    def step(self, state:dict, h_t:Tensor) -> tuple:
        _check_step(self, state, h_t)
        s, n = state['sum'] + h_t.to(state['sum'].dtype), state['n'] + 1
        return (s / n).to(h_t.dtype)[:, None, :], {'sum': s, 'n': n}


# %% [markdown]
# A three-token example shows the definition directly:

# %%
h = torch.tensor([[[1., 10.], [3., 20.], [8., 0.]]])   # B=1, T=3, d=2
xi = CumulativeMeanPool()(h)
test_eq(xi.shape, (1, 3, 1, 2))
test_close(xi[0, :, 0], torch.tensor([[1., 10.], [2., 15.], [4., 10.]]), eps=1e-6)
xi[0, :, 0]


# %% [markdown]
# ## A stable O(T) linear scan
#
# The EMA and S4D pools both need, per channel $k$ with decay $a_k$ ($|a_k| < 1$, possibly complex),
#
# $$y_t = \sum_{s \le t} a_k^{\,t-s}\, x_s \quad\Longleftrightarrow\quad y_t = a_k\, y_{t-1} + x_t .$$
#
# The sequential recurrence costs $T$ dependent steps; the dense form costs $T^2$. The closed form
# $y_t = a^t \sum_{s\le t} a^{-s} x_s$ (a cumulative sum of rescaled inputs) would be O(T) but **is not stable**:
# $a^{-s}$ overflows and $a^{t}$ underflows as soon as $t \ln(1/|a|)$ exceeds a few hundred (α = 0.25 overflows float32
# after 64 tokens). `decay_scan` is a two-level (recursive) chunked scan in which every weight is $a^n$ with $n \ge 0$,
# so nothing can overflow:
#
# 1. cut the sequence into chunks of $C$ tokens (`chunk`, default 64) and solve each chunk densely with the
#    $C \times C$ matrix $a^{i-j}$ ($i \ge j$): cost $O(T C)$;
# 2. the state at the end of each chunk obeys the same recurrence with decay $a^C$ over the $T/C$ chunk ends: solve it
#    by calling `decay_scan` recursively;
# 3. add the carried-in state of the previous chunk, decayed by $a^{i+1}$, to position $i$ of each chunk.
#
# The total work is $O(T C)$ per channel and feature, the memory $O(T)$, and gradients flow to $\log a$ through plain
# `exp` and `einsum`. `log_a` is real for the EMA and complex for S4D.

# %%
#| export
def _decay_block(x:Tensor, # inputs, (N,C,K,d)
                 log_a:Tensor, # per-channel log decay, (K,)
                ) -> Tensor: # y_i = Σ_{j≤i} a^{i-j} x_j within the block, (N,C,K,d)
    "Dense solution of the decayed cumulative sum inside blocks of C ≤ chunk tokens."
    C = x.shape[1]
    i = torch.arange(C, device=x.device)
    lag = i[:, None] - i[None, :]
    W = torch.exp(lag.clamp(min=0).to(log_a.real.dtype)[None] * log_a[:, None, None])
    W = W * (lag >= 0).to(W.real.dtype)[None]                              # (K,C,C), a^(i-j) for i ≥ j
    return torch.einsum('kij,njkd->nikd', W.to(x.dtype), x)

def decay_scan(x:Tensor, # inputs, (B,T,K,d), real or complex
               log_a:Tensor, # per-channel log decay ln a_k, (K,); Re ≤ 0
               chunk:int=64, # block length of the two-level scan
              ) -> Tensor: # y_t = Σ_{s≤t} a_k^{t-s} x_s, (B,T,K,d)
    "Decayed causal cumulative sum along axis 1, per channel, in O(T·chunk) time and O(T) memory."
    if x.dim() != 4: raise ValueError(f"x must have shape (B,T,K,d), got {tuple(x.shape)}")
    B, T, K, d = x.shape
    if log_a.shape != (K,): raise ValueError(f"log_a must have shape ({K},) to match x's {K} channels, got {tuple(log_a.shape)}")
    if chunk < 2: raise ValueError(f"chunk must be ≥ 2, got {chunk}")
    if T <= chunk: return _decay_block(x, log_a)
    n = -(-T // chunk)
    if n * chunk > T: x = torch.cat([x, x.new_zeros(B, n * chunk - T, K, d)], 1)   # causal: padding at the end
    local = _decay_block(x.reshape(B * n, chunk, K, d), log_a).reshape(B, n, chunk, K, d)
    carry = decay_scan(local[:, :, -1], chunk * log_a, chunk)              # state at the end of every chunk, (B,n,K,d)
    prev = torch.cat([carry.new_zeros(B, 1, K, d), carry[:, :-1]], 1)      # state entering every chunk
    p = torch.arange(1, chunk + 1, device=x.device).to(log_a.real.dtype)
    decay_in = torch.exp(p[:, None] * log_a[None]).to(x.dtype)            # a^(i+1), (chunk,K)
    y = local + decay_in[None, None, :, :, None] * prev[:, :, None]
    return y.reshape(B, n * chunk, K, d)[:, :T]

# %%
#| export
def ema_scan(h:Tensor, # one real input shared by all channels, (B,T,d)
             log_a:Tensor, # per-channel log decay ln a_k, (K,); ≤ 0
             scale:Optional[Tensor]=None, # per-position, per-channel factor applied to the sums (e.g. 1/Z_t), (T,K)
             chunk:int=32, # block length
            ) -> Tensor: # scale_tk · Σ_{s≤t} a_k^{t-s} h_s, (B,T,K,d)
    "`decay_scan` for an input shared by the K channels, as one batched matmul per block that writes (B,T,K,d) directly."
    B, T, d = h.shape
    K = log_a.shape[0]
    C = min(chunk, T)
    n = -(-T // C)
    if n * C > T: h = torch.cat([h, h.new_zeros(B, n * C - T, d)], 1)   # causal: padding at the end
    xc = h.reshape(B, n, C, d)
    i = torch.arange(C, device=h.device)
    lag = (i[:, None] - i[None, :]).to(log_a.dtype)
    W = torch.exp(lag.clamp(min=0)[:, None, :] * log_a[None, :, None]) * (lag >= 0)[:, None, :]    # a_k^(i-j), (C,K,C)
    if n > 1:   # the state entering each block: block-end sums, then the decayed scan over blocks
        e = torch.exp((C - 1 - i).to(log_a.dtype)[None, :] * log_a[:, None]).to(h.dtype) @ xc   # (B,n,K,d)
        carry = decay_scan(e, C * log_a, chunk)
        prev = torch.cat([carry.new_zeros(B, 1, K, d), carry[:, :-1]], 1)                     # (B,n,K,d)
        D = torch.diag_embed(torch.exp((i + 1).to(log_a.dtype)[:, None] * log_a[None, :]))    # a_k^(i+1) δ_kk', (C,K,K)
        W, xc = torch.cat([W, D], -1), torch.cat([xc, prev], 2)                              # (C,K,C+K), (B,n,C+K,d)
    W = W.reshape(C * K, -1)
    if scale is not None:   # fold the per-position factor into each block's matrix: one pass over the output
        sc = torch.cat([scale, scale.new_ones(n * C - T, K)], 0) if n * C > T else scale
        W = (sc.reshape(n, C * K, 1).to(W.dtype) * W[None])[None]                             # (1,n,C·K,C(+K))
    return (W.to(h.dtype) @ xc).reshape(B, n * C, K, d)[:, :T]

# %% [markdown]
# `decay_scan` equals the sequential recurrence, including across several levels of recursion (T = 300 with chunk 4
# recurses four times), for real and complex decays, and does not overflow where the naive closed form does:

# %%
torch.manual_seed(0)
def recurrence(x, a):
    y, out = torch.zeros_like(x[:, 0]), []
    for t in range(x.shape[1]): y = a[None, :, None] * y + x[:, t]; out.append(y)
    return torch.stack(out, 1)
x = torch.randn(2, 300, 3, 5, dtype=torch.float64)
a = torch.tensor([1e-6, 0.5, 0.999], dtype=torch.float64)
for chunk in (4, 7, 64, 512): test_close(decay_scan(x, a.log(), chunk), recurrence(x, a), eps=1e-11)
ac = torch.polar(torch.tensor([0.3, 0.9, 0.99], dtype=torch.float64), torch.tensor([0.5, -1.0, 3.0], dtype=torch.float64))
test_close(decay_scan(x.to(torch.complex128), ac.log(), 8), recurrence(x.to(torch.complex128), ac), eps=1e-11)
# the unstable closed form a^t Σ a^{-s} x_s overflows for α = 0.25 in float32 within 64 tokens; the scan stays exact
x32, la = x[:, :100].float(), torch.tensor([0.25, 0.5, 0.9]).log()
t = torch.arange(100.)[:, None]
naive = torch.exp(t * la)[None, :, :, None] * torch.cumsum(torch.exp(-t * la)[None, :, :, None] * x32, 1)
first_bad = (~naive[..., 0, :].isfinite()).any(0).any(-1).nonzero()[0].item()
print(f"naive closed form, α = 0.25, float32: first non-finite output at t = {first_bad}; scan finite everywhere:",
      bool(decay_scan(x32, la).isfinite().all()))
assert first_bad <= 64
test_close(decay_scan(x32, la), recurrence(x[:, :100], la.double().exp()).float(), eps=1e-5)

# %% [markdown]
# The EMA pool's channels all read the same input $h$, so `ema_scan` does the block step as one batched matmul per
# block, with the entering state appended as K extra columns and the normaliser $1/Z_t$ folded into the block
# matrices: the (B,T,K,d) output is written once, with no expanded copy of the input (the benchmark
# `bench/bench_xi_pools.py` measures the gain). It equals `decay_scan` on the expanded input, with and without padding,
# for decays from $10^{-6}$ to $1 - 10^{-6}$, and its gradients (input and decays) pass `gradcheck`:

# %%
torch.manual_seed(0)
la = torch.log(torch.tensor([1e-6, 0.5, 0.9, 1 - 1e-6], dtype=torch.float64))
for T, chunk in [(1, 4), (7, 4), (64, 16), (300, 32), (301, 8)]:
    h = torch.randn(2, T, 5, dtype=torch.float64)
    ref = decay_scan(h[:, :, None, :].expand(2, T, 4, 5), la, chunk)
    test_eq(ema_scan(h, la, chunk=chunk).shape, (2, T, 4, 5))
    test_close(ema_scan(h, la, chunk=chunk), ref, eps=1e-10)
    sc = torch.rand(T, 4, dtype=torch.float64)
    test_close(ema_scan(h, la, sc, chunk=chunk), ref * sc[None, :, :, None], eps=1e-10)
h = torch.randn(2, 37, 3, dtype=torch.float64, requires_grad=True)
l2 = torch.log(torch.tensor([0.3, 0.8], dtype=torch.float64)).requires_grad_()
assert torch.autograd.gradcheck(lambda a, b: ema_scan(a, b, torch.rand(37, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), chunk=8), (h, l2))

# %% [markdown]
# ## K-channel normalised EMA
#
# The multi-ξ SPLM (semsimula-paper@eb95852: `notebooks/conservative_arch/multixi/model_multixi.py`) uses $K$ exponential moving averages with different memories, each normalised so
# that its weights over the prefix sum to one:
#
# $$W_k[t,s] = \frac{\alpha_k^{\,t-s}}{\sum_{r \le t} \alpha_k^{\,t-r}}, \qquad
# \xi^k_t = \frac{S^k_t}{Z^k_t}, \quad S^k_t = \alpha_k S^k_{t-1} + h_t, \quad Z^k_t = \alpha_k Z^k_{t-1} + 1,$$
#
# with $\alpha_k$ (`alpha`) = sigmoid(`raw_alpha`$_k$) clamped to $[10^{-6}, 1 - 10^{-6}]$. The limits are the two
# simplest contexts: $\alpha \to 0$ gives $\xi_t = h_t$, $\alpha \to 1$ the cumulative mean. The numerator $S_t$ is a
# `decay_scan` with $\ln a = \ln\alpha_k$; the normaliser has the closed form
# $Z_t = (1 - \alpha^{t+1}) / (1 - \alpha)$ (0-indexed $t$), evaluated as `expm1((t+1) ln α) / expm1(ln α)` so that it
# stays accurate for α within $10^{-6}$ of 1, where $1 - \alpha^{t+1}$ would cancel catastrophically.
#
# `raw_alpha` is initialised to logit(clamp(α_init)), so α_init = 0 is allowed. Defaults: α_init = (0.25, 0.5, 0.75,
# 0.95), the winner of the reference's α-init sweep; the original R6.h.0 ladder used (0, 0.5, 0.9, 0.99), and
# `log_spaced_alphas(K, τ_max)` gives $\alpha_k = 1 - \tau_{\max}^{-k/(K-1)}$, $k = 0..K-1$: memories $1/(1-\alpha)$
# log-spaced from 1 to τ_max tokens.
#
# **Precision.** The reference kept `raw_alpha` in float32 even in a float64 model: it computed $\ln\alpha$ in float32
# and only then built the weights in the input's precision. `alpha_dtype=torch.float32` reproduces this; the
# default (`None`) computes α in the parameter's own dtype. (`tests/test_context_potentials.py` rebuilds the
# reference's multi-ξ fixtures from this pool and the potentials of the next chapter with it, within the tolerance that
# float32 rounding allows on any CPU — see `quirk_tolerance` in the Reference chapter — and checks that computing ln α
# in float64 instead misses them by far more than float64 round-off.)

# %%
#| export
ALPHA_MIN, ALPHA_MAX = 1e-6, 1 - 1e-6   # clamp of the EMA decays (semsimula-paper@eb95852: `notebooks/conservative_arch/multixi/`)
DEFAULT_ALPHA_INITS = (0.25, 0.5, 0.75, 0.95)

def log_spaced_alphas(K:int, # number of channels
                      tau_max:float=100.0, # longest memory 1/(1-α), in tokens
                     ) -> tuple: # α_k = 1 - τ_max^(-k/(K-1)), k = 0..K-1
    "EMA decays whose memories 1/(1-α_k) are log-spaced from 1 to `tau_max` tokens."
    check_positive_int('K', K)
    if not tau_max > 1: raise ValueError(f"tau_max must be > 1, got {tau_max}")
    if K == 1: return (0.0,)
    return tuple(1 - tau_max ** (-k / (K - 1)) for k in range(K))


# %%
#| export
class EMAPool(XiPool):
    "K normalised causal EMAs, W_k[t,s] = α_k^(t-s) / Σ_{r≤t} α_k^(t-r), with α_k = sigmoid(raw_alpha_k)."
    def __init__(self, alpha_inits:Sequence[float]=DEFAULT_ALPHA_INITS, # initial decays, one per channel, in [0, 1]
                 learnable:bool=True, # train raw_alpha
                 alpha_dtype:Optional[torch.dtype]=None, # dtype in which α and ln α are computed (None: raw_alpha's)
                 chunk:int=32): # block length of the O(T) scan
        super().__init__()
        inits = [float(a) for a in (alpha_inits.tolist() if isinstance(alpha_inits, Tensor) else alpha_inits)]
        if not inits: raise ValueError("alpha_inits must hold at least one decay")
        bad = [a for a in inits if not 0 <= a <= 1]
        if bad: raise ValueError(f"alpha_inits must lie in [0, 1], got {bad}")
        self.alpha_inits, self.n_channels, self.alpha_dtype, self.chunk = tuple(inits), len(inits), alpha_dtype, chunk
        self.raw_alpha = nn.Parameter(torch.empty(len(inits)), requires_grad=learnable)
        self.reset_parameters()
    @property
    def alpha(self) -> Tensor: return self.log_alpha().exp().detach()


# %%
#| export
@patch
def reset_parameters(self:EMAPool):
    a = torch.tensor(self.alpha_inits, dtype=torch.float64).clamp(ALPHA_MIN, ALPHA_MAX)
    with torch.no_grad(): self.raw_alpha.copy_(torch.log(a) - torch.log1p(-a))   # logit

@patch
def log_alpha(self:EMAPool, dtype=None) -> Tensor: # ln α_k, (K,), in `dtype`
    "ln α_k, computed in `alpha_dtype` (default the parameter's) and cast to `dtype`."
    raw = self.raw_alpha if self.alpha_dtype is None else self.raw_alpha.to(self.alpha_dtype)
    la = torch.log(torch.sigmoid(raw).clamp(ALPHA_MIN, ALPHA_MAX))
    return la if dtype is None else la.to(dtype)

@patch
def _log_norm(self:EMAPool, T, la, device):
    "Normaliser Z_t = Σ_{r≤t} α^r = expm1((t+1) ln α) / expm1(ln α), (T,K)."
    t1 = torch.arange(1, T + 1, device=device, dtype=la.dtype)[:, None]
    return torch.expm1(t1 * la[None]) / torch.expm1(la)[None]

@patch
def forward(self:EMAPool, h:Tensor, # hidden states, (B,T,d)
           ) -> Tensor: # xi, (B,T,K,d)
    check_h(h)
    B, T, d = h.shape
    x = h.to(_work_dtype(h))
    la = self.log_alpha(x.dtype).to(h.device)
    return ema_scan(x, la, 1 / self._log_norm(T, la, h.device), self.chunk).to(h.dtype)

@patch
def dense_weights(self:EMAPool, T:int, device=None, dtype=torch.float64) -> Tensor: # (K,T,T)
    "Log-space construction with logsumexp row normalisation, as in the reference."
    la = self.log_alpha(dtype).to(device)
    i = torch.arange(T, device=device)
    lag = (i[:, None] - i[None, :]).to(dtype)
    logw = (lag[None] * la[:, None, None]).masked_fill((lag < 0)[None], float('-inf'))
    return (logw - torch.logsumexp(logw, -1, keepdim=True)).exp()

@patch
def stream_constants(self:EMAPool, device=None, dtype=torch.float64) -> dict: # ln α_k and α_k, (K,) each
    la = self.log_alpha(dtype).detach().to(device)
    return {'la': la, 'a': la.exp()}


# %%
#| export
@patch
def init_state(self:EMAPool, B:int, d:int, device=None, dtype=torch.float32) -> dict:
    K = self.n_channels
    return {'S': torch.zeros(B, K, d, device=device, dtype=dtype), 'Z': torch.zeros(B, K, device=device, dtype=dtype),
            'const': self.stream_constants(device, dtype)}

@patch
def prefix_state(self:EMAPool, h:Tensor, n:Tensor, dtype=None) -> dict:
    "S_k = Σ_{s<n} α_k^(n-1-s) h_s and Z_k = Σ_{r<n} α_k^r = expm1(n ln α_k)/expm1(ln α_k), per row, in one pass."
    dtype = dtype or h.dtype
    c = self.stream_constants(h.device, dtype)
    lag, valid = prefix_lags(n, h.shape[1])
    W = torch.exp(lag[..., None].to(dtype) * c['la']) * valid[..., None]        # α_k^(n-1-s), (B,T,K)
    Z = torch.expm1(n[:, None].to(dtype) * c['la']) / torch.expm1(c['la'])      # (B,K)
    return {'S': torch.einsum('btk,btd->bkd', W, h.to(dtype)), 'Z': Z, 'const': c}

@patch
def step(self:EMAPool, state:dict, h_t:Tensor) -> tuple:
    _check_step(self, state, h_t)
    c = state.get('const') or self.stream_constants(h_t.device, state['S'].dtype)
    S = c['a'][None, :, None] * state['S'] + h_t.to(state['S'].dtype)[:, None, :]
    Z = c['a'] * state['Z'] + 1
    return (S / Z[..., None]).to(h_t.dtype), {'S': S, 'Z': Z, 'const': c}

@patch
def extra_repr(self:EMAPool): return f"alpha_inits={self.alpha_inits}, learnable={self.raw_alpha.requires_grad}"


# %% [markdown]
# `log_spaced_alphas(4, 100)` reproduces the reference's (0, .785, .954, .99), and the initial decays survive the
# logit / sigmoid round trip (α_init = 0 becomes the clamp, 1e-6):

# %%
test_close(torch.tensor(log_spaced_alphas(4, 100)), torch.tensor([0., 0.7846, 0.9536, 0.99]), eps=1e-4)
pool = EMAPool()
test_eq(pool.raw_alpha.shape, (4,)); test_eq(pool.n_channels, 4)
test_close(pool.alpha, torch.tensor([0.25, 0.5, 0.75, 0.95]), eps=1e-6)
test_close(EMAPool((0., 1.)).alpha.double(), torch.tensor([1e-6, 1 - 1e-6], dtype=torch.float64), eps=1e-7)
pool


# %% [markdown]
# ## HiPPO-LegT
#
# The HiPPO-LegT pool (semsimula-paper@eb95852: `notebooks/conservative_arch/multixi/model_multixi.py`) keeps, for every feature, the first $K$ coefficients of a Legendre expansion
# of the recent past: a sliding window of about $\theta$ tokens projected onto orthogonal polynomials. It is the
# linear state-space model $\dot c = A c + B u$ with
#
# $$A_{nk} = -\sqrt{(2n+1)(2k+1)}\;\sigma_{nk}, \quad \sigma_{nk} = \begin{cases} 1 & n \ge k \\ (-1)^{n-k} & n < k \end{cases},
# \qquad B_n = \sqrt{2n+1}, \qquad n, k = 0, \dots, K-1,$$
#
# discretised with step $\Delta = 1/\theta$ (`dt`, θ = `theta`, 200 in the reference) by the bilinear (Tustin) rule
#
# $$\hat A = (I - \tfrac{\Delta}{2} A)^{-1} (I + \tfrac{\Delta}{2} A), \qquad \hat B = (I - \tfrac{\Delta}{2} A)^{-1} \Delta B,$$
#
# and applied to every feature independently as a causal convolution with the kernel $M[j] = \hat A^{j} \hat B \in
# \mathbb{R}^K$:
#
# $$\xi_t = c_t = \sum_{s \le t} M[t-s]\, h_s \quad (\text{channel } k \text{ of } \xi \text{ is component } k \text{ of } c),
# \qquad c_t = \hat A c_{t-1} + \hat B h_t .$$
#
# `forward` builds the kernel by repeated squaring ($\log_2 T$ products of $K \times K$ matrices, in float64) and
# convolves by FFT (length $2T$): $O(T \log T)$ time and $O(T)$ memory per channel. Streaming runs the recurrence.
# With `learnable_dt=True`, $\log \Delta$ is a parameter (`log_dt`) and the kernel is rebuilt, differentiably, at
# every call.

# %%
#| export
def legt_matrices(N:int, # state size (number of Legendre coefficients)
                  dtype=torch.float64, device=None) -> tuple: # (A (N,N), B (N,))
    "Continuous-time HiPPO-LegT matrices A_nk = -√((2n+1)(2k+1))·σ_nk, B_n = √(2n+1)."
    check_positive_int('N', N)
    n = torch.arange(N, dtype=dtype, device=device)
    r = torch.sqrt(2 * n + 1)
    sign = torch.where(n[:, None] >= n[None, :], torch.ones((), dtype=dtype, device=device), (-1.0) ** (n[:, None] - n[None, :]))
    return -r[:, None] * r[None, :] * sign, r

def bilinear(A:Tensor, # continuous transition, (N,N)
             B:Tensor, # continuous input map, (N,)
             dt:Tensor|float, # step Δ
            ) -> tuple: # (Â (N,N), B̂ (N,))
    "Tustin discretisation: Â = (I - Δ/2 A)⁻¹(I + Δ/2 A), B̂ = (I - Δ/2 A)⁻¹ Δ B."
    I = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    L = I - dt / 2 * A
    return torch.linalg.solve(L, I + dt / 2 * A), torch.linalg.solve(L, dt * B[:, None])[:, 0]

def ssm_kernel(Ad:Tensor, # discrete transition Â, (N,N)
               Bd:Tensor, # discrete input map B̂, (N,)
               T:int, # kernel length
              ) -> Tensor: # M[j] = Â^j B̂, (T,N)
    "Convolution kernel of the linear recurrence c_t = Â c_{t-1} + B̂ u_t, by repeated squaring."
    M, P = Bd[None], Ad
    while M.shape[0] < T:
        M = torch.cat([M, M @ P.T], 0)          # rows j + n: Â^n Â^j B̂
        P = P @ P
    return M[:T]

def causal_fft_conv(h:Tensor, # inputs, (B,T,d)
                    M:Tensor, # per-channel kernels, (T,K)
                   ) -> Tensor: # y_t = Σ_{s≤t} M[t-s] h_s, (B,T,K,d)
    "Causal convolution of every feature with K kernels, by FFT of length ≥ 2T."
    T = h.shape[1]
    n = 1 << (2 * T - 1).bit_length()
    Hf = torch.fft.rfft(h, n=n, dim=1)                                    # (B,F,d)
    Mf = torch.fft.rfft(M, n=n, dim=0)                                    # (F,K)
    return torch.fft.irfft(Hf[:, :, None, :] * Mf[None, :, :, None], n=n, dim=1)[:, :T]

# %%
#| export
def _kernel_device(device):
    "float64 kernels are built on the input's device, except on MPS (no float64 there)."
    return torch.device('cpu') if device is not None and torch.device(device).type == 'mps' else device

# %%
#| export
class HiPPOLegTPool(XiPool):
    "K Legendre coefficients of a sliding window of ~θ tokens (HiPPO-LegT, bilinear), by FFT convolution."
    def __init__(self, K:int=4, # number of channels = Legendre coefficients
                 theta:float=200.0, # window length θ in tokens; Δ = 1/θ
                 learnable_dt:bool=False): # learn log Δ
        super().__init__()
        check_positive_int('K', K)
        if not theta > 0: raise ValueError(f"theta must be > 0, got {theta}")
        self.n_channels, self.theta, self.learnable_dt = int(K), float(theta), learnable_dt
        if learnable_dt: self.log_dt = nn.Parameter(torch.tensor(math.log(1.0 / theta)))
        self.reset_parameters()


# %%
#| export
@patch
def reset_parameters(self:HiPPOLegTPool):
    if self.learnable_dt:
        with torch.no_grad(): self.log_dt.fill_(math.log(1.0 / self.theta))

@patch
def dt(self:HiPPOLegTPool, device=None) -> Tensor: # Δ, scalar float64
    "The discretisation step Δ (learnable or 1/θ)."
    if self.learnable_dt: return self.log_dt.to(device=device, dtype=torch.float64).exp()
    return torch.tensor(1.0 / self.theta, dtype=torch.float64, device=device)

@patch
def discrete(self:HiPPOLegTPool, device=None) -> tuple: # (Â (K,K), B̂ (K,)) in float64
    "Bilinear discretisation of the LegT matrices at the current Δ."
    dev = _kernel_device(device)
    A, B = legt_matrices(self.n_channels, torch.float64, dev)
    return bilinear(A, B, self.dt(dev))

@patch
def kernel(self:HiPPOLegTPool, T:int, device=None, dtype=torch.float64) -> Tensor: # M[j] = Â^j B̂, (T,K)
    Ad, Bd = self.discrete(device)
    return ssm_kernel(Ad, Bd, T).to(device=device, dtype=dtype)

@patch
def forward(self:HiPPOLegTPool, h:Tensor, # hidden states, (B,T,d)
           ) -> Tensor: # xi, (B,T,K,d)
    check_h(h)
    wd = _work_dtype(h)
    return causal_fft_conv(h.to(wd), self.kernel(h.shape[1], h.device, wd)).to(h.dtype)

@patch
def dense_weights(self:HiPPOLegTPool, T:int, device=None, dtype=torch.float64) -> Tensor: # (K,T,T), W_k[t,s] = M[t-s]_k
    M = self.kernel(T, device, dtype)
    i = torch.arange(T, device=device)
    lag = i[:, None] - i[None, :]
    return (M[lag.clamp(min=0)] * (lag >= 0)[..., None].to(dtype)).permute(2, 0, 1)


# %%
#| export
@patch
def stream_constants(self:HiPPOLegTPool, device=None, dtype=torch.float64) -> dict: # Â (K,K), B̂ (K,)
    Ad, Bd = self.discrete(device)
    return {'Ad': Ad.detach().to(device=device, dtype=dtype), 'Bd': Bd.detach().to(device=device, dtype=dtype)}

@patch
def init_state(self:HiPPOLegTPool, B:int, d:int, device=None, dtype=torch.float32) -> dict:
    return {'c': torch.zeros(B, self.n_channels, d, device=device, dtype=dtype), 'const': self.stream_constants(device, dtype)}

@patch
def prefix_state(self:HiPPOLegTPool, h:Tensor, n:Tensor, dtype=None) -> dict:
    "c = Σ_{s<n} Â^(n-1-s) B̂ h_s per row, from the pool's kernel, in one pass."
    dtype = dtype or h.dtype
    lag, valid = prefix_lags(n, h.shape[1])
    M = self.kernel(h.shape[1], h.device, torch.float64).detach().to(dtype)     # Â^j B̂, (T,K)
    return {'c': torch.einsum('btk,btd->bkd', M[lag] * valid[..., None], h.to(dtype)), 'const': self.stream_constants(h.device, dtype)}

@patch
def step(self:HiPPOLegTPool, state:dict, h_t:Tensor) -> tuple:
    _check_step(self, state, h_t)
    k = state.get('const') or self.stream_constants(h_t.device, state['c'].dtype)
    c = torch.einsum('nm,bmd->bnd', k['Ad'], state['c']) + k['Bd'][None, :, None] * h_t.to(state['c'].dtype)[:, None, :]
    return c.to(h_t.dtype), {'c': c, 'const': k}

@patch
def extra_repr(self:HiPPOLegTPool): return f"K={self.n_channels}, theta={self.theta}, learnable_dt={self.learnable_dt}"


# %% [markdown]
# Two exact identities check the construction. The kernel built by repeated squaring equals the powers $\hat A^j
# \hat B$ computed one by one; and because the bilinear rule preserves fixed points, the kernel sums to
# $(I - \hat A)^{-1}\hat B = -A^{-1}B = e_0$: a constant input is, after the window has filled, pure zeroth Legendre
# coefficient (the mean), with all higher coefficients zero.

# %%
pool = HiPPOLegTPool(4, theta=50.)
Ad, Bd = pool.discrete()
M = pool.kernel(3000)
seq = [Bd]
for _ in range(99): seq.append(Ad @ seq[-1])
test_close(M[:100], torch.stack(seq), eps=1e-13)
print('spectral radius of Â:', torch.linalg.eigvals(Ad).abs().max().item())
test_close(M.sum(0), torch.tensor([1., 0., 0., 0.], dtype=torch.float64), eps=1e-10)
A, B = legt_matrices(4)
test_close(-torch.linalg.solve(A, B), torch.tensor([1., 0., 0., 0.], dtype=torch.float64), eps=1e-12)
xi = pool(torch.ones(1, 600, 3))
test_close(xi[0, -1], torch.tensor([1., 0., 0., 0.])[:, None].expand(4, 3), eps=1e-5)

# %% [markdown]
# ## S4D
#
# The S4D pool (semsimula-paper@eb95852: `notebooks/conservative_arch/multixi/model_multixi.py`) is a *diagonal* complex state-space model: channel $k$ has its own eigenvalue
# $\lambda_k = -e^{\ell_k} + i\,\omega_k$ (`log_neg_re` = ℓ, `imag` = ω, the real part clamped to $\le -10^{-3}$), a
# real input weight $B_k$ (`B_proj`) and a shared learnable step $\Delta = e^{\log \Delta}$ (`log_dt`). Zero-order-hold
# discretisation gives
#
# $$\hat A_k = e^{\lambda_k \Delta}, \qquad \hat B_k = \frac{\hat A_k - 1}{\lambda_k} B_k, \qquad
# \xi^k_t = 2\,\mathrm{Re}\Big(\sum_{s \le t} \hat A_k^{\,t-s} \hat B_k\, h_s\Big),$$
#
# i.e. $W_k[t,s] = 2\,\mathrm{Re}(\hat B_k \hat A_k^{t-s})$: a damped oscillation over the lag. `forward` runs
# `decay_scan` with the complex decay $\ln \hat A_k = \lambda_k \Delta$; $\hat A - 1$ is computed as a complex
# `expm1` so that it keeps full precision when $|\lambda \Delta| \ll 1$. The parameters are $3K + 1$ numbers (13 at
# K = 4, the reference's count).
#
# Initialisation (`init`): `'legt'` takes the eigenvalues of the $K \times K$ LegT matrix $A$ above; they come in
# complex-conjugate pairs, and with a real $B$ the two members of a pair give *identical* channels (so the pool starts
# with about $K/2$ distinct signals, as the reference observed). `'lin'` is S4D-Lin: $\lambda_k = -\tfrac12 + i\pi(k +
# \tfrac12)$. In both, $B_k = 1$ and $\Delta = 1/\theta$ with θ = 200 (semsim's choice: the reference does not record
# its S4D Δ initialisation).

# %%
#| export
S4D_MIN_NEG_RE = 1e-3   # Re(λ) ≤ -1e-3 (semsimula-paper@eb95852: `notebooks/conservative_arch/multixi/`)

def cexpm1(z:Tensor) -> Tensor: # exp(z) - 1, accurate for small |z|, complex
    "Complex expm1: e^x cos y - 1 = expm1(x) cos y - 2 sin²(y/2), imaginary part e^x sin y."
    x, y = z.real, z.imag
    return torch.complex(torch.expm1(x) * torch.cos(y) - 2 * torch.sin(y / 2) ** 2, torch.exp(x) * torch.sin(y))

# %%
#| export
class S4DPool(XiPool):
    "Diagonal complex SSM (S4D, zero-order hold): ξ^k_t = 2 Re(Σ_{s≤t} Â_k^(t-s) B̂_k h_s)."
    def __init__(self, K:int=4, # number of channels (complex modes)
                 init:str='legt', # 'legt' (LegT eigenvalues) or 'lin' (S4D-Lin)
                 theta:float=200.0, # Δ is initialised to 1/θ
                 chunk:int=64): # block length of the O(T) scan
        super().__init__()
        check_positive_int('K', K)
        if init not in ('legt', 'lin'): raise ValueError(f"init must be 'legt' or 'lin', got {init!r}")
        if not theta > 0: raise ValueError(f"theta must be > 0, got {theta}")
        self.n_channels, self.init, self.theta, self.chunk = int(K), init, float(theta), chunk
        self.log_neg_re, self.imag = nn.Parameter(torch.empty(K)), nn.Parameter(torch.empty(K))
        self.B_proj, self.log_dt = nn.Parameter(torch.empty(K)), nn.Parameter(torch.empty(()))
        self.reset_parameters()


# %%
#| export
@patch
def reset_parameters(self:S4DPool):
    K = self.n_channels
    if self.init == 'legt': lam = torch.linalg.eigvals(legt_matrices(K)[0])
    else: lam = torch.complex(torch.full((K,), -0.5, dtype=torch.float64), math.pi * (torch.arange(K, dtype=torch.float64) + 0.5))
    with torch.no_grad():
        self.log_neg_re.copy_(torch.log(-lam.real)); self.imag.copy_(lam.imag)
        self.B_proj.fill_(1.0); self.log_dt.fill_(math.log(1.0 / self.theta))

@patch
def eigenvalues(self:S4DPool) -> Tensor: # λ_k, (K,) complex
    "Continuous-time eigenvalues, real part clamped to ≤ -1e-3."
    return torch.complex(-self.log_neg_re.exp().clamp(min=S4D_MIN_NEG_RE), self.imag)

@patch
def discrete(self:S4DPool, dtype=torch.float64) -> tuple: # (ln Â (K,), B̂ (K,)), complex
    "ZOH discretisation: ln Â = λΔ, B̂ = expm1(λΔ)/λ · B, in the complex dtype matching `dtype`."
    lam = self.eigenvalues()
    la = lam * self.log_dt.exp()
    Bd = cexpm1(la) / lam * self.B_proj
    cd = torch.complex128 if dtype == torch.float64 else torch.complex64
    return la.to(cd), Bd.to(cd)

@patch
def forward(self:S4DPool, h:Tensor, # hidden states, (B,T,d)
           ) -> Tensor: # xi, (B,T,K,d)
    check_h(h)
    B, T, d = h.shape
    wd = _work_dtype(h)
    la, Bd = self.discrete(wd)
    s = decay_scan(h.to(la.dtype)[:, :, None, :].expand(B, T, self.n_channels, d), la.to(h.device), self.chunk)
    return (2 * (Bd.to(h.device)[None, None, :, None] * s).real).to(h.dtype)

@patch
def dense_weights(self:S4DPool, T:int, device=None, dtype=torch.float64) -> Tensor: # (K,T,T)
    la, Bd = (x.to(device) for x in self.discrete(dtype))
    i = torch.arange(T, device=device)
    lag = i[:, None] - i[None, :]
    W = 2 * (Bd[:, None, None] * torch.exp(lag.clamp(min=0).to(dtype)[None] * la[:, None, None])).real
    return W * (lag >= 0).to(dtype)[None]


# %%
#| export
@patch
def stream_constants(self:S4DPool, device=None, dtype=torch.float64) -> dict: # ln Â, Â, B̂, (K,) complex each
    la, Bd = (x.detach().to(device) for x in self.discrete(dtype))
    return {'la': la, 'A': la.exp(), 'Bd': Bd}

@patch
def init_state(self:S4DPool, B:int, d:int, device=None, dtype=torch.float32) -> dict:
    cd = torch.complex128 if dtype == torch.float64 else torch.complex64
    return {'s': torch.zeros(B, self.n_channels, d, device=device, dtype=cd), 'const': self.stream_constants(device, dtype)}

@patch
def prefix_state(self:S4DPool, h:Tensor, n:Tensor, dtype=None) -> dict:
    "s_k = Σ_{s<n} Â_k^(n-1-s) h_s per row (complex), in one pass."
    c = self.stream_constants(h.device, dtype or h.dtype)
    lag, valid = prefix_lags(n, h.shape[1])
    W = torch.exp(lag[..., None].to(c['la'].dtype) * c['la']) * valid[..., None]   # Â_k^(n-1-s), (B,T,K)
    return {'s': torch.einsum('btk,btd->bkd', W, h.to(c['la'].dtype)), 'const': c}

@patch
def step(self:S4DPool, state:dict, h_t:Tensor) -> tuple:
    _check_step(self, state, h_t)
    c = state.get('const') or self.stream_constants(h_t.device, state['s'].real.dtype)
    s = c['A'][None, :, None] * state['s'] + h_t.to(c['A'].dtype)[:, None, :]
    return (2 * (c['Bd'][None, :, None] * s).real).to(h_t.dtype), {'s': s, 'const': c}

@patch
def extra_repr(self:S4DPool): return f"K={self.n_channels}, init={self.init!r}, theta={self.theta}"


# %% [markdown]
# The S4D construction has exact identities too: `cexpm1` equals $e^z - 1$; at the `'legt'` init, the two channels of
# a conjugate pair are identical; and the fixed point for a constant input is $\xi^* = 2\,\mathrm{Re}(\hat B/(1 - \hat
# A)) = 2\,\mathrm{Re}(-B/\lambda)$.

# %%
z = torch.complex(torch.tensor([1e-9, -0.3, 2.0], dtype=torch.float64), torch.tensor([1e-9, 4.0, -1.0], dtype=torch.float64))
test_close(cexpm1(z), torch.exp(z) - 1, eps=1e-15)
pool = S4DPool(4, 'legt').double()
lam = pool.eigenvalues().detach()
print('LegT-initialised eigenvalues λ:', [f"{x.real:.2f}{x.imag:+.2f}i" for x in lam.tolist()])
torch.manual_seed(4)
xi = pool(torch.randn(2, 100, 3, dtype=torch.float64))
pairs = [(i, j) for i in range(4) for j in range(i + 1, 4) if abs(lam[i] - lam[j].conj()) < 1e-9]
test_eq(len(pairs), 2)
for i, j in pairs: test_close(xi[:, :, i], xi[:, :, j], eps=1e-12)
pool = S4DPool(3, 'lin', theta=5.).double(); pool.reset_parameters()   # float64 initial values
test_close(pool.eigenvalues().detach().imag, math.pi * (torch.arange(3) + 0.5).double(), eps=1e-12)
xi = pool(torch.ones(1, 3000, 1, dtype=torch.float64))[0, -1, :, 0]
test_close(xi, (2 * (-pool.B_proj / pool.eigenvalues()).real).detach(), eps=1e-9)
test_eq(sum(p.numel() for p in S4DPool(4).parameters()), 13)


# %% [markdown]
# ## Tests: every pool equals its definition
#
# For each pool: `forward` equals `forward_dense` to 1e-5 relative (per channel) in float64 and in float32 (the
# float32 forward is compared with the float64 dense definition), the weights of every row sum to one where they
# should, no weight sits above the diagonal, changing later tokens leaves earlier outputs unchanged (bit for bit,
# except for the FFT of the LegT pool, where the change is at round-off, ~1e-16), and streaming with `step`
# reproduces `forward` at every position.
# Sequences of 300 tokens with `chunk=16` exercise two levels of the scan's recursion.

# %%
#| export
def make_xi_pool(kind:str, # 'cummean', 'ema', 'hippo_legt' or 's4d'
                 n_channels:int=1, # K
                 **kw) -> XiPool:
    "Build a context pool by name; keyword arguments go to its constructor."
    kind = str(kind).lower()
    if kind == 'cummean':
        if n_channels != 1: raise ValueError(f"the 'cummean' pool has exactly 1 channel, got n_channels={n_channels}")
        return CumulativeMeanPool(**kw)
    if kind == 'ema':
        inits = kw.pop('alpha_inits', None)
        tau_max = kw.pop('tau_max', None)
        if inits is None:
            inits = log_spaced_alphas(n_channels, tau_max) if tau_max is not None else (
                DEFAULT_ALPHA_INITS if n_channels == 4 else log_spaced_alphas(n_channels, 100.0))
        if len(inits) != n_channels: raise ValueError(f"alpha_inits has {len(inits)} values but n_channels={n_channels}")
        return EMAPool(inits, **kw)
    if kind == 'hippo_legt': return HiPPOLegTPool(n_channels, **kw)
    if kind == 's4d': return S4DPool(n_channels, **kw)
    raise ValueError(f"unknown xi pool kind {kind!r}: expected one of {XI_POOL_KINDS}")

XI_POOL_KINDS = ('cummean', 'ema', 'hippo_legt', 's4d')


# %%
def check_pool(pool, T=300, B=2, d=5, seed=0, tol=1e-5):
    "forward == dense definition (float64 and float32), causality, and streaming == forward."
    torch.manual_seed(seed)
    h = torch.randn(B, T, d, dtype=torch.float64)
    pool = pool.double()
    ref = pool.forward_dense(h)
    test_eq(pool(h).shape, (B, T, pool.n_channels, d))
    e64, e32 = rel_err(pool(h), ref), rel_err(pool.float()(h.float()), ref)
    pool.double()
    assert e64 < tol and e32 < tol, (type(pool).__name__, e64, e32)
    W = pool.dense_weights(T)
    test_eq(W.shape, (pool.n_channels, T, T)); test_eq(W.triu(1).abs().max().item(), 0.)
    # causality of the fast path itself: changing the future leaves the past untouched (exactly for cumsum and the
    # scans; to round-off for the FFT convolution, which mixes all positions numerically)
    h2 = h.clone(); h2[:, T // 2:] += 1.
    leak = (pool(h2)[:, :T // 2] - pool(h)[:, :T // 2]).abs().max().item()
    assert leak == 0. or (isinstance(pool, HiPPOLegTPool) and leak < 1e-13), (type(pool).__name__, leak)
    st, xs = pool.init_state(B, d, dtype=torch.float64), []
    for t in range(T): x_t, st = pool.step(st, h[:, t]); xs.append(x_t)
    es = rel_err(torch.stack(xs, 1), ref)
    # the one-pass state after a prefix of its own length per row, then the recurrence onwards (rows of different
    # lengths in one batch, as a left-padded prompt is after rolling)
    lens = torch.tensor([T // 3, T // 2, 1][:B] + [T // 4] * max(0, B - 3))
    st, rows = pool.prefix_state(h, lens, torch.float64), torch.arange(B)
    for j in range(T - int(lens.max())):
        x_t, st = pool.step(st, h[rows, lens + j])
        es = max(es, rel_err(x_t, ref[rows, lens + j]))
    assert es < 1e-10, (type(pool).__name__, 'stream', es)
    return e64, e32, es


# %%
for pool in [CumulativeMeanPool(), EMAPool(chunk=16), EMAPool((0., 0.5, 0.9, 0.99), chunk=16),
             make_xi_pool('ema', 3, tau_max=1000.), HiPPOLegTPool(4, theta=200.), HiPPOLegTPool(6, theta=40., learnable_dt=True),
             S4DPool(4, 'legt', chunk=16), S4DPool(5, 'lin', theta=20., chunk=16)]:
    e = check_pool(pool)
    print(f"{type(pool).__name__:18s} {pool.n_channels} ch   rel. error float64 {e[0]:.1e}  float32 {e[1]:.1e}  stream {e[2]:.1e}")
# normalised pools: every row of W sums to one
for pool in [CumulativeMeanPool(), EMAPool()]: test_close(pool.dense_weights(50).sum(-1), torch.ones(pool.n_channels, 50), eps=1e-12)

# %% [markdown]
# The two limits of the EMA are exact: α → 0 returns the token itself and α → 1 the cumulative mean (to the size of
# the clamp, $10^{-6}$ per token of lag):

# %%
torch.manual_seed(1)
h = torch.randn(2, 40, 3, dtype=torch.float64)
xi = EMAPool((0., 1.)).double()(h)
test_close(xi[:, :, 0], h, eps=1e-5)
test_close(xi[:, :, 1], CumulativeMeanPool()(h)[:, :, 0], eps=1e-4)

# %% [markdown]
# The scan stays exact on long sequences and extreme decays, where the weights of the small-α channels underflow to
# zero within a few tokens (T = 4096 in float32, against the float64 recurrence):

# %%
torch.manual_seed(2)
h = torch.randn(1, 4096, 4)
pool = EMAPool((0., 0.25, 0.99, 1.))
ref = recurrence(h.double()[:, :, None].expand(-1, -1, 4, -1), pool.log_alpha(torch.float64).exp())
ref = ref / pool._log_norm(4096, pool.log_alpha(torch.float64), 'cpu')[None, :, :, None]
err = rel_err(pool(h), ref)
print(f"T=4096 float32 relative error {err:.1e}")
assert err < 1e-5 and pool(h).isfinite().all()

# %% [markdown]
# Gradients reach `raw_alpha` through the scan and the normaliser, and equal those of the dense definition:

# %%
torch.manual_seed(3)
h = torch.randn(2, 150, 4, dtype=torch.float64)
pool = EMAPool(chunk=16).double()
w = torch.randn(2, 150, 4, 4, dtype=torch.float64)
g_fast, = torch.autograd.grad((pool(h) * w).sum(), pool.raw_alpha)
g_dense, = torch.autograd.grad((pool.forward_dense(h) * w).sum(), pool.raw_alpha)
test_close(g_fast, g_dense, eps=1e-9)
assert g_fast.abs().min() > 0
# and by finite differences on raw_alpha
eps = 1e-6
for k in range(4):
    with torch.no_grad():
        pool.raw_alpha[k] += eps; up = (pool(h) * w).sum()
        pool.raw_alpha[k] -= 2 * eps; dn = (pool(h) * w).sum()
        pool.raw_alpha[k] += eps
    test_close((up - dn).item() / (2 * eps), g_fast[k].item(), eps=1e-5)
g_fast

# %% [markdown]
# The same holds for the learnable parameters of the other pools: the gradient with respect to LegT's $\log\Delta$
# (through the matrix solve, the repeated squaring and the FFT) and to all four S4D parameter vectors (through the
# complex scan) equals the gradient of the dense definition:

# %%
torch.manual_seed(5)
h = torch.randn(2, 150, 3, dtype=torch.float64)
for pool in [HiPPOLegTPool(4, theta=30., learnable_dt=True).double(), S4DPool(4, 'legt', theta=20., chunk=16).double()]:
    with torch.no_grad():   # move away from the symmetric init so that every gradient is non-trivial
        for p in pool.parameters(): p.add_(0.1 * torch.randn_like(p))
    w = torch.randn(2, 150, pool.n_channels, 3, dtype=torch.float64)
    ps = list(pool.parameters())
    g_fast = torch.autograd.grad((pool(h) * w).sum(), ps)
    g_dense = torch.autograd.grad((pool.forward_dense(h) * w).sum(), ps)
    for name, a, b in zip([n for n, _ in pool.named_parameters()], g_fast, g_dense):
        test_close(a, b, eps=1e-9 * max(1., b.abs().max().item()))
        assert a.abs().max() > 0, name
    print(type(pool).__name__, {n: [round(x, 4) for x in g.reshape(-1).tolist()] for (n, _), g in zip(pool.named_parameters(), g_fast)})

# %% [markdown]
# ## The kernels
#
# The weight each pool gives to the token $j$ steps back, $W_k[t, t-j]$ at $t = 399$, per channel. The EMA channels
# are nested exponentials with memories $1/(1-\alpha_k)$ = 1.3, 2, 4 and 20 tokens; the LegT channels approximate
# the first four (shifted, scaled) Legendre polynomials over a window of θ = 200 tokens; the S4D channels are damped
# oscillations, identical in conjugate pairs at the LegT initialisation (dashed lines over solid ones). With only
# K = 4 coefficients the LegT window has a soft edge: about 10 % of the absolute weight lies beyond lag θ, and the
# leak shrinks as K grows (printed below).

# %%
T = 400
lags = torch.arange(T)
pools = {'EMA, α = (0.25, 0.5, 0.75, 0.95)': EMAPool(), 'HiPPO-LegT, θ = 200': HiPPOLegTPool(4, 200.),
         'S4D, LegT init, Δ = 1/200': S4DPool(4, 'legt'), 'S4D-Lin, Δ = 1/200': S4DPool(4, 'lin')}
fig, axs = plt.subplots(1, 4, figsize=(15, 3.2))
for ax, (name, pool) in zip(axs, pools.items()):
    W = pool.dense_weights(T).detach()[:, -1].flip(-1)     # (K, lag)
    for k in range(pool.n_channels): ax.plot(lags, W[k], label=f'channel {k}', lw=1.4, ls='--' if 'S4D, LegT' in name and k % 2 else '-')
    ax.axhline(0, color='k', lw=0.5); ax.set(title=name, xlabel='lag t − s (tokens)')
    if 'EMA' in name: ax.set(xlim=(0, 60), ylabel='weight W_k[t, s]')
axs[0].legend(fontsize=8); plt.tight_layout(); plt.show()
shares = []
for K in (4, 8, 16):
    W = HiPPOLegTPool(K, 200.).dense_weights(600)[:, -1].flip(-1).abs()
    shares.append([(W[:, j:].sum() / W.sum()).item() for j in (200, 300)])
    print(f"LegT K = {K:2d}: share of |weight| beyond lag θ = {shares[-1][0]:.3f}, beyond 1.5 θ = {shares[-1][1]:.4f}")
assert shares[0][0] < 0.1 and shares[0][1] < 0.02 and shares[2][0] < shares[1][0] < shares[0][0]

# %% [markdown]
# ## Linear cost, any length
#
# No pool forms a $T \times T$ matrix, so long sequences are cheap: T = 100,000 tokens (the dense weights would need
# 4 × 10¹⁰ numbers, 160 GB in float32) run in a fraction of a second on a CPU, and the EMA still equals its
# definition at the end of the sequence. Half-precision inputs are computed in float32 and returned in their dtype.

# %%
torch.manual_seed(6)
h = torch.randn(1, 100_000, 2)
for kind, K in [('cummean', 1), ('ema', 4), ('hippo_legt', 4), ('s4d', 4)]:
    pool = make_xi_pool(kind, K)
    t0 = time.perf_counter(); xi = pool(h); dt_ = time.perf_counter() - t0
    assert xi.shape == (1, 100_000, K, 2) and xi.isfinite().all()
    print(f"{kind:10s} T = 100,000: {dt_ * 1e3:6.0f} ms")
pool = EMAPool()
w = torch.exp(torch.arange(99_999, -1, -1, dtype=torch.float64)[:, None] * pool.log_alpha(torch.float64))   # α^(T-1-s), (T,K)
ref = torch.einsum('sk,bsd->bkd', w / w.sum(0), h.double())                 # the definition at the last position
test_close(pool(h)[:, -1].double(), ref, eps=1e-5)
for kind, K in [('cummean', 1), ('ema', 4), ('hippo_legt', 4), ('s4d', 4)]:
    pool, hb = make_xi_pool(kind, K), h[:, :500].bfloat16()
    xb = pool(hb)
    test_eq(xb.dtype, torch.bfloat16)
    assert rel_err(xb, pool(hb.float())) < 1e-2

# %% [markdown]
# Bad input fails with a message that names the problem:

# %%
test_fail(lambda: EMAPool((0.5, 1.5)), contains='must lie in [0, 1]')
test_fail(lambda: EMAPool(()), contains='at least one')
test_fail(lambda: EMAPool()(torch.randn(3, 4)), contains='shape (B,T,d)')
test_fail(lambda: EMAPool()(torch.zeros(1, 3, 2, dtype=torch.long)), contains='floating')
test_fail(lambda: make_xi_pool('cummean', 4), contains='exactly 1 channel')
test_fail(lambda: make_xi_pool('ema', 3, alpha_inits=(0.1, 0.2)), contains='n_channels=3')
test_fail(lambda: make_xi_pool('gaussian', 2), contains='unknown xi pool kind')
test_fail(lambda: log_spaced_alphas(4, 1.0), contains='tau_max')
test_fail(lambda: EMAPool().step(EMAPool().init_state(1, 2), torch.randn(1, 1, 2)), contains='(B,d)')
test_fail(lambda: HiPPOLegTPool(0), contains='positive integer')
test_fail(lambda: HiPPOLegTPool(4, theta=-1.), contains='theta must be > 0')
test_fail(lambda: S4DPool(4, init='hippo'), contains="init must be 'legt' or 'lin'")
test_fail(lambda: decay_scan(torch.randn(2, 5, 3, 4), torch.zeros(2)), contains='to match x')
test_fail(lambda: S4DPool(2).step({'s': None}, torch.randn(2, 3, 4)), contains='(B,d)')
