"""`semsim analyze energy` and `semsim analyze attractors` end to end, offline, on a small saved SPLM with the GPT-2
vocabulary; bad inputs give one-line errors with exit status 1."""
import json
from pathlib import Path
import pytest

from test_analyze_cli import run, one_line_error


@pytest.fixture(scope='module')
def tiny_splm(tmp_path_factory):
    "A small fresh SQ3 SPLM (the SQ3 basins are reported too), saved with save_pretrained."
    import torch
    from semsim.models import build_model
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp('models')/'tiny-splm'
    build_model('splm-vanilla', vocab_size=50257, d=16, L=4, max_len=64, potential='sq3', K_mix=3).save_pretrained(d)
    return d


def test_energy(shared_data, tiny_splm, tmp_path):
    r = run('analyze', 'energy', '--model', tiny_splm, '--corpus', shared_data/'stp_corpus_50.json', '--out', tmp_path/'e', '--tokenizer', 'gpt2')
    assert r.returncode == 0, r.stderr
    assert 'slope' in r.stdout and 'bandwidth' in r.stdout
    res = json.loads((tmp_path/'e'/'energy.json').read_text())
    assert res['n_sentences'] == 50 and len(res['H']) == 5 and res['slope_ci'][0] <= res['slope'] <= res['slope_ci'][1]


def test_attractors(tiny_splm, tmp_path):
    (tmp_path/'p.txt').write_text('The old king sat on the\nShe whispered: I love\n')
    r = run('analyze', 'attractors', '--model', tiny_splm, '--prompts', tmp_path/'p.txt', '--out', tmp_path/'a', '--tokenizer', 'gpt2',
            '--n-seeds', '8', '--n-steps', '8', '--modes', 'dynamical')
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path/'a'/'attractors.json').read_text())
    assert set(res['modes']) == {'dynamical'} and set(res['modes']['dynamical']) == {'prompt0', 'prompt1'}
    assert len(res['sq3_basins']['prompt0']) == 3 and (tmp_path/'a'/'attractors.png').exists()


def test_bad_inputs(tiny_splm, tiny_gpt2_dir, tmp_path):
    one_line_error(run('analyze', 'attractors', '--model', tiny_splm, '--prompts', tmp_path/'none.txt', '--out', tmp_path/'o'), 'prompts file not found')
    one_line_error(run('analyze', 'energy', '--model', tiny_gpt2_dir, '--out', tmp_path/'o'), 'needs a semsim SPLM')


@pytest.fixture(scope='module')
def tiny_gpt2_dir(tmp_path_factory):
    from semsim.trajectories import load_model, tiny_gpt2_config
    d = tmp_path_factory.mktemp('models')/'tiny-gpt2'
    load_model(tiny_gpt2_config(), seed=0).save_pretrained(d)
    return d
