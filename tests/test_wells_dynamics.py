"""The interface the SPLM models rely on (semsim.dynamics integrators, semsim.wells forces): names, signatures,
broadcasting over (B, T, d) with per-token masses (B, T, 1), dtypes, purity and second-order autograd."""
import inspect
import pytest
import torch
from semsim.dynamics import (damped_euler_step, verlet_step, verlet_kick_drift, verlet_kick, first_order_step,
                             overdamped_step, potential_force, energy, rollout)
from semsim.wells import WELLS, GaussianWell, fit_well


def test_signatures():
    "Positional order is a subsequence of (h, v, f, m, gamma, dt)."
    names = lambda fn: list(inspect.signature(fn).parameters)
    assert names(damped_euler_step) == ['h', 'v', 'f', 'm', 'gamma', 'dt']
    assert names(verlet_step) == ['h', 'v', 'f', 'm', 'gamma', 'dt', 'force_fn']
    assert names(verlet_kick_drift) == ['h', 'v', 'f', 'm', 'gamma', 'dt']
    assert names(verlet_kick) == ['v', 'f', 'm', 'gamma', 'dt']
    assert names(first_order_step) == ['h', 'f', 'm', 'dt']
    assert names(overdamped_step) == ['h', 'f', 'm', 'gamma', 'dt']


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_splm_shapes_and_purity(dtype):
    torch.manual_seed(0)
    B, T, d = 3, 7, 16
    h, v = torch.randn(B, T, d, dtype=dtype), torch.zeros(B, T, d, dtype=dtype)
    m = torch.rand(B, T, 1, dtype=dtype) + 0.5
    gamma = torch.tensor(0.9, dtype=dtype)
    well = GaussianWell.from_ab(1.0, 0.1)
    f = well.force(h, dim=-1)
    before = [t.clone() for t in (h, v, f, m, gamma)]
    for out in (damped_euler_step(h, v, f, m, gamma, 1.0), verlet_step(h, v, f, m, gamma, 1.0, lambda x: well.force(x, dim=-1))):
        for o in out: assert o.shape == (B, T, d) and o.dtype == dtype
    assert first_order_step(h, f, m, 1.0).shape == (B, T, d)
    for a, b in zip(before, (h, v, f, m, gamma)): assert torch.equal(a, b)


def test_learnable_m_gamma_through_learned_potential():
    "A tiny learned V: the loss after two steps is differentiable in the MLP weights, m and gamma (second order)."
    torch.manual_seed(0)
    B, T, d = 2, 4, 8
    mlp = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    V = lambda h: mlp(h)[..., 0]
    raw_m, raw_g = torch.zeros(()).requires_grad_(True), torch.zeros(()).requires_grad_(True)
    m, gamma = torch.nn.functional.softplus(raw_m) + 1e-3, torch.nn.functional.softplus(raw_g)
    h = torch.randn(B, T, d, requires_grad=True); v = torch.zeros_like(h)
    for _ in range(2):
        f = potential_force(V, h, create_graph=True)
        h, v = damped_euler_step(h, v, f, m, gamma, 1.0)
    h.pow(2).sum().backward()
    assert raw_m.grad is not None and raw_g.grad is not None and raw_m.grad.abs() > 0 and raw_g.grad.abs() > 0
    # every weight gets a gradient (the output bias cannot: it does not change the force)
    assert all(p.grad is not None for n, p in mlp.named_parameters() if n != '2.bias')


def test_energy_and_rollout_bad_input():
    h = torch.randn(4, 2)
    with pytest.raises(ValueError, match='n_steps must be a non-negative integer'):
        rollout(h, h, lambda x: -x, 1.0, 0.0, 0.1, 2.5)
    with pytest.raises(ValueError, match='one energy per particle'):
        energy(h, h, 1.0, torch.zeros(3))
    with pytest.raises(ValueError, match='dt must be > 0'):
        damped_euler_step(h, h, h, 1.0, 0.0, -0.1)


def test_fit_every_form_runs_on_registry():
    torch.manual_seed(0)
    r = torch.rand(200, dtype=torch.float64) * 3
    E = GaussianWell.from_ab(1.0, 1.0).V(r) + 0.01 * torch.randn(200, dtype=torch.float64)
    for name in WELLS:
        fit = fit_well(r, E, name)
        assert fit.converged and fit.form == name and fit.k == len(WELLS[name].fit_names) + 1
