# %% [markdown]
# # PARF-augmented SPLM
#
# > The framework's own pair force as the routing primitive: tokens feel V_θ(ξ, h) and a learned pair potential V_φ from every earlier token (or the k an ST-Gumbel router picks), one gradient, causal by two detach points.

# %%
#| default_exp parf

# %% [markdown]
# The SPLM (chapter *SPLM*) lets token $t$ see its prefix only through the pooled context $\xi_t$. The PARF-augmented
# SPLM (Q9c, "PARFLM"; semsimula-paper@eb95852: `notebooks/conservative_arch/parf/model_parf.py`) adds the
# Property-Attractive–Repulsive Force of the framework (chapter *Forces*, §PARF) lifted to hidden states: every earlier
# token $s < t$ is a source of a pair potential $V_\varphi(h_t, h_s)$. Per integration step $\ell$:
#
# $$\delta = h - h_{\text{prev}},\qquad \xi = \mathrm{pool}(\mathrm{sg}(h)),\qquad h^{\text{src}} = \mathrm{sg}(h),$$
# $$U = \sum_t V_\theta(\xi_t, h_t) + \sum_t \sum_{s<t} w_{ts}\, V_\varphi(h_t, h^{\text{src}}_s),\qquad f = -\nabla_h U,$$
# $$h_{\text{new}} = \mathrm{LN}\Big(h + \frac{\delta}{1+\Delta t\,\gamma} + \frac{\Delta t^2}{m(1+\Delta t\,\gamma)}\, f\Big),$$
#
# which is the SPLM's damped semi-implicit Euler step with the velocity read from the positions *after* the LN
# ($v = \delta/\Delta t$, `velocity='positions'`, chapter *Dynamics*), where em_ln keeps an unnormalised velocity
# buffer; without the LN the two are the same step. So the model is an `SPLMForCausalLM` whose force has one more
# term and whose presets set `velocity='positions'`. (semsim's first PARF build used the buffer; the measured
# live-vs-detach study below was run with it, and its command says so with `--set velocity=buffer`.) The structural
# pair potential:
#
# $$V_\varphi(h_t, h_s) = -C\,\frac{\Theta(\theta_t, \theta_s)\,\Phi(l_t, l_s)}{\sqrt{\lVert h_t - h_s\rVert^2 + \varepsilon^2}},\quad
#   \Phi = e^{-c_{ts}\lVert l_t - l_s\rVert^2},\quad c_{ts} = \mathrm{softplus}(\mathrm{MLP}_{1\to32\to1}(\lVert l_t - l_s\rVert^2)),$$
# $$\Theta = \tanh\!\big(w_2\cdot \mathrm{GELU}(W_q\theta_t + W_s\theta_s + W_d(\theta_t - \theta_s) + b_1) + b_2\big),\qquad l = W_l h,\ \theta = W_\theta h .$$
#
# | symbol | code | meaning |
# |---|---|---|
# | $V_\varphi$ | `V_phi` (`StructuralPairPotential`) | pair potential; `pair_energies(hq, hs)` gives every $V_\varphi(h_t, h_s)$, (B,T,S) |
# | $l = W_l h \in \mathbb{R}^{d_l}$ | `W_l`, `d_l` (16) | type coordinates of the type matcher Φ |
# | $\theta = W_\theta h \in \mathbb{R}^{K}$ | `W_theta`, `d_angle` (8) | value coordinates of the aligner Θ (the paper's $K$; semsim names it `d_angle` because `K` is the ξ channel count) |
# | $c_{ts}$ | `c_mlp` | learned per-pair inverse bandwidth |
# | $W_q, W_s, W_d, b_1, w_2, b_2$ | `W_q`, `W_s`, `W_d`, `b1`, `w2` | the aligner's MLP, hidden `vphi_hidden` (32) |
# | $C$, $\varepsilon$ | `pair_C` (1), `pair_eps` (1e-2) | strength and softening of the $1/r$ falloff |
# | $w_{ts}$ | `routing` | 1 for every $s<t$ (`'dense'`, Q9c) or the straight-through top-k mask (`'sparse'`) |
# | sg | `.detach()` | the two detach points: ξ's source and the pair source |
#
# Squared distances use the reference's expansion $\lVert a\rVert^2 + \lVert b\rVert^2 - 2a\cdot b$ clamped at 0, and
# every $V_\varphi$ weight starts at $\mathcal N(0, 0.02^2)$ (biases 0). The cost is $O(T^2)$ per step, like attention,
# so decoding keeps per-layer source states (a `PARFCache`): $O(T)$ work per token, no longer $O(1)$.
#
# **Causality.** The force on $h_t$ is the partial derivative in the *target slot*: the sources and ξ enter detached,
# so $f_t$ depends on $h_{s\le t}$ only through values. `causal_force=False` differentiates through them too — the
# historical leak, kept for forensics (the audit calls it LEAK and the trainer refuses it).
#
# **Live gradients** (`vphi_grad='live'`, like `xi_grad='live'` for ξ): the forward is identical, the force is still
# the target-slot partial (taken with respect to an alias of $h$ that appears only in the target slot), but the
# training gradient reaches earlier tokens through their role as sources ("gradient starvation" is the reference's
# name for what `'detach'` does).

# %%
#| hide
import warnings; warnings.filterwarnings('ignore', message='IProgress not found')
import math
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_fail, test_close
from semsim.causal import audit, causal_probe
from semsim.lm import output_cache
import json
from pathlib import Path
import pandas as pd
from scipy.stats import binomtest
import torch
torch.set_num_threads(1)

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
from fastcore.basics import patch

