"""bf16 autocast through the trainer (the path `amp=auto` takes on every CUDA run, e.g. Colab) for every registry member:
`amp=bf16` runs it on a CPU, where a dtype mismatch anywhere in a model (pools, forces, pair potentials, registers,
attention) fails the same way. The losses must be finite and stay within bf16's rounding of the float32 run's."""
import json

import pytest
import torch

from semsim.models import MODELS
from semsim.train import read_log
from conftest import run_train

TINY = ['--set', 'compact_vocab=true', '--set', 'd=16', '--set', 'L=2', '--set', 'batch_size=4', '--set', 'block_size=16',
        '--set', 'eval_every=2', '--set', 'eval_iters=2', '--set', 'ckpt_every=2', '--set', 'threads=1', '--no-progress',
        '--max-steps', '2']


@pytest.mark.parametrize('name', list(MODELS))
def test_bf16_autocast_trains_every_member(name, tmp_path, isolated_cache, salad):
    logs = {}
    for amp in ('off', 'bf16'):
        out = tmp_path/amp
        rc, _, err = run_train(['--model', name, '--set', f'corpus={salad}', '--set', f'amp={amp}', '--out', str(out), *TINY])
        assert rc == 0, err
        assert json.loads((out/'summary.json').read_text())['amp'] == amp
        logs[amp] = read_log(out/'log.jsonl')
    for key in ('loss', 'val_loss'):
        a, b = [r[key] for r in logs['off'] if key in r], [r[key] for r in logs['bf16'] if key in r]
        assert len(a) == len(b) > 0
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=0, atol=2e-2)   # bf16: 8 bits of mantissa
