"""Kill and resume: a training process killed with SIGKILL after a checkpoint, then resumed with --resume, produces
exactly the loss sequence of an uninterrupted run (CPU, bitwise), and the checkpoint it resumed from was readable."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path

import pytest

WORDS = ('the king and queen of a small city walked through the old market at night while soldiers sang songs '
         'about bread wine war peace love death honour gold silver rivers mountains ships storms lords ladies').split()


def corpus(path: Path, n_words: int = 30_000) -> Path:
    "A deterministic word-salad corpus (a few hundred GPT-2 token types): tokenizes in a second, needs no data folder."
    rng = random.Random(0)
    lines = [' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + '.' for _ in range(n_words // 9)]
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path


def train_cmd(out, corpus_path, *extra):
    return [sys.executable, '-m', 'semsim.train', '--preset', 'smoke', '--model', 'splm-em-ln', '--out', str(out),
            '--no-progress', '--max-steps', '100', '--set', f'corpus={corpus_path}', '--set', 'compact_vocab=true',
            '--set', 'd=16', '--set', 'L=2', '--set', 'v_hidden=32', '--set', 'batch_size=4', '--set', 'block_size=32',
            '--set', 'eval_every=40', '--set', 'eval_iters=2', '--set', 'ckpt_every=20', '--set', 'threads=1', *extra]


def losses(out):
    return [json.loads(l) for l in (Path(out)/'log.jsonl').read_text().splitlines()]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, isolated_cache):
    text = corpus(tmp_path/'salad.txt')
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    whole, cut = tmp_path/'whole', tmp_path/'cut'
    r = subprocess.run(train_cmd(whole, text), capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]

    # start the same run, and kill it hard once a checkpoint exists and a few steps beyond it are logged
    proc = subprocess.Popen(train_cmd(cut, text), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline, killed_at = time.time() + 240, None
    try:
        while time.time() < deadline and proc.poll() is None:
            latest = cut/'latest'
            if latest.exists() and (cut/'log.jsonl').exists():
                ck = int(latest.read_text().strip().split('-')[1])
                n = len((cut/'log.jsonl').read_text().splitlines())
                if n >= ck + 3: killed_at = n; proc.send_signal(signal.SIGKILL); break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None: proc.kill()
        proc.wait()
    assert killed_at is not None, 'the run ended before it could be killed mid-run'
    assert proc.returncode == -signal.SIGKILL
    ck_step = int((cut/'latest').read_text().strip().split('-')[1])
    assert 20 <= ck_step < 100 and (cut/f'ckpt-{ck_step}'/'model.safetensors').exists()
    assert not (cut/'summary.json').exists()

    # `--resume --out DIR` alone continues with the saved settings (the refusals without --resume, or with changed
    # settings, are tested in-process in the Training chapter and in test_train_cli.py)
    r = subprocess.run([sys.executable, '-m', 'semsim.train', '--out', str(cut), '--resume', '--no-progress'],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'resumed from step {ck_step}' in r.stdout + r.stderr

    a, b = losses(whole), losses(cut)
    assert [x['step'] for x in b] == list(range(1, 101))
    assert [x['loss'] for x in b] == [x['loss'] for x in a]            # exact, not approximately
    assert [x['grad_norm'] for x in b] == [x['grad_norm'] for x in a]
    assert [x.get('val_loss') for x in b] == [x.get('val_loss') for x in a]
    sa, sb = (json.loads((d/'summary.json').read_text()) for d in (whole, cut))
    assert sa['val_loss'] == sb['val_loss'] and sb['steps'] == 100