from semsim.core import check_positive_ints
from semsim.dynamics import integrate
from semsim.streaming import SPLMCache, state_dtype, rolled_prompt, prompt_readout, decode_ids, streaming_forward
from semsim.splm import SPLMConfig, SPLMForCausalLM, SHAKESPEARE_SIZES, TINYSTORIES_SIZES, SARF_LOGFREQ

# %% [markdown]
# ## The pair potential

# %%
#| export
def pair_sqdist(a:Tensor, # targets, (B,T,k)
                b:Tensor, # sources, (B,S,k)
               ) -> Tensor: # ‖a_t − b_s‖², (B,T,S)
    "Pairwise squared distances by ‖a‖² + ‖b‖² − 2a·b, clamped at 0 (the reference's expansion)."
    return (a.pow(2).sum(-1)[..., :, None] + b.pow(2).sum(-1)[..., None, :] - 2 * a @ b.transpose(-1, -2)).clamp_min(0)

class StructuralPairPotential(nn.Module):
    "V_φ(h_t, h_s) = −C·Θ(θ_t, θ_s)·Φ(l_t, l_s)/√(‖h_t − h_s‖² + ε²), the §1.3 PARF law lifted to hidden states."
    def __init__(self, d:int, # width of h
                 d_l:int=16, d_angle:int=8, # type and value coordinates
                 hidden:int=32, c_hidden:int=32, # the aligner's and the bandwidth MLP's hidden widths
                 C:float=1.0, eps:float=1e-2, init_std:float=0.02):
        super().__init__()
        self.d, self.C, self.eps, self.init_std = d, C, eps, init_std
        self.W_l, self.W_theta = nn.Linear(d, d_l, bias=False), nn.Linear(d, d_angle, bias=False)
        self.c_mlp = nn.Sequential(nn.Linear(1, c_hidden), nn.GELU(), nn.Linear(c_hidden, 1))
        self.W_q, self.W_s, self.W_d = (nn.Linear(d_angle, hidden, bias=False) for _ in range(3))
        self.b1, self.w2 = nn.Parameter(torch.zeros(hidden)), nn.Linear(hidden, 1)
        self.reset_parameters()
    def reset_parameters(self):
        "Weights N(0, init_std²), biases 0."
        for p in self.parameters():
            if p.dim() > 1: nn.init.normal_(p, 0.0, self.init_std)
            else: nn.init.zeros_(p)
    def pair_energies(self, hq:Tensor, # targets h_t, (B,T,d)
                      hs:Tensor, # sources h_s, (B,S,d)
                     ) -> Tensor: # V_φ(h_t, h_s) for every pair, (B,T,S)
        "Every pair's energy (the mask is applied by the caller)."
        lq, ls = self.W_l(hq), self.W_l(hs)
        r2l = pair_sqdist(lq, ls)
        phi = torch.exp(-F.softplus(self.c_mlp(r2l[..., None]))[..., 0] * r2l)
        tq, ts = self.W_theta(hq), self.W_theta(hs)   # W_d(θ_t − θ_s) = W_d θ_t − W_d θ_s: split by slot
        pre = (self.W_q(tq) + self.W_d(tq))[..., :, None, :] + (self.W_s(ts) - self.W_d(ts))[..., None, :, :] + self.b1
        theta = torch.tanh(self.w2(F.gelu(pre))[..., 0])
        return -self.C * theta * phi / torch.sqrt(pair_sqdist(hq, hs) + self.eps ** 2)

# %% [markdown]
# At the reference's size (d 128) the pair potential has exactly its 4,002 parameters; the energy of a pair equals a
# direct evaluation of the formula (with $W_d(\theta_t-\theta_s)$ not split), and its analytic gradient matches finite
# differences:

# %%
torch.manual_seed(0)
vp = StructuralPairPotential(128)
test_eq(sum(p.numel() for p in vp.parameters()), 4_002)
vp = StructuralPairPotential(6, d_l=3, d_angle=2, hidden=5, c_hidden=4).double()
for p in vp.parameters(): p.data.normal_(0, 0.7)
hq, hs = torch.randn(1, 3, 6, dtype=torch.float64), torch.randn(1, 4, 6, dtype=torch.float64)
def direct(a, b):
    la, lb, ta, tb = vp.W_l(a), vp.W_l(b), vp.W_theta(a), vp.W_theta(b)
    r2 = (la - lb).pow(2).sum(); c = F.softplus(vp.c_mlp(r2[None]))[0]
    th = torch.tanh(vp.w2(F.gelu(vp.W_q(ta) + vp.W_s(tb) + vp.W_d(ta - tb) + vp.b1))[0])
    return -vp.C * th * torch.exp(-c * r2) / torch.sqrt((a - b).pow(2).sum() + vp.eps ** 2)
E = vp.pair_energies(hq, hs)
test_close(E[0, 1, 2], direct(hq[0, 1], hs[0, 2]), eps=1e-12)
torch.autograd.gradcheck(lambda a: vp.pair_energies(a, hs).sum(), (hq.clone().requires_grad_(),))
print('V_phi pairs:', E.shape, 'range', float(E.min()), float(E.max()))

