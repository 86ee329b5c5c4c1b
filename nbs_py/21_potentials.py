# %% [markdown]
# # Potentials
#
# > The learned scalar energy V_θ(ξ, h): an MLP whose force comes from autograd, and the structured wells SQ1–SQ4 whose forces are closed-form, equal to autograd, with explicit attractor centres.

# %%
#| default_exp potentials

# %% [markdown]
# An SPLM moves every token's hidden state $h_t \in \mathbb{R}^d$ (code `h`, (B, T, d)) under one learned scalar
# energy $V_\theta(\xi_t, h_t)$, where $\xi_t \in \mathbb{R}^{D_\xi}$ (code `xi`, (B, T, D_xi)) is the causal context of
# the previous chapter with its $K$ channels flattened, $D_\xi = K d$ (`d_xi`). The force on token $t$ is
#
# $$f_t = -\frac{\partial V_\theta(\xi_t, h_t)}{\partial h_t} \in \mathbb{R}^d,$$
#
# a *partial* derivative: ξ is held fixed. (Differentiating through ξ as well, $-\partial_{h_t} \sum_s V(\xi_s(h), h_s)$,
# is the historical anti-causal leak of semsimula-paper@eb95852: `companion_notes/Causal_Leak_in_SPLM_Integrate_Bug_and_Fix.md`: token $t$'s state enters the context of later tokens $s > t$.
# The model reproduces that leak on request, by autograd through the pool; a potential never does it.)
#
# Every potential here is a `Potential` with
#
# - `energy(xi, h) -> V` (B, T), one energy per token;
# - `force(xi, h, create_graph=False) -> f` (B, T, d), $f = -\partial V / \partial h$ per token;
# - `energy_and_force(xi, h, create_graph=False) -> (V, f)`;
# - `closed_form`: True when the force is computed analytically (SQ1–SQ3), without autograd;
# - `attractor_centres(xi)`: the points the force pulls towards (SQ1–SQ4).
#
# `create_graph` decides whether the force can be differentiated further. Training passes `True`: the loss depends
# on the parameters of V_θ only through the force, so the force must carry a graph to them (a second-order graph
# for the MLP). Evaluation passes `False`, and the force (and energy) come back detached. The force also works inside
# `torch.no_grad()`: the autograd potentials switch gradients on internally.
#
# | potential | `kind` | energy $V(\xi, h)$ | force | parameters |
# |---|---|---|---|---|
# | `MLPPotential` | `'mlp'` | $\mathrm{MLP}([\xi; h])$ | autograd | (D_ξ+d)·H + (depth−1)·H² + H + … |
# | `SQ1Potential` | `'sq1'` | $\tfrac12 \sum_j a_j (h_j - \mu_j)^2 + b$ | $-a \odot (h-\mu)$ | 3 maps from ξ |
# | `SQ2Potential` | `'sq2'` | $\tfrac12 (h-\mu)^\top (U U^\top + \mathrm{diag}\,\lambda)(h-\mu) + b$ | $-U U^\top (h-\mu) - \lambda \odot (h - \mu)$ | + rank-r factor |
# | `SQ3Potential` | `'sq3'` | $-\tau \log \sum_k \pi_k e^{-E_k/\tau} + b$ | $-\sum_k q_k\, a_k \odot (h - \mu_k)$ | K wells |
# | `SQ4Potential` | `'sq4'` | $V_{SQ1} + \alpha\, V_{MLP}$ | analytic + autograd | SQ1 + small MLP + α |

# %%
#| export
from __future__ import annotations
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fastcore.basics import patch

from semsim.core import check_positive_int

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import os
from pathlib import Path
import matplotlib.pyplot as plt


# %% [markdown]
# ## The base class
#
# `Potential` holds the sizes, checks the inputs (a 4-D ξ of shape (B, T, K, d) is flattened for convenience) and
# implements `force` for both kinds of potential:
#
# - **autograd** (`closed_form = False`): the energy is evaluated on a fresh handle `hh` of `h` (a view of `h` when
#   `h` is part of a graph, a detached leaf otherwise) and $f = -\partial(\sum_{b,t} V) / \partial$ `hh`. Because `xi`
#   was computed before `hh` existed, no derivative flows through ξ even if ξ was built from the live `h`: the result
#   is the per-token partial derivative. The energy of token $t$ depends on $h_t$ only, so the gradient of the sum is
#   the per-token gradient.
# - **closed form** (`closed_form = True`): the subclass's `grad_h(xi, h)` computes $\partial V/\partial h$ with
#   ordinary tensor operations; with `create_graph=False` it runs under `torch.no_grad()`.

# %%
#| export
class Potential(nn.Module):
    "A scalar energy V(ξ, h) per token, with its force f = -∂V/∂h (B,T,d)."
    closed_form: bool = False   # True: `grad_h` is analytic and `force` uses no autograd
    def __init__(self, d_xi:int, # D_xi, width of the flattened context
                 d:int): # width of the hidden state
        super().__init__()
        check_positive_int('d_xi', d_xi); check_positive_int('d', d)
        self.d_xi, self.d = d_xi, d
    def check(self, xi:Tensor, # context, (B,T,D_xi) or (B,T,K,d')
              h:Tensor, # hidden states, (B,T,d)
             ) -> Tensor: # xi flattened to (B,T,D_xi)
        "Validate the shapes of `xi` and `h`, naming the problem; return ξ flattened."
        if not isinstance(h, Tensor) or h.dim() != 3: raise ValueError(f"h must have shape (B,T,d), got {tuple(getattr(h, 'shape', ()))}")
        if h.shape[-1] != self.d: raise ValueError(f"h has width {h.shape[-1]} but the potential was built for d={self.d}")
        xi = self.check_xi(xi)
        if xi.shape[:2] != h.shape[:2]: raise ValueError(f"xi {tuple(xi.shape)} and h {tuple(h.shape)} disagree on (B,T)")
        if not h.is_floating_point(): raise TypeError(f"h must be a floating tensor, got {h.dtype}")
        return xi
    def check_xi(self, xi:Tensor, # context, (B,T,D_xi) or (B,T,K,d')
                ) -> Tensor: # (B,T,D_xi)
        "Validate ξ alone (a 4-D ξ is flattened)."
        if not isinstance(xi, Tensor) or xi.dim() not in (3, 4): raise ValueError(f"xi must have shape (B,T,D_xi), got {tuple(getattr(xi, 'shape', ()))}")
        if xi.dim() == 4: xi = xi.flatten(-2)
        if xi.shape[-1] != self.d_xi: raise ValueError(f"xi has width {xi.shape[-1]} but the potential was built for d_xi={self.d_xi}")
        if not xi.is_floating_point(): raise TypeError(f"xi must be a floating tensor, got {xi.dtype}")
        return xi
    def energy(self, xi:Tensor, # context, (B,T,D_xi)
               h:Tensor, # hidden states, (B,T,d)
              ) -> Tensor: # V, (B,T)
        "Energy of every token."
        raise NotImplementedError


