"""semsim.context and semsim.potentials against the reference fixtures, on the meta device, and on bad input.

The fixture tests rebuild the reference multi-xi forward pass from the two modules plus a five-line integrator
(no semsim.splm needed) and compare every integration state with the float64 fixture. They document two precision
details of the reference: ln(alpha) of the EMA is computed in float32 (raw_alpha is stored in float32) and so is the
logfreq mass. Those float32 steps are not bit-portable across CPUs (their float32 sigmoid/log/softplus differ in the
last bits between AVX2, AVX-512 and NEON), so the tolerance is derived from float32 rounding, not fixed:
`semsim.reference.quirk_tolerance` moves every float32 quantity (each ln alpha_k, each token's mass) by 4 float32 ulps
and sums, to first order, how far each output moves (see the Reference chapter). Float64-only quantities (the
attractor centres) are held to 1e-10.
"""
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from semsim.context import (EMAPool, CumulativeMeanPool, HiPPOLegTPool, S4DPool, make_xi_pool, decay_scan, rel_err,
                            XI_POOL_KINDS)
from semsim.potentials import MLPPotential, SQ3Potential, make_potential, POTENTIALS
from semsim.reference import quirk_tolerance, FLOAT64_TOL


def _fixture_path(name):
    d = os.environ.get('SEMSIM_FIXTURES_DIR')
    p = Path(d)/'reference'/name if d else None
    if p is None or not p.exists(): pytest.skip('SEMSIM_FIXTURES_DIR not set')
    return p


def _fixture(name): return torch.load(_fixture_path(name), weights_only=True)


def _rollout(ck, potential, alpha_dtype):
    "Reference multi-xi forward (LN after step, logfreq mass, fixed gamma) built from semsim's pool and potential."
    sd, cfg, st = ck['model_state_dict'], ck['model_cfg'], ck['semsim_test']
    x = st['x']; B, T = x.shape; d = cfg['d']
    pool = EMAPool(cfg['xi_alpha_inits'], alpha_dtype=alpha_dtype).double()
    pool.load_state_dict({'raw_alpha': sd['xi_module.raw_alpha']})
    s = sd['logfreq_surprisal'][x]   # float32 buffer: the reference's mass is computed in float32
    m = (F.softplus(sd['raw_m_bias'].float() + F.softplus(sd['raw_logfreq_alpha'].float()) * s) + 1e-3).double()
    h = F.layer_norm(sd['E.weight'][x] + sd['P'][:T], (d,), eps=cfg['ln_eps'])
    v, hs = torch.zeros_like(h), [h]
    for _ in range(cfg['L']):
        xi = pool(h.detach()).flatten(-2)
        f = potential.force(xi, h)
        v = (v + cfg['dt'] * f / m[..., None]) / (1 + cfg['dt'] * cfg['fixed_gamma'])
        h = F.layer_norm(h + cfg['dt'] * v, (d,), eps=cfg['ln_eps'])
        hs.append(h)
    return torch.stack(hs), h @ sd['E.weight'].T


def test_multixi_mlp_fixture():
    ck = _fixture('splm_multixi_mlp.pt')
    sd, cfg, st = ck['model_state_dict'], ck['model_cfg'], ck['semsim_test']
    V = MLPPotential(cfg['xi_channels'] * cfg['d'], cfg['d'], hidden=cfg['v_hidden'], depth=cfg['v_depth']).double()
    V.load_state_dict({k[len('V_theta.'):]: v for k, v in sd.items() if k.startswith('V_theta.')})
    hs, logits = _rollout(ck, V, torch.float32)
    tol = quirk_tolerance(_fixture_path('splm_multixi_mlp.pt'))
    torch.testing.assert_close(hs, st['hidden_states'], atol=tol['hidden_states'], rtol=0)
    torch.testing.assert_close(logits, st['logits'], atol=tol['logits'], rtol=0)
    # computing ln(alpha) in float64 instead is a float32-sized discrepancy, far beyond float64 round-off: the
    # alpha_dtype knob matters. CPU-independent: both sides are float64 arithmetic or stored numbers.
    hs64, _ = _rollout(ck, V, None)
    assert (hs64 - st['hidden_states']).abs().max() > 1e3 * FLOAT64_TOL


def test_multixi_sq3_fixture():
    ck = _fixture('splm_multixi_sq3.pt')
    sd, cfg, st = ck['model_state_dict'], ck['model_cfg'], ck['semsim_test']
    V = SQ3Potential(cfg['xi_channels'] * cfg['d'], cfg['d'], K_mix=cfg['K_mix'], tau=cfg['tau']).double()
    V.load_state_dict({k[len('V_theta.inner.'):]: v for k, v in sd.items() if k.startswith('V_theta.inner.')})
    hs, logits = _rollout(ck, V, torch.float32)
    tol = quirk_tolerance(_fixture_path('splm_multixi_sq3.pt'))
    torch.testing.assert_close(hs, st['hidden_states'], atol=tol['hidden_states'], rtol=0)
    torch.testing.assert_close(logits, st['logits'], atol=tol['logits'], rtol=0)
    torch.testing.assert_close(V.attractor_centres(st['probe_xis']), st['attractor_centres'], atol=FLOAT64_TOL, rtol=0)