# %% [markdown]
# ## Sparse routing
#
# `routing='sparse'` (SparsePARFLM) keeps, for every target, the $k$ sources a score head picks. The score head
# $\pi_{ts} = \mathrm{MLP}([h_t, h_s, h_t - h_s])$ (hidden 32) is perturbed by Gumbel noise $g = -\log(-\log u)$ in
# training, $z = (\pi + g)/\tau$, masked to $s < t$; the hard top-$k$ mask $m^{\text{hard}}$ is made differentiable by
# the straight-through estimator $\tilde m = \mathrm{sg}(m^{\text{hard}} - k\,y) + k\,y$ with $y = \mathrm{softmax}(z)$
# over the allowed sources. $\tau$ is 1.0 for the first 20 % of training, then falls linearly to 0.1
# (`tau_start`, `tau_hold`, `tau_end`; the trainer calls `set_training_progress`).
#
# **What the force is.** The forward value of $U$ uses $m^{\text{hard}}$ only, but $\tilde m$ carries $k\,y$, which
# depends on $h_t$ through the score head. So the force $-\partial U/\partial h_t$ is the exact gradient of the
# hard-masked energy **plus** a score-head term $-k\sum_s V_\varphi(h_t, h_s)\,\partial y_s/\partial h_t$. That term is
# not the gradient of any energy the forward computes; it is what lets the loss train the score head (through the
# second-order graph). semsim keeps it, in training and in evaluation alike, because the force *is* the forward
# computation of the next step. The tests below check both halves. Evaluation uses no noise, so it is deterministic.

# %%
#| export
class PairRouter(nn.Module):
    "Score head π([h_q, h_s, h_q − h_s]) for SparsePARFLM's top-k routing."
    def __init__(self, d:int, hidden:int=32, init_std:float=0.02):
        super().__init__()
        self.d, self.init_std = d, init_std
        self.lin1, self.lin2 = nn.Linear(3 * d, hidden), nn.Linear(hidden, 1)
        self.reset_parameters()
    def reset_parameters(self):
        for lin in (self.lin1, self.lin2): nn.init.normal_(lin.weight, 0.0, self.init_std); nn.init.zeros_(lin.bias)
    def scores(self, hq:Tensor, # targets, (B,T,d)
               hs:Tensor, # sources, (B,S,d)
              ) -> Tensor: # π, (B,T,S)
        "The score of every pair (the concatenation's first layer split by slot)."
        Wa, Wb, Wc = self.lin1.weight.split(self.d, 1)
        pre = F.linear(hq, Wa + Wc, self.lin1.bias)[..., :, None, :] + F.linear(hs, Wb - Wc)[..., None, :, :]
        return self.lin2(F.gelu(pre))[..., 0]

def straight_through_topk(pi:Tensor, # scores π, (B,T,S)
                          valid:Tensor, # allowed pairs, bool, broadcastable to pi (s < t)
                          k:int, # sources kept per target
                          tau:float, # temperature τ of y = softmax(z)
                          noise:bool=False, # add Gumbel noise (training)
                         ) -> Tensor: # m̃ = sg(m_hard − k·y) + k·y, (B,T,S); forward value m_hard
    "The straight-through Gumbel top-k mask over the allowed sources."
    z = pi
    if noise: z = pi - torch.log(-torch.log(torch.rand_like(pi).clamp(1e-10, 1 - 1e-10)))
    z = (z / tau).masked_fill(~valid, torch.finfo(pi.dtype).min)
    idx = z.topk(min(k, z.shape[-1]), dim=-1).indices
    hard = torch.zeros_like(z).scatter(-1, idx, 1.0) * valid     # rows with fewer than k allowed keep all of them
    y = torch.softmax(z, -1) * valid
    return (hard - k * y).detach() + k * y

# %%
torch.manual_seed(0)
pi = torch.randn(1, 6, 6); valid = torch.ones(6, 6).tril(-1).bool()
m = straight_through_topk(pi, valid, k=2, tau=0.5)
test_eq(m.detach().round().sum(-1)[0].tolist(), [0, 1, 2, 2, 2, 2])           # min(k, t) sources per target t
test_close(m.detach(), (torch.zeros_like(pi).scatter(-1, pi.masked_fill(~valid, -1e9).topk(2, -1).indices, 1.) * valid), eps=1e-6)
test_eq(bool((m.detach() * ~valid).abs().max() == 0), True)                    # nothing at s >= t
plt.figure(figsize=(3, 2.6)); plt.imshow(m.detach()[0], cmap='Greys'); plt.title('top-2 mask, s < t'); plt.xlabel('source s'); plt.ylabel('target t'); plt.show()

# %% [markdown]
# ## The configuration

# %%
#| export
PARF_SIZES = {**SHAKESPEARE_SIZES, 'v_hidden': 128}   # Q9c: d 128, L 8, max_len 256, V_θ hidden 128, depth 3
Q9C = {**PARF_SIZES, **SARF_LOGFREQ, 'ln_after_step': True, 'init_gamma': 0.15,   # free γ from 0.15, logfreq mass, LN,
       'velocity': 'positions'}                                                      # δ = h − h_prev after the LN

class PARFConfig(SPLMConfig):
    "SPLM configuration plus the PARF pair potential and its routing (semsimula-paper@eb95852: `parf/model_parf.py`, `PARFConfig`)."
    model_type = 'semsim-parf'
    # --- pair potential V_φ (structural)
    d_l: int = 16                   # type coordinates l = W_l h
    d_angle: int = 8                # value coordinates θ = W_θ h (the paper's K)
    vphi_hidden: int = 32           # hidden width of the value aligner Θ
    c_hidden: int = 32              # hidden width of the bandwidth MLP c(‖l_t − l_s‖²)
    pair_C: float = 1.0             # strength C
    pair_eps: float = 1e-2          # softening ε of 1/√(r² + ε²)
    vphi_grad: str = 'detach'       # training gradient through the pair source: 'detach' (the reference) or 'live'
    # --- routing
    routing: str = 'dense'          # 'dense': every s < t (Q9c); 'sparse': straight-through Gumbel top-k
    route_k: int = 4                # 'sparse': sources kept per target, k (not `top_k`: that name is a generation setting in transformers)
    score_hidden: int = 32          # 'sparse': hidden width of the score head π
    tau_start: float = 1.0          # 'sparse': τ during the hold
    tau_end: float = 0.1            # 'sparse': τ at the end of training
    tau_hold: float = 0.2           # 'sparse': fraction of training at tau_start before the linear anneal

