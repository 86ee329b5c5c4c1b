# %% [markdown]
# # Dynamics
#
# > Particles in a potential: the Lagrangian, the Euler–Lagrange acceleration by autograd, damping and tanh braking, and the three integrators the SPLM family uses, with their accuracy and energy behaviour measured.

# %%
#| default_exp dynamics

# %% [markdown]
# Semantic Simulation moves each token as a particle of mass $m$ under a potential $V$, with friction
# (the paper; semsimula-paper@eb95852: `companion_notes/The_Overdamped_Limit_and_The_Position_of_The_2nd_Order_Lagrangian_Framework.md`). The language models of the SPLM family integrate exactly this motion in depth, one layer per
# step (semsimula-paper@eb95852: `notebooks/conservative_arch/model.py`, `notebooks/conservative_arch/first_order_ablation/model_first_order.py`, `notebooks/conservative_arch/symplectic_variant/model_symplectic.py`). This chapter gives the pieces they share:
#
# 1. the **Lagrangian** $\mathcal L = E_\text{kin} - V$ and the **Euler–Lagrange acceleration** computed by autograd for any
#    Lagrangian (also velocity-dependent ones), with Rayleigh dissipation;
# 2. three **integrators**, each a small pure torch function of tensors: the damped semi-implicit Euler step of SPLM,
#    velocity-Verlet with Strang-split damping, and the first-order (overdamped) flow of SPLM-1;
# 3. the two **tanh braking factors** of the theory notes, and the energy $H = \tfrac12 m\|v\|^2 + V$;
# 4. measurements that can fail: orders of accuracy, energy conservation and dissipation, bound and free motion in
#    the Gaussian well, and the overdamped limit.
#
# Notation: positions are $h$ (`h`, the hidden state in SPLM; the theory notes call it $x$ or $p$), velocities $v$
# (`v`), forces $f = -\nabla_h V$ (`f`), mass $m$ (`m`), damping rate $γ$ (`gamma`), step $Δt$ (`dt`). Every state is
# a tensor whose **last axis is the space axis** $d$: one particle is `(d,)`, a batch of token states `(B, T, d)`; a
# one-dimensional particle has $d = 1$. `m`, `gamma` and `dt` are numbers or tensors that broadcast against `h`
# (per-token masses are `(B, T, 1)`).

# %%
#| export
from __future__ import annotations
import math
from functools import partial
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from semsim.core import check_positive_int

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import torch.nn.functional as F
import numpy as np
import matplotlib.pyplot as plt
from scipy.integrate import solve_ivp
from semsim.wells import GaussianWell, HarmonicWell

# %%
#| hide
_threads = torch.get_num_threads()
torch.set_num_threads(1)   # the tensors here are tiny: on a shared 2-core machine, intra-op threads only add overhead (restored at the end)

# %% [markdown]
# ## Lagrangian, energy and force
#
# For a particle of mass $m$ at $h$ with velocity $v$ in a potential $V$:
# $$E_\text{kin} = \tfrac12 m\|v\|^2, \qquad \mathcal L = E_\text{kin} - V(h), \qquad H = E_\text{kin} + V(h), \qquad f = -\nabla_h V(h).$$
# (semsim writes the kinetic energy $E_\text{kin}$ where the paper writes $T$: $T$ is a sequence length here, see *Notation*.)
# For a single semantic property in the Gaussian well this is the paper's
# $\mathcal L_i = \tfrac12 𝔪_i v_i^2 - 𝔪_iυ^2(1 - e^{-κ^2x_i^2})$.
# A potential is any callable mapping positions `(..., d)` to one energy per particle `(...)`; for a well of
# `semsim.wells`, `lambda h: well.V(h, dim=-1)`. `potential_force` computes $f$ by autograd, as SPLM does for its
# learned $V_θ$ (with `create_graph=True` when training through the force).

# %%
#| export
Number = Union[int, float]

def _broadcasts(name:str, x, shape:torch.Size, fn:str):
    "Raise a ValueError naming `name` unless the number/tensor `x` broadcasts to exactly `shape`."
    if not isinstance(x, Tensor): return
    xs = tuple(x.shape)
    if len(xs) > len(shape) or any(a != 1 and a != b for a, b in zip(reversed(xs), reversed(tuple(shape)))): raise ValueError(f"{fn}: {name} of shape {tuple(x.shape)} does not broadcast to the state shape {tuple(shape)}; "
                                f"per-particle values need a trailing axis of size 1, e.g. (B, T, 1)")

