# %% [markdown]
# # Context pools
#
# > Causal summaries ξ of the prefix — cumulative mean, K-channel normalised EMA, HiPPO-LegT and S4D — each computed in O(T) per channel, equal to its dense definition, and streamable one token at a time.

# %%
#| default_exp context

# %% [markdown]
# In a scalar-potential language model (SPLM) the energy of token $t$ depends on its own hidden state $h_t$ and on a
# *context* $\xi_t$ that summarises the prefix $h_1, \dots, h_t$ (REFERENCE §5.0, §5.4). Every context in semsim is a
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
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import matplotlib.pyplot as plt


# %% [markdown]
# ## The base class
#
# `XiPool` fixes the interface: `forward(h) -> xi` with `h` (B, T, d) and `xi` (B, T, K, d), `K = n_channels`;
# `dense_weights(T)` returns the (K, T, T) matrices of the definition; `forward_dense(h)` applies them (tests and
# benchmarks only: O(T²)); `init_state` / `step` run the same filter as a recurrence. `rel_err` is the error measure
# the tests use: the largest absolute difference divided by the largest absolute value of the reference, per channel.

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
    def init_state(self, B:int, d:int, device=None, dtype=torch.float32) -> dict:
        "Empty streaming state for a batch of B sequences of width d."
        raise NotImplementedError
    def step(self, state:dict, h_t:Tensor, # new token's hidden state, (B,d)
            ) -> tuple: # (xi_t (B,K,d), new state)
        "Advance the streaming state by one token: O(1) in the sequence length."
        raise NotImplementedError
    def reset_parameters(self): "Re-initialise learnable parameters (called by the model's `_init_weights`)."
    def extra_repr(self): return f"n_channels={self.n_channels}"

def _check_step(pool, state, h_t):
    if not isinstance(h_t, Tensor) or h_t.dim() != 2: raise ValueError(f"h_t must have shape (B,d), got {tuple(getattr(h_t, 'shape', ()))}")
    if not isinstance(state, dict): raise TypeError(f"state must be the dict returned by {type(pool).__name__}.init_state")


# %% [markdown]
# ## Cumulative mean
#
# The SPLM's original context (REFERENCE §5.0): the running average of the prefix, with 1-indexed position $t$,
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
        n = torch.arange(1, T + 1, device=h.device, dtype=h.dtype)
        return (h.cumsum(1) / n[:, None])[:, :, None, :]
    def dense_weights(self, T:int, device=None, dtype=torch.float64) -> Tensor: # (1,T,T)
        t = torch.arange(1, T + 1, device=device, dtype=dtype)
        return (torch.ones(T, T, device=device, dtype=dtype).tril() / t[:, None])[None]
    def init_state(self, B:int, d:int, device=None, dtype=torch.float32) -> dict:
        return {'sum': torch.zeros(B, d, device=device, dtype=dtype), 'n': torch.zeros((), device=device, dtype=dtype)}
    def step(self, state:dict, h_t:Tensor) -> tuple:
        _check_step(self, state, h_t)
        s, n = state['sum'] + h_t, state['n'] + 1
        return (s / n)[:, None, :], {'sum': s, 'n': n}


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
print('naive closed form finite:', bool(naive.isfinite().all()), '| scan finite:', bool(decay_scan(x32, la).isfinite().all()))
test_close(decay_scan(x32, la), recurrence(x[:, :100], la.double().exp()).float(), eps=1e-5)

# %% [markdown]
# ## K-channel normalised EMA
#
# The multi-ξ SPLM (REFERENCE §5.4) uses $K$ exponential moving averages with different memories, each normalised so
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
# and only then built the weights in the input's precision. `alpha_dtype=torch.float32` reproduces this exactly (the
# reference fixtures need it, to 1e-8); the default (`None`) computes α in the parameter's own dtype.

# %%
#| export
ALPHA_MIN, ALPHA_MAX = 1e-6, 1 - 1e-6   # clamp of the EMA decays (REFERENCE §10.8)
DEFAULT_ALPHA_INITS = (0.25, 0.5, 0.75, 0.95)