# %%
#| export
@patch
def validate_semsim(self:PARFConfig):
    "Raise ValueError naming the first invalid field (the SPLM's checks, then the pair potential's)."
    SPLMConfig.validate_semsim(self)
    check_positive_ints(self, ('d_l', 'd_angle', 'vphi_hidden', 'c_hidden', 'route_k', 'score_hidden'))
    for k, allowed in (('vphi_grad', ('detach', 'live')), ('routing', ('dense', 'sparse'))):
        if getattr(self, k) not in allowed: raise ValueError(f"{k} must be one of {allowed}, got {getattr(self, k)!r}")
    for k in ('pair_eps', 'tau_start', 'tau_end'):
        v = getattr(self, k)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0): raise ValueError(f"{k} must be a finite number > 0, got {v!r}")
    if not (isinstance(self.pair_C, (int, float)) and math.isfinite(self.pair_C)): raise ValueError(f"pair_C must be a finite number, got {self.pair_C!r}")
    if not 0 <= self.tau_hold <= 1: raise ValueError(f"tau_hold must lie in [0, 1], got {self.tau_hold!r}")

PARFConfig.PRESETS = {
    'q9c': dict(Q9C),                                                 # PARF-augmented SPLM, dense pairs (6,535,718 params)
    'parf_sparse': {**Q9C, 'routing': 'sparse', 'route_k': 4},         # SparsePARFLM, k = 4
    # multi-ξ PARFLM: K = 8 log-spaced EMA channels, V_φ hidden 128, top-k 8, γ 0.30 fixed (TinyStories sizes)
    'parflm_multixi': {**TINYSTORIES_SIZES, **SARF_LOGFREQ, 'ln_after_step': True, 'velocity': 'positions', 'xi_pool': 'ema', 'xi_channels': 8,
                       'xi_tau_max': 1000.0, 'fixed_gamma': 0.30, 'vphi_hidden': 128, 'routing': 'sparse', 'route_k': 8},
}

# %% [markdown]
# ## The model

# %%
#| export
class PARFForCausalLM(SPLMForCausalLM):
    "SPLM whose force also has the PARF pair term Σ_{s<t} w_ts V_φ(h_t, sg(h_s)) (semsimula-paper@eb95852: `parf/model_parf.py`)."
    config_class = PARFConfig
    base_model_prefix = 'parf'

    def __init__(self, config:PARFConfig):
        c = config
        super().__init__(config)
        self.V_phi = StructuralPairPotential(c.d, c.d_l, c.d_angle, c.vphi_hidden, c.c_hidden, c.pair_C, c.pair_eps, c.init_std)
        if c.routing == 'sparse':
            self.router = PairRouter(c.d, c.score_hidden, c.init_std)
            self.register_buffer('route_tau', torch.tensor(float(c.tau_start)))   # saved: the ST force depends on τ
        self.post_init()

@patch
def _owners(self:PARFForCausalLM) -> tuple: # the SPLM's, then V_φ and the router (once they exist)
    return tuple(o for o in (self.V_theta, self.xi_module, getattr(self, 'V_phi', None), getattr(self, 'router', None)) if o is not None)

@patch
def set_training_progress(self:PARFForCausalLM, frac:float): # fraction of training done, in [0, 1]
    "The τ schedule: tau_start for the first tau_hold of training, then linear to tau_end."
    c = self.config
    if c.routing != 'sparse': return
    f = min(max(float(frac), 0.0), 1.0)
    tau = c.tau_start if f <= c.tau_hold else c.tau_start + (c.tau_end - c.tau_start) * (f - c.tau_hold) / max(1 - c.tau_hold, 1e-12)
    self.route_tau.fill_(tau)

# %%
#| export
@patch
def pair_energy(self:PARFForCausalLM, hq:Tensor, # targets, (B,T,d)
                hs:Tensor, # sources, (B,S,d)
                valid:Tensor, # allowed pairs, bool, broadcastable to (B,T,S)
               ) -> Tensor: # Σ_s w_ts V_φ(h_t, h_s), (B,T)
    "The PARF energy of every target: dense over the allowed sources, or through the straight-through top-k mask."
    V = self.V_phi.pair_energies(hq, hs)
    if self.config.routing == 'dense': w = valid.to(V.dtype)
    else: w = straight_through_topk(self.router.scores(hq, hs), valid, self.config.route_k, float(self.route_tau), self.training)
    return (w * V).sum(-1)

@patch
def _force(self:PARFForCausalLM, h:Tensor, # state, (B,T,d)
           st:dict) -> tuple: # (f (B,T,d), U (B,T))
    "f = −∂U/∂h in the target slot; ξ and the pair sources detached (causal), live for the gradient only, or live (leak)."
    c, cg, T = self.config, st['create_graph'], h.shape[1]
    with torch.enable_grad():
        if st['leak']: ht = xs = ps = h if (st['grad'] and h.requires_grad) else h.detach().requires_grad_(True)
        else:
            xs = h if (c.xi_grad == 'live' and st['grad']) else h.detach()
            ps = h if (c.vphi_grad == 'live' and st['grad']) else h.detach()
            ht = h.view_as(h) if (st['grad'] and h.requires_grad) else h.detach().requires_grad_(True)  # the alias
        if c.xi_fixed:
            if st['xi'] is None: st['xi'] = self.context(xs)
            xi = st['xi']
        else: xi = self.context(xs)
        valid = torch.ones(T, T, dtype=torch.bool, device=h.device).tril(-1)      # strict: s < t
        U = self.V_theta.energy(xi, ht) + self.pair_energy(ht, ps, valid)
        Ux, fx = self._extra_terms(ht, ps, st, None)             # a subclass's extra energy and non-conservative force
        if Ux is not None: U = U + Ux
        g, = torch.autograd.grad(U.sum(), ht, create_graph=cg, retain_graph=cg or fx is not None)
    f = -g if fx is None else fx - g
    if not st['grad']: f, U = f.detach(), U.detach()
    return f, U

