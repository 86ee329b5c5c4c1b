"""bench/device_check.py, the prepared GPU check (issue 18), runs on a CPU with --quick: exit code 0, one well-formed
RESULT line per figure, the JSON where --out says with every section ok, and bench/measured/ untouched."""
import json, os, re, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'bench' / 'device_check.py'
LINE = re.compile(r'^RESULT (train|sq3|decode|tf32|trainer)\.[\w.]+ (-?\d+(\.\d+)?(e[+-]?\d+)?|inf|nan|None|True|False) [\w/]+$')


def run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_device_check_cpu_quick(tmp_path):
    measured = {p.name: p.read_bytes() for p in (ROOT / 'bench' / 'measured').glob('*.json')}
    r = run('--device', 'cpu', '--quick', '--out', str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    lines = [l for l in r.stdout.splitlines() if l.startswith('RESULT')]
    bad = [l for l in lines if not LINE.match(l)]
    assert lines and not bad, bad
    res = json.loads((tmp_path / 'device_check_cpu.json').read_text())
    assert res['status'] == {s: 'ok' for s in ('train', 'sq3', 'decode', 'tf32', 'trainer')}, res['status']
    assert {'hardware', 'shape', 'models', 'wall_s', 'quick', 'device'} <= set(res) and res['quick'] and res['device'] == 'cpu'
    # every printed figure is in the JSON with the printed value
    for l in lines:
        key, value = l.split()[1], l.split()[2]
        section, name = key.split('.', 1)
        assert name in res[section], key
        assert f'{res[section][name]:.6g}' == value if isinstance(res[section][name], float) else str(res[section][name]) == value
    for m in ('splm_mlp', 'splm_sq3', 'matched_gpt'): assert res['train'][f'{m}.eager.tokens_per_s'] > 0
    # the compiled rows run (traced with aot_eager under --quick) where the trainer compiles, and only there
    for m in ('splm_sq3', 'matched_gpt'): assert res['train'][f'{m}.compiled.tokens_per_s'] > 0
    assert 'autograd force' in res['train']['splm_mlp.compiled.skipped'] and res['row_errors'] == []
    assert res['sq3']['force_max_rel_diff'] < 1e-4 and res['sq3']['force_ratio'] > 0
    assert res['tf32']['force_rel_diff_tf32_on_vs_off'] == 0.0       # no TF32 on a CPU: both sides are the same fp32
    assert 0 < res['tf32']['force_rel_diff_fp32_vs_fp64'] < 1e-4
    for m in ('splm_multixi', 'splm_sq3'):       # the trainer end to end, and the saved run's cached decoding
        assert res['trainer'][f'{m}.finite'] is True and res['trainer'][f'{m}.cached_vs_recompute_logits_rel_diff'] < 1e-5
    assert res['trainer']['splm_multixi.how']['amp'] == 'off' and res['trainer']['splm_sq3.how']['compile'] == 'eager'
    assert {p.name: p.read_bytes() for p in (ROOT / 'bench' / 'measured').glob('*.json')} == measured


def test_device_check_rejects_bad_input(tmp_path):
    r = run('--device', 'cpu', '--quick', '--only', 'train,nope', '--out', str(tmp_path))
    assert r.returncode == 2 and 'unknown section(s) nope' in r.stderr
    r = run('--device', 'cpu', '--quick', '--out', str(ROOT / 'bench' / 'measured'))
    assert r.returncode == 2 and 'never go to bench/measured' in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_device_check_without_cuda_measures_nothing(tmp_path):
    r = run('--out', str(tmp_path))
    assert r.returncode == 2 and 'CUDA requested but not available' in r.stdout and not list(tmp_path.iterdir())


def test_a_failed_compile_costs_its_row_only(tmp_path, monkeypatch, capsys):
    "A compiled row that fails is recorded with its error, the eager figures stand, and the exit status is 1."
    import importlib.util
    spec = importlib.util.spec_from_file_location('device_check', SCRIPT)
    dc = importlib.util.module_from_spec(spec); spec.loader.exec_module(dc)
    def broken_compile(model, **kw):
        def call(*a, **k): raise RuntimeError('planted compile failure')
        return call
    monkeypatch.setattr(dc.torch, 'compile', broken_compile)
    rc = dc.main(['--device', 'cpu', '--quick', '--only', 'train', '--out', str(tmp_path)])
    res = json.loads((tmp_path / 'device_check_cpu.json').read_text())
    assert rc == 1 and res['status'] == {'train': 'ok'}
    assert res['row_errors'] == ['train.splm_sq3.compiled', 'train.matched_gpt.compiled']
    assert 'planted compile failure' in res['train']['splm_sq3.compiled.error']
    for m in ('splm_mlp', 'splm_sq3', 'matched_gpt'): assert res['train'][f'{m}.eager.tokens_per_s'] > 0
    assert 'rows that failed' in capsys.readouterr().out


def test_device_run_script(tmp_path):
    "bench/device_run.sh, the command a session with a GPU sends: semsim from the checkout, JSON and log under $OUT."
    env = {**os.environ, 'OUT': str(tmp_path), 'PATH': f"{Path(sys.executable).parent}:{os.environ['PATH']}", 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(['bash', str(ROOT / 'bench' / 'device_run.sh'), '--device', 'cpu', '--quick', '--only', 'decode'],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'torch ' in r.stdout and '| transformers ' in r.stdout
    res = json.loads((tmp_path / 'device_check_cpu.json').read_text())
    assert res['status'] == {'decode': 'ok'} and 'RESULT decode.' in (tmp_path / 'device_check.log').read_text()
    r = subprocess.run(['bash', str(ROOT / 'bench' / 'device_run.sh'), '--device', 'cpu', '--quick', '--only', 'nope'],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 2                                    # the check's own exit status comes through the tee