# %%
#| export
@patch
def grad_h(self:Potential, xi:Tensor, h:Tensor) -> Tensor: # ∂V/∂h, (B,T,d)
    "Analytic ∂V/∂h (closed-form potentials only)."
    raise NotImplementedError(f"{type(self).__name__} has no closed-form gradient; use force()")

@patch
def energy_and_grad(self:Potential, xi:Tensor, h:Tensor) -> tuple: # (V (B,T), ∂V/∂h (B,T,d))
    "Energy and analytic gradient together (subclasses share the work)."
    return self.energy(xi, h), self.grad_h(xi, h)

@patch
def _autograd(self:Potential, xi, h, create_graph):
    "(V, ∂V/∂h) by autograd on a fresh handle of h: the partial derivative, never through ξ."
    with torch.enable_grad():
        hh = h.view_as(h) if h.requires_grad else h.detach().requires_grad_(True)
        V = self.energy(xi, hh)
        g, = torch.autograd.grad(V.sum(), hh, create_graph=create_graph)
    return (V if create_graph else V.detach()), g

@patch
def energy_and_force(self:Potential, xi:Tensor, # context, (B,T,D_xi)
                     h:Tensor, # hidden states, (B,T,d)
                     create_graph:bool=False, # keep a graph through the force (training)
                     need_energy:bool=True, # False: a potential may skip V (returns None) when only f is needed
                    ) -> tuple: # (V (B,T), f (B,T,d))
    "Energy and force f = -∂V/∂h; detached unless `create_graph`."
    xi = self.check(xi, h)
    if self.closed_form:
        if create_graph: V, g = self.energy_and_grad(xi, h)
        else:
            with torch.no_grad(): V, g = self.energy_and_grad(xi, h)
    else: V, g = self._autograd(xi, h, create_graph)
    return V, -g


# %%
#| export
@patch
def force(self:Potential, xi:Tensor, # context, (B,T,D_xi)
          h:Tensor, # hidden states, (B,T,d)
          create_graph:bool=False, # keep a graph through the force (training)
         ) -> Tensor: # f = -∂V/∂h, (B,T,d)
    "Force on every token, -∂V(ξ_t, h_t)/∂h_t; detached unless `create_graph`."
    xi = self.check(xi, h)
    if not self.closed_form: return -self._autograd(xi, h, create_graph)[1]
    if create_graph: return -self.grad_h(xi, h)
    with torch.no_grad(): return -self.grad_h(xi, h)

@patch
def attractor_centres(self:Potential, xi:Tensor, # context, (B,T,D_xi)
                     ) -> Tensor: # centres, (B,T,n_wells,d)
    "Points the force pulls towards, per token."
    raise NotImplementedError(f"{type(self).__name__} has no closed-form attractor centres")

@patch
def reset_parameters(self:Potential): "Re-initialise the parameters (called by the model's `_init_weights`)."

@patch
def extra_repr(self:Potential): return f"d_xi={self.d_xi}, d={self.d}"


# %% [markdown]
# ## The MLP potential
#
# The reference's `ScalarPotential` (semsimula-paper@eb95852: `notebooks/conservative_arch/model.py`): the concatenation $[\xi; h] \in \mathbb{R}^{D_\xi + d}$ passes
# through `depth` hidden layers of width `hidden` with GELU, then a linear map to one number,
#
# $$V = w_{\text{out}}^\top\, \mathrm{GELU}(\cdots \mathrm{GELU}(W_1 [\xi; h] + b_1) \cdots) + b_{\text{out}}.$$
#
# `depth` counts hidden layers, so there are `depth + 1` Linear layers, at `net.0`, `net.2`, …, `net.{2·depth}` (the
# reference's `V_theta.net.N` names). Init: weights N(0, 0.02²), zero biases, and the last layer N(0, 0.002²), so the
# initial force is tiny. In training its force comes from autograd (the loss needs the second-order graph); with no
# graph to keep it comes from a hand-written backward pass (below).

# %%
#| export
def _normal_(lin:nn.Linear, std:float, bias:float=0.0):
    "Reference init: weight N(0, std²), constant bias."
    with torch.no_grad():
        lin.weight.normal_(0.0, std)
        if lin.bias is not None: lin.bias.fill_(bias)

class MLPPotential(Potential):
    "V = MLP([ξ; h]) with GELU; the force by autograd in training, by a hand-written backward pass otherwise."
    closed_form = False
    def __init__(self, d_xi:int, # D_xi
                 d:int, # hidden width d
                 hidden:int=512, # width of the hidden layers (v_hidden)
                 depth:int=3): # number of hidden layers (v_depth); depth+1 Linear layers
        super().__init__(d_xi, d)
        if hidden < 1 or depth < 1: raise ValueError(f"hidden and depth must be ≥ 1, got hidden={hidden}, depth={depth}")
        self.hidden, self.depth = hidden, depth
        layers = [nn.Linear(d_xi + d, hidden), nn.GELU()]
        for _ in range(depth - 1): layers += [nn.Linear(hidden, hidden), nn.GELU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 1))
        self.reset_parameters()
    def reset_parameters(self):
        lins = [m for m in self.net if isinstance(m, nn.Linear)]
        for m in lins[:-1]: _normal_(m, 0.02)
        _normal_(lins[-1], 0.002)
    def energy(self, xi:Tensor, h:Tensor) -> Tensor: # V, (B,T)
        xi = self.check(xi, h)
        lin, D = self.net[0], xi.shape[-1]   # W₁[ξ;h] + b₁ as two products, no concatenation: ∂V/∂h by autograd skips W₁'s ξ columns
        z = torch.addmm(torch.addmm(lin.bias, xi.reshape(-1, D), lin.weight[:, :D].t()), h.reshape(-1, self.d), lin.weight[:, D:].t())
        return self.net[1:](z).reshape(h.shape[:-1])
    def extra_repr(self): return f"d_xi={self.d_xi}, d={self.d}, hidden={self.hidden}, depth={self.depth}"


# %% [markdown]
# The reference's parameter counts come out exactly: 657,409 for the Shakespeare SPLM's V_θ (d = 128, single ξ,
# hidden 512, depth 3), and the state-dict keys are the reference's:

# %%
V = MLPPotential(128, 128, hidden=512, depth=3)
test_eq(sum(p.numel() for p in V.parameters()), 657_409)
test_eq([k for k in V.state_dict() if k.endswith('weight')], ['net.0.weight', 'net.2.weight', 'net.4.weight', 'net.6.weight'])
test_close(V.net[6].weight.std().item(), 0.002, eps=5e-4); test_close(V.net[0].weight.std().item(), 0.02, eps=1e-3)
test_eq(V.net[0].bias.abs().max().item(), 0.)
V