@pytest.mark.parametrize('kind,K', [('cummean', 1), ('ema', 4), ('hippo_legt', 4), ('s4d', 4)])
def test_pools_build_on_meta_and_reset(kind, K):
    "transformers builds models on the meta device and initialises afterwards: pools must survive it."
    with torch.device('meta'): pool = make_xi_pool(kind, K, **({'learnable_dt': True} if kind == 'hippo_legt' else {}))
    pool = pool.to_empty(device='cpu'); pool.reset_parameters()
    ref = make_xi_pool(kind, K, **({'learnable_dt': True} if kind == 'hippo_legt' else {}))
    h = torch.randn(2, 40, 3)
    torch.testing.assert_close(pool(h), ref(h))


@pytest.mark.parametrize('kind', list(POTENTIALS))
def test_potentials_build_on_meta_and_reset(kind):
    with torch.device('meta'): V = make_potential(kind, 8, 4)
    V = V.to_empty(device='cpu'); V.reset_parameters()
    assert all(torch.isfinite(p).all() for p in V.parameters())
    lins = [m for m in V.modules() if isinstance(m, torch.nn.Linear)]
    if lins: assert lins[-1].weight.abs().max() < 0.1   # small-init output layer
    else: assert kind == 'gm' and V.centres.abs().max() < 0.2 and torch.allclose(torch.nn.functional.softplus(V.raw_kappa), torch.tensor(0.25))
    f = V.force(torch.randn(2, 3, 8), torch.randn(2, 3, 4))
    assert f.shape == (2, 3, 4) and torch.isfinite(f).all()


def test_pools_keep_their_parameters_in_the_state_dict():
    assert list(EMAPool().state_dict()) == ['raw_alpha']
    assert list(HiPPOLegTPool(4).state_dict()) == []
    assert list(HiPPOLegTPool(4, learnable_dt=True).state_dict()) == ['log_dt']
    assert sorted(S4DPool(4).state_dict()) == ['B_proj', 'imag', 'log_dt', 'log_neg_re']
    assert not EMAPool(learnable=False).raw_alpha.requires_grad


def test_leak_mode_through_pool_differs_and_causal_mode_does_not():
    "The force on early tokens changes when a later token changes only if autograd runs through the pool."
    torch.manual_seed(0)
    V = make_potential('sq3', 8, 4, K_mix=2).double()
    with torch.no_grad():
        for p in V.parameters(): p.add_(0.3 * torch.randn_like(p))
    pool = EMAPool((0.5, 0.9)).double()
    h = torch.randn(1, 6, 4, dtype=torch.float64)
    h2 = h.clone(); h2[:, 4] += 1.0
    causal = lambda h: V.force(pool(h.detach()), h)
    def leaky(h):
        h = h.clone().requires_grad_(True)
        return -torch.autograd.grad(V.energy(pool(h), h).sum(), h)[0]
    assert (causal(h2)[:, :4] - causal(h)[:, :4]).abs().max() == 0
    assert (leaky(h2)[:, :4] - leaky(h)[:, :4]).abs().max() > 1e-6


@pytest.mark.parametrize('bad,msg', [
    (lambda: make_xi_pool('ema', 2, alpha_inits=(0.5,)), 'n_channels=2'),
    (lambda: make_xi_pool('legs', 2), 'unknown xi pool kind'),
    (lambda: EMAPool((float('nan'),)), 'must lie in [0, 1]'),
    (lambda: S4DPool(0), 'positive integer'),
    (lambda: decay_scan(torch.randn(2, 3, 4), torch.zeros(4)), '(B,T,K,d)'),
    (lambda: CumulativeMeanPool()(torch.randn(2, 0, 3)), 'no positions'),
    (lambda: make_potential('sq2', 8, 4, rank=0), 'rank must be a positive integer'),
    (lambda: make_potential('sq3', 8, 4, K_mix=0), 'K_mix must be a positive integer'),
    (lambda: make_potential('mlp', 8, 4).force(torch.randn(2, 3, 8).long(), torch.randn(2, 3, 4)), 'floating'),
])
def test_bad_input(bad, msg):
    with pytest.raises((ValueError, TypeError)) as e: bad()
    assert msg in str(e.value)


def test_kinds_listed():
    assert XI_POOL_KINDS == ('cummean', 'ema', 'hippo_legt', 's4d')
    assert list(POTENTIALS) == ['mlp', 'sq1', 'sq2', 'sq3', 'sq4', 'gm']