@patch
def _energy(self:PARFForCausalLM, h:Tensor, st:dict) -> Tensor: # U at a state where no force is needed, (B,T)
    T = h.shape[1]
    xi = st['xi'] if self.config.xi_fixed else self.context(h.detach())
    with torch.enable_grad():
        U = self.V_theta.energy(xi, h) + self.pair_energy(h, h.detach(), torch.ones(T, T, dtype=torch.bool, device=h.device).tril(-1))
        Ux, _ = self._extra_terms(h, h.detach(), dict(st), None)   # a copy of st: the final energy advances no lifecycle
        if Ux is not None: U = U + Ux
    return U if st['grad'] else U.detach()

@patch
def _extra_terms(self:PARFForCausalLM, ht:Tensor, # targets (the alias), (B,T,d)
                 src:Tensor, # source states (detached, or live for the gradient), (B,T,d)
                 st:dict, # the integration's per-layer state
                 state:Optional[dict]) -> tuple: # None in the parallel pass; a layer's decode state in the cache
    "Hook for subclasses (Fock registers): (extra energy (B,T) or None, extra force (B,T,d) or None); PARF has none."
    return None, None

@patch
def _extra_prefill(self:PARFForCausalLM, hs:list, # positions h_0 ... h_L of the rolled prompt, (B,T,d) each
                   n:Tensor) -> list: # prompt lengths, (B,)
    "Hook for subclasses: the per-layer decode state (dicts of tensors) a prompt leaves in the cache; PARF has none."
    return []

# %% [markdown]
# At the reference's Shakespeare sizes Q9c has its 6,535,718 parameters (V_θ 66,049, V_φ 4,002):

# %%
with torch.device('meta'):
    full = PARFForCausalLM(PARFConfig.preset('q9c'))
n_par = lambda mod: sum(p.numel() for p in mod.parameters())
print(f"Q9c: {n_par(full):,} parameters (V_theta {n_par(full.V_theta):,}, V_phi {n_par(full.V_phi):,})")
test_eq((n_par(full), n_par(full.V_theta), n_par(full.V_phi)), (6_535_718, 66_049, 4_002))

# %% [markdown]
# The multi-ξ PARFLM preset at the TinyStories sizes comes to 9,513 parameters fewer than the reference's 17,632,215:
# its V_φ is `structural_competitive`, a variant whose extra parts the spec does not describe, so semsim builds the
# structural V_φ with hidden 128 and reports the gap rather than guessing:

# %%
with torch.device('meta'):
    mx = PARFForCausalLM(PARFConfig.preset('parflm_multixi'))
print(f"multi-ξ PARFLM: {n_par(mx):,} parameters (reference 17,632,215; gap {17_632_215 - n_par(mx):,})")
test_eq(n_par(mx), 17_622_702)

# %% [markdown]
# A tiny Q9c runs, is a Hugging Face model with the SPLM's outputs, and is causal: the leak audit (chapter *Causal
# probe*) finds it CLEAN, while `causal_force=False` is a LEAK. The force equals the finite difference of $U$ in the
# target slot with the sources held fixed:

# %%
#| export
TINY = dict(vocab_size=61, d=16, max_len=48, L=3, v_hidden=32, v_depth=2, d_l=4, d_angle=3, vphi_hidden=8, c_hidden=8)

# %%
torch.manual_seed(0)
m = PARFForCausalLM(PARFConfig(**{**Q9C, **TINY}))
m.set_logfreq_surprisal(torch.rand(61) * 8)
x = torch.randint(0, 61, (2, 12))
out = m(x, labels=x, output_mechanics=True, output_hidden_states=True)
test_eq(out.logits.shape, (2, 12, 61)); test_eq(len(out.hidden_states), 4); test_eq(out.mechanics.potentials.shape, (4, 2, 12))
print('loss', float(out.loss), '| audit:', audit(m).verdict)
test_eq(audit(m).verdict, 'CLEAN')
leaky = PARFForCausalLM(PARFConfig(**{**Q9C, **TINY, 'causal_force': False})); leaky.load_state_dict(m.state_dict())
test_eq(audit(leaky).verdict, 'LEAK')

# %%
torch.manual_seed(1)
md = PARFForCausalLM(PARFConfig(**{**Q9C, **TINY})).double().eval()
h = torch.randn(1, 5, 16, dtype=torch.float64)
st = {'leak': False, 'create_graph': False, 'grad': False, 'xi': None}
f, U = md._force(h, st)
def U_target(ht, t):  # U of target t with its own state varied and every source (and ξ) held at h
    xi = md.context(h); valid = torch.ones(5, 5, dtype=torch.bool).tril(-1)
    hh = h.clone(); hh[0, t] = ht
    return (md.V_theta.energy(xi, hh) + md.pair_energy(hh, h, valid))[0, t]
for t in (0, 3):
    e = torch.zeros(16, dtype=torch.float64); fd = torch.zeros(16, dtype=torch.float64)
    for i in range(16):
        e.zero_(); e[i] = 1e-6
        fd[i] = -(U_target(h[0, t] + e, t) - U_target(h[0, t] - e, t)) / 2e-6
    test_close(f[0, t], fd, eps=1e-7)