# %% [markdown]
# ### Forces without autograd
#
# Computing the force with `torch.autograd.grad` builds and walks a graph per evaluation — per layer and, when
# decoding, per token. For $V = w_{D}^\top \mathrm{GELU}(z_{D-1}) + b_D$, $z_i = W_i a_{i-1} + b_i$, $a_0 = [\xi; h]$,
# the force is the hand-written backward pass
#
# $$g_{D-1} = w_D, \qquad g_{i-1} = W_i^\top\big(g_i \odot \mathrm{GELU}'(z_i)\big), \qquad
#   f = -\big(W_1^\top (g_1 \odot \mathrm{GELU}'(z_1))\big)_{h}, \qquad \mathrm{GELU}'(z) = \Phi(z) + z\,\varphi(z),$$
#
# with $\Phi, \varphi$ the standard normal CDF and density (exact, erf GELU) and only the $h$ columns of $W_1$ used in
# the last product. It is the same arithmetic autograd would do, without the graph; $\Phi(z)$ is computed once per
# layer and gives both $\mathrm{GELU}(z) = z\,\Phi(z)$ for the next layer and $\mathrm{GELU}'(z)$ for the way back, and
# the first layer multiplies $\xi$ and $h$ by their own column blocks of $W_1$ instead of concatenating $[\xi; h]$.
# `MLPPotential.energy_and_force` uses it whenever no graph is kept (evaluation and decoding; the MLP half of SQ4
# with it), and autograd when `create_graph=True` (training). The decoding latencies it buys are measured in
# `bench/bench_vs_attention.py`. The energy itself also splits $W_1$ into its $\xi$ and $h$ column blocks, so that in
# training autograd's $\partial V/\partial h$ (and the second-order graph through it) skips the $\xi$ columns that a
# concatenation would make it differentiate and discard — the same function, measured in `bench/bench_train_profile.py`.
# (Differentiating *through* the hand-written pass instead was measured too, and is slower in training: the backward of
# its explicit GELU′ costs more than the product it saves.)

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

# %%
#| export
@patch
def energy_and_force(self:MLPPotential, xi:Tensor, # context, (B,T,D_xi)
                     h:Tensor, # hidden states, (B,T,d)
                     create_graph:bool=False, # keep the graph (training): autograd; else the manual backward pass
                     need_energy:bool=True, # False: skip V's last product (V is then None)
                    ) -> tuple: # (V (B,T), f (B,T,d))
    "Energy and force: autograd when a graph is kept, else the hand-written backward pass (no graph)."
    if create_graph: return Potential.energy_and_force(self, xi, h, True)
    xi = self.check(xi, h)
    with torch.no_grad(): return mlp_energy_and_force(self, xi, h, need_energy)

@patch
def force(self:MLPPotential, xi:Tensor, h:Tensor, create_graph:bool=False) -> Tensor: # f, (B,T,d)
    "Force on every token, -∂V/∂h (the manual backward pass unless a graph is kept)."
    return self.energy_and_force(xi, h, create_graph, need_energy=False)[1]

# %% [markdown]
# Tests, in float64 with weights large enough that the GELUs work in their curved region: `gelu_and_prime` equals
# `F.gelu` and autograd's derivative of it, and the no-graph MLP force equals autograd's; on any leading axes; and
# shapes that do not fit are refused.

# %%
torch.manual_seed(1)
z = torch.linspace(-6, 6, 101, dtype=torch.float64, requires_grad=True)
g, = torch.autograd.grad(F.gelu(z).sum(), z)
G, Gp = gelu_and_prime(z.detach())
test_close(G, F.gelu(z.detach()), eps=1e-14); test_close(Gp, g, eps=1e-14)   # GELU and autograd's GELU'
test_close(gelu_and_prime(z.detach().float())[1], g.float(), eps=1e-6)     # float32 too (its constants are cached per dtype)
pot = MLPPotential(12, 6, hidden=16, depth=3).double()
with torch.no_grad():
    for m in pot.modules():
        if isinstance(m, nn.Linear): m.weight.normal_(0, 0.5)
xi, hh = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
V, f = pot.energy_and_force(xi, hh)                                        # manual backward pass
V_ref, g_ref = pot._autograd(xi, hh, False)                                # autograd
test_close(V, V_ref, eps=1e-12); test_close(f, -g_ref, eps=1e-12 * g_ref.abs().max().item())
torch.testing.assert_close(pot.force(xi, hh), f, rtol=0, atol=0); test_eq(pot.energy_and_force(xi, hh, need_energy=False)[0], None)
with torch.no_grad(): V2, f2 = mlp_energy_and_force(pot, xi.reshape(-1, 12), hh.reshape(-1, 6))   # tokens flattened, (N, ·)
test_eq(f2.shape, (10, 6)); test_close(f2.reshape(2, 5, 6), f, eps=1e-12); test_close(V2.reshape(2, 5), V, eps=1e-12)
test_fail(lambda: mlp_energy_and_force(pot, xi[:, :4], hh), contains='leading axes')
test_fail(lambda: mlp_energy_and_force(pot, xi[..., :8], hh), contains='D_xi=12')
print(f"|f| max {g_ref.abs().max().item():.2f}, manual vs autograd max |Δf| {(f + g_ref).abs().max().item():.1e}")

# %% [markdown]
# ## SQ1: a diagonal quadratic well
#
# The simplest structured potential (semsimula-paper@44cc714: `notebooks/conservative_arch/parf/model_structured_vtheta.py`): one well per token whose centre, stiffness and offset are
# linear maps of the context,
#
# $$V = \tfrac12 \sum_{j=1}^d a_j (h_j - \mu_j)^2 + b, \qquad \frac{\partial V}{\partial h} = a \odot (h - \mu),$$
#
# $\mu$ = `mu_proj`(ξ) (centre, $\mathbb{R}^d$), $a$ = softplus(`a_proj`(ξ)) + 10⁻⁴ (stiffness, positive),
# $b$ = `b_proj`(ξ) (offset, which does not affect the force). Init: `mu_proj`, `a_proj` weights N(0, 0.02²), `b_proj`
# weight N(0, 0.002²), zero biases except `a_proj`'s, which is `init_a_bias` (0, so $a \approx \ln 2$). The only
# attractor is $\mu(\xi)$.

# %%
#| export
A_FLOOR = 1e-4   # a = softplus(.) + A_FLOOR keeps every well strictly convex

class SQ1Potential(Potential):
    "Diagonal quadratic well V = ½ Σ a (h-μ)² + b, with μ, a, b linear in ξ; closed-form force."
    closed_form = True
    def __init__(self, d_xi:int, d:int, init_a_bias:float=0.0): # bias of a_proj at init
        super().__init__(d_xi, d)
        self.init_a_bias = init_a_bias
        self.mu_proj, self.a_proj, self.b_proj = nn.Linear(d_xi, d), nn.Linear(d_xi, d), nn.Linear(d_xi, 1)
        self.reset_parameters()
    def reset_parameters(self):
        _normal_(self.mu_proj, 0.02); _normal_(self.a_proj, 0.02, self.init_a_bias); _normal_(self.b_proj, 0.002)
    def wells(self, xi:Tensor) -> tuple: # (μ (B,T,d), a (B,T,d), b (B,T))
        "Centre, stiffness and offset of the well for every token."
        return self.mu_proj(xi), F.softplus(self.a_proj(xi)) + A_FLOOR, self.b_proj(xi).squeeze(-1)
    def energy_and_grad(self, xi:Tensor, h:Tensor) -> tuple:
        mu, a, b = self.wells(xi)
        r = h - mu
        ar = a * r
        return 0.5 * (ar * r).sum(-1) + b, ar
    def energy(self, xi:Tensor, h:Tensor) -> Tensor: return self.energy_and_grad(self.check(xi, h), h)[0]
    def grad_h(self, xi:Tensor, h:Tensor) -> Tensor: return self.energy_and_grad(self.check(xi, h), h)[1]
    def attractor_centres(self, xi:Tensor) -> Tensor: return self.mu_proj(self.check_xi(xi))[..., None, :]   # (B,T,1,d)