def _check(fn:str, h, v=None, f=None, m=None, gamma=None, dt=None):
    "Shape and sign checks shared by the integrators (no device sync: tensor values are not inspected)."
    if not isinstance(h, Tensor): raise TypeError(f"{fn}: h must be a torch.Tensor, got {type(h).__name__}")
    if h.dim() == 0: raise ValueError(f"{fn}: h must have a space axis (last axis d); for one coordinate use shape (1,)")
    for name, t in (('v', v), ('f', f)):
        if t is not None and (not isinstance(t, Tensor) or t.shape != h.shape):
            raise ValueError(f"{fn}: {name} must be a tensor of the same shape as h {tuple(h.shape)}, got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if isinstance(m, (int, float)) and not m > 0: raise ValueError(f"{fn}: mass m must be > 0, got {m}")
    if isinstance(gamma, (int, float)) and not gamma >= 0: raise ValueError(f"{fn}: damping gamma must be >= 0, got {gamma}")
    if isinstance(dt, (int, float)) and not dt > 0: raise ValueError(f"{fn}: time step dt must be > 0, got {dt}")
    for name, x in (('m', m), ('gamma', gamma), ('dt', dt)): _broadcasts(name, x, h.shape, fn)

def kinetic_energy(v:Tensor, # velocities, (..., d)
                   m:Union[Number, Tensor]=1.0) -> Tensor: # T per particle, (...)
    "Kinetic energy T = m ||v||^2 / 2 of each particle."
    _check('kinetic_energy', v, m=m)
    return 0.5 * (m * v * v).sum(-1)

def _potential_values(potential, h:Tensor) -> Tensor:
    V = potential(h) if callable(potential) else potential
    if not isinstance(V, Tensor) or V.shape != h.shape[:-1]:
        raise ValueError(f"the potential must give one energy per particle, shape {tuple(h.shape[:-1])}; got "
                         f"{tuple(V.shape) if isinstance(V, Tensor) else type(V).__name__} (for a well use lambda h: well.V(h, dim=-1))")
    return V

# %%
#| export
def energy(h:Tensor, # positions, (..., d)
           v:Tensor, # velocities, (..., d)
           m:Union[Number, Tensor], # mass, broadcastable to h, e.g. (B,T,1)
           potential) -> Tensor: # callable h -> V (...), or the values V, (...)
    "Total energy H = m ||v||^2 / 2 + V(h) of each particle, (...)."
    return kinetic_energy(v, m) + _potential_values(potential, h)

def lagrangian(h:Tensor, # positions, (..., d)
               v:Tensor, # velocities, (..., d)
               m:Union[Number, Tensor], # mass, broadcastable to h
               potential) -> Tensor: # callable h -> V (...), or the values V
    "Lagrangian L = m ||v||^2 / 2 - V(h) of each particle, (...)."
    return kinetic_energy(v, m) - _potential_values(potential, h)

def potential_force(potential:Callable, # h (..., d) -> V (...)
                    h:Tensor, # positions, (..., d)
                    create_graph:bool=False) -> Tensor: # keep the graph (to train through the force)
    "Force f = -grad_h sum V(h) by autograd, (..., d); works under torch.no_grad too."
    with torch.enable_grad():
        x = h if h.requires_grad else h.detach().requires_grad_(True)
        V = _potential_values(potential, x)
        g, = torch.autograd.grad(V.sum(), x, create_graph=create_graph)
    return -g

# %% [markdown]
# ## The Euler–Lagrange acceleration, by autograd
#
# For a Lagrangian $\mathcal L(h, v)$ and a Rayleigh dissipation function $R(h, v)$, the equations of motion are
# $$\frac{d}{dt}\frac{\partial\mathcal L}{\partial v} - \frac{\partial\mathcal L}{\partial h} = -\frac{\partial R}{\partial v}.$$
# Expanding the time derivative, $\frac{d}{dt}\partial_v\mathcal L = M\ddot h + C\dot h$ with the mass matrix
# $M = \partial^2\mathcal L/\partial v^2$ and $C = \partial^2\mathcal L/\partial v\,\partial h$, so the acceleration is
# $$\ddot h = M^{-1}\Big(\partial_h\mathcal L - C\,v - \partial_v R\Big).$$
# `euler_lagrange_accel` evaluates exactly this with `torch.func` (gradients, Jacobians, one linear solve per
# particle), for a Lagrangian written for **one** particle, `L(h (d,), v (d,)) -> scalar`, vectorised over the batch.
# For $\mathcal L = E_\text{kin} - V$ it reduces to $\ddot h = f/m$, for the SPLM friction $R = \tfrac12γm\|v\|^2$ to
# $\ddot h = f/m - γv$ (the paper; semsimula-paper@eb95852: `companion_notes/The_Overdamped_Limit_and_The_Position_of_The_2nd_Order_Lagrangian_Framework.md`: $m_t\ddot h_t = -\partial_hV - γm_t\dot h_t$), and for braking
# $R = \tfrac12η_0H_i\|v\|^2$ to $m\ddot h + η_0H_i\dot h + \nabla V = 0$.

# %%
#| export
def _el_one(L:Callable, R:Optional[Callable], h:Tensor, v:Tensor) -> Tensor:
    "Euler–Lagrange acceleration of one particle, (d,)."
    from torch.func import grad, jacrev
    gh = grad(L, argnums=0)(h, v)
    Lv = grad(L, argnums=1)
    M = jacrev(Lv, argnums=1)(h, v)   # d^2L/dv^2, (d, d)
    C = jacrev(Lv, argnums=0)(h, v)   # d^2L/dv dh, (d, d)
    rhs = gh - C @ v
    if R is not None: rhs = rhs - grad(R, argnums=1)(h, v)
    return torch.linalg.solve(M, rhs)

def euler_lagrange_accel(L:Callable, # Lagrangian of ONE particle: (h (d,), v (d,)) -> scalar
                         h:Tensor, # positions, (..., d)
                         v:Tensor, # velocities, (..., d)
                         rayleigh:Optional[Callable]=None) -> Tensor: # dissipation R(h (d,), v (d,)) -> scalar
    "Acceleration solving d/dt dL/dv - dL/dh = -dR/dv, by autograd, (..., d)."
    from torch.func import vmap
    _check('euler_lagrange_accel', h, v=v)
    d = h.shape[-1]
    a = vmap(partial(_el_one, L, rayleigh))(h.reshape(-1, d), v.reshape(-1, d))
    return a.reshape(h.shape)


# %% [markdown]
# ### Tests: Euler–Lagrange against the analytic forces
#
# In the Gaussian well the autograd acceleration equals the analytic force over the mass,
# $\ddot x = -2υ^2κ^2x\,e^{-κ^2x^2}$ (the paper's Euler–Lagrange equation), to $10^{-10}$ in one and three
# dimensions; `potential_force` reproduces the analytic force; Rayleigh friction adds exactly $-γv$.

# %%
torch.manual_seed(0)
well = GaussianWell.from_energy(E_t=1.5, f=0.8, m=1.3)
V = lambda h: well.V(h, dim=-1)
for d in (1, 3):
    h, v = torch.randn(6, 4, d, dtype=torch.float64), torch.randn(6, 4, d, dtype=torch.float64)
    a = euler_lagrange_accel(lambda h, v: lagrangian(h, v, well.m, V), h, v)
    test_eq(a.shape, h.shape)
    torch.testing.assert_close(a, well.force(h, dim=-1) / well.m, rtol=0, atol=1e-10)
    if d == 1:   # the paper's equation, written out
        x = h[..., 0]
        torch.testing.assert_close(a[..., 0], -2 * well.upsilon**2 * well.kappa**2 * x * torch.exp(-well.kappa**2 * x**2), rtol=0, atol=1e-10)
    torch.testing.assert_close(potential_force(V, h), well.force(h, dim=-1), rtol=0, atol=1e-12)
    gamma = 0.37
    a_d = euler_lagrange_accel(lambda h, v: lagrangian(h, v, well.m, V), h, v,
                               rayleigh=lambda h, v: 0.5 * gamma * well.m * (v * v).sum())
    torch.testing.assert_close(a_d, well.force(h, dim=-1) / well.m - gamma * v, rtol=0, atol=1e-10)

# %% [markdown]
# The same function handles velocity-dependent Lagrangians. With the gauge term of the retro-fitting experiment E5
# (semsimula-paper@eb95852: `notebooks/e_init/well_functional_form_comparison.py`), $\mathcal L = \tfrac12m\|v\|^2 + A(h)\cdot v - V$, the equation is
# $m\ddot h = -\nabla V + F v$ with $F_{ij} = \partial_iA_j - \partial_jA_i$; for $A = \tfrac12B(-h_2, h_1)$ in the plane,
# $F = \begin{pmatrix}0 & B\\ -B & 0\end{pmatrix}$, a magnetic (Lorentz) force that bends the path without changing the energy.

# %%
torch.manual_seed(1)
B, m = 0.8, 1.3
A = lambda h: 0.5 * B * torch.stack([-h[1], h[0]])
L_gauge = lambda h, v: 0.5 * m * (v * v).sum() + (A(h) * v).sum() - V(h)
h, v = torch.randn(10, 2, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
a = euler_lagrange_accel(L_gauge, h, v)
lorentz = B * torch.stack([v[:, 1], -v[:, 0]], -1)
torch.testing.assert_close(a, (well.force(h, dim=-1) + lorentz) / m, rtol=0, atol=1e-10)
test_close((lorentz * v).sum(-1).abs().max().item(), 0.0, eps=1e-15)   # the magnetic force does no work

# %% [markdown]
# Bad input fails with a message naming the problem:

# %%
h = torch.randn(4, 3)
test_fail(lambda: euler_lagrange_accel(L_gauge, h, torch.randn(4, 2)), contains='v must be a tensor of the same shape as h')
test_fail(lambda: kinetic_energy(h, m=torch.ones(4)), contains='m of shape (4,) does not broadcast')
test_fail(lambda: energy(h, h, 1.0, lambda h: h), contains='one energy per particle')
test_fail(lambda: kinetic_energy(h, m=-1.0), contains='mass m must be > 0')


# %% [markdown]
# ## Integrators
#
# All three integrators below discretise $m\ddot h = f - γm\dot h$ (or its overdamped limit) with step $Δt$. They
# are pure functions: they return new tensors, never modify their inputs, call no `.item()`, and are differentiable in
# every tensor argument, so a model can put them inside its forward pass and learn $m$ and $γ$.
#
# ### Damped semi-implicit Euler (SPLM)
#
# $$v_{n+1} = \frac{v_n + Δt\,f_n/m}{1 + Δt\,γ}, \qquad h_{n+1} = h_n + Δt\,v_{n+1}, \qquad f_n = f(h_n).$$
#
# The velocity update is the implicit-in-damping solution of $(v_{n+1} - v_n)/Δt = f_n/m - γv_{n+1}$, and the
# position uses the *new* velocity (symplectic Euler). This is the step of every SPLM variant (semsimula-paper@eb95852: `notebooks/conservative_arch/model.py`) with
# $Δt = 1$, $v_0 = 0$, and of the retro-fitting integrator of semsimula-paper@eb95852: `notebooks/e_init/extended_gamma_and_first_order.py`. One force evaluation per step.

# %%
#| export
def damped_euler_step(h:Tensor, # positions, (..., d), e.g. (B,T,d)
                      v:Tensor, # velocities, (..., d)
                      f:Tensor, # forces at h, (..., d)
                      m:Union[Number, Tensor], # mass, broadcastable to h, e.g. (B,T,1)
                      gamma:Union[Number, Tensor], # damping rate >= 0, number or broadcastable tensor
                      dt:Union[Number, Tensor]=1.0) -> tuple: # step; returns (h_new, v_new), each (..., d)
    "SPLM's damped semi-implicit Euler step: v <- (v + dt f/m)/(1 + dt gamma); h <- h + dt v."
    _check('damped_euler_step', h, v, f, m, gamma, dt)
    v = (v + dt * f / m) / (1 + dt * gamma)
    return h + dt * v, v


# %% [markdown]
# A hand-worked step: $h = 1$, $v = 0.5$, $f = -2$, $m = 2$, $γ = 0.5$, $Δt = 0.1$ gives
# $v' = (0.5 - 0.1)/1.05 = 0.380952\ldots$ and $h' = 1.0380952\ldots$; and on random tensors the update satisfies its
# defining implicit equation exactly.

# %%
h1, v1 = damped_euler_step(torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64),
                           torch.tensor([-2.0], dtype=torch.float64), 2.0, 0.5, 0.1)
test_close(v1.item(), 0.4 / 1.05, eps=1e-15); test_close(h1.item(), 1 + 0.1 * 0.4 / 1.05, eps=1e-15)
torch.manual_seed(0)
h, v, f = (torch.randn(2, 5, 3, dtype=torch.float64) for _ in range(3))
m, gamma, dt = torch.rand(2, 5, 1, dtype=torch.float64) + 0.5, 0.7, 0.3
h1, v1 = damped_euler_step(h, v, f, m, gamma, dt)
torch.testing.assert_close((v1 - v) / dt, f / m - gamma * v1, rtol=0, atol=1e-14)
torch.testing.assert_close(h1, h + dt * v1, rtol=0, atol=1e-15)


# %% [markdown]
# ### Velocity-Verlet with Strang-split damping (symplectic SPLM variant)
#
# semsimula-paper@eb95852: `notebooks/conservative_arch/symplectic_variant/model_symplectic.py`. One step: damp half a step exactly, kick half, drift, evaluate the force, kick half, damp half:
# $$v \leftarrow e^{-γΔt/2}v,\quad v \leftarrow v + \tfrac{Δt}{2}\tfrac{f_n}{m},\quad h_{n+1} = h_n + Δt\,v,\quad
# f_{n+1} = f(h_{n+1}),\quad v \leftarrow v + \tfrac{Δt}{2}\tfrac{f_{n+1}}{m},\quad v_{n+1} = e^{-γΔt/2}v.$$
# The force at the end of a step is the force at the start of the next, so `verlet_step` returns it and $L$ steps
# cost $L + 1$ force evaluations (the reference's "fused half steps"). A model that computes its own force (for
# instance from $ξ$ and $h$) calls the two halves directly:
# `h, v = verlet_kick_drift(h, v, f, m, gamma, dt)`, then `f = force(h)`, then `v = verlet_kick(v, f, m, gamma, dt)`.

# %%
#| export
def _decay(gamma, dt):
    "exp(-gamma dt / 2), as a tensor when either argument is one (keeps autograd), else a float."
    x = -0.5 * gamma * dt
    return torch.exp(x) if isinstance(x, Tensor) else math.exp(x)

def verlet_kick_drift(h:Tensor, # positions, (..., d)
                      v:Tensor, # velocities, (..., d)
                      f:Tensor, # forces at h, (..., d)
                      m:Union[Number, Tensor], # mass, broadcastable to h
                      gamma:Union[Number, Tensor], # damping rate >= 0
                      dt:Union[Number, Tensor]=1.0) -> tuple: # returns (h_new, v_half), each (..., d)
    "First half of a Verlet–Strang step: damp dt/2, kick dt/2, drift dt."
    _check('verlet_kick_drift', h, v, f, m, gamma, dt)
    v = v * _decay(gamma, dt) + (0.5 * dt) * f / m
    return h + dt * v, v

def verlet_kick(v:Tensor, # half-step velocities, (..., d)
                f:Tensor, # forces at the new positions, (..., d)
                m:Union[Number, Tensor], # mass, broadcastable to v
                gamma:Union[Number, Tensor], # damping rate >= 0
                dt:Union[Number, Tensor]=1.0) -> Tensor: # new velocities, (..., d)
    "Second half of a Verlet–Strang step: kick dt/2, damp dt/2."
    _check('verlet_kick', v, f=f, m=m, gamma=gamma, dt=dt)
    return (v + (0.5 * dt) * f / m) * _decay(gamma, dt)

def verlet_step(h:Tensor, # positions, (..., d)
                v:Tensor, # velocities, (..., d)
                f:Tensor, # forces at h (returned by the previous step), (..., d)
                m:Union[Number, Tensor], # mass, broadcastable to h
                gamma:Union[Number, Tensor], # damping rate >= 0
                dt:Union[Number, Tensor], # time step
                force_fn:Callable) -> tuple: # h (..., d) -> f (..., d); returns (h, v, f) at the new time
    "One velocity-Verlet step with Strang-split damping; returns the new force for the next step."
    h, v = verlet_kick_drift(h, v, f, m, gamma, dt)
    f = force_fn(h)
    return h, verlet_kick(v, f, m, gamma, dt), f


# %% [markdown]
# ### First-order flow (SPLM-1) and the overdamped limit
#
# Without inertia the motion is a gradient flow. SPLM-1 (semsimula-paper@eb95852: `notebooks/conservative_arch/first_order_ablation/model_first_order.py`) steps
# $$h_{n+1} = h_n + Δt\,f_n/m \qquad (\texttt{first\_order\_step};\ \text{the model then applies LayerNorm}),$$
# with no velocity and no $γ$. The physical **overdamped limit** of $m\ddot h = f - γm\dot h$ when friction dominates
# ($γ \gg \sqrt{\nabla^2V/m}$, the paper; semsimula-paper@eb95852: `companion_notes/The_Overdamped_Limit_and_The_Position_of_The_2nd_Order_Lagrangian_Framework.md`) is the gradient flow $\dot h = f/(mγ)$, stepped by `overdamped_step`; it
# is `first_order_step` with mass $mγ$. In the braking notation $\dot h ≈ -\nabla V/(η_0H_i)$.

# %%
#| export
def first_order_step(h:Tensor, # positions, (..., d)
                     f:Tensor, # forces at h, (..., d)
                     m:Union[Number, Tensor], # mass (mobility 1/m), broadcastable to h
                     dt:Union[Number, Tensor]=1.0) -> Tensor: # new positions, (..., d)
    "SPLM-1's first-order step h <- h + dt f/m (gradient flow with mobility 1/m)."
    _check('first_order_step', h, f=f, m=m, dt=dt)
    return h + dt * f / m

def overdamped_step(h:Tensor, # positions, (..., d)
                    f:Tensor, # forces at h, (..., d)
                    m:Union[Number, Tensor], # mass, broadcastable to h
                    gamma:Union[Number, Tensor], # damping rate > 0
                    dt:Union[Number, Tensor]=1.0) -> Tensor: # new positions, (..., d)
    "Euler step of the overdamped limit dh/dt = f/(m gamma) of m h'' = f - gamma m h'."
    _check('overdamped_step', h, f=f, m=m, gamma=gamma, dt=dt)
    if isinstance(gamma, (int, float)) and gamma == 0: raise ValueError("overdamped_step: gamma must be > 0 (the overdamped limit needs friction)")
    return h + dt * f / (m * gamma)


# %% [markdown]
# An exact link between the two: a damped Euler step *from rest* moves $h$ by $Δt^2f/(m(1+Δtγ))$, which is an
# overdamped step with the friction $γ + 1/Δt$. So for $Δtγ \gg 1$ the SPLM step started at $v = 0$ is already the
# gradient flow.

# %%
torch.manual_seed(0)
h, f = torch.randn(3, 4, 2, dtype=torch.float64), torch.randn(3, 4, 2, dtype=torch.float64)
m, gamma, dt = torch.rand(3, 4, 1, dtype=torch.float64) + 0.5, torch.tensor(0.8, dtype=torch.float64), 0.25
h1, _ = damped_euler_step(h, torch.zeros_like(h), f, m, gamma, dt)
torch.testing.assert_close(h1, overdamped_step(h, f, m, gamma + 1 / dt, dt), rtol=0, atol=1e-15)
torch.testing.assert_close(overdamped_step(h, f, m, gamma, dt), first_order_step(h, f, m * gamma, dt), rtol=0, atol=1e-15)

# %% [markdown]
# ### Tests: the integrators are pure, broadcast, and differentiable
#
# The contract the SPLM models rely on: states `(B, T, d)`, per-token masses `(B, T, 1)`, a scalar-tensor $γ$; inputs
# are left untouched (their autograd version counters do not move); gradients with respect to $h, v, f, m, γ$ pass
# `torch.autograd.gradcheck`; the two Verlet halves compose to `verlet_step`.

# %%
torch.manual_seed(0)
Bsz, T, d = 2, 5, 4
h, v = torch.randn(Bsz, T, d, dtype=torch.float64), torch.randn(Bsz, T, d, dtype=torch.float64)
m = (torch.rand(Bsz, T, 1, dtype=torch.float64) + 0.5)
gamma = torch.tensor(0.6, dtype=torch.float64)
fw = GaussianWell.from_ab(1.2, 0.7)
force_fn = lambda h: fw.force(h, dim=-1)
f = force_fn(h)
versions = [t._version for t in (h, v, f, m, gamma)]
for out in (damped_euler_step(h, v, f, m, gamma, 1.0), verlet_step(h, v, f, m, gamma, 1.0, force_fn),
            (first_order_step(h, f, m, 1.0),), (overdamped_step(h, f, m, gamma, 1.0),)):
    for o in out: test_eq(o.shape, (Bsz, T, d))
test_eq([t._version for t in (h, v, f, m, gamma)], versions)
hh, vv = verlet_kick_drift(h, v, f, m, gamma, 0.5)
h2, v2, f2 = verlet_step(h, v, f, m, gamma, 0.5, force_fn)
torch.testing.assert_close((h2, v2, f2), (hh, verlet_kick(vv, force_fn(hh), m, gamma, 0.5), force_fn(hh)), rtol=0, atol=0)
args = [t.clone().requires_grad_(True) for t in (h[:1, :2], v[:1, :2], f[:1, :2], m[:1, :2], gamma)]
assert torch.autograd.gradcheck(lambda h, v, f, m, g: damped_euler_step(h, v, f, m, g, 0.7), args)
assert torch.autograd.gradcheck(lambda h, v, f, m, g: verlet_step(h, v, f, m, g, 0.7, force_fn), args)
assert torch.autograd.gradcheck(lambda h, v, f, m, g: first_order_step(h, f, m, 0.7) + overdamped_step(h, f, m, g, 0.7), args)

# %%
test_fail(lambda: damped_euler_step(h, v[:, :3], f, m, gamma, 1.0), contains='v must be a tensor of the same shape as h')
test_fail(lambda: damped_euler_step(h, v, f, m[..., 0], gamma, 1.0), contains='m of shape (2, 5) does not broadcast')
test_fail(lambda: damped_euler_step(h, v, f, m, -0.1, 1.0), contains='gamma must be >= 0')
test_fail(lambda: verlet_step(h, v, f, m, gamma, 0.0, force_fn), contains='dt must be > 0')
test_fail(lambda: first_order_step(h.tolist(), f, m, 1.0), contains='h must be a torch.Tensor')
test_fail(lambda: overdamped_step(h, f, m, 0.0, 1.0), contains='gamma must be > 0')


# %% [markdown]
# ### Rolling out a trajectory
#
# `rollout` applies one integrator `n_steps` times and stacks the states. `gamma` may be a callable of the positions,
# which is how position-dependent braking (next section) enters. It counts force evaluations: Verlet uses
# `n_steps + 1`, Euler `n_steps`.

# %%
#| export
def rollout(h:Tensor, # initial positions, (..., d)
            v:Tensor, # initial velocities, (..., d)
            force_fn:Callable, # h (..., d) -> f (..., d)
            m:Union[Number, Tensor], # mass, broadcastable to h
            gamma:Union[Number, Tensor, Callable], # damping rate, or a callable h -> rate (broadcastable)
            dt:Union[Number, Tensor], # time step
            n_steps:int, # number of steps
            method:str='verlet') -> tuple: # 'verlet' | 'euler'; returns (hs, vs), each (n_steps+1, ..., d)
    "Integrate m h'' = f(h) - gamma m h' with one of the integrators, returning the whole trajectory."
    if method not in ('verlet', 'euler'): raise ValueError(f"rollout: method must be 'verlet' or 'euler', got {method!r}")
    if int(n_steps) != n_steps or n_steps < 0: raise ValueError(f"rollout: n_steps must be a non-negative integer, got {n_steps}")
    _check('rollout', h, v=v, m=m, dt=dt)
    g = gamma if callable(gamma) else (lambda h, _g=gamma: _g)
    hs, vs = [h], [v]
    f = force_fn(h)
    for _ in range(int(n_steps)):
        if method == 'euler':
            h, v = damped_euler_step(h, v, f, m, g(h), dt)
        else:
            h, v = verlet_kick_drift(h, v, f, m, g(h), dt)
            f = force_fn(h)
            v = verlet_kick(v, f, m, g(h), dt)
        if method == 'euler': f = force_fn(h)
        hs.append(h); vs.append(v)
    return torch.stack(hs), torch.stack(vs)


# %% [markdown]
# With a constant $γ$ the Verlet rollout uses $L + 1$ force evaluations for $L$ steps and reproduces repeated
# `verlet_step`s exactly.

# %%
calls = []
def counting_force(h): calls.append(1); return fw.force(h, dim=-1)
torch.manual_seed(0)
h0, v0 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
hs, vs = rollout(h0, v0, counting_force, 1.3, 0.2, 0.1, 8)
test_eq(hs.shape, (9, 3, 2)); test_eq(len(calls), 8 + 1)
h, v, f = h0, v0, fw.force(h0, dim=-1)
for _ in range(8): h, v, f = verlet_step(h, v, f, 1.3, 0.2, 0.1, force_fn)
torch.testing.assert_close((hs[-1], vs[-1]), (h, v), rtol=0, atol=0)
test_fail(lambda: rollout(h0, v0, force_fn, 1.0, 0.1, 0.1, 5, method='rk4'), contains="method must be 'verlet' or 'euler'")


# %% [markdown]
# ### The L-step loop of a scalar-potential LM
#
# Every SPLM moves its tokens for $L$ steps from $h_0$ with $v_0 = 0$, one step per "layer", and `integrate` is that
# loop, written once: the parallel forward of `semsim.splm` (all tokens at once) and the one-token decoding step of
# `semsim.streaming` both call it, with different force callables. The force is a function of the layer $\ell$ as
# well as of the position — the context $\xi_\ell$ it needs is built from layer $\ell$'s states — and returns the
# energy with it (or None). `project` is applied to $h$ after every step (the em_ln family's LayerNorm). The
# integrators are the three steps above: `'euler'` (damped semi-implicit, one force per step), `'verlet'` (KDK with
# Strang damping, $L+1$ forces; the last one, at $h_L$, moves only $v_L$, and a decoder that needs only $h_L$ skips it
# with `final_force=False`), `'first_order'` (gradient flow; the velocity reported is $f/m$).

# %%
#| export
INTEGRATORS = ('euler', 'verlet', 'first_order')   # the steps `integrate` can take
VELOCITIES = ('buffer', 'positions')               # where the Euler step's velocity lives (see below)

def integrate(force:Callable, # (l, h) -> (f, V or None): force and energy at layer l's positions h
              h0:Tensor, # initial positions, (..., d); v_0 = 0
              m:Union[Number, Tensor], # mass, broadcastable to h
              gamma:Union[Number, Tensor], # damping rate (ignored by 'first_order')
              dt:Union[Number, Tensor], # step size Δt
              L:int, # number of steps (layers)
              integrator:str='euler', # one of INTEGRATORS
              project:Optional[Callable]=None, # h -> h after every step (e.g. a LayerNorm); None: identity
              final_force:bool=True, # 'verlet': also evaluate the force at h_L (it moves only v_L)
              velocity:str='buffer', # 'euler': 'buffer' keeps v (not projected); 'positions' resets v = (h_new − h)/Δt after the projection
             ) -> dict: # positions [h_0..h_L], velocities [v_0..v_L], energies [V at each force evaluation]
    "The L-step loop of every SPLM, one implementation for the parallel forward and for decoding."
    if integrator not in INTEGRATORS: raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    if velocity not in VELOCITIES: raise ValueError(f"velocity must be one of {VELOCITIES}, got {velocity!r}")
    if velocity == 'positions' and integrator != 'euler': raise ValueError(f"velocity='positions' is a form of the 'euler' step, got integrator {integrator!r}")
    check_positive_int('L', L)
    P = project if project is not None else (lambda h: h)
    h, v = h0, torch.zeros_like(h0)
    hs, vs, Vs = [h], [v], []
    if integrator == 'verlet':
        f, V = force(0, h); Vs.append(V)
        for l in range(L):
            h, v = verlet_kick_drift(h, v, f, m, gamma, dt)
            h = P(h)
            if l + 1 < L or final_force:
                f, V = force(l + 1, h); Vs.append(V)
                v = verlet_kick(v, f, m, gamma, dt)
            hs.append(h); vs.append(v)
    else:
        for l in range(L):
            f, V = force(l, h); Vs.append(V)
            if integrator == 'euler': h_new, v = damped_euler_step(h, v, f, m, gamma, dt)
            else: h_new, v = first_order_step(h, f, m, dt), f / m
            h_new = P(h_new)
            if velocity == 'positions': v = (h_new - h) / dt             # δ/Δt: the velocity the next step sees is the projected one
            h = h_new
            hs.append(h); vs.append(v)
    return {'positions': hs, 'velocities': vs, 'energies': Vs}


# %% [markdown]
# With a layer-independent force, `integrate` is `rollout` from rest (Verlet: bit for bit, with its $L+1$ force
# evaluations, or $L$ with `final_force=False`, which leaves $h_L$ unchanged); the first-order loop is repeated
# `first_order_step`s; the projection is applied after every step; the layer index reaches the force.

# %%
calls = []
def counting_layer_force(l, h): calls.append(l); return fw.force(h, dim=-1), fw.V(h, dim=-1)
torch.manual_seed(0)
h0 = torch.randn(3, 2, dtype=torch.float64)
tr = integrate(counting_layer_force, h0, 1.3, 0.2, 0.1, 8, 'verlet')
hs, vs = rollout(h0, torch.zeros_like(h0), force_fn, 1.3, 0.2, 0.1, 8)
torch.testing.assert_close((torch.stack(tr['positions']), torch.stack(tr['velocities'])), (hs, vs), rtol=0, atol=0)
test_eq(calls, list(range(9))); test_eq(len(tr['energies']), 9)
calls.clear(); short = integrate(counting_layer_force, h0, 1.3, 0.2, 0.1, 8, 'verlet', final_force=False)
test_eq(calls, list(range(8))); torch.testing.assert_close(short['positions'][-1], hs[-1], rtol=0, atol=0)
tr = integrate(counting_layer_force, h0, 1.3, 0.2, 0.1, 4, 'euler')
h, v = h0, torch.zeros_like(h0)
for _ in range(4): h, v = damped_euler_step(h, v, fw.force(h, dim=-1), 1.3, 0.2, 0.1)
torch.testing.assert_close(tr['positions'][-1], h, rtol=0, atol=0)
tr = integrate(counting_layer_force, h0, 1.3, 0.2, 0.1, 3, 'first_order', project=lambda h: h / h.norm(dim=-1, keepdim=True))
h = h0
for _ in range(3): h = first_order_step(h, fw.force(h, dim=-1), 1.3, 0.1); h = h / h.norm(dim=-1, keepdim=True)
torch.testing.assert_close(tr['positions'][-1], h, rtol=0, atol=0)
test_fail(lambda: integrate(counting_layer_force, h0, 1., 0., 0.1, 3, 'rk4'), contains='integrator must be one of')
test_fail(lambda: integrate(counting_layer_force, h0, 1., 0., 0.1, 0), contains='L must be a positive integer')

# %% [markdown]
# **Where the velocity lives when there is a projection.** With a LayerNorm after every step there are two readings
# of the damped Euler step, and the reference uses both. The SPLM (em_ln) keeps a velocity *buffer* that the LN never
# touches: $v \leftarrow (v + \Delta t f/m)/(1+\Delta t\gamma)$, $h \leftarrow \mathrm{LN}(h + \Delta t v)$
# (`velocity='buffer'`). PARF's Q9c and the Helmholtz hybrid rebuild the velocity from the positions after the LN,
# $\delta = h - h_{\text{prev}}$, $h_{\text{new}} = \mathrm{LN}\big(h + \delta/(1+\Delta t\gamma) + \Delta t^2 f/(m(1+\Delta t\gamma))\big)$
# (`velocity='positions'`: $v = \delta/\Delta t$). Without a projection the two are one update; with it they differ:

# %%
ln = lambda h: F.layer_norm(h, (h.shape[-1],))
torch.manual_seed(0)
h0, dt_, c_ = ln(torch.randn(5, 4, dtype=torch.float64)), 0.5, torch.randn(4, dtype=torch.float64)
off_centre = lambda l, h: (-(h - c_), None)                    # a well off the origin: a force the LN does not absorb
delta_form = [h0, h0]                                          # h_prev = h_0 at the first step: zero initial velocity
for _ in range(4):
    h, hp = delta_form[-1], delta_form[-2]
    delta_form.append(ln(h + (h - hp) / (1 + dt_ * 0.2) + dt_ ** 2 / (1.3 * (1 + dt_ * 0.2)) * off_centre(0, h)[0]))
tr_pos = integrate(off_centre, h0, 1.3, 0.2, dt_, 4, 'euler', project=ln, velocity='positions')
torch.testing.assert_close(torch.stack(tr_pos['positions']), torch.stack(delta_form[1:]), atol=1e-12, rtol=0)
tr_buf = integrate(off_centre, h0, 1.3, 0.2, dt_, 4, 'euler', project=ln)
print('max |buffer − positions| after 4 steps:', float((tr_buf['positions'][-1] - tr_pos['positions'][-1]).abs().max()))
assert (tr_buf['positions'][-1] - tr_pos['positions'][-1]).abs().max() > 1e-6      # the LN separates them
tr_a, tr_b = (integrate(counting_layer_force, h0, 1.3, 0.2, 0.1, 3, 'euler', velocity=v) for v in VELOCITIES)
torch.testing.assert_close(tr_a['positions'][-1], tr_b['positions'][-1], atol=1e-12, rtol=0)   # no projection: the same
test_fail(lambda: integrate(counting_layer_force, h0, 1., 0., 0.1, 3, 'verlet', velocity='positions'), contains="form of the 'euler' step")

# %% [markdown]
# ## Braking: two tanh forms, and what SPLM uses instead
#
# The theory notes slow a particle down by a position-dependent friction, $m\ddot h + η_0H_i\dot h + \nabla V = 0$,
# with a tanh **braking factor** $H_i$ — in two different forms (the paper; semsimula-paper@eb95852: `companion_notes/The_Overdamped_Limit_and_The_Position_of_The_2nd_Order_Lagrangian_Framework.md`):
#
# - `tanh_brake` (the overdamped-limit note, §6.1): $H_i = \tanh(\|p - p_E\|/x_u)$, with $p_E$ the ensemble centroid
#   (the bound state) and $x_u$ the damping-onset length. It vanishes at the centroid and tends to 1 far from it:
#   friction switches off inside the bound state.
# - `tanh_brake_offset` (the acceleration note, §2.3): $H_i = [\tanh(\|p_E - p_{c,i} + Δp_i\|/x_0) + 1]/2$. It lies in
#   $[\tfrac12, 1)$: half the friction remains at zero offset. (We read $p_{c,i}$ as the particle's current position
#   and $Δp_i$ as its displacement; with $Δp_i = 0$ it is $(\texttt{tanh\_brake} + 1)/2$, an exact identity checked below.)
#
# **The paper's SPLM uses neither**: it replaces braking by one constant scalar $γ$ (learned, or fixed by
# `fixed_gamma`), $m_t\ddot h_t = -\partial_hV_θ - γm_t\dot h_t$. In the integrators above a braking law enters as the
# damping rate $γ_i = η_0H_i/m$, which both factors return with a trailing axis of size 1 so that it broadcasts.

# %%
#| export
def tanh_brake(p:Tensor, # positions, (..., d)
               p_E:Union[Tensor, Number], # ensemble centroid, broadcastable to p, e.g. (d,)
               x_u:Union[Number, Tensor]) -> Tensor: # damping-onset length > 0; returns H, (..., 1)
    "Braking factor H = tanh(||p - p_E|| / x_u) (overdamped-limit note): 0 at the centroid, -> 1 far away."
    _check('tanh_brake', p)
    if isinstance(x_u, (int, float)) and not x_u > 0: raise ValueError(f"tanh_brake: onset length x_u must be > 0, got {x_u}")
    return torch.tanh(torch.linalg.vector_norm(p - p_E, dim=-1, keepdim=True) / x_u)

def tanh_brake_offset(p_E:Union[Tensor, Number], # ensemble centroid, broadcastable to p_c
                      p_c:Tensor, # the particle's position p_{c,i}, (..., d)
                      dp:Union[Tensor, Number], # its displacement Δp_i, broadcastable to p_c
                      x0:Union[Number, Tensor]) -> Tensor: # onset length > 0; returns H, (..., 1)
    "Braking factor H = [tanh(||p_E - p_c + dp|| / x0) + 1] / 2 (acceleration note): in [1/2, 1)."
    _check('tanh_brake_offset', p_c)
    if isinstance(x0, (int, float)) and not x0 > 0: raise ValueError(f"tanh_brake_offset: onset length x0 must be > 0, got {x0}")
    return 0.5 * (torch.tanh(torch.linalg.vector_norm(p_E - p_c + dp, dim=-1, keepdim=True) / x0) + 1)


# %%
torch.manual_seed(0)
p, pE = torch.randn(7, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
H1, H2 = tanh_brake(p, pE, 0.5), tanh_brake_offset(pE, p, 0.0, 0.5)
test_eq(H1.shape, (7, 1))
torch.testing.assert_close(H2, (H1 + 1) / 2, rtol=0, atol=1e-15)
test_eq(tanh_brake(pE[None], pE, 0.5).item(), 0.0); test_eq(tanh_brake_offset(pE, pE[None], 0.0, 0.5).item(), 0.5)
test_close(tanh_brake(pE[None] + 1e3, pE, 0.5).item(), 1.0, eps=1e-15)
test_close(tanh_brake(pE[None] + torch.tensor([0.5, 0, 0]), pE, 0.5).item(), math.tanh(1.0), eps=1e-15)
test_fail(lambda: tanh_brake(p, pE, 0.0), contains='x_u must be > 0')
test_fail(lambda: tanh_brake_offset(pE, p, 0.0, -1.0), contains='x0 must be > 0')

# %% [markdown]
# ## Phase portrait and energy in the Gaussian well
#
# In one dimension the energy $H(x, v) = \tfrac12mv^2 + 𝔪υ^2(1 - e^{-κ^2x^2})$ is conserved without friction, so
# trajectories follow its level sets. The level $H = 𝔪υ^2$ (the depth) is the **separatrix**: inside it orbits are
# closed (bound states), outside the particle leaves and coasts at speed $\sqrt{2(H - 𝔪υ^2)/m}$. With friction the
# bound orbits spiral to the centre, and a particle just above the separatrix can be captured.

# %%
well = GaussianWell.from_energy(E_t=1.0, f=1.0)   # m = upsilon = kappa = 1, omega = sqrt 2
m = well.m
V1 = lambda h: well.V(h, dim=-1)
F1 = lambda h: well.force(h, dim=-1)
def start(E, x=0.0):
    "State (1, 1) at position x with energy E, moving right."
    x = torch.tensor([[x]], dtype=torch.float64)
    return x, torch.sqrt(2 * (E - V1(x)) / m)[..., None]
runs = {'bound, E = 0.5, γ = 0': (*start(0.5), 0.0), 'free, E = 1.2, γ = 0': (*start(1.2), 0.0),
        'damped, E = 0.9, γ = 0.15': (*start(0.9), 0.15), 'captured, E = 1.02, γ = 0.15': (*start(1.02), 0.15)}
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
X, Vv = torch.meshgrid(torch.linspace(-3.5, 3.5, 300, dtype=torch.float64), torch.linspace(-1.8, 1.8, 200, dtype=torch.float64), indexing='ij')
Hgrid = energy(X[..., None], Vv[..., None], m, V1)
ax[0].contour(X, Vv, Hgrid, levels=np.linspace(0.05, 1.6, 14), colors='lightgray', linewidths=0.7)
ax[0].contour(X, Vv, Hgrid, levels=[well.depth], colors='k', linewidths=1.2)
for i, (name, (x0, v0, g)) in enumerate(runs.items()):
    hs, vs = rollout(x0, v0, F1, m, g, 0.05, 1200)
    ax[0].plot(hs[:, 0, 0], vs[:, 0, 0], color=f'C{i}', lw=1, label=name)
    Ht = energy(hs, vs, m, V1)[:, 0]
    ax[1].plot(np.arange(len(Ht)) * 0.05, Ht, color=f'C{i}', lw=1)
    print(f"{name:>30}: final x = {hs[-1, 0, 0].item():7.3f}, final H = {Ht[-1].item():.4f}")
ax[0].set(xlim=(-3.5, 3.5), ylim=(-1.8, 1.8), xlabel='x', ylabel='v', title='phase portrait (black: separatrix H = mυ², the depth)')
ax[0].legend(fontsize=7, loc='lower left')
ax[1].axhline(well.depth, color='k', lw=0.8, ls=':'); ax[1].set(xlabel='t', ylabel='H', title='energy along the trajectories (Verlet, Δt = 0.05)')
plt.tight_layout(); plt.show()

# %% [markdown]
# The integrators differ in how well they keep the energy of a frictionless orbit. Over 2,000 steps of $Δt = 0.1$
# from $x_0 = 1$ at rest, velocity-Verlet's error is small and bounded, semi-implicit Euler's larger but also bounded
# (both are symplectic), while explicit Euler ($h \leftarrow h + Δt\,v_n$, shown only for contrast) gains energy
# every cycle until the particle leaves the well (dotted line), although it started well inside, at $H_0 = 1 - e^{-1} ≈ 0.63$ of the depth.

# %%
x0, v0 = torch.tensor([[1.0]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
H0 = energy(x0, v0, m, V1)
traj = {'velocity-Verlet': rollout(x0, v0, F1, m, 0.0, 0.1, 2000, 'verlet'),
        'semi-implicit Euler (SPLM)': rollout(x0, v0, F1, m, 0.0, 0.1, 2000, 'euler')}
h, v, hs, vs = x0, v0, [x0], [v0]
for _ in range(2000): h, v = h + 0.1 * v, v + 0.1 * F1(h) / m; hs.append(h); vs.append(v)
traj['explicit Euler (contrast)'] = (torch.stack(hs), torch.stack(vs))
fig, ax = plt.subplots(figsize=(7, 3.2))
for name, (hs, vs) in traj.items():
    dH = (energy(hs, vs, m, V1) - H0)[:, 0]
    ax.semilogy(np.arange(len(dH)) * 0.1, dH.abs().clamp(min=1e-8), lw=0.8, label=f"{name}: max |ΔH| = {dH.abs().max().item():.1e}")
H_expl = energy(*traj['explicit Euler (contrast)'], m, V1)[:, 0]
t_escape = 0.1 * torch.nonzero(H_expl > well.depth)[0, 0].item()
ax.axvline(t_escape, color='C2', ls=':', lw=0.8)
ax.set(xlabel='t', ylabel='|H(t) − H(0)|', ylim=(1e-6, 2), title='energy error from x₀ = 1 at rest, γ = 0, Δt = 0.1')
ax.legend(fontsize=8, loc='lower right'); plt.tight_layout(); plt.show()
print(f"explicit Euler leaves the well (H > depth) at t = {t_escape:.1f}; the symplectic schemes never do")
assert t_escape < 50 and all((energy(*traj[k], m, V1) - H0).abs().max() < 0.05 for k in ('velocity-Verlet', 'semi-implicit Euler (SPLM)'))

# %% [markdown]
# ## Tests that can fail
#
# ### Energy error of velocity-Verlet scales as $Δt^2$
#
# Without friction Verlet is symplectic and second-order: its energy error stays bounded, with an amplitude
# $∝ Δt^2$, however long it runs. We integrate four bound particles of the Gaussian well (starting at rest at
# $x_0 ∈ \{0.3, 0.6, 0.9, 1.2\}$) for $10^4$ steps at five step sizes (all in one batched tensor: `dt` broadcasts),
# take $\max_n|H_n - H_0|$, and fit the slope of $\log\max|ΔH|$ against $\log Δt$. Semi-implicit Euler, also
# symplectic but first-order, must give slope ≈ 1 — and no drift: the largest error of the second half of the run
# is no larger (within 2 %) than that of the first half.

# %%
torch.manual_seed(0)
dts = torch.tensor([0.02, 0.04, 0.08, 0.16, 0.32], dtype=torch.float64)
x0 = torch.tensor([0.3, 0.6, 0.9, 1.2], dtype=torch.float64)
h0 = x0[None, :, None].expand(len(dts), -1, 1).contiguous()          # (n_dt, particles, d=1)
v0, dtb = torch.zeros_like(h0), dts[:, None, None]
H0 = energy(h0, v0, m, V1)
def max_energy_error(method, n=10_000):
    "max |H_n - H_0| over the first and the second half of n steps, (n_dt, particles) each."
    hs, vs = rollout(h0, v0, F1, m, 0.0, dtb, n, method)              # (n+1, n_dt, particles, 1)
    dH = (energy(hs, vs, m, V1) - H0).abs()
    return dH[:n // 2 + 1].amax(0), dH[n // 2 + 1:].amax(0)
slopes = {}
for method in ('verlet', 'euler'):
    first, second = max_energy_error(method)
    worst = torch.maximum(first, second)
    slopes[method] = [np.polyfit(np.log(dts.numpy()), np.log(worst[:, j].numpy()), 1)[0] for j in range(len(x0))]
    assert (second <= 1.02 * first).all(), f"{method}: energy error grows over time (drift)"
    print(f"{method:>7}: slope of log max|ΔH| vs log Δt per particle = {np.round(slopes[method], 3)}; "
          f"max|ΔH| at Δt = 0.02: {worst[0].max().item():.2e}, at Δt = 0.32: {worst[-1].max().item():.2e}")
assert all(1.8 < s < 2.2 for s in slopes['verlet']), slopes
assert all(0.8 < s < 1.2 for s in slopes['euler']), slopes

# %% [markdown]
# ### Orders of accuracy with friction, against an exact solution
#
# The damped harmonic oscillator $\ddot x + γ\dot x + ω_0^2x = 0$ (harmonic well $V = \tfrac12ω_0^2x^2$, $m = 1$) has
# the closed form $x(t) = e^{-γt/2}\big(x_0\cos ω_dt + \tfrac{v_0 + γx_0/2}{ω_d}\sin ω_dt\big)$ with
# $ω_d = \sqrt{ω_0^2 - γ^2/4}$. The global error (the largest $|x_n - x(t_n)|$ over $0 \le t_n \le 5$) must fall like $Δt$ for the damped Euler step and like
# $Δt^2$ for Verlet–Strang — with $γ > 0$, so the damping treatment is tested too.

# %%
w0, g, x0, v0, T_end = 1.3, 0.4, 1.0, 0.3, 5.0
wd = math.sqrt(w0**2 - g**2 / 4)
exact = lambda t: np.exp(-g * t / 2) * (x0 * np.cos(wd * t) + (v0 + g * x0 / 2) / wd * np.sin(wd * t))
hw = HarmonicWell(a=w0**2 / 2)
Fh = lambda h: hw.force(h, dim=-1)
errs = {'euler': [], 'verlet': []}
dts_o = [0.1, 0.05, 0.025, 0.0125]
for dt in dts_o:
    n = round(T_end / dt)
    for method in errs:
        hs, _ = rollout(torch.tensor([x0], dtype=torch.float64), torch.tensor([v0], dtype=torch.float64), Fh, 1.0, g, dt, n, method)
        errs[method].append(np.abs(hs[:, 0].numpy() - exact(np.arange(n + 1) * dt)).max())   # sup over [0, T]
orders = {k: np.polyfit(np.log(dts_o), np.log(e), 1)[0] for k, e in errs.items()}
print('orders:', {k: round(o, 3) for k, o in orders.items()}, ' sup error at Δt = 0.0125:', {k: f'{e[-1]:.1e}' for k, e in errs.items()})
assert 0.9 < orders['euler'] < 1.1 and 1.9 < orders['verlet'] < 2.1, orders

# %% [markdown]
# ### The harmonic limit sets the period of small oscillations
#
# A small oscillation in a Gaussian well ($E_t = 2$, $f = 0.7$, $𝔪 = 1.5$, so $ω = κυ\sqrt2 = 0.99$) must have period
# $2π/ω$; larger ones are slower, because the well is softer than its parabola.

# %%
gw = GaussianWell.from_energy(E_t=2.0, f=0.7, m=1.5)
Fg = lambda h: gw.force(h, dim=-1)
def period(amplitude, dt=0.01, n_periods=5):
    "Mean period from the upward zero crossings of x(t), started at rest at x = amplitude."
    n = int(n_periods * 2 * math.pi / gw.omega / dt * 1.3)
    hs, _ = rollout(torch.tensor([amplitude], dtype=torch.float64), torch.zeros(1, dtype=torch.float64), Fg, gw.m, 0.0, dt, n)
    x = hs[:, 0].numpy()
    i = np.flatnonzero((x[:-1] < 0) & (x[1:] >= 0))
    tc = (i - x[i] / (x[i + 1] - x[i])) * dt
    return np.diff(tc).mean()
P_small, P_big = period(1e-3 / gw.kappa), period(1.0 / gw.kappa)
print(f"omega = {gw.omega:.4f}: 2π/ω = {2 * math.pi / gw.omega:.5f}, measured {P_small:.5f} (small), {P_big:.5f} (κx₀ = 1)")
test_close(P_small, 2 * math.pi / gw.omega, eps=1e-4 * 2 * math.pi / gw.omega)
assert P_big > 1.05 * P_small

# %% [markdown]
# ### With friction the energy never increases — and when the discrete steps agree
#
# For the continuous motion, $\dot H = \nabla V\cdot v + m v\cdot\ddot h = -γm\|v\|^2 \le 0$. First the identity,
# with $\ddot h$ from the Euler–Lagrange acceleration with Rayleigh friction, at random states:

# %%
torch.manual_seed(0)
gamma = 0.42
h, v = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
acc = euler_lagrange_accel(lambda h, v: lagrangian(h, v, gw.m, lambda x: gw.V(x, dim=-1)), h, v,
                           rayleigh=lambda h, v: 0.5 * gamma * gw.m * (v * v).sum())
dHdt = (-gw.force(h, dim=-1) * v).sum(-1) + gw.m * (v * acc).sum(-1)
torch.testing.assert_close(dHdt, -gamma * gw.m * (v * v).sum(-1), rtol=0, atol=1e-12)


# %% [markdown]
# A discrete step, though, also carries the integrator's energy error, and that can outweigh the friction. For the
# harmonic oscillator ($ω^2 = V''/m$) both steps are linear maps and $H_{n+1} - H_n$ is a quadratic form in
# $(x_n, v_n)$; working out when it is negative semi-definite (its determinant factorises) gives exact conditions for
# the energy to **never increase, from any state**:
# $$\text{damped Euler: } γ \ge \frac{ω^2Δt}{2}, \qquad \text{Verlet–Strang: } e^{-γΔt} \le 1 - \frac{ω^2Δt^2}{4}
# \iff γ \ge -\frac{\ln(1 - ω^2Δt^2/4)}{Δt} \approx \frac{ω^2Δt}{4}$$
# (the Verlet condition needs $ωΔt < 2$, its stability limit). `energy_monotone_gamma` returns these thresholds $γ^*$.
# We check the conditions on the integrators themselves: each step is applied to the unit states to get its matrix
# $A$, and the largest eigenvalue of $A^\top DA - D$ ($D = \mathrm{diag}(ω^2, 1)$, so $H = \tfrac12 s^\top Ds$) must
# change sign exactly at the boundary.

# %%
#| export
def energy_monotone_gamma(omega:Union[Number, Tensor], # sqrt(max curvature of V / m)
                          dt:Union[Number, Tensor], # time step
                          method:str='euler') -> Union[float, Tensor]: # smallest gamma for which H never increases
    "Smallest damping rate for which a step never increases a harmonic oscillator's energy, from any state."
    if method == 'euler': return omega**2 * dt / 2
    if method == 'verlet':
        u = omega**2 * dt**2 / 4
        if isinstance(u, Tensor): return torch.where(u < 1, -torch.log1p(-u.clamp(max=1 - 1e-16)) / dt, torch.full_like(u, math.inf))
        return -math.log1p(-u) / dt if u < 1 else math.inf
    raise ValueError(f"method must be 'euler' or 'verlet', got {method!r}")


# %%
def step_matrix(method, w, g, dt):
    "The 2x2 matrix of one step for V = w^2 x^2 / 2, m = 1, built by applying the step to the unit states."
    hw = HarmonicWell(a=w**2 / 2); F = lambda h: hw.force(h, dim=-1)
    h, v = torch.tensor([[1.0], [0.0]], dtype=torch.float64), torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    h1, v1 = damped_euler_step(h, v, F(h), 1.0, g, dt) if method == 'euler' else verlet_step(h, v, F(h), 1.0, g, dt, F)[:2]
    return torch.cat([h1, v1], 1).T                  # columns: images of (1, 0) and (0, 1)
def worst_energy_change(method, w, g, dt):
    A, D = step_matrix(method, w, g, dt), torch.diag(torch.tensor([w**2, 1.0], dtype=torch.float64))
    return torch.linalg.eigvalsh(A.T @ D @ A - D).max().item() / 2
for method in ('euler', 'verlet'):
    for w, dt in [(1.0, 0.1), (math.sqrt(2), 0.5), (2.0, 0.3), (0.7, 1.0)]:
        g_star = energy_monotone_gamma(w, dt, method)
        assert worst_energy_change(method, w, g_star * 1.001, dt) <= 1e-14, (method, w, dt)
        assert worst_energy_change(method, w, g_star * 0.999, dt) > 0, (method, w, dt)
print({k: round(energy_monotone_gamma(math.sqrt(2), 1.0, k), 4) for k in ('euler', 'verlet')}, '= γ* for ω² = 2, Δt = 1')

# %% [markdown]
# The Gaussian well is stiffest at its centre ($V''(0)/𝔪 = ω^2$), so the harmonic conditions with its $ω$ should
# govern it too. A map over $(Δt, γ)$ of the largest single-step energy increase, for 24 particles started at random
# in and around the well and run for 300 steps, confirms it: above each integrator's curve no step ever gains energy;
# well below it, some step does.

# %%
torch.manual_seed(0)
gam = torch.logspace(-2.5, 0.5, 21, dtype=torch.float64)
dtg = torch.logspace(-1.5, 0, 13, dtype=torch.float64)
G, DT = gam[:, None, None, None], dtg[None, :, None, None]            # (n_gamma, n_dt, 1, 1)
hh0 = (torch.rand(24, 1, dtype=torch.float64) * 4 - 2).expand(len(gam), len(dtg), 24, 1).contiguous()
vv0 = (torch.rand(24, 1, dtype=torch.float64) * 2 - 1).expand(len(gam), len(dtg), 24, 1).contiguous()
rise = {}
for method in ('euler', 'verlet'):
    h, v, f = hh0, vv0, F1(hh0)
    Hp, worst = energy(h, v, m, V1), torch.zeros(len(gam), len(dtg), dtype=torch.float64)
    for _ in range(300):
        if method == 'verlet': h, v, f = verlet_step(h, v, f, m, G, DT, F1)
        else: h, v = damped_euler_step(h, v, f, m, G, DT); f = F1(h)
        H = energy(h, v, m, V1)
        worst = torch.maximum(worst, (H - Hp).amax(-1)); Hp = H
    rise[method] = worst
fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for a_, method in zip(ax, rise):
    im = a_.pcolormesh(dtg, gam, torch.log10(rise[method].clamp(min=1e-17)), cmap='magma', shading='nearest', vmin=-17, vmax=0)
    for k, mm in enumerate(('euler', 'verlet')):
        a_.plot(dtg, energy_monotone_gamma(well.omega, dtg, mm), color=['c', 'lime'][k], lw=1.5, ls='-' if mm == method else '--', label=f'γ* ({mm})')
    a_.set(xscale='log', yscale='log', xlabel='Δt', title=f'{method}: log10 max single-step rise of H', ylim=(gam[0], gam[-1]))
    a_.legend(fontsize=8, loc='lower right')
ax[0].set_ylabel('γ'); fig.colorbar(im, ax=ax, shrink=0.85); plt.show()
for method in rise:
    gs = energy_monotone_gamma(well.omega, DT[..., 0, 0], method)                   # (1, n_dt)
    above, below = G[..., 0, 0] >= gs, G[..., 0, 0] <= gs / 2
    print(f"{method}: cells with γ ≥ γ*: {int(above.sum())}, max rise there {rise[method][above].max().item():.1e}; "
          f"cells with γ ≤ γ*/2: {int(below.sum())}, with a rise > 1e-10: {int((rise[method][below] > 1e-10).sum())}")
    assert rise[method][above].max() <= 1e-12
    assert (rise[method][below] > 1e-10).all()

# %% [markdown]
# For SPLM this is a concrete caution. Its damped Euler step has $Δt = 1$ and a learned $γ ≈ 0.8$–$1$
# (semsimula-paper@eb95852: `notebooks/conservative_arch/sarf_mass_variant/model_sarf_mass.py`); by the criterion above (applied, as a heuristic, to the largest curvature of $V_θ/m$ along the
# path) a decrease of $H_ℓ$ from layer to layer is only guaranteed where that curvature is below $2γ/Δt ≈ 2$. Where
# $V_θ$ is stiffer, $H_ℓ$ can rise between layers although the continuous model is dissipative: energy-drift
# diagnostics of trained models should be read with this bound in mind.
#
# ### Bound and free motion
#
# Without friction, a particle whose energy is below the depth $𝔪υ^2$ stays within its turning point
# $x_t = \sqrt{-\ln(1 - E/𝔪υ^2)}/κ$; one above it escapes and coasts at $\sqrt{2(E - 𝔪υ^2)/m}$. With friction every
# particle that starts bound ends at the centre.

# %%
E = torch.tensor([0.2, 0.5, 0.9, 0.99, 1.01, 1.2, 2.0], dtype=torch.float64)
h0 = torch.zeros(len(E), 1, dtype=torch.float64)
v0 = torch.sqrt(2 * E / m)[:, None]
hs, vs = rollout(h0, v0, F1, m, 0.0, 0.01, 10_000)                     # t = 100
bound = E < well.depth
x_turn = lambda E: torch.sqrt(-torch.log1p(-E / well.depth)) / well.kappa
reach = hs[:, bound, 0].abs().amax(0)
dE = (energy(hs, vs, m, V1) - energy(h0, v0, m, V1)).abs().amax(0)[bound]   # Verlet's O(Δt²) energy error
print('bound:  turning point', x_turn(E[bound]).numpy().round(4), ' max |x|', reach.numpy().round(4), ' max |ΔH|', dE.numpy())
assert (reach <= x_turn(E[bound] + dE)).all() and (reach >= x_turn(E[bound] - dE) - 1e-4).all()
v_inf = torch.sqrt(2 * (E[~bound] - well.depth) / m)
print('free:   final x', hs[-1, ~bound, 0].numpy().round(2), ' final speed', vs[-1, ~bound, 0].numpy().round(5), ' predicted', v_inf.numpy().round(5))
assert (hs[-1, ~bound, 0] > 10 / well.kappa).all()
torch.testing.assert_close(vs[-1, ~bound, 0], v_inf, rtol=2e-3, atol=0)
hs_d, vs_d = rollout(h0[bound], v0[bound], F1, m, 0.5, 0.05, 2000)   # gamma = 0.5 >= gamma* for both integrators at dt = 0.05
H_d = energy(hs_d, vs_d, m, V1)
assert (H_d.diff(dim=0) <= 1e-14).all() and (H_d[-1] < 1e-8).all() and (hs_d[-1].abs() < 1e-4).all()

# %% [markdown]
# ### The overdamped limit is gradient flow
#
# With heavy friction the damped motion follows $\dot h = f/(mγ)$. In the rescaled time $s = t/γ$ the gradient flow
# $dh/ds = f/m$ does not depend on $γ$; so we run the damped Euler step for a time $t = γs$ with $s = 0.5$ and compare
# with an accurate gradient-flow solution (scipy `solve_ivp`, tolerance $10^{-12}$). The difference must shrink as
# $γ^{-2}$ (the slow-manifold correction and the initial slip are both $O(γ^{-2})$).
#
# The damped Euler step has the right limit at any $Δtγ$ (its implicit damping gives $v \to f/(mγ)$). Verlet–Strang
# does **not** when $Δtγ \gtrsim 1$: its exponential damping removes the velocity each step, and the two half kicks
# leave a displacement $≈ Δt^2f/(2m)$ instead of $Δt\,f/(mγ)$.

# %%
s_end, x0 = 0.5, 1.2
ref = solve_ivp(lambda s, x: well.force(torch.tensor(x), dim=-1).numpy() / m, (0, s_end), [x0], rtol=1e-12, atol=1e-14).y[0, -1]
gammas = torch.tensor([4.0, 8.0, 16.0, 32.0, 64.0], dtype=torch.float64)
N = 2000
dtv = (gammas * s_end / N)[:, None]                                   # per-gamma step, so that N steps reach t = gamma s
h0, v0 = torch.full((len(gammas), 1), x0, dtype=torch.float64), torch.zeros(len(gammas), 1, dtype=torch.float64)
gcol = gammas[:, None]
out = {meth: rollout(h0, v0, F1, m, gcol, dtv, N, meth)[0][-1, :, 0] for meth in ('euler', 'verlet')}
err = {k: (o - ref).abs() for k, o in out.items()}
print('γΔt          ', (gammas * dtv[:, 0]).numpy().round(3))
for k, e in err.items(): print(f'{k:>7} |h - h_gf|', e.numpy())
slope = np.polyfit(np.log(gammas.numpy()), np.log(err['euler'].numpy()), 1)[0]
print(f'damped Euler: error ∝ γ^{slope:.2f}')
assert -2.2 < slope < -1.8 and err['euler'][-1] < 5e-4
assert err['verlet'][-1] > 50 * err['euler'][-1]      # Strang damping at γΔt ≈ 1 misses the limit

# %% [markdown]
# ## Braking in action
#
# A particle released at rest at $x_0 = 2$ in the unit Gaussian well with $m\ddot h + η_0H\dot h + \nabla V = 0$,
# $η_0 = 0.4$, $x_u = x_0 = 0.5$, under three damping laws: SPLM's constant friction ($H ≡ 1$), `tanh_brake` and
# `tanh_brake_offset` (centroid $p_E = 0$, $Δp = 0$). Late, in the small oscillations near the centre, the energy
# of a lightly damped oscillator falls at the cycle-averaged friction rate: $H ∝ e^{-γt}$ with $γ = η_0/m$ for the
# constant law and $γ = η_0/(2m)$ for `tanh_brake_offset` (whose factor tends to ½). `tanh_brake` switches friction off
# at the centre: its rate is proportional to the amplitude $A$, so $\dot H ∝ -A^3 ∝ -H^{3/2}$ and the decay is only
# algebraic, $H ∝ t^{-2}$ — a bound state that never quite settles.

# %%
eta0, xu = 0.4, 0.5
laws = {'constant γ = η₀/m (SPLM)': eta0 / m,
        'tanh_brake': lambda h: eta0 * tanh_brake(h, 0.0, xu) / m,
        'tanh_brake_offset': lambda h: eta0 * tanh_brake_offset(0.0, h, 0.0, xu) / m}
x0, v0 = torch.tensor([2.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.3))
late = {}
for name, law in laws.items():
    hs, vs = rollout(x0, v0, F1, m, law, 0.05, 1600)
    H = energy(hs, vs, m, V1).numpy()
    t = np.arange(len(H)) * 0.05
    ax[0].plot(t, hs[:, 0], lw=1, label=name); ax[1].semilogy(t, H, lw=1, label=name)
    sel = t >= 40
    late[name] = (np.polyfit(t[sel], np.log(H[sel]), 1)[0], np.polyfit(np.log(t[sel]), np.log(H[sel]), 1)[0], H[-1])
ax[0].set(xlabel='t', ylabel='x', title='position'); ax[1].set(xlabel='t', ylabel='H', title='energy')
ax[1].legend(fontsize=8); plt.tight_layout(); plt.show()
for name, (rate, power, Hend) in late.items(): print(f"{name:>26}: for t in [40, 80]  d ln H/dt = {rate:.3f},  d ln H/d ln t = {power:.2f};  H(80) = {Hend:.1e}")
test_close(late['constant γ = η₀/m (SPLM)'][0], -eta0 / m, eps=0.02)      # exponential, rate γ
test_close(late['tanh_brake_offset'][0], -eta0 / (2 * m), eps=0.02)        # exponential, rate γ/2 (H -> 1/2 at the centre)
test_close(late['tanh_brake'][1], -2.0, eps=0.1)                           # algebraic, H ∝ t^-2

# %%
#| hide
torch.set_num_threads(_threads)
