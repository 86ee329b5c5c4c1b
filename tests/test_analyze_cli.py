"""`semsim analyze stp` end to end, offline: a tiny random GPT-2 saved with save_pretrained, the real 50-sentence
corpus, the JSON of statistics and the figures; bad inputs give one-line errors with exit status 1."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent/'semsim'
OFFLINE = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}


def run(*args, env=None):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=600, env=env or OFFLINE)


@pytest.fixture(scope='module')
def tiny_gpt2(tmp_path_factory):
    "A two-block, width-64 GPT-2 with random weights, saved the way real checkpoints are."
    from semsim.trajectories import load_model, tiny_gpt2_config
    d = tmp_path_factory.mktemp('models')/'tiny-gpt2'
    load_model(tiny_gpt2_config(), seed=0).save_pretrained(d)
    return d


def one_line_error(r, contains):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert contains in lines[0], lines[0]
    return lines[0]


def test_analyze_stp_on_the_real_corpus(shared_data, tiny_gpt2, tmp_path):
    out = tmp_path/'out'
    r = run('analyze', 'stp', '--model', tiny_gpt2, '--corpus', shared_data/'stp_corpus_50.json', '--out', out)
    assert r.returncode == 0, r.stderr
    assert '1,314 triplets in 50 sentences' in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ['stp_acceleration.png', 'stp_identity.png', 'stp_null.png', 'stp_stats.json']
    for png in out.glob('*.png'): assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5_000
    st = json.loads((out/'stp_stats.json').read_text())
    assert st['n_trajectories'] == 50 and st['which'] == 'h' and st['layer'] == -1
    assert st['acceleration']['n_triplets'] == 1314 == st['identity']['n_triplets'] == st['headline']['n_triplets']
    for k in ('stp_max_abs', 'companion_max_rel', 'pythagoras_max_rel'): assert st['identity'][k] <= 1e-10, k
    pn = st['permutation_null']
    assert pn['n_perm'] == 100 and pn['seed'] == 42 and len(pn['null_abs_a_par']) == 100 == len(pn['null_a_perp'])
    assert {'z_abs_a_par', 'z_a_perp', 'p_abs_a_par', 'p_a_perp', 'p_smoother_abs_a_par'} <= set(pn)
    assert len(st['random_triplet_stp']['per_trajectory']) == 50
    assert set(st['well_fit']) >= {'gaussian', 'harmonic', 'linear', 'best_aic'} and len(st['action']['action']) == 50
    a = st['acceleration']
    assert a['ratio'] == pytest.approx(a['mean_abs_a_par'] / a['mean_a_perp'])
    assert 0 <= a['frac_decel'] <= 1


def test_analyze_stp_is_deterministic_and_takes_options(shared_data, tiny_gpt2, tmp_path):
    from semsim.stp import analyze_stp
    corpus = json.loads((shared_data/'stp_corpus_50.json').read_text())['domains']['narrative']
    (tmp_path/'narrative.txt').write_text('\n'.join(corpus))
    r = run('analyze', 'stp', '--model', tiny_gpt2, '--corpus', tmp_path/'narrative.txt', '--out', tmp_path/'o',
            '--n-perm', 12, '--n-random', 30, '--states', 'prenorm', '--seed', 7)
    assert r.returncode == 0, r.stderr
    cli = json.loads((tmp_path/'o'/'stp_stats.json').read_text())
    assert cli['which'] == 'prenorm' and cli['n_trajectories'] == 10 and len(cli['permutation_null']['null_a_perp']) == 12
    # the command is analyze_stp, and seeded: the same numbers in-process
    st = analyze_stp(tiny_gpt2, tmp_path/'narrative.txt', n_perm=12, n_random=30, which='prenorm', seed=7)
    assert st['permutation_null']['null_a_perp'] == pytest.approx(cli['permutation_null']['null_a_perp'], rel=1e-12)
    assert st['random_triplet_stp']['per_trajectory'] == pytest.approx(cli['random_triplet_stp']['per_trajectory'], rel=1e-12)
    other = analyze_stp(tiny_gpt2, tmp_path/'narrative.txt', n_perm=12, n_random=30, which='prenorm', seed=8)
    assert other['permutation_null']['null_a_perp'] != st['permutation_null']['null_a_perp']


def test_missing_corpus(tiny_gpt2, tmp_path):
    one_line_error(run('analyze', 'stp', '--model', tiny_gpt2, '--corpus', tmp_path/'nope.json', '--out', tmp_path/'o'),
                   'corpus file not found')


def test_bad_json_corpus(tiny_gpt2, tmp_path):
    (tmp_path/'bad.json').write_text('{"domains": {"a": ["one", "two",]}}')
    line = one_line_error(run('analyze', 'stp', '--model', tiny_gpt2, '--corpus', tmp_path/'bad.json', '--out', tmp_path/'o'),
                          'not valid JSON')
    assert 'line 1' in line
    (tmp_path/'shape.json').write_text('{"text": "no domains here"}')
    one_line_error(run('analyze', 'stp', '--model', tiny_gpt2, '--corpus', tmp_path/'shape.json', '--out', tmp_path/'o'),
                   'expected {"domains"')


def test_model_not_available_offline(shared_data, tmp_path):
    line = one_line_error(run('analyze', 'stp', '--model', 'gpt2', '--corpus', shared_data/'stp_corpus_50.json', '--out', tmp_path/'o'),
                          "cannot load model 'gpt2'")
    assert 'needs the internet' in line and 'save_pretrained' in line
    assert not (tmp_path/'o').exists()


def test_bad_model_folder(shared_data, tmp_path):
    corpus = shared_data/'stp_corpus_50.json'
    one_line_error(run('analyze', 'stp', '--model', tmp_path/'no-such-model', '--corpus', corpus, '--out', tmp_path/'o'),
                   'model folder not found')
    (tmp_path/'empty').mkdir()
    one_line_error(run('analyze', 'stp', '--model', tmp_path/'empty', '--corpus', corpus, '--out', tmp_path/'o'), 'no config.json')


def test_usage_errors_exit_2(tmp_path):
    assert run('analyze', 'nope', '--model', 'x', '--out', tmp_path).returncode == 2      # unknown analysis
    assert run('analyze', 'stp', '--out', tmp_path).returncode == 2                        # --model is required
    r = run('analyze', '--help')
    assert r.returncode == 0 and '--model' in r.stdout and 'stp' in r.stdout


def test_analyze_stp_on_a_saved_semsim_model(tmp_path):
    "semsim's own SPLM, saved with save_pretrained, analysed by a fresh process (Auto registration on load)."
    splm = pytest.importorskip('semsim.splm')
    from semsim.trajectories import load_model
    load_model(splm.SPLMConfig(d=16, max_len=64, L=3, v_hidden=32, v_depth=2), seed=0).save_pretrained(tmp_path/'splm')
    sents = {'a': ['The cat sat on the warm mat by the door.', 'Two plus two is four, and four plus four is eight.'],
             'b': ['Please pass the salt and the pepper, thank you.']}
    (tmp_path/'c.json').write_text(json.dumps({'domains': sents}))
    r = run('analyze', 'stp', '--model', tmp_path/'splm', '--corpus', tmp_path/'c.json', '--out', tmp_path/'o',
            '--n-perm', 10, '--n-random', 20)
    assert r.returncode == 0, r.stderr
    st = json.loads((tmp_path/'o'/'stp_stats.json').read_text())
    assert st['n_trajectories'] == 3 and st['identity']['stp_max_abs'] <= 1e-10 and st['identity']['companion_max_rel'] <= 1e-10
    # prenorm does not exist for a model without a final norm: a one-line error
    one_line_error(run('analyze', 'stp', '--model', tmp_path/'splm', '--corpus', tmp_path/'c.json', '--out', tmp_path/'o2',
                       '--states', 'prenorm'), 'no final norm')