# %% [markdown]
# ## SQ2: low-rank plus diagonal
#
# SQ2 lets the well's axes rotate: the stiffness matrix is a rank-$r$ term plus a diagonal,
#
# $$V = \tfrac12 (h-\mu)^\top A (h - \mu) + b, \quad A = U U^\top + \mathrm{diag}(\lambda), \qquad
# \frac{\partial V}{\partial h} = U\big(U^\top (h-\mu)\big) + \lambda \odot (h - \mu),$$
#
# with $U \in \mathbb{R}^{d \times r}$ = `u_proj`(ξ) reshaped to (d, r) (`rank` r = 4 by default), $\lambda$ = softplus(`a_proj`(ξ))
# + 10⁻⁴ and μ, b as in SQ1. $A$ is positive definite, so μ is still the unique minimum; the gradient costs
# $O(d r)$, never forming the $d \times d$ matrix.

# %%
#| export
class SQ2Potential(SQ1Potential):
    "Quadratic well with stiffness U Uᵀ + diag(λ), U rank-r and linear in ξ; closed-form force."
    def __init__(self, d_xi:int, d:int, rank:int=4, init_a_bias:float=0.0):
        check_positive_int('rank', rank)
        super().__init__(d_xi, d, init_a_bias)
        self.rank = rank
        self.u_proj = nn.Linear(d_xi, d * rank)
        _normal_(self.u_proj, 0.02)
    def reset_parameters(self):
        super().reset_parameters()
        if hasattr(self, 'u_proj'): _normal_(self.u_proj, 0.02)
    def factor(self, xi:Tensor) -> Tensor: # U, (B,T,d,r)
        "The low-rank factor U(ξ)."
        return self.u_proj(xi).unflatten(-1, (self.d, self.rank))
    def energy_and_grad(self, xi:Tensor, h:Tensor) -> tuple:
        mu, lam, b = self.wells(xi)
        U, r = self.factor(xi), h - mu
        p = torch.einsum('btdr,btd->btr', U, r)                            # Uᵀ(h-μ), (B,T,r)
        V = 0.5 * (p * p).sum(-1) + 0.5 * (lam * r * r).sum(-1) + b
        return V, torch.einsum('btdr,btr->btd', U, p) + lam * r
    def extra_repr(self): return f"d_xi={self.d_xi}, d={self.d}, rank={self.rank}"


# %% [markdown]
# ## SQ3: a mixture of K wells
#
# SQ3 gives each token a choice of `K_mix` diagonal wells, softly combined (semsimula-paper@44cc714: `notebooks/conservative_arch/parf/model_structured_vtheta.py`):
#
# $$E_k = \tfrac12 \sum_j a_{kj} (h_j - \mu_{kj})^2, \qquad \log \pi = \mathrm{log\_softmax}(W_\pi \xi), \qquad
# V = -\tau \log \sum_{k=1}^{K} \exp\!\Big(-\frac{E_k}{\tau} + \log \pi_k\Big) + b,$$
#
# $$\frac{\partial V}{\partial h} = \sum_k q_k\, a_k \odot (h - \mu_k), \qquad
# q_k = \mathrm{softmax}_k\Big(-\frac{E_k}{\tau} + \log \pi_k\Big).$$
#
# The centres $\mu_k$ (`mu_proj`, D_ξ → K·d, reshaped to (K, d)), stiffnesses $a_k$ = softplus(`a_proj`) + 10⁻⁴
# (D_ξ → K·d), mixing logits (`pi_proj`, D_ξ → K) and offset (`b_proj`, D_ξ → 1) are linear in ξ; τ (`tau`) is a
# fixed temperature. The force is a responsibility-weighted pull towards the centres: as $\tau \to 0$, $V \to \min_k
# E_k + b$ (the nearest well wins); at τ = 1, $V - b$ is the negative log-likelihood of a mixture of
# Gaussians with means $\mu_k$ and precisions $a_k$, up to each component's normalising constant.
#
# This is the real layout of the reference's "SQ3 Multi-Xi" model: wells live in $h \in \mathbb{R}^d$ and are
# conditioned on the flattened context $\xi \in \mathbb{R}^{K_\xi d}$ (not, as its model card's snippet suggests,
# in a space of width $K_\xi d$): at d = 256, D_ξ = 1024, K = 8 it has the reported 4,207,625 parameters.

# %%
#| export
class SQ3Potential(Potential):
    "Mixture of K diagonal quadratic wells, V = -τ log Σ_k π_k exp(-E_k/τ) + b; closed-form force."
    closed_form = True
    def __init__(self, d_xi:int, d:int,
                 K_mix:int=8, # number of wells
                 tau:float=1.0, # temperature τ > 0
                 init_a_bias:float=0.0): # bias of a_proj at init
        super().__init__(d_xi, d)
        check_positive_int('K_mix', K_mix)
        if not tau > 0: raise ValueError(f"tau must be > 0, got {tau!r}")
        self.K_mix, self.tau, self.init_a_bias = K_mix, float(tau), init_a_bias
        self.mu_proj, self.a_proj = nn.Linear(d_xi, K_mix * d), nn.Linear(d_xi, K_mix * d)
        self.pi_proj, self.b_proj = nn.Linear(d_xi, K_mix), nn.Linear(d_xi, 1)
        self.reset_parameters()


# %%
#| export
@patch
def reset_parameters(self:SQ3Potential):
    _normal_(self.mu_proj, 0.02); _normal_(self.a_proj, 0.02, self.init_a_bias)
    _normal_(self.pi_proj, 0.02); _normal_(self.b_proj, 0.002)

@patch
def wells(self:SQ3Potential, xi:Tensor) -> tuple: # (μ (B,T,K,d), a (B,T,K,d), log π (B,T,K), b (B,T))
    "Centres, stiffnesses, log mixing weights and offset for every token."
    K, d = self.K_mix, self.d
    mu = self.mu_proj(xi).unflatten(-1, (K, d))
    a = (F.softplus(self.a_proj(xi)) + A_FLOOR).unflatten(-1, (K, d))
    return mu, a, F.log_softmax(self.pi_proj(xi), -1), self.b_proj(xi).squeeze(-1)

@patch
def _parts(self:SQ3Potential, xi, h):
    mu, a, logpi, b = self.wells(xi)
    r = h[..., None, :] - mu                                           # (B,T,K,d)
    ar = a * r                                                         # a_k ⊙ (h - μ_k), kept for the force
    E = 0.5 * (ar * r).sum(-1)                                         # (B,T,K)
    return logpi - E / self.tau, ar, b

