"""The PARF family (semsim.parf, semsim.fock): registry names, Hugging Face save/load, the leak audit, live vs detach, the
τ schedule, and training through `semsim train --model` (a leaking PARF model is refused)."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from semsim.causal import audit
from semsim.models import build_model
from semsim.parf import PARFConfig, PARFForCausalLM, TINY
from semsim.fock import FockConfig, FockForCausalLM
from semsim.train import read_log
from conftest import run_train

hf_logging.set_verbosity_error()
torch.set_num_threads(1)
NAMES = ('parf-q9c', 'parf-sparse', 'parflm-multixi', 'fock-parflm')
SMALL = dict(TINY, max_len=32)


def _model(name, **kw):
    torch.manual_seed(0)
    m = build_model(name, **{**SMALL, **kw})
    m.set_logfreq_surprisal(torch.rand(m.config.vocab_size) * 8)
    return m


@pytest.mark.parametrize('name', NAMES)
def test_registry_audit_clean_and_leak(name):
    m = _model(name)
    assert isinstance(m, PARFForCausalLM)
    assert audit(m).verdict == 'CLEAN'
    leaky = _model(name, causal_force=False)
    assert audit(leaky).verdict == 'LEAK'


@pytest.mark.parametrize('name', NAMES)
def test_save_load_round_trip(tmp_path, name):
    m = _model(name)
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    if hasattr(m, 'route_tau'): m.set_training_progress(0.9)
    m.save_pretrained(tmp_path)
    r = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(r) is type(m) and r.config.routing == m.config.routing
    x = torch.randint(0, SMALL['vocab_size'], (2, 10))
    torch.testing.assert_close(r.eval()(x).logits, m.eval()(x).logits, atol=0, rtol=0)


@pytest.mark.parametrize('field', ['vphi_grad', 'xi_grad'])
def test_live_same_logits_gradient_reaches_earlier_tokens(field):
    x = torch.randint(0, SMALL['vocab_size'], (1, 10))
    res = {}
    for mode in ('detach', 'live'):
        # 1 step so that only the live path (pair source or ξ) connects token 0 to the last token
        m = _model('parf-q9c', L=1, **{field: mode}).double().train()
        emb = m.E(x).detach().requires_grad_()
        lg = m(inputs_embeds=emb, input_ids=x).logits
        g, = torch.autograd.grad(lg[0, -1].sum(), emb)
        res[mode] = (lg.detach(), float(g[0, 0].norm()))
    assert torch.equal(res['detach'][0], res['live'][0])
    assert res['detach'][1] == 0.0 and res['live'][1] > 1e-8


def test_tau_schedule():
    m = _model('parf-sparse')
    c = m.config
    for frac, want in ((0.0, c.tau_start), (c.tau_hold, c.tau_start), (1.0, c.tau_end),
                       ((1 + c.tau_hold) / 2, (c.tau_start + c.tau_end) / 2)):
        m.set_training_progress(frac)
        assert abs(float(m.route_tau) - want) < 1e-6


@pytest.mark.parametrize('kw, msg', [(dict(routing='topk'), 'routing must be one of'), (dict(vphi_grad='alive'), 'vphi_grad must be one of'),
                                     (dict(route_k=0), 'route_k must be a positive integer'), (dict(tau_hold=1.5), 'tau_hold must lie in')])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg): PARFConfig(**{**SMALL, **kw})


ARGS = ['--set', 'compact_vocab=true', '--set', 'd=16', '--set', 'L=2', '--set', 'v_hidden=32', '--set', 'batch_size=4',
        '--set', 'block_size=16', '--set', 'eval_every=4', '--set', 'eval_iters=2', '--set', 'ckpt_every=4',
        '--set', 'max_steps=8', '--set', 'warmup=2', '--set', 'threads=1', '--no-progress']


def _run(argv):
    rc, _, err = run_train(argv)
    return rc, err


def test_train_sparse_anneals_tau_and_leak_refused(tmp_path, isolated_cache, salad):
    rc, err = _run(['--model', 'parf-sparse', '--set', f'corpus={salad}', '--out', str(tmp_path/'ok'), *ARGS])
    assert rc == 0, err
    taus = [r['route_tau'] for r in read_log(tmp_path/'ok'/'log.jsonl') if 'route_tau' in r]
    assert taus[0] == pytest.approx(1.0) and taus[-1] < taus[0] and all(a >= b for a, b in zip(taus, taus[1:]))
    assert 'val_ppl' in read_log(tmp_path/'ok'/'log.jsonl')[-1]
    rc, err = _run(['--model', 'parf-q9c', '--set', 'causal_force=false', '--set', f'corpus={salad}', '--out', str(tmp_path/'leak'), *ARGS])
    assert rc == 2 and 'before step 0' in err


def test_fock_registers_leak_only_when_full_window():
    m = _model('fock-parflm')
    assert isinstance(m, FockForCausalLM) and m.config.prefix_causal_registers is True
    leaky = _model('fock-parflm', prefix_causal_registers=False)
    leaky.load_state_dict(m.state_dict())
    rep = audit(leaky)
    assert rep.verdict == 'LEAK' and rep.delta_pre > 0
    with pytest.raises(ValueError, match='prefix_causal_registers=False'): leaky(torch.randint(0, 61, (1, 5)), use_cache=True)


@pytest.mark.parametrize('kw, msg', [(dict(n_registers=0), 'n_registers must be a positive integer'),
                                     (dict(reg_decay=-0.1), 'reg_decay must lie in'), (dict(reg_gate_init=1.0), 'reg_gate_init'),
                                     (dict(prefix_causal_registers='yes'), 'prefix_causal_registers must be True or False')])
def test_bad_fock_config(kw, msg):
    with pytest.raises(ValueError, match=msg): FockConfig(**{**SMALL, **kw})


def test_train_fock_and_leaky_fock_refused(tmp_path, isolated_cache, salad):
    rc, err = _run(['--model', 'fock-parflm', '--set', f'corpus={salad}', '--set', 'n_registers=4', '--out', str(tmp_path/'ok'), *ARGS])
    assert rc == 0, err
    assert 'val_ppl' in read_log(tmp_path/'ok'/'log.jsonl')[-1]
    rc, err = _run(['--model', 'fock-parflm', '--set', 'prefix_causal_registers=false', '--set', f'corpus={salad}',
                    '--out', str(tmp_path/'leak'), *ARGS])
    assert rc == 2 and 'before step 0' in err
