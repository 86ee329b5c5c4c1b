"""Distributed data parallel on CPU (Gloo, 2 processes launched by torchrun): one step's gradients equal the
single-process gradients on the same global batch, for an SPLM (force = autograd.grad inside forward) and for
MatchedGPT; and `python -m semsim.train` under torchrun trains with rank-0 logging and checkpoints."""
import json, os, random, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_salad

FAMILIES = ('splm-multixi', 'splm-sq3', 'matched-gpt')
V, T, B = 64, 12, 4

GRAD_SCRIPT = r'''
import sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[2])
from test_train_ddp import tiny_model, batches, FAMILIES
from semsim.train import forward_loss, make_optimizer, make_config, wrap_ddp
torch.set_num_threads(1)
dist.init_process_group('gloo')
rank, world = dist.get_rank(), dist.get_world_size()
out = {}
for name in FAMILIES:
    model = tiny_model(name)
    opt = make_optimizer(model, make_config(lr=1e-2))
    ddp = wrap_ddp(model, torch.device('cpu'))
    for step, (x, y) in enumerate(batches()):
        b = x.shape[0] // world
        opt.zero_grad()
        total, ce, _ = forward_loss(ddp, x[rank*b:(rank+1)*b], y[rank*b:(rank+1)*b])
        total.backward()
        if step == 0: out[name] = {'grad': {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}
        opt.step()
    out[name]['params'] = {n: p.detach().clone() for n, p in model.named_parameters()}
if rank == 0: torch.save(out, sys.argv[1])
dist.destroy_process_group()
'''


def tiny_model(name):
    "A seeded float64 model of the family, with a logfreq surprisal prior when it has that mass."
    from semsim.train import MODELS, RunData, build_model, make_config
    cfg = make_config('smoke', model=name, d=16, L=2, v_hidden=32, max_len=32)
    data = RunData(np.zeros(1, np.int64), np.zeros(1, np.int64), V, None, torch.linspace(2.0, 9.0, V))
    torch.manual_seed(0)
    return build_model(cfg, data).double()


def batches(n=3):
    "n global batches (x, y), each (B,T)."
    g = torch.Generator().manual_seed(1)
    wins = [torch.randint(0, V, (B, T + 1), generator=g) for _ in range(n)]
    return [(w[:, :-1], w[:, 1:]) for w in wins]


def torchrun(*args, timeout=400):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_ddp_gradients_equal_single_process(tmp_path):
    script = tmp_path/'ddp_grads.py'; script.write_text(GRAD_SCRIPT)
    r = torchrun(str(script), str(tmp_path/'ddp.pt'), str(Path(__file__).parent))
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = torch.load(tmp_path/'ddp.pt', weights_only=True)
    from semsim.train import forward_loss, make_optimizer, make_config
    for name in FAMILIES:
        model = tiny_model(name)
        opt = make_optimizer(model, make_config(lr=1e-2))
        for step, (x, y) in enumerate(batches()):
            opt.zero_grad()
            total, _, _ = forward_loss(model, x, y)
            total.backward()
            if step == 0:
                single = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
                assert set(single) == set(ddp[name]['grad']) and len(single) > 5, name
                for n, g in single.items():   # one step's gradients: DDP's average of half-batch means == full-batch mean
                    torch.testing.assert_close(ddp[name]['grad'][n], g, rtol=1e-10, atol=1e-13, msg=lambda m: f'{name} {n}: {m}')
            opt.step()
        for n, p in model.named_parameters():  # and the weights after three AdamW steps
            torch.testing.assert_close(ddp[name]['params'][n], p.detach(), rtol=1e-10, atol=1e-12, msg=lambda m: f'{name} {n}: {m}')


def test_torchrun_training_rank0_outputs(tmp_path, isolated_cache):
    text = write_salad(tmp_path/'salad.txt', 800)
    out = tmp_path/'run'
    r = torchrun('-m', 'semsim.train', '--preset', 'smoke', '--model', 'splm-em-ln', '--out', str(out), '--no-progress',
                 '--max-steps', '6', '--set', f'corpus={text}', '--set', 'compact_vocab=true', '--set', 'd=16',
                 '--set', 'L=2', '--set', 'v_hidden=32', '--set', 'batch_size=4', '--set', 'block_size=16',
                 '--set', 'eval_every=3', '--set', 'eval_iters=3', '--set', 'ckpt_every=3', '--set', 'threads=1')
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(l) for l in (out/'log.jsonl').read_text().splitlines()]
    assert [x['step'] for x in recs] == [1, 2, 3, 4, 5, 6]                 # one writer: rank 0
    assert all(np.isfinite(x['loss']) for x in recs) and 'val_loss' in recs[2] and 'val_loss' in recs[5]
    assert (out/'latest').read_text().strip() == 'ckpt-6'
    st = torch.load(out/'ckpt-6'/'trainer_state.pt', weights_only=True)
    assert st['world_size'] == 2 and len(st['gen_states']) == 2
    assert not torch.equal(st['gen_states'][0], st['gen_states'][1])     # per-rank data streams
    s = json.loads((out/'summary.json').read_text())
    assert s['world_size'] == 2 and s['steps'] == 6 and s['tokens'] == 6 * 4 * 16