@patch
def energy_and_grad(self:SQ3Potential, xi:Tensor, h:Tensor) -> tuple:
    z, ar, b = self._parts(xi, h)
    q = torch.softmax(z, -1)                                           # responsibilities, (B,T,K)
    return -self.tau * torch.logsumexp(z, -1) + b, (q[..., None, :] @ ar).squeeze(-2)   # Σ_k q_k a_k ⊙ (h - μ_k) as a batched (1×K)(K×d) product

@patch
def energy(self:SQ3Potential, xi:Tensor, h:Tensor) -> Tensor:
    z, ar, b = self._parts(self.check(xi, h), h)
    return -self.tau * torch.logsumexp(z, -1) + b

@patch
def grad_h(self:SQ3Potential, xi:Tensor, h:Tensor) -> Tensor: return self.energy_and_grad(self.check(xi, h), h)[1]

@patch
def responsibilities(self:SQ3Potential, xi:Tensor, h:Tensor) -> Tensor: # q, (B,T,K)
    "Posterior weight q_k of each well at h."
    return torch.softmax(self._parts(self.check(xi, h), h)[0], -1)


# %%
#| export
@patch
def attractor_centres(self:SQ3Potential, xi:Tensor) -> Tensor: return self.mu_proj(self.check_xi(xi)).unflatten(-1, (self.K_mix, self.d))

@patch
def extra_repr(self:SQ3Potential): return f"d_xi={self.d_xi}, d={self.d}, K_mix={self.K_mix}, tau={self.tau}"


# %%
V = SQ3Potential(1024, 256, K_mix=8)
test_eq(sum(p.numel() for p in V.parameters()), 4_207_625)
test_eq(list(V.state_dict()), ['mu_proj.weight', 'mu_proj.bias', 'a_proj.weight', 'a_proj.bias',
                               'pi_proj.weight', 'pi_proj.bias', 'b_proj.weight', 'b_proj.bias'])
V


# %% [markdown]
# ## SQ4: a well plus a small MLP
#
# SQ4 adds a learned correction to the SQ1 well, scaled by a learnable α (`alpha`, init 0.1):
#
# $$V = V_{SQ1}(\xi, h) + \alpha\, V_{MLP}(\xi, h), \qquad
# \frac{\partial V}{\partial h} = a \odot (h - \mu) + \alpha\, \frac{\partial V_{MLP}}{\partial h},$$
#
# with a small MLP (`mlp_hidden` 32, `mlp_depth` 2, the MLP init above). The first term is analytic; the second needs
# autograd, so `closed_form` is False. `attractor_centres` returns the SQ1 centre μ(ξ), which is the exact minimum
# only when the MLP term is flat (at init it is nearly so: its last layer has std 0.002).

# %%
#| export
class SQ4Potential(Potential):
    "SQ1 well plus α·MLP: analytic well force plus an autograd correction."
    closed_form = False
    def __init__(self, d_xi:int, d:int,
                 mlp_hidden:int=32, # hidden width of the correction MLP
                 mlp_depth:int=2, # hidden layers of the correction MLP
                 alpha_init:float=0.1, # initial weight α of the MLP term
                 init_a_bias:float=0.0):
        super().__init__(d_xi, d)
        self.alpha_init = float(alpha_init)
        self.sq1 = SQ1Potential(d_xi, d, init_a_bias)
        self.mlp = MLPPotential(d_xi, d, hidden=mlp_hidden, depth=mlp_depth)
        self.alpha = nn.Parameter(torch.tensor(self.alpha_init))
    def reset_parameters(self):
        self.sq1.reset_parameters(); self.mlp.reset_parameters()
        with torch.no_grad(): self.alpha.fill_(self.alpha_init)
    def energy(self, xi:Tensor, h:Tensor) -> Tensor:
        xi = self.check(xi, h)
        return self.sq1.energy(xi, h) + self.alpha * self.mlp.energy(xi, h)
    def _both(self, xi, h, create_graph):
        Vm, fm = self.mlp.energy_and_force(xi, h, create_graph)
        if create_graph: Vs, gs = self.sq1.energy_and_grad(xi, h)
        else:
            with torch.no_grad(): Vs, gs = self.sq1.energy_and_grad(xi, h)
        alpha = self.alpha if create_graph else self.alpha.detach()
        return Vs + alpha * Vm, -gs + alpha * fm
    def energy_and_force(self, xi:Tensor, h:Tensor, create_graph:bool=False, need_energy:bool=True) -> tuple:
        return self._both(self.check(xi, h), h, create_graph)
    def force(self, xi:Tensor, h:Tensor, create_graph:bool=False) -> Tensor:
        return self._both(self.check(xi, h), h, create_graph)[1]
    def attractor_centres(self, xi:Tensor) -> Tensor: return self.sq1.attractor_centres(xi)


# %% [markdown]
# ## GM: the Gaussian-mixture head (em_gm)
#
# The energetic-minima study's `em_gm` (semsimula-paper@eb95852: `notebooks/conservative_arch/energetic_minima/model_gm.py`)
# replaces the MLP by a sum of $K$ inverted Gaussian wells in the joint space $z = [\xi; h] \in \mathbb{R}^{D_\xi + d}$:
#
# $$V = \sum_{k=1}^{K} A_k\big(1 - e^{-\kappa_k^2 \lVert z - c_k\rVert^2}\big),\qquad
# \frac{\partial V}{\partial h} = 2\sum_k w_k\,(h - c_k^{h}),\quad w_k = A_k\kappa_k^2 e^{-\kappa_k^2\lVert z - c_k\rVert^2},$$
#
# with learnable centres $c_k$ (`centres`, (K, D_ξ + d); $c_k^h$ their last $d$ coordinates), amplitudes
# $A_k$ = softplus(`raw_amp`) and widths $\kappa_k$ = softplus(`raw_kappa`), initialised at $A = 1$ (`gm_amp`) and
# $\kappa = 0.25$ (`gm_kappa`); $K$ = `gm_K` (64). The force is closed-form. The spec does not record the centres'
# init: semsim draws them from $\mathcal N(0, 0.02^2)$ like the other weights. Squared distances use
# $\lVert z\rVert^2 + \lVert c\rVert^2 - 2z\cdot c$ clamped at 0, so memory stays (B,T,K).

