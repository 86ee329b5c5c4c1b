"""`semsim analyze retrofit` and `semsim analyze markov-order` end to end, offline (a tiny random GPT-2 saved with
save_pretrained and the real corpus or a part of it); bad inputs give one-line errors with exit status 1."""
import json
from pathlib import Path

from test_analyze_cli import run, one_line_error, tiny_gpt2   # noqa: F401 (the fixture)


def small_corpus(shared_data, path, n_dom=3, n=4):
    c = json.loads((shared_data/'stp_corpus_50.json').read_text())['domains']
    path.write_text(json.dumps({'domains': {d: s[:n] for d, s in list(c.items())[:n_dom]}}))
    return path


def test_retrofit_on_the_real_corpus(shared_data, tiny_gpt2, tmp_path):
    out = tmp_path/'out'
    r = run('analyze', 'retrofit', '--model', tiny_gpt2, '--corpus', shared_data/'stp_corpus_50.json', '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'static null' in r.stdout and 'E4 TEST gaussian/skew/full' in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ['retrofit.json', 'retrofit_menu.png']
    res = json.loads((out/'retrofit.json').read_text())
    assert res['L'] == 2 and len(res['E1']) == 12 and set(res['E5']) == {'omega_x', 'B_const', 'B_affine_r1', 'B_affine_r2', 'omega_and_Bconst'}
    assert res['gamma_star'] in [e['gamma'] for e in res['E1']] and 0 < res['null']['test'] < 10


def test_markov_order_cli(shared_data, tiny_gpt2, tmp_path):
    out = tmp_path/'out'
    r = run('analyze', 'markov-order', '--model', tiny_gpt2, '--corpus', small_corpus(shared_data, tmp_path/'c.json'),
            '--out', out, '--n-boot', '200', '--pca', '8')
    assert r.returncode == 0, r.stderr
    assert 'ρ12' in r.stdout and '-> decision' in r.stdout
    res = json.loads((out/'markov_order.json').read_text())
    assert res['n_sentences'] == 12 and res['decision'] in ('A', 'B', 'C') and res['p'] == 8
    assert (out/'markov_order.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_bad_inputs(shared_data, tiny_gpt2, tmp_path):
    (tmp_path/'flat.json').write_text(json.dumps(['one sentence here.', 'another one.', 'and a third.']))
    one_line_error(run('analyze', 'retrofit', '--model', tiny_gpt2, '--corpus', tmp_path/'flat.json', '--out', tmp_path/'o'),
                   'per domain')
    (tmp_path/'two.json').write_text(json.dumps(['The cat sat on the mat today.', 'Two plus two is four, they said.']))
    one_line_error(run('analyze', 'markov-order', '--model', tiny_gpt2, '--corpus', tmp_path/'two.json', '--out', tmp_path/'o'),
                   'at least 3 sentences')
    one_line_error(run('analyze', 'markov-order', '--model', tmp_path/'none', '--corpus', tmp_path/'two.json', '--out', tmp_path/'o'),
                   'model folder not found')