def log_spaced_alphas(K:int, # number of channels
                      tau_max:float=100.0, # longest memory 1/(1-α), in tokens
                     ) -> tuple: # α_k = 1 - τ_max^(-k/(K-1)), k = 0..K-1
    "EMA decays whose memories 1/(1-α_k) are log-spaced from 1 to `tau_max` tokens."
    if int(K) != K or K < 1: raise ValueError(f"K must be a positive integer, got {K}")
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
                 chunk:int=64): # block length of the O(T) scan
        super().__init__()
        inits = [float(a) for a in (alpha_inits.tolist() if isinstance(alpha_inits, Tensor) else alpha_inits)]
        if not inits: raise ValueError("alpha_inits must hold at least one decay")
        bad = [a for a in inits if not 0 <= a <= 1]
        if bad: raise ValueError(f"alpha_inits must lie in [0, 1], got {bad}")
        self.alpha_inits, self.n_channels, self.alpha_dtype, self.chunk = tuple(inits), len(inits), alpha_dtype, chunk
        self.raw_alpha = nn.Parameter(torch.empty(len(inits)), requires_grad=learnable)
        self.reset_parameters()
    def reset_parameters(self):
        a = torch.tensor(self.alpha_inits, dtype=torch.float64).clamp(ALPHA_MIN, ALPHA_MAX)
        with torch.no_grad(): self.raw_alpha.copy_(torch.log(a) - torch.log1p(-a))   # logit
    def log_alpha(self, dtype=None) -> Tensor: # ln α_k, (K,), in `dtype`
        "ln α_k, computed in `alpha_dtype` (default the parameter's) and cast to `dtype`."
        raw = self.raw_alpha if self.alpha_dtype is None else self.raw_alpha.to(self.alpha_dtype)
        la = torch.log(torch.sigmoid(raw).clamp(ALPHA_MIN, ALPHA_MAX))
        return la if dtype is None else la.to(dtype)
    @property
    def alpha(self) -> Tensor: return self.log_alpha().exp().detach()
    def _log_norm(self, T, la, device):
        "Normaliser Z_t = Σ_{r≤t} α^r = expm1((t+1) ln α) / expm1(ln α), (T,K)."
        t1 = torch.arange(1, T + 1, device=device, dtype=la.dtype)[:, None]
        return torch.expm1(t1 * la[None]) / torch.expm1(la)[None]
    def forward(self, h:Tensor, # hidden states, (B,T,d)
               ) -> Tensor: # xi, (B,T,K,d)
        check_h(h)
        B, T, d = h.shape
        la = self.log_alpha(h.dtype).to(h.device)
        S = decay_scan(h[:, :, None, :].expand(B, T, self.n_channels, d), la, self.chunk)
        return S / self._log_norm(T, la, h.device)[None, :, :, None]
    def dense_weights(self, T:int, device=None, dtype=torch.float64) -> Tensor: # (K,T,T)
        "Log-space construction with logsumexp row normalisation, as in the reference."
        la = self.log_alpha(dtype).to(device)
        i = torch.arange(T, device=device)
        lag = (i[:, None] - i[None, :]).to(dtype)
        logw = (lag[None] * la[:, None, None]).masked_fill((lag < 0)[None], float('-inf'))
        return (logw - torch.logsumexp(logw, -1, keepdim=True)).exp()
    def init_state(self, B:int, d:int, device=None, dtype=torch.float32) -> dict:
        K = self.n_channels
        return {'S': torch.zeros(B, K, d, device=device, dtype=dtype), 'Z': torch.zeros(K, device=device, dtype=dtype)}
    def step(self, state:dict, h_t:Tensor) -> tuple:
        _check_step(self, state, h_t)
        a = self.log_alpha(h_t.dtype).to(h_t.device).exp()
        S = a[None, :, None] * state['S'] + h_t[:, None, :]
        Z = a * state['Z'] + 1
        return S / Z[None, :, None], {'S': S, 'Z': Z}
    def extra_repr(self): return f"alpha_inits={self.alpha_inits}, learnable={self.raw_alpha.requires_grad}"


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
# ## Tests: every pool equals its definition
#
# For each pool: `forward` equals `forward_dense` to 1e-5 relative (per channel) in float64 and in float32 (the
# float32 forward is compared with the float64 dense definition), the weights of every row sum to one where they
# should, no weight sits above the diagonal, and streaming with `step` reproduces `forward` at every position.
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
    if kind in _EXTRA_POOLS: return _EXTRA_POOLS[kind](n_channels, **kw)
    raise ValueError(f"unknown xi pool kind {kind!r}: expected one of {['cummean', 'ema'] + sorted(_EXTRA_POOLS)}")

_EXTRA_POOLS = {}   # filled below by the pools defined later in this chapter


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
    # causality of the fast path itself: changing the future leaves the past untouched
    h2 = h.clone(); h2[:, T // 2:] += 1.
    test_eq((pool(h2)[:, :T // 2] - pool(h)[:, :T // 2]).abs().max().item(), 0.)
    st, xs = pool.init_state(B, d, dtype=torch.float64), []
    for t in range(T): x_t, st = pool.step(st, h[:, t]); xs.append(x_t)
    es = rel_err(torch.stack(xs, 1), ref)
    assert es < 1e-10, (type(pool).__name__, 'stream', es)
    return e64, e32, es


# %%
for pool in [CumulativeMeanPool(), EMAPool(chunk=16), EMAPool((0., 0.5, 0.9, 0.99), chunk=16),
             make_xi_pool('ema', 3, tau_max=1000.)]:
    e = check_pool(pool)
    print(f"{type(pool).__name__:20s} {pool.n_channels} ch   rel. error float64 {e[0]:.1e}  float32 {e[1]:.1e}  stream {e[2]:.1e}")
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