# %% [markdown]
# **Sparse routing, the two halves of its force.** With the score head's influence removed (its input detached) the
# force is exactly the gradient of the hard-masked energy; the ST force differs from it by the score-head term alone,
# which is non-zero:

# %%
torch.manual_seed(2)
ms = PARFForCausalLM(PARFConfig(**{**Q9C, **TINY, 'routing': 'sparse', 'route_k': 2})).double().eval()
for p in ms.router.parameters(): p.data.normal_(0, 0.5)
h = torch.randn(1, 6, 16, dtype=torch.float64)
st = {'leak': False, 'create_graph': False, 'grad': False, 'xi': None}
f_st, _ = ms._force(h, st)
valid = torch.ones(6, 6, dtype=torch.bool).tril(-1)
hard = straight_through_topk(ms.router.scores(h, h), valid, 2, float(ms.route_tau)).detach().round()
def U_hard(hh): return (ms.V_theta.energy(ms.context(h), hh) + (hard * ms.V_phi.pair_energies(hh, h)).sum(-1)).sum()
hh = h.clone().requires_grad_(); f_hard = -torch.autograd.grad(U_hard(hh), hh)[0]
hh = h.clone().requires_grad_()
y = torch.softmax((ms.router.scores(hh, h) / ms.route_tau).masked_fill(~valid, torch.finfo(h.dtype).min), -1) * valid
score_term = -torch.autograd.grad((2 * y * ms.V_phi.pair_energies(h, h)).sum(), hh)[0]
test_close(f_st, f_hard + score_term, eps=1e-10)                 # ST force = exact hard-mask gradient + score-head term
print('|score-head term| / |hard gradient| =', float(score_term.norm() / f_hard.norm()))
test_eq(float(score_term.norm()) > 1e-6, True)

# %% [markdown]
# ## Decoding with a cache
#
# The pair term needs the states of the earlier tokens at every force-evaluation layer, so the PARF cache holds, next
# to the SPLM's pool states, one (B, max_len, d) table of source states per layer: decoding a token costs $O(T)$ (its
# pairs) and the cache grows with the context, like attention's KV cache. Prefill runs the parallel forward once.

# %%
#| export
class PARFCache(SPLMCache):
    "SPLMCache plus the pair sources: every earlier token's state at each force-evaluation layer, (B,max_len,d) each."
    def __init__(self, states:list, pos:Tensor, n_seen:int, last_h:Tensor, sources:list, extra:Optional[list]=None):
        super().__init__(states, pos, n_seen, last_h)
        self.sources, self.extra = sources, extra or []   # extra: a subclass's per-layer decode state (dicts of (B,...) tensors)
    @property
    def nbytes(self) -> int:
        return (super().nbytes + sum(s[:, :self.max_pos].numel() * s.element_size() for s in self.sources)
                + sum(v.numel() * v.element_size() for e in self.extra for v in e.values()))
    def copy(self) -> 'PARFCache':
        return PARFCache([dict(s) for s in self.states], self.pos.clone(), self.n_seen, self.last_h, [s.clone() for s in self.sources],
                         [{k: v.clone() for k, v in e.items()} for e in self.extra])
    def _map_rows(self, fn):
        super()._map_rows(fn)
        self.sources = [fn(s) for s in self.sources]
        self.extra = [{k: fn(v) for k, v in e.items()} for e in self.extra]

# %%
#| export
@torch.no_grad()
def parf_prefill(model, input_ids:Tensor, # prompt, (B,T)
                 attention_mask:Optional[Tensor]=None, # (B,T): 1 token, 0 left padding
                 logits_to_keep:int=0) -> tuple: # (logits, PARFCache)
    "Run the prompt in one parallel pass; keep the pool states and every layer's source states."
    c = model.config
    if not c.causal_force: raise ValueError("causal_force=False (the leak) cannot be decoded with a cache: use use_cache=False")
    r_ids, n, shift = rolled_prompt(model, input_ids, attention_mask)
    B, T = r_ids.shape
    emb = model.E(r_ids)
    h0, m = model._ln(emb + model.P[:T]), model.mass(r_ids, emb)
    hs = model.integrate(h0, m, model.gamma())['positions']
    sdt = state_dtype(r_ids.device)
    states = [model.xi_module.prefix_state(hs[l], n, sdt) for l in ([0] if c.xi_fixed else range(c.L))]
    sources = [hs[0].new_zeros(B, c.max_len, c.d) for _ in range(c.L)]
    for l in range(c.L): sources[l][:, :T] = hs[l]
    last, logits = prompt_readout(model, hs[-1], n, shift, logits_to_keep)
    return logits, PARFCache(states, n.clone(), T, last, sources, model._extra_prefill(hs, n))