# %%
#| export
class GMPotential(Potential):
    "V = Σ_k A_k (1 − exp(−κ_k² ‖[ξ; h] − c_k‖²)), the em_gm head; closed-form force."
    closed_form = True
    def __init__(self, d_xi:int, d:int,
                 K:int=64, # number of Gaussian wells
                 kappa_init:float=0.25, # initial width κ
                 amp_init:float=1.0): # initial amplitude A
        super().__init__(d_xi, d)
        check_positive_int('K', K)
        for n, v in (('kappa_init', kappa_init), ('amp_init', amp_init)):
            if not v > 0: raise ValueError(f"{n} must be > 0, got {v!r}")
        self.K, self.kappa_init, self.amp_init = K, float(kappa_init), float(amp_init)
        self.centres = nn.Parameter(torch.empty(K, d_xi + d))
        self.raw_amp, self.raw_kappa = nn.Parameter(torch.empty(K)), nn.Parameter(torch.empty(K))
        self.reset_parameters()
    def reset_parameters(self):
        inv_softplus = lambda y: math.log(math.expm1(y))
        with torch.no_grad():
            self.centres.normal_(0.0, 0.02)
            self.raw_amp.fill_(inv_softplus(self.amp_init)); self.raw_kappa.fill_(inv_softplus(self.kappa_init))
    def energy_and_grad(self, xi:Tensor, h:Tensor) -> tuple:
        z, c = torch.cat([xi, h], -1), self.centres
        r2 = ((z * z).sum(-1, keepdim=True) + (c * c).sum(-1) - 2 * z @ c.T).clamp_min(0)   # (B,T,K)
        A, k2 = F.softplus(self.raw_amp), F.softplus(self.raw_kappa) ** 2
        e = torch.exp(-k2 * r2)
        w = A * k2 * e                                                                     # (B,T,K)
        return (A * (1 - e)).sum(-1), 2 * (w.sum(-1, keepdim=True) * h - w @ c[:, self.d_xi:])
    def energy(self, xi:Tensor, h:Tensor) -> Tensor: return self.energy_and_grad(self.check(xi, h), h)[0]
    def grad_h(self, xi:Tensor, h:Tensor) -> Tensor: return self.energy_and_grad(self.check(xi, h), h)[1]
    def attractor_centres(self, xi:Tensor) -> Tensor: # the wells' h-coordinates, (B,T,K,d)
        xi = self.check_xi(xi)
        return self.centres[:, self.d_xi:].expand(*xi.shape[:2], -1, -1)
    def extra_repr(self): return f"d_xi={self.d_xi}, d={self.d}, K={self.K}"

# %%
torch.manual_seed(0)
G = GMPotential(8, 4, K=5).double()
xi, h = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
z = torch.cat([xi, h], -1)
V_direct = (F.softplus(G.raw_amp) * (1 - torch.exp(-F.softplus(G.raw_kappa) ** 2 * ((z[..., None, :] - G.centres) ** 2).sum(-1)))).sum(-1)
torch.testing.assert_close(G.energy(xi, h), V_direct, atol=1e-12, rtol=0)            # expanded distances = direct ones
test_close(F.softplus(G.raw_amp), torch.ones(5, dtype=torch.float64), eps=1e-6)   # initialised in float32
test_close(F.softplus(G.raw_kappa), torch.full((5,), 0.25, dtype=torch.float64), eps=1e-6)
far = G.energy(xi * 1e3, h * 1e3)                                                     # far from every centre: V → Σ A
test_close(far, F.softplus(G.raw_amp).sum().expand_as(far), eps=1e-9)
print('GM energy at init: mean', float(G.energy(xi, h).mean()), '(bounded in [0, ΣA] =', float(F.softplus(G.raw_amp).sum()), ')')


# %% [markdown]
# `make_potential` builds any of them by name (the keyword arguments go to the constructor):

# %%
#| export
POTENTIALS = {'mlp': MLPPotential, 'sq1': SQ1Potential, 'sq2': SQ2Potential, 'sq3': SQ3Potential, 'sq4': SQ4Potential,
              'gm': GMPotential}

def make_potential(kind:str, # 'mlp', 'sq1', 'sq2', 'sq3', 'sq4' or 'gm'
                   d_xi:int, # D_xi = K·d
                   d:int, # hidden width
                   **kw) -> Potential:
    "Build a potential by name."
    key = str(kind).lower()
    if key not in POTENTIALS: raise ValueError(f"unknown potential kind {kind!r}: expected one of {list(POTENTIALS)}")
    return POTENTIALS[key](d_xi, d, **kw)


# %%
for kind in POTENTIALS:
    P = make_potential(kind, 12, 4)
    print(f"{kind:4s} {type(P).__name__:13s} closed_form={P.closed_form!s:5s} params={sum(p.numel() for p in P.parameters()):6,d}")


# %% [markdown]
# ## Tests: forces are the derivatives of the energies
#
# For every potential, in float64: the force equals $-\partial V/\partial h$ by **central finite differences** of
# the energy (to 1e-7 relative to the largest force), and (for the closed forms) equals autograd of the energy to 1e-12; in float32 the closed forms agree
# with autograd to 1e-6 relative. The weights are sharpened (std 0.5) so that the wells and the MLP are far from
# linear. All of it on 2 × 5 tokens, d = 4, K·d = 12.

# %%
def sharpen(P, seed, std=0.5):
    "Random, non-trivial parameters so that the tests have power."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in P.parameters(): p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return P

def finite_diff_force(P, xi, h, eps=1e-6):
    "-∂(Σ V)/∂h by central differences, coordinate by coordinate."
    f = torch.zeros_like(h)
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in h.shape]):
        e = torch.zeros_like(h); e[tuple(idx)] = eps
        f[tuple(idx)] = -(P.energy(xi, h + e).sum() - P.energy(xi, h - e).sum()) / (2 * eps)
    return f

def autograd_force(P, xi, h):
    hh = h.detach().requires_grad_(True)
    return -torch.autograd.grad(P.energy(xi, hh).sum(), hh)[0]


# %%
torch.manual_seed(0)
xi, h = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
for kind in POTENTIALS:
    P = sharpen(make_potential(kind, 12, 4, **{'mlp': {'hidden': 64}, 'sq3': {'K_mix': 3}}.get(kind, {})).double(), seed=1)
    f = P.force(xi, h)
    test_eq(f.shape, (2, 5, 4)); test_eq(P.energy(xi, h).shape, (2, 5))
    e_fd = ((f - finite_diff_force(P, xi, h)).abs().max() / f.abs().max()).item()
    e_ag = ((f - autograd_force(P, xi, h)).abs().max() / f.abs().max()).item()
    assert e_fd < 1e-7 and e_ag < 1e-12, (kind, e_fd, e_ag)
    V2, f2 = P.energy_and_force(xi, h)
    test_close(V2, P.energy(xi, h), eps=1e-13); test_close(f2, f, eps=1e-13)
    print(f"{kind:4s} relative |f - finite differences| = {e_fd:.1e}   |f - autograd| = {e_ag:.1e}   max |f| = {f.abs().max():.1f}")

# %% [markdown]
# In float32 the analytic forces agree with autograd to 1e-6 relative, at the reference's SQ3 width (d = 32, K·d = 128),
# and both are equally close to the float64 force: what remains is float32 rounding of the sum over wells, not an
# error of the formula.

# %%
torch.manual_seed(1)
xi, h = torch.randn(2, 24, 128), torch.randn(2, 24, 32)
for kind in ('sq1', 'sq2', 'sq3'):
    P = sharpen(make_potential(kind, 128, 32), seed=2, std=0.05)
    f, fa = P.force(xi, h), autograd_force(P, xi, h)
    f64 = P.double().force(xi.double(), h.double())
    scale = f64.abs().max()
    err, e_cf, e_ag = [((x - y).abs().max() / scale).item() for x, y in ((f, fa), (f, f64), (fa, f64))]
    print(f"{kind}: float32 relative |closed form - autograd| = {err:.1e};  vs float64: closed form {e_cf:.1e}, autograd {e_ag:.1e}")
    assert err < 1e-6 and e_cf <= 2 * e_ag + 1e-7

