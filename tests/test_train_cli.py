"""The training command line (`semsim.train.main`, the function behind `semsim train` and `python -m semsim.train`):
one-line errors with status 1 for bad input, status 2 for a leaking model, status 3 for a non-finite loss."""
import contextlib, io, json, random, subprocess, sys
from pathlib import Path

import pytest

from semsim.train import main, read_log, latest_checkpoint
from conftest import run_train

TINY = ['--set', 'compact_vocab=true', '--set', 'd=16', '--set', 'L=2', '--set', 'v_hidden=32', '--set', 'batch_size=4',
        '--set', 'block_size=16', '--set', 'eval_every=5', '--set', 'eval_iters=2', '--set', 'ckpt_every=5',
        '--set', 'threads=1', '--no-progress']


def run(argv):
    "(status, stdout, stderr) of main(argv)."
    return run_train(argv)


@pytest.mark.parametrize('argv, msg', [
    (['--preset', 'tinystory'], "unknown preset 'tinystory'; known presets: smoke, shakespeare"),
    (['--model', 'gpt5'], "unknown model 'gpt5'"),
    (['--set', 'xi_chanels=4'], "unknown option 'xi_chanels'"),
    (['--set', 'max_steps=ten'], "cannot parse 'ten' as int"),
    (['--set', 'block_size=4096'], "block_size 4096 exceeds the model's max_len 128"),
    (['--set', 'vocab_size=1000'], 'token ids up to'),
    (['--set', 'mass_mode=heavy'], 'mass_mode must be one of'),
    (['--set', 'batch_size=-2'], 'batch_size must be a positive integer'),
])
def test_bad_input_is_one_line_status_1(tmp_path, isolated_cache, salad, argv, msg):
    rc, out, err = run(argv + ['--out', str(tmp_path/'never'), '--set', f'corpus={salad}'])
    assert rc == 1 and msg in err and err.startswith('semsim train: error:') and err.count('\n') == 1, err
    assert not (tmp_path/'never'/'log.jsonl').exists()


def test_unknown_option_lists_valid_keys(tmp_path):
    rc, _, err = run(['--model', 'splm-multixi', '--set', 'xi_chanels=4', '--out', str(tmp_path/'x')])
    assert rc == 1 and 'xi_channels' in err and 'max_steps' in err and 'lambda_v' in err


def test_missing_corpus_file(tmp_path):
    rc, _, err = run(['--set', f'corpus={tmp_path}/no-such.txt', '--out', str(tmp_path/'x')])
    assert rc == 1 and 'corpus file not found' in err


def test_leaking_model_refused_status_2(tmp_path, isolated_cache, salad):
    out = tmp_path/'leak'
    rc, _, err = run(['--model', 'splm-em-ln', '--set', 'causal_force=false', '--set', f'corpus={salad}', '--out', str(out), *TINY])
    assert rc == 2 and 'causal probe failed before step 0' in err and 'FLAGGED' in err
    assert not (out/'log.jsonl').exists()
    rc, out_, _ = run(['--model', 'splm-em-ln', '--set', f'corpus={salad}', '--out', str(tmp_path/'ok'), '--max-steps', '2', *TINY])
    assert rc == 0 and '2 steps' in out_


def test_non_finite_loss_status_3_keeps_checkpoint(tmp_path, isolated_cache, salad):
    "An absurd learning rate blows the weights up; the run stops naming the step and keeps its last good checkpoint."
    out = tmp_path/'boom'
    rc, _, err = run(['--model', 'matched-gpt', '--set', 'lr=1e30', '--set', 'warmup=0', '--set', f'corpus={salad}',
                      '--out', str(out), '--max-steps', '20', *TINY, '--set', 'ckpt_every=1'])
    assert rc == 3 and 'non-finite' in err and 'at step' in err and err.count('\n') == 1, err
    step = int(err.split('at step ')[1].split()[0])          # the first update already sends the weights to ~1e30
    assert step >= 2 and f'The last good checkpoint is {out}/ckpt-{step - 1}' in err
    assert [r['step'] for r in read_log(out/'log.jsonl')] == list(range(1, step))
    assert latest_checkpoint(out).name == f'ckpt-{step - 1}' and not (out/'summary.json').exists()


