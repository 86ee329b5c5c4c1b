"""The attention hybrids (semsim.hybrid): registry names, Hugging Face save/load, the leak audit, live vs detach,
cached generate() equal to recompute, bad configs, and training through `semsim train --model` (a leaking one refused)."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from semsim.causal import audit
from semsim.models import build_model, model_spec
from semsim.hybrid import HybridConfig, HybridForCausalLM, HybridCache
from semsim.lm import output_cache
from semsim.train import read_log
from conftest import run_train

hf_logging.set_verbosity_error()
torch.set_num_threads(1)
SMALL = dict(vocab_size=61, d=16, max_len=32, v_hidden=32, v_depth=2, n_head=2)
LAYOUTS = [('hybrid-a', {}), ('hybrid-a', dict(n_attn=1, n_splm=3)), ('helmholtz-q9d', {}),
           ('helmholtz-q9d', dict(schedule='SASASASA')), ('helmholtz-q9d', dict(schedule='SSSA'))]


def _model(name, **kw):
    torch.manual_seed(0)
    m = build_model(name, **{**SMALL, **kw})
    m.set_logfreq_surprisal(torch.rand(m.config.vocab_size) * 8)
    return m


@pytest.mark.parametrize('name,kw', LAYOUTS)
def test_registry_audit_clean_and_leak(name, kw):
    m = _model(name, **kw)
    assert isinstance(m, HybridForCausalLM) and m.config.L == len(m.config.schedule)
    assert audit(m).verdict == 'CLEAN'
    assert audit(_model(name, causal_force=False, **kw)).verdict == 'LEAK'


def test_shared_size_L_is_not_used_the_schedule_is():
    assert 'L' in model_spec('helmholtz-q9d').unused
    assert build_model('helmholtz-q9d', **SMALL, L=3).config.schedule == 'AAAASSSS'


@pytest.mark.parametrize('name,kw', LAYOUTS[:3])
def test_save_load_round_trip(tmp_path, name, kw):
    m = _model(name, **kw)
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    m.save_pretrained(tmp_path)
    r = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(r) is HybridForCausalLM and r.config.schedule == m.config.schedule and r.config.kind == m.config.kind
    x = torch.randint(0, SMALL['vocab_size'], (2, 10))
    torch.testing.assert_close(r.eval()(x).logits, m.eval()(x).logits, atol=0, rtol=0)


@pytest.mark.parametrize('name,kw', LAYOUTS)
def test_cached_generate_equals_recompute(name, kw):
    m = _model(name, **kw).double().eval()
    x = torch.randint(0, SMALL['vocab_size'], (3, 6))
    a = m.generate(x, max_new_tokens=8, do_sample=False)
    b = m.generate(x, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(a, b)
    o = m(x, use_cache=True)
    assert isinstance(output_cache(o), HybridCache) and output_cache(o).nbytes > 0


def test_live_same_logits_gradient_reaches_earlier_tokens():
    x = torch.randint(0, SMALL['vocab_size'], (1, 10))
    res = {}
    for mode in ('detach', 'live'):
        m = _model('helmholtz-q9d', schedule='S', xi_grad=mode).double().train()   # one S-step: only ξ links token 0 to the last
        emb = m.E(x).detach().requires_grad_()
        lg = m(inputs_embeds=emb, input_ids=x).logits
        g, = torch.autograd.grad(lg[0, -1].sum(), emb)
        res[mode] = (lg.detach(), float(g[0, 0].norm()))
    assert torch.equal(res['detach'][0], res['live'][0])
    assert res['detach'][1] == 0.0 and res['live'][1] > 1e-8


@pytest.mark.parametrize('kw, msg', [(dict(schedule='AAQS'), 'schedule must be a non-empty string'), (dict(kind='mixed'), 'kind must be one of'),
                                     (dict(n_head=3), 'divisible by n_head'), (dict(xi_fixed=True), 'xi_fixed must be False'),
                                     (dict(integrator='verlet'), "integrator must be 'euler'"),
                                     (dict(kind='two_stage', n_attn=-2), 'n_attn must be an int >= 0')])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg): HybridConfig(**{**SMALL, **kw})


def test_output_mechanics_refused_with_a_clear_error():
    with pytest.raises(ValueError, match='output_mechanics'): _model('hybrid-a')(torch.randint(0, 61, (1, 5)), output_mechanics=True)


ARGS = ['--set', 'compact_vocab=true', '--set', 'd=16', '--set', 'n_head=2', '--set', 'v_hidden=32', '--set', 'batch_size=4',
        '--set', 'block_size=16', '--set', 'eval_every=4', '--set', 'eval_iters=2', '--set', 'ckpt_every=4',
        '--set', 'max_steps=8', '--set', 'warmup=2', '--set', 'threads=1', '--no-progress']


def _run(argv):
    rc, _, err = run_train(argv)
    return rc, err


def test_train_hybrids_and_leaky_refused(tmp_path, isolated_cache, salad):
    rc, err = _run(['--model', 'helmholtz-q9d', '--set', 'schedule=ASAS', '--set', f'corpus={salad}', '--out', str(tmp_path/'q9d'), *ARGS])
    assert rc == 0, err
    assert 'val_ppl' in read_log(tmp_path/'q9d'/'log.jsonl')[-1]
    rc, err = _run(['--model', 'hybrid-a', '--set', 'n_attn=1', '--set', 'n_splm=2', '--set', f'corpus={salad}', '--out', str(tmp_path/'a'), *ARGS])
    assert rc == 0, err
    rc, err = _run(['--model', 'hybrid-a', '--set', 'causal_force=false', '--set', f'corpus={salad}', '--out', str(tmp_path/'leak'), *ARGS])
    assert rc == 2 and 'before step 0' in err
