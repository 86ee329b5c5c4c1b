"""`semsim analyze separator` end to end, offline: a tiny random GPT-2 saved with save_pretrained and a semsim run
folder, the real 50-sentence corpus, separator.json and the profile figure; bad inputs give one-line errors."""
import json, subprocess, sys
from pathlib import Path
import pytest
import torch
from torch import nn

from test_analyze_cli import run, one_line_error, tiny_gpt2   # noqa: F401 (the fixture)


def test_separator_on_a_saved_gpt2(shared_data, tiny_gpt2, tmp_path):
    out = tmp_path/'out'
    r = run('analyze', 'separator', '--model', tiny_gpt2, '--corpus', shared_data/'stp_corpus_50.json', '--out', out,
            '--steps', '60', '--hidden', '32', '--jacobian', '--pair', '--pair-hidden', '8')
    assert r.returncode == 0, r.stderr
    assert 'depth-axis separator, median TEST R²' in r.stdout and 'Jacobian symmetry: max gap' in r.stdout
    assert 'pair test: median TEST R²' in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ['separator.json', 'separator_profile.png']
    assert (out/'separator_profile.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    res = json.loads((out/'separator.json').read_text())
    assert (res['n_train_sentences'], res['n_test_sentences'], res['L'], res['fit']['layers']) == (40, 10, 2, [1])
    assert res['fit']['n_test'] > 0 and len(res['jacobian']['gap']) == 1 and 'oracle' not in res
    pr = res['pair']                                  # the same TEST tokens as the one-body fit, one unit per sentence
    assert pr['layers'] == [1] and (pr['n_train'], pr['n_test'], pr['pair_hidden']) == (40, 10, 8) and len(pr['gain']) == 1
    one_line_error(run('analyze', 'separator', '--model', tiny_gpt2, '--corpus', shared_data/'stp_corpus_50.json',
                       '--out', tmp_path/'tok', '--axis', 'token', '--pair', '--steps', '2'), 'pair test runs on the depth axis')


def test_separator_token_axis_on_a_semsim_run_with_oracle(shared_data, tmp_path):
    "A semsim run folder (compact vocabulary trained on the corpus itself) is opened with its own codec; the oracle runs."
    from semsim.train import train, make_config
    corpus = json.loads((shared_data/'stp_corpus_50.json').read_text())
    text = tmp_path/'text.txt'
    text.write_text('\n'.join(s for sents in corpus['domains'].values() for s in sents) * 20 + '\n')
    train(make_config('smoke', model='splm-vanilla', corpus=str(text), compact_vocab=True, d=16, L=3, v_hidden=32, max_len=64,
                      batch_size=4, block_size=32, max_steps=4, eval_every=4, eval_iters=1, ckpt_every=4, probe=False,
                      progress=False, out=str(tmp_path/'run')))
    out = tmp_path/'sep'
    r = run('analyze', 'separator', '--model', tmp_path/'run', '--corpus', shared_data/'stp_corpus_50.json', '--out', out,
            '--axis', 'token', '--steps', '40', '--hidden', '16')
    assert r.returncode == 0, r.stderr
    res = json.loads((out/'separator.json').read_text())
    assert res['axis'] == 'token' and res['fit']['layers'] == [0, 1, 2, 3]
    assert min(res['oracle']['r2']) > 1 - 1e-9 and res['oracle']['exact_form']
    # float64 least squares on two nearly collinear columns (v and -∇V after 4 training steps): the error is
    # cond(X)·eps, measured up to 1.2e-8 on CI's CPU; a wrong integrator constant is off by > 1e-2
    assert abs(res['oracle']['alpha'][0] - res['oracle']['expected_alpha']) < 1e-6


@pytest.mark.parametrize('corpus, msg', [
    (['one sentence.', 'two sentences.', 'three.'], 'the separator\'s split is per domain'),
    ({'domains': {'a': ['x y z.', 'y z.'], 'b': ['p q.', 'q r.', 'r s.']}}, "domain 'a' has 2 sentences"),
])
def test_separator_bad_corpus(tiny_gpt2, tmp_path, corpus, msg):
    (tmp_path/'c.json').write_text(json.dumps(corpus))
    one_line_error(run('analyze', 'separator', '--model', tiny_gpt2, '--corpus', tmp_path/'c.json', '--out', tmp_path/'o'), msg)


def test_separator_missing_model(shared_data, tmp_path):
    one_line_error(run('analyze', 'separator', '--model', tmp_path/'nothing', '--corpus', shared_data/'stp_corpus_50.json',
                       '--out', tmp_path/'o'), 'model folder not found')


def test_separator_model_without_hidden_states(shared_data):
    "A causal LM whose output has no hidden_states is refused with the message that names the convention."
    from semsim.separator import analyze_separator

    class LogitsOnly(nn.Module):
        def __init__(self):
            super().__init__(); self.emb = nn.Embedding(50257, 8)
        def forward(self, ids, **kw): return {'logits': self.emb(ids) @ self.emb.weight.T}
    with pytest.raises(ValueError, match="has no 'hidden_states'"):
        analyze_separator(LogitsOnly(), shared_data/'stp_corpus_50.json', tokenizer='gpt2', steps=5)


def test_separator_substack_on_a_hybrid_run(shared_data, tiny_gpt2, tmp_path):
    "A hybrid's run folder gets the sub-stack test automatically (a fresh V_ψ per A/S run of >= 3 blocks); a GPT-2 refuses it."
    from semsim.train import train, make_config
    corpus = json.loads((shared_data/'stp_corpus_50.json').read_text())
    text = tmp_path/'text.txt'
    text.write_text('\n'.join(s for sents in corpus['domains'].values() for s in sents) * 20 + '\n')
    train(make_config('smoke', model='helmholtz-q9d', corpus=str(text), compact_vocab=True, d=16, n_head=2, v_hidden=32, max_len=64,
                      schedule='AAASSS', batch_size=4, block_size=32, max_steps=4, eval_every=4, eval_iters=1, ckpt_every=4,
                      progress=False, out=str(tmp_path/'run')))
    out = tmp_path/'sep'
    r = run('analyze', 'separator', '--model', tmp_path/'run', '--corpus', shared_data/'stp_corpus_50.json', '--out', out,
            '--steps', '40', '--hidden', '16')
    assert r.returncode == 0, r.stderr
    res = json.loads((out/'separator.json').read_text())
    assert [(s['kind'], s['blocks']) for s in res['substack']['segments']] == [('A', [1, 3]), ('S', [4, 6])]
    assert 'sub-stack S blocks 4-6: median TEST R²' in r.stdout
    one_line_error(run('analyze', 'separator', '--model', tiny_gpt2, '--corpus', shared_data/'stp_corpus_50.json',
                       '--out', tmp_path/'o', '--substack', '--steps', '10'), 'substack=True needs a model with a config.schedule')
