"""tools/pair_study.py, the command behind results/pair-shakespeare-cpu.json: on three tiny trained runs it writes the
record (the pair test for all three, the oracle for the two SPLMs), and it refuses unfinished runs by name."""
import json, subprocess, sys
from pathlib import Path

from conftest import run_train

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--set', 'compact_vocab=false', '--set', 'd=16', '--set', 'L=3', '--set', 'v_hidden=16', '--set', 'batch_size=2',
        '--set', 'block_size=16', '--set', 'eval_every=2', '--set', 'eval_iters=1', '--set', 'ckpt_every=2', '--set', 'threads=1',
        '--no-progress', '--max-steps', '2']


def test_pair_study_on_tiny_runs(tmp_path, isolated_cache, salad, shared_data):
    runs = tmp_path/'runs'
    for m in ('splm-em-ln', 'parf-q9c', 'matched-gpt'):
        rc, _, err = run_train(['--model', m, '--set', f'corpus={salad}', '--out', str(runs/m), *TINY]
                               + (['--set', 'n_head=2'] if m == 'matched-gpt' else []))
        assert rc == 0, err
    out = tmp_path/'pair.json'
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'pair_study.py'), str(runs), '--out', str(out), '--steps', '3',
                        '--batch', '4', '--pair-hidden', '4', '--seeds', '0', '1', '--workers', '1'], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert set(rec['models']) == {'splm-em-ln', 'parf-q9c', 'matched-gpt'} and '--steps 3' in rec['study_command']
    for m, res in rec['models'].items():
        p = res['pair']
        assert p['layers'] == [1, 2] and (p['n_train'], p['n_test']) == (80, 20) and len(p['gain']) == 2
        assert ('oracle' in res) == (m != 'matched-gpt') and res['run']['steps'] == 2
        sd = res['seeds']                                # the headline fit is seed 0's, and every seed is summarised
        assert sd['seeds'] == [0, 1] and sd['median_r2'][0] == p['median_r2'] and len(sd['median_gain']) == 2
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'pair_study.py'), str(runs), '--out', str(tmp_path/'y.json'),
                        '--seeds', '1', '2'], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'the first seed must be 0' in r.stderr


def test_pair_study_refuses_missing_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'pair_study.py'), str(tmp_path), '--out', str(tmp_path/'x.json')],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'unfinished or missing runs' in r.stderr and not (tmp_path/'x.json').exists()