# %% [markdown]
# **The force is per token.** Each energy depends on its own token only, so changing $h_s$ leaves every other token's
# force unchanged, and the autograd force never differentiates through ξ even when ξ was built from the live `h` (the
# leak is the model's option, not the potential's):

# %%
torch.manual_seed(2)
h = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
for kind in POTENTIALS:
    P = sharpen(make_potential(kind, 4, 4).double(), seed=3)
    xi = h.cumsum(1) / torch.arange(1, 7)[:, None]                       # ξ depends on the live h
    f = P.force(xi, h)
    h2 = h.detach().clone(); h2[:, 3] += 0.7
    f2 = P.force(xi.detach(), h2)
    test_eq((f2[:, [0, 1, 2, 4, 5]] - f[:, [0, 1, 2, 4, 5]]).abs().max().item(), 0.)
    test_close(f, autograd_force(P, xi.detach(), h.detach()), eps=1e-13 * f.abs().max().item())   # relative: |f| is in the hundreds

# %% [markdown]
# **`no_grad` and `create_graph`.** Inside `torch.no_grad()` every force still works (and is detached). With
# `create_graph=True` the force is differentiable with respect to the parameters, to ξ and to h; the derivative of a
# loss on the force matches finite differences on a parameter (here the first-layer weight of the MLP, a second-order
# derivative of V):

# %%
torch.manual_seed(3)
xi, h = torch.randn(2, 4, 8, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64)
for kind in POTENTIALS:
    P = sharpen(make_potential(kind, 8, 4).double(), seed=4, std=0.3)
    with torch.no_grad(): f0 = P.force(xi, h); V0, f1 = P.energy_and_force(xi, h)
    assert not f0.requires_grad and not V0.requires_grad
    test_close(f0, autograd_force(P, xi, h), eps=1e-12); test_close(f1, f0, eps=1e-13)
    f = P.force(xi, h, create_graph=True)
    assert f.requires_grad and not P.force(xi, h).requires_grad
    w = next(P.parameters())
    g, = torch.autograd.grad((f ** 2).sum(), w)
    i = (0,) * w.dim(); eps = 1e-6
    with torch.no_grad():
        w[i] += eps; up = (P.force(xi, h) ** 2).sum()
        w[i] -= 2 * eps; dn = (P.force(xi, h) ** 2).sum(); w[i] += eps
    fd = ((up - dn) / (2 * eps)).item()
    assert abs(g[i].item() - fd) < 1e-6 * max(1., abs(fd)), (kind, g[i].item(), fd)

# %% [markdown]
# ## Exact identities of the structured wells
#
# - SQ1: the force vanishes at the centre, $V(\mu) = b$, and $V$ is exactly quadratic: $V(\mu + s\,u) - b = s^2 (V(\mu+u) - b)$.
# - SQ2 with $U = 0$ is SQ1; its energy equals the explicit quadratic form with the dense $A = UU^\top + \mathrm{diag}\,\lambda$.
# - SQ3 with one well is SQ1 (log π = 0); as τ → 0 its energy tends to $\min_k E_k + b$; its responsibilities sum to
#   one; at τ = 1 with a stiffness shared by the wells, $V - b = -\log p(h) + \tfrac12 \sum_j \log(a_j / 2\pi)$ where
#   $p$ is the Gaussian mixture with weights π, means μ_k and precisions a (checked against `torch.distributions`).
# - SQ4 with α = 0 is SQ1.

# %%
torch.manual_seed(4)
xi, h = torch.randn(2, 5, 6, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
s1 = sharpen(SQ1Potential(6, 3).double(), 5)
mu, a, b = s1.wells(xi)
test_close(s1.force(xi, mu), torch.zeros_like(h), eps=1e-14); test_close(s1.energy(xi, mu), b, eps=1e-14)
u = torch.randn_like(h)
test_close(s1.energy(xi, mu + 2.5 * u) - b, 6.25 * (s1.energy(xi, mu + u) - b), eps=1e-12)
s2 = sharpen(SQ2Potential(6, 3, rank=2).double(), 5)
Ad = s2.factor(xi) @ s2.factor(xi).transpose(-1, -2) + torch.diag_embed(s2.wells(xi)[1])
r = h - s2.wells(xi)[0]
test_close(s2.energy(xi, h), 0.5 * torch.einsum('bti,btij,btj->bt', r, Ad, r) + s2.wells(xi)[2], eps=1e-12)
test_close(s2.force(xi, h), -torch.einsum('btij,btj->bti', Ad, r), eps=1e-12)
with torch.no_grad(): s2.u_proj.weight.zero_(); s2.u_proj.bias.zero_()
s1b = SQ1Potential(6, 3).double(); s1b.load_state_dict({k: v for k, v in s2.state_dict().items() if not k.startswith('u_proj')})
test_close(s2.energy_and_force(xi, h)[1], s1b.force(xi, h), eps=1e-13)
s3 = SQ3Potential(6, 3, K_mix=1).double(); s3.load_state_dict({**s1.state_dict(), 'pi_proj.weight': torch.randn(1, 6), 'pi_proj.bias': torch.zeros(1)})
test_close(s3.energy(xi, h), s1.energy(xi, h), eps=1e-12); test_close(s3.force(xi, h), s1.force(xi, h), eps=1e-12)
s3 = sharpen(SQ3Potential(6, 3, K_mix=4, tau=1e-3).double(), 6)
mu3, a3, _, b3 = s3.wells(xi)
E = 0.5 * (a3 * (h[..., None, :] - mu3) ** 2).sum(-1)                    # the wells' energies E_k
test_close(s3.energy(xi, h), E.min(-1).values + b3, eps=1e-2)
test_close(s3.responsibilities(xi, h).sum(-1), torch.ones(2, 5, dtype=torch.float64), eps=1e-12)
# τ = 1 with one stiffness shared by all wells: V - b = -log p(h) + ½ Σ_j log(a_j/2π), p the Gaussian mixture
s3 = sharpen(SQ3Potential(6, 3, K_mix=4, tau=1.0).double(), 8)
with torch.no_grad(): s3.a_proj.weight.zero_(); s3.a_proj.bias.copy_(torch.tensor([0.3, -0.5, 1.2]).repeat(4))
mu3, a3, logpi3, b3 = s3.wells(xi)
mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logpi3),
        torch.distributions.Independent(torch.distributions.Normal(mu3, a3.rsqrt()), 1))
test_close(s3.energy(xi, h) - b3, -mix.log_prob(h) + 0.5 * torch.log(a3[..., 0, :] / (2 * math.pi)).sum(-1), eps=1e-12)
s4 = sharpen(SQ4Potential(6, 3).double(), 7)
with torch.no_grad(): s4.alpha.zero_()
test_close(s4.force(xi, h), s4.sq1.force(xi, h), eps=1e-13); test_close(s4.energy(xi, h), s4.sq1.energy(xi, h), eps=1e-13)
test_eq(s3.attractor_centres(xi).shape, (2, 5, 4, 3)); test_eq(s1.attractor_centres(xi).shape, (2, 5, 1, 3))