# %%
#| export
@torch.no_grad()
def parf_decode_step(model, cache:PARFCache, # state after the previous tokens (updated in place)
                     next_ids:Tensor, # one new token per row (B,), or several (B,n)
                    ) -> tuple: # (logits (B,n,V), cache)
    "Advance every row by its new token(s): the pool states in O(1), the pairs against the cached sources in O(T)."
    c = model.config
    ids = decode_ids(model, cache, next_ids)
    B, n = ids.shape
    gamma, pool, rows, out = model.gamma(), model.xi_module, torch.arange(B, device=ids.device), []
    for j in range(n):
        emb = model.E(ids[:, j:j + 1])
        h0, m = model._ln(emb + model.P[cache.pos][:, None]), model.mass(ids[:, j:j + 1], emb)
        S = cache.max_pos
        valid = (torch.arange(S, device=ids.device)[None] < cache.pos[:, None])[:, None, :]   # (B,1,S): this row's earlier tokens
        if c.xi_fixed: xi0, cache.states[0] = pool.step(cache.states[0], h0[:, 0])
        st = {'leak': False, 'create_graph': False, 'grad': False, 'xi': None}   # the token's own per-layer state
        def force(l, h):
            "Force at layer l from the pool state and the cached sources; then this token becomes a source."
            if c.xi_fixed: xi = xi0
            else: xi, cache.states[l] = pool.step(cache.states[l], h[:, 0])
            with torch.enable_grad():
                ht = h.detach().requires_grad_(True)
                U = model.V_theta.energy(xi.reshape(B, 1, -1), ht) + model.pair_energy(ht, cache.sources[l][:, :S], valid)
                Ux, fx = model._extra_terms(ht, h.detach(), st, cache.extra[l] if cache.extra else None)
                if Ux is not None: U = U + Ux
                g, = torch.autograd.grad(U.sum(), ht)
            cache.sources[l][rows, cache.pos] = h[:, 0]
            return (-g if fx is None else fx.detach() - g), None
        h = integrate(force, h0, m, gamma, c.dt, c.L, c.integrator, project=model._ln if c.ln_after_step else None,
                      final_force=False, velocity=c.velocity)['positions'][-1]
        cache.advance(h[:, 0])
        out.append(F.linear(h, model.E.weight))
    return torch.cat(out, 1), cache

# %%
#| export
@patch
def _stream(self:PARFForCausalLM, *args, **kwargs):
    "The forward with a PARFCache: parallel prefill, then one token at a time against the cached sources."
    return streaming_forward(self, *args, prefill=parf_prefill, decode=parf_decode_step, cache_cls=PARFCache, **kwargs)

AutoConfig.register(PARFConfig.model_type, PARFConfig, exist_ok=True)
AutoModelForCausalLM.register(PARFConfig, PARFForCausalLM, exist_ok=True)

# %% [markdown]
# Greedy `generate()` with the cache equals full recompute, for dense and sparse routing, with left padding:

