"""semsim.signature and semsim.forces: input kinds (NumPy / torch dtypes / CUDA), training through forces, bad input."""
import math
import numpy as np
import pytest
import torch

from semsim.signature import (signature_matrix, information_content, feasibility_ellipsoid, trajectory_signature,
                              attention_received, to_float64)
from semsim.forces import (parf_pair_forces, parf_forces, parf_energy, parf_topk, parf_tau_bound, parf_lift_forces,
                           parf_lift_energy, reinforcement_field, sarf_forces, sarf_energy, sarf_potential)

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def test_numpy_in_numpy_out_and_dtypes_kept():
    X = np.random.default_rng(0).normal(size=(5, 3))
    assert isinstance(signature_matrix(X), np.ndarray) and isinstance(information_content(signature_matrix(X)), np.ndarray)
    for dt in (torch.float32, torch.float64):
        t = torch.tensor(X, dtype=dt)
        assert signature_matrix(t).dtype == dt and information_content(signature_matrix(t)).dtype == dt
        assert parf_forces(t, torch.zeros(5, 1), torch.ones(5, 2)).dtype == dt
    # integer input is computed in float64
    assert signature_matrix(torch.arange(6).reshape(3, 2)).dtype == torch.float64


def test_to_float64_names_the_bad_entry():
    with pytest.raises(ValueError, match=r"Z contains NaN or inf \(first at index \(2,\): inf\)"):
        to_float64(np.array([0., 1., np.inf]), 'Z')


@pytest.mark.parametrize('device', DEVICES)
def test_device_agnostic(device):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 6, 4, generator=g, dtype=torch.float64).to(device)
    W_l, W_th = torch.randn(3, 4, dtype=torch.float64).to(device), torch.randn(2, 4, dtype=torch.float64).to(device)
    ref = parf_lift_forces(h.cpu(), W_l.cpu(), W_th.cpu())
    torch.testing.assert_close(parf_lift_forces(h, W_l, W_th).cpu(), ref)
    F = parf_pair_forces(h, h[..., :2], h[..., 2:], eps=0.1)
    assert F.device.type == device
    tk = parf_topk(F, 2)
    assert tk.forces.device.type == device and tk.tau.device.type == device
    assert parf_tau_bound(h, 2).device.type == device
    assert trajectory_signature(h).H_star.device.type == device
    assert sarf_forces(h).device.type == device


def test_training_through_lifted_forces():
    "create_graph=True lets a loss on the forces reach the read-out weights; the gradient matches finite differences."
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, 3, generator=g, dtype=torch.float64)
    W_l = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    W_th = torch.randn(2, 3, generator=g, dtype=torch.float64)
    loss = lambda W: (parf_lift_forces(h.requires_grad_(True), W, W_th, create_graph=True)**2).sum()
    G, = torch.autograd.grad(loss(W_l), W_l)
    e = torch.zeros_like(W_l); e[1, 2] = 1e-6
    with torch.no_grad():
        fd = (loss((W_l + e).detach()) - loss((W_l - e).detach())) / 2e-6
    assert abs(fd.item() - G[1, 2].item()) < 1e-6 * max(1., abs(G[1, 2].item()))


def test_energies_are_batched_and_consistent():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, 7, 2, generator=g, dtype=torch.float64)
    assert sarf_energy(h).shape == (3,) and parf_energy(h, h, h).shape == (3,)
    assert parf_lift_energy(h, torch.eye(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)).shape == (3,)
    torch.testing.assert_close(reinforcement_field(h)[:, -1], h.mean(1))
    # the SARF potential is radial
    R = torch.tensor([[0., -1.], [1., 0.]], dtype=torch.float64)
    torch.testing.assert_close(sarf_potential(h @ R), sarf_potential(h))


def test_bad_inputs():
    with pytest.raises(ValueError, match='one property'):
        feasibility_ellipsoid(np.ones((2, 3, 2)))
    with pytest.raises(ValueError, match='heads, T, T'):
        attention_received(np.ones((4, 4)))
    with pytest.raises(ValueError, match='coincide'):
        parf_forces(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match='k must be an integer'):
        parf_tau_bound(np.random.default_rng(0).normal(size=(4, 2)), 1.5)
    with pytest.raises(ValueError, match='h must have shape'):
        reinforcement_field(np.ones(3))
