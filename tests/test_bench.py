"""The benchmarks' output contract: every script runs (in --quick mode: tiny sizes, numbers not meaningful), writes
its JSON where it is told, leaves the committed bench/measured/ alone, and prints its figure on the last line."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.stem.removeprefix('bench_') for p in (ROOT / 'bench').glob('bench_*.py'))


def run(name, *args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / 'bench' / f'bench_{name}.py'), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_every_question_has_a_script():
    assert BENCHES == ['decode', 'flops', 'forces', 'hybrid_decode', 'memory', 'train_compile', 'train_profile', 'train_throughput',
                       'vs_attention', 'xi_pools']


@pytest.mark.parametrize('name', BENCHES)
def test_bench_quick_prints_result_last(name, tmp_path):
    measured = {p.name: p.read_bytes() for p in (ROOT / 'bench' / 'measured').glob('*.json')}
    r = run(name, '--quick', '--save', '--results', str(tmp_path))    # --save is ignored in --quick mode
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith('RESULT '), last
    out = list(tmp_path.glob('*.json'))
    assert len(out) == 1 and 'hardware' in json.loads(out[0].read_text())
    assert {p.name: p.read_bytes() for p in (ROOT / 'bench' / 'measured').glob('*.json')} == measured


def test_bench_flops_matches_the_reference(tmp_path):
    r = run('flops', '--results', str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1].startswith('RESULT') and 'T* = 6,666' in r.stdout
    res = json.loads((tmp_path / 'flops.json').read_text())
    assert round(res['splm_mflops'], 2) == 44.40 and all(res['reference_checks'].values())


def test_bench_rejects_unknown_options():
    r = run('xi_pools', '--no-such-option')
    assert r.returncode == 2 and 'unrecognized arguments' in r.stderr