# %%
for routing in ('dense', 'sparse'):
    torch.manual_seed(3)
    mg = PARFForCausalLM(PARFConfig(**{**Q9C, **TINY, 'routing': routing, 'route_k': 2})).double().eval()
    mg.set_logfreq_surprisal(torch.rand(61) * 8)
    prompt = torch.randint(1, 61, (2, 7)); mask = torch.ones_like(prompt); mask[1, :3] = 0; prompt[1, :3] = 0
    a = mg.generate(prompt, attention_mask=mask, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
    b = mg.generate(prompt, attention_mask=mask, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    test_eq(a.tolist(), b.tolist())
    full = mg(a[:1]).logits
    o = mg(a[:1, :5], use_cache=True); lg, cache = o.logits, output_cache(o)
    steps = [mg(a[:1, t:t + 1], cache=cache, use_cache=True).logits for t in range(5, a.shape[1])]
    torch.testing.assert_close(torch.cat([lg] + steps, 1), full, atol=1e-10, rtol=0)
    print(routing, 'cache equals recompute;', cache)

# %% [markdown]
# ## Live gradients through the pair source
#
# `vphi_grad='live'` (and `xi_grad='live'`) leave the forward bitwise identical and send a training gradient to the
# earlier tokens through their role as sources; `'detach'` sends none through them. In a one-step model with ξ
# detached, the last token's logits reach the first token's embedding only through the pair source:

# %%
def first_token_grad(vphi_grad):
    torch.manual_seed(4)
    mm = PARFForCausalLM(PARFConfig(**{**Q9C, **TINY, 'L': 1, 'vphi_grad': vphi_grad})).double().train()
    mm.set_logfreq_surprisal(torch.rand(61) * 8)
    emb = (mm.E(x[:1]) + 0).detach().requires_grad_()
    lg = mm(inputs_embeds=emb, input_ids=x[:1]).logits
    g, = torch.autograd.grad(lg[0, -1].sum(), emb)
    return lg.detach(), g[0, 0].norm()
(l_d, g_d), (l_l, g_l) = first_token_grad('detach'), first_token_grad('live')
test_eq(torch.equal(l_d, l_l), True)
print(f"gradient at token 0 from the last token's logits: detach {float(g_d):.2e}, live {float(g_l):.2e}")
test_eq(float(g_d), 0.0); test_eq(float(g_l) > 0, True)

# %% [markdown]
# ## Measured: PARF beside em_ln and MatchedGPT on Tiny Shakespeare (CPU)
#
# Five runs of the `demo` training recipe (d 64, L 4, V_θ hidden 128, compact vocabulary, 600 steps of 8 × 64 tokens,
# one seed, one thread each on a shared 2-core CPU), produced by the command recorded in
# `results/parf-shakespeare-cpu.json` (`tools/results.py parf-shakespeare-cpu`). The reference's anchors are at its
# own, much larger budget (4,000 steps at d 128), so only the ordering within this table is comparable, not the
# numbers across the two columns.

# %%
RESULTS = next(p/'results' for p in (Path.cwd(), *Path.cwd().parents) if (p/'results').is_dir())
pr = json.loads((RESULTS/'parf-shakespeare-cpu.json').read_text())
tab = pd.DataFrame([{'model': r['model'], 'parameters': r['params'], 'val PPL': round(r['val_ppl'], 2),
                     'tokens/s': round(r['tokens'] / r['elapsed_s']), 'reference PPL (4k steps, d 128)': pr['reference']['val_ppl'].get(r['model'])}
                    for r in pr['runs']]).set_index('model')
tab

# %%
order = tab['val PPL'].sort_values()
print('ordering at this budget:', ' < '.join(f"{m} {v:.1f}" for m, v in order.items()))
print(f"Q9c / em_ln val PPL: {tab.loc['parf-q9c', 'val PPL'] / tab.loc['splm-em-ln', 'val PPL']:.3f};  "
      f"sparse / Q9c: {tab.loc['parf-sparse', 'val PPL'] / tab.loc['parf-q9c', 'val PPL']:.3f};  "
      f"Q9c tokens/s relative to em_ln: {tab.loc['parf-q9c', 'tokens/s'] / tab.loc['splm-em-ln', 'tokens/s']:.2f}")

# %% [markdown]
# **The velocity form, measured.** The same models with `velocity='buffer'` (the em_ln form, which semsim's PARF used
# before its presets took the reference's δ-form; `results/parf-shakespeare-cpu-buffer.json`, same recipe, seed 0),
# beside the presets (Fock from `results/fock-shakespeare-cpu.json`). One seed each, and detached Q9c is known to be
# sensitive at this learning rate (the live-vs-detach study below has a seed that stalls), so this says which form
# trains better *here*, not in general:

# %%
bf = json.loads((RESULTS/'parf-shakespeare-cpu-buffer.json').read_text())
fk_pos = json.loads((RESULTS/'fock-shakespeare-cpu.json').read_text())['runs'][0]
pos = {r['model']: r['val_ppl'] for r in pr['runs'] + [fk_pos]}
vel = pd.DataFrame([{'model': r['model'], "velocity='buffer'": round(r['val_ppl'], 2), "velocity='positions' (preset)": round(pos[r['model']], 2)}
                    for r in bf['runs']]).set_index('model')
vel['positions / buffer'] = (vel["velocity='positions' (preset)"] / vel["velocity='buffer'"]).round(3)
vel

# %%
print(f"positions-form better on {int((vel['positions / buffer'] < 1).sum())} of {len(vel)} models at this recipe (seed 0)")
test_eq(set(vel.index), {'parf-q9c', 'parf-sparse', 'parflm-multixi', 'fock-parflm'})
assert (vel['positions / buffer'] > 1).all()   # the prose below: the buffer form is ahead on every model at this recipe

# %% [markdown]
# At this small, fast recipe the buffer form trains better on every PARF model (the count above). The presets keep the
# reference's δ-form, because the reference's numbers were made with it; `velocity='buffer'` is one flag away
# (`--set velocity=buffer`), and whether the gap survives the full recipe (d 128, 4,000 steps) and more seeds is
# open.

# %% [markdown]
# ### Live vs detach on Q9c
#
# Three seeds per mode at the same recipe (`make results-live-q9c`, `results/live-vs-detach-q9c.json`); `'live'`
# sets both paths live, ξ (`xi_grad`) and the pair source (`vphi_grad`):

# %%
lv_q = json.loads((RESULTS/'live-vs-detach-q9c.json').read_text())
df_q = pd.DataFrame([{'mode': r['config']['model_args'].get('vphi_grad', 'detach'), 'seed': r['config']['seed'], 'val PPL': r['val_ppl']}
                     for r in lv_q['runs']])
summ_q = df_q.groupby('mode')['val PPL'].agg(['mean', 'std', 'count']).round(2); summ_q

# %%
mq, sq = summ_q['mean'], summ_q['std']
gap_q = mq['live'] - mq['detach']
print(f"Q9c live - detach: {gap_q:+.2f} PPL; seed sd {sq['detach']:.2f} (detach), {sq['live']:.2f} (live); "
      f"gap / (2 max sd) = {abs(gap_q) / (2 * max(sq['detach'], sq['live'])):.2f}")
test_eq(list(summ_q['count']), [3, 3])

# %% [markdown]
# Unlike em_ln (chapter *SPLM*), Q9c responds to the live paths: live is ahead on every seed, at every evaluation.
# The paired gaps per seed, and the curves' first evaluation (step 100), where starvation should show first:

# %%
pair = df_q.pivot(index='seed', columns='mode', values='val PPL')
pair['live - detach'] = pair['live'] - pair['detach']
at100 = {(r['config']['model_args'].get('vphi_grad', 'detach'), r['config']['seed']): r['val_ppl_at']['100'] for r in lv_q['runs']}
pair['detach @100'] = [at100[('detach', s)] for s in pair.index]; pair['live @100'] = [at100[('live', s)] for s in pair.index]
p_sign = binomtest(int((pair['live - detach'] < 0).sum()), len(pair), alternative='greater').pvalue
print(pair.round(2)); print(f"live ahead on {int((pair['live - detach'] < 0).sum())}/{len(pair)} seeds; one-sided sign test p = {p_sign:.3f}")
g100 = pair['detach @100'] - pair['live @100']
print(f"step-100 lead of live: {g100.min():.0f} to {g100.max():.0f} PPL")
assert (pair['live - detach'] < 0).all() and 75 < g100.min() and g100.max() < 115

# %% [markdown]
# Live is ahead on all three seeds, by 14.6 and 37.1 PPL on seeds 1 and 2, and by far more on seed 0, where the
# detach run stalls between 640 and 735 PPL from step 200 on. (This study ran before the PARF presets took the
# reference's δ-form velocity, with `velocity='buffer'`, which its command records; the table above runs the presets.)
# At step 100 live is ahead on every seed by 77–113 PPL — the earliest evaluation, where the
# gradient-starvation reading predicts the gap. Three seeds cannot make it significant (the sign test's smallest
# p is 0.125), so the chapter records a consistent direction, matching the reference's 158.09 → 127.73, not a proven
# effect; the means carry the stalled seed and are not the summary to quote.