# %% [markdown]
# ## An SQ3 landscape
#
# A 2-D example (d = 2) of a three-well SQ3 energy at one fixed context: the centres μ_k(ξ) (white crosses) sit at the
# bottoms of the basins, the mixing weights π_k set the basin depths, and the force field $f = -\nabla V$ (arrows)
# flows into them. A few damped trajectories, $v \leftarrow (v + \Delta t\, f)/(1 + \Delta t\,\gamma)$,
# $h \leftarrow h + \Delta t\, v$ (γ = 1, m = 1, Δt = 0.25), started on a ring, settle in the basins.

# %%
torch.manual_seed(5)
P = SQ3Potential(4, 2, K_mix=3, tau=1.0).double()
with torch.no_grad():
    P.mu_proj.weight.zero_(); P.mu_proj.bias.copy_(torch.tensor([-1.5, -1.0, 1.6, -0.6, 0.1, 1.5]))
    P.a_proj.weight.zero_(); P.a_proj.bias.copy_(torch.tensor([1.5, 1.5, 2.5, 0.8, 0.8, 2.5]))
    P.pi_proj.weight.zero_(); P.pi_proj.bias.copy_(torch.tensor([0.0, 0.5, -0.5]))
    P.b_proj.weight.zero_(); P.b_proj.bias.zero_()
xi1 = torch.randn(1, 1, 4, dtype=torch.float64)
g = torch.linspace(-3, 3, 121, dtype=torch.float64)
X, Y = torch.meshgrid(g, g, indexing='xy')
H = torch.stack([X, Y], -1).reshape(1, -1, 2)
Vg = P.energy(xi1.expand(1, H.shape[1], 4), H).reshape(121, 121).detach()
c = P.attractor_centres(xi1)[0, 0].detach()
gs = torch.linspace(-3, 3, 15, dtype=torch.float64); Xs, Ys = torch.meshgrid(gs, gs, indexing='xy')
Hs = torch.stack([Xs, Ys], -1).reshape(1, -1, 2)
Fs = P.force(xi1.expand(1, Hs.shape[1], 4), Hs)[0]
ang = torch.linspace(0, 2 * math.pi, 9, dtype=torch.float64)[:-1]
h = 2.8 * torch.stack([ang.cos(), ang.sin()], -1)[None]; v = torch.zeros_like(h); path = [h]
for _ in range(150):
    v = (v + 0.25 * P.force(xi1.expand(1, 8, 4), h)) / 1.25; h = h + 0.25 * v; path.append(h)
path = torch.stack(path)[:, 0]
fig, ax = plt.subplots(figsize=(5.6, 4.6))
cs = ax.contourf(X, Y, Vg, levels=30, cmap='viridis'); fig.colorbar(cs, label='V(ξ, h)')
ax.quiver(Hs[0, :, 0], Hs[0, :, 1], Fs[:, 0], Fs[:, 1], color='w', alpha=0.6, scale=60)
for j in range(8): ax.plot(path[:, j, 0], path[:, j, 1], color='orange', lw=1)
ax.scatter(c[:, 0], c[:, 1], marker='x', s=90, color='white', linewidths=2.5, label='attractor centres μ_k(ξ)')
ax.set(xlabel='h₁', ylabel='h₂', title='SQ3, K = 3 wells, τ = 1'); ax.legend(loc='lower right', fontsize=8)
plt.tight_layout(); plt.show()
ends = path[-1]
d_end = (ends[:, None] - c[None]).norm(dim=-1).min(-1).values
print('distance of each trajectory end from its nearest centre:', [f"{x:.4f}" for x in d_end.tolist()])
print('force at the ends:', f"{P.force(xi1.expand(1, 8, 4), ends[None]).norm(dim=-1).max():.1e}")
test_eq(bool((d_end < 0.05).all()), True)

# %% [markdown]
# The trajectories stop where the force vanishes. With overlapping wells these minima of the mixture sit close to,
# but not exactly at, the centres (the neighbouring wells pull them slightly): here within the distances printed
# above.
#
# ## Agreement with the reference
#
# The fixture `splm_multixi_sq3.pt` holds the reference's SQ3 potential (K_mix = 8, d = 32, ξ of width 4·32 = 128,
# under `V_theta.inner.*`) with probe contexts and the attractor centres the reference computed from them; loading its
# weights into `SQ3Potential(128, 32, K_mix=8)` reproduces the centres (and so the (K, d) layout of `mu_proj`).
# (Skipped when `$SEMSIM_FIXTURES_DIR` is not set: the library never needs the fixtures.)

# %%
fx = os.environ.get('SEMSIM_FIXTURES_DIR')
fpath = Path(fx)/'reference'/'splm_multixi_sq3.pt' if fx else None
if fpath is not None and fpath.exists():
    ck = torch.load(fpath, weights_only=True)
    sd, cfg, st = ck['model_state_dict'], ck['model_cfg'], ck['semsim_test']
    P = SQ3Potential(cfg['xi_channels'] * cfg['d'], cfg['d'], K_mix=cfg['K_mix'], tau=cfg['tau']).double()
    P.load_state_dict({k[len('V_theta.inner.'):]: v for k, v in sd.items() if k.startswith('V_theta.inner.')})
    got = P.attractor_centres(st['probe_xis'].flatten(-2))
    torch.testing.assert_close(got, st['attractor_centres'], atol=1e-12, rtol=0)
    print('SQ3 fixture: max |Δ attractor centres| =', (got - st['attractor_centres']).abs().max().item())
else: print('SEMSIM_FIXTURES_DIR not set: fixture comparison skipped')

# %% [markdown]
# Bad input fails with a message that names the problem:

# %%
P = SQ3Potential(8, 4, K_mix=2)
test_fail(lambda: P.force(torch.randn(2, 3, 8), torch.randn(2, 3, 5)), contains='d=4')
test_fail(lambda: P.force(torch.randn(2, 3, 6), torch.randn(2, 3, 4)), contains='d_xi=8')
test_fail(lambda: P.force(torch.randn(2, 4, 8), torch.randn(2, 3, 4)), contains='disagree on (B,T)')
test_fail(lambda: P.energy(torch.randn(2, 3, 8), torch.randn(3, 4)), contains='shape (B,T,d)')
test_fail(lambda: make_potential('sq5', 8, 4), contains='unknown potential kind')
test_fail(lambda: P.attractor_centres(torch.randn(2, 3, 6)), contains='d_xi=8')
test_fail(lambda: SQ3Potential(8, 4, tau=0.0), contains='tau must be > 0')
test_fail(lambda: MLPPotential(0, 4), contains='d_xi must be a positive integer')
test_fail(lambda: MLPPotential(8, 4).attractor_centres(torch.randn(1, 2, 8)), contains='no closed-form attractor centres')
# a 4-D ξ (B,T,K,d) is flattened for convenience
xi4 = torch.randn(2, 3, 2, 4)
h = torch.randn(2, 3, 4)
test_eq(P.force(xi4, h), P.force(xi4.flatten(-2), h))
