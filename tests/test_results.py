"tools/results.py: a results record written from finished run folders (a tiny real run)."
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_results_record_from_a_finished_run(tmp_path, isolated_cache):
    from semsim.train import train, make_config
    from test_train_resume import corpus
    out, text = tmp_path/'run', corpus(tmp_path/'words.txt', 6000)
    train(make_config('smoke', model='splm-em-ln', corpus=str(text), compact_vocab=True, d=16, L=2, v_hidden=32,
                      batch_size=4, block_size=16, max_steps=6, eval_every=3, eval_iters=2, ckpt_every=6, warmup=1,
                      probe=False, progress=False, out=str(out)))
    dest = tmp_path/'rec.json'
    r = subprocess.run([sys.executable, str(ROOT/'tools/results.py'), 'shakespeare-cpu', str(out), '--out', str(dest)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads(dest.read_text())
    run, = rec['runs']
    assert (run['model'], run['steps'], sorted(run['val_ppl_at'])) == ('splm-em-ln', 6, ['3', '6'])
    assert run['val_ppl'] == run['val_ppl_at']['6'] and run['best_val_ppl'] == min(run['val_ppl_at'].values())
    assert 'gamma' in run['final_scalars'] and rec['reference']['matched-gpt']['val_ppl'] == 149.80


def test_results_refuses_an_unfinished_folder(tmp_path):
    (tmp_path/'half').mkdir()
    r = subprocess.run([sys.executable, str(ROOT/'tools/results.py'), 'shakespeare-cpu', str(tmp_path/'half'),
                        '--out', str(tmp_path/'x.json')], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'no summary.json' in r.stderr and not (tmp_path/'x.json').exists()