def test_existing_run_needs_resume(tmp_path, isolated_cache, salad):
    out = tmp_path/'run'
    args = ['--model', 'matched-gpt', '--set', f'corpus={salad}', '--out', str(out), '--max-steps', '5', *TINY]
    assert run(args)[0] == 0
    rc, _, err = run(args)
    assert rc == 1 and 'already holds a run' in err and 'pass --resume' in err
    rc, _, err = run(args + ['--resume', '--set', 'seed=1'])
    assert rc == 1 and "differs from the saved run's in ['seed']" in err
    rc, out_, _ = run(['--out', str(out), '--resume', '--no-progress'])      # finished run: resumes at its end
    assert rc == 0 and 'resumed from step 5' in out_
    s = json.loads((out/'summary.json').read_text())
    assert s['steps'] == 5 and s['model'] == 'matched-gpt' and (out/'loss_curve.png').stat().st_size > 1000
    assert '| steps | 5 |' in (out/'summary.md').read_text()


def test_list_and_print_config():
    rc, out, _ = run(['--list'])
    assert rc == 0 and 'tinystories-16k' in out and 'splm-sq3' in out
    rc, out, _ = run(['--preset', 'tinystories-16k', '--print-config'])
    c = json.loads(out)
    assert (c['model'], c['max_steps'], c['warmup'], c['model_args']['d'], c['block_size'], c['corpus']) == ('splm-sq3', 16000, 400, 256, 512, 'tinystories')


BIN = Path(sys.executable).parent/'semsim'


def test_semsim_train_help_is_forwarded():
    r = subprocess.run([str(BIN), 'train', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and '--preset' in r.stdout and '--resume' in r.stdout and 'KEY=VALUE' in r.stdout


def test_semsim_demo_side_by_side(tmp_path, shared_data, isolated_cache):
    "The main job, shortened: both models trained in parallel processes, PPL table, two passed probes, samples, plots."
    out = tmp_path/'demo'
    r = subprocess.run([str(BIN), 'demo', '--max-steps', '4', '--set', 'eval_iters=2', '--sample-tokens', '6',
                        '--no-progress', '--out', str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'side by side' in r.stdout and r.stdout.count('PASSED') == 2 and 'semsim demo: done in' in r.stdout
    assert 'train 321,124 / val 16,901' in r.stdout                       # the data report it always printed
    assert (out/'loss_curves.png').exists()
    for m in ('splm-multixi', 'matched-gpt'):
        s = json.loads((out/m/'summary.json').read_text())
        assert s['steps'] == 4 and s['vocab_size'] == 11_706 and (out/m/'loss_curve.png').exists()
    r = subprocess.run([str(BIN), 'demo', '--max-steps', '2', '--set', 'eval_iters=1', '--sample-tokens', '2',
                        '--no-progress', '--sequential', '--out', str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]                            # a second demo replaces the first
    assert json.loads((out/'matched-gpt'/'summary.json').read_text())['steps'] == 2


def test_resume_needs_a_run(tmp_path, isolated_cache, salad):
    "A mistyped --out with --resume is an error (exit 1), never a silent fresh start."
    rc, out_, err = run(['--out', str(tmp_path/'no-such-run'), '--resume', '--no-progress'])
    assert rc == 1 and 'holds no run to continue' in err and not (tmp_path/'no-such-run').exists()
    (tmp_path/'empty').mkdir()
    rc, _, err = run(['--model', 'matched-gpt', '--set', f'corpus={salad}', '--out', str(tmp_path/'empty'), '--resume', *TINY])
    assert rc == 1 and 'holds no run to continue' in err
    rc, _, err = run(['--resume', '--no-progress'])
    assert rc == 1 and '--resume needs --out' in err


def test_extend_a_finished_run(tmp_path, isolated_cache, salad):
    "Training longer is refused without --extend (the message says how) and works with it, the schedule stretched."
    out = tmp_path/'run'
    assert run(['--model', 'matched-gpt', '--set', f'corpus={salad}', '--out', str(out), '--max-steps', '5', *TINY])[0] == 0
    rc, _, err = run(['--out', str(out), '--resume', '--max-steps', '8', '--no-progress'])
    assert rc == 1 and "differs from the saved run's in ['max_steps']" in err and 'add --extend' in err
    rc, _, err = run(['--out', str(out), '--extend', '--no-progress'])
    assert rc == 1 and '--extend needs --resume' in err
    rc, out_, err = run(['--out', str(out), '--resume', '--extend', '--max-steps', '8', '--no-progress'])
    assert rc == 0, err
    assert 'extending the run from 5 to 8 steps' in out_ and 'resumed from step 5' in out_
    assert [r['step'] for r in read_log(out/'log.jsonl')] == list(range(1, 9))
    assert json.loads((out/'train_config.json').read_text())['max_steps'] == 8
    rc, _, err = run(['--out', str(out), '--resume', '--extend', '--max-steps', '6', '--no-progress'])
    assert rc == 1 and 'below the 8 steps the run has done' in err
