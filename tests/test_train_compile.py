"""`compile=on` through the trainer (the path `compile=auto` takes on every CUDA run, e.g. Colab): every registry member
whose force is closed-form trains compiled with the same losses as eager, and saves loadable weights; a member with an
autograd force stays eager and says so. Traced with the aot_eager backend (dynamo + AOTAutograd, no code generation), so
it runs in seconds on a CPU; inductor's code generation is measured by bench/device_check.py on a GPU."""
import json

import pytest
import torch

from semsim.models import MODELS, build_model, model_spec
from semsim.train import read_log, load_run
from conftest import run_train

TINY = ['--set', 'compact_vocab=true', '--set', 'd=16', '--set', 'L=2', '--set', 'batch_size=4', '--set', 'block_size=16',
        '--set', 'eval_every=3', '--set', 'eval_iters=2', '--set', 'ckpt_every=3', '--set', 'threads=1', '--no-progress',
        '--max-steps', '3']


def closed_form_members():
    "Registry members whose force the trainer does not take by autograd.grad (so compile=auto compiles them on CUDA)."
    torch.manual_seed(0)
    return [n for n in MODELS if not model_spec(n).autograd_force(build_model(n, d=16, L=2, vocab_size=50, max_len=16))]


def test_the_compiled_members_are_known():
    "The list the next test runs over: the closed-form SQ3 and Gaussian-mixture SPLMs and MatchedGPT (fails if it changes)."
    assert sorted(closed_form_members()) == ['matched-gpt', 'splm-em-gm', 'splm-sq3']


@pytest.fixture
def aot_eager(monkeypatch):
    "torch.compile with the aot_eager backend for the duration of a test; yields the list of modules it compiled."
    compiled, real = [], torch.compile
    def compile_(model, **kw):
        compiled.append(model); return real(model, backend='aot_eager')
    monkeypatch.setattr(torch, 'compile', compile_)
    torch._dynamo.reset(); torch._dynamo.utils.counters.clear()
    yield compiled
    torch._dynamo.reset()


@pytest.mark.parametrize('name', closed_form_members())
def test_compiled_training_equals_eager(name, tmp_path, isolated_cache, salad, aot_eager):
    logs = {}
    for mode in ('off', 'on'):
        out = tmp_path/mode
        rc, _, err = run_train(['--model', name, '--set', f'corpus={salad}', '--set', f'compile={mode}', '--out', str(out), *TINY])
        assert rc == 0, err
        logs[mode] = read_log(out/'log.jsonl')
        assert json.loads((out/'summary.json').read_text())['compile'] == ('compiled' if mode == 'on' else 'eager')
        assert len(aot_eager) == (mode == 'on')                 # compiled once, and only when asked
    for key in ('loss', 'grad_norm', 'val_loss'):
        a, b = [r[key] for r in logs['off'] if key in r], [r[key] for r in logs['on'] if key in r]
        assert len(a) == len(b) > 0
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-4, atol=1e-6)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] > 0   # dynamo really traced the step
    model = load_run(tmp_path/'on')[0]            # the saved weights are the module's own, not the compiled wrapper's
    assert not any('_orig_mod' in k for k in model.state_dict())


def test_an_autograd_force_stays_eager(tmp_path, isolated_cache, salad, aot_eager):
    out = tmp_path/'run'
    rc, _, err = run_train(['--model', 'splm-em-ln', '--set', f'corpus={salad}', '--set', 'compile=on', '--out', str(out), *TINY])
    assert rc == 0, err
    assert json.loads((out/'summary.json').read_text())['compile'] == 'eager (autograd force: double backward)'
    assert aot_eager == []


@pytest.mark.parametrize('name', closed_form_members())
def test_one_graph_and_ids_still_checked(name):
    "The compiled forward with loss is one graph (no graph break, no host sync); out-of-range ids still raise, on the device."
    torch._dynamo.reset(); torch.manual_seed(0)
    model = build_model(name, d=16, L=2, vocab_size=50, max_len=16).train()
    ids = torch.randint(0, 50, (2, 8))
    ex = torch._dynamo.explain(model)(ids, labels=ids)
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), [b.reason for b in ex.break_reasons]
    compiled = torch.compile(model, backend='aot_eager')
    compiled(ids, labels=ids)
    ids[1, 3] = 50
    with pytest.raises(RuntimeError, match=r'input_ids: token ids must lie in \[0, 50\)'): compiled(ids, labels=ids)
    torch._dynamo.reset()
