"""The whole test suite behind `make test`, ending with one line `N passed, N failed`.

Stages (each counted): the library is in sync with the notebooks (`nbdev_export` changes nothing), notebooks are
clean (`nbdev_clean` changes nothing), jupytext pairs in `nbs_py/` match their notebooks, every notebook passes
nbdev's test (one count per notebook), every pytest test in `tests/` (one count per test), README.md is fresh and the
offline docs site renders without loading anything from the network. Exit status is non-zero on any failure.

Usage: python tools/suite.py [--only checks,nbs,pytest,docs] [--flags slow] [--workers 2]
"""
import argparse, hashlib, os, subprocess, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN = Path(PY).parent
results = []  # (name, passed, note)


def record(name, ok, note=''):
    results.append((name, ok, note))
    print(f"{'PASS' if ok else 'FAIL'}  {name}{(' — ' + note) if note else ''}", flush=True)


def tree_hash(paths):
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode()); h.update(p.read_bytes())
    return h.hexdigest()


def lib_files(): return [p for p in (ROOT/'semsim').rglob('*') if p.is_file() and '__pycache__' not in p.parts]
def nb_files(): return [p for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)


def checks():
    before = tree_hash(lib_files())
    r = run([str(BIN/'nbdev_export')])
    record('nbdev_export leaves semsim/ unchanged (notebooks and library in sync)',
           r.returncode == 0 and tree_hash(lib_files()) == before,
           r.stderr.strip()[-300:] if r.returncode else ('' if tree_hash(lib_files()) == before else 'semsim/ changed: run `make export` and commit'))
    before = tree_hash(nb_files())
    r = run([str(BIN/'nbdev_clean')])
    record('notebooks are clean (nbdev_clean changes nothing)', r.returncode == 0 and tree_hash(nb_files()) == before,
           '' if tree_hash(nb_files()) == before else 'notebooks changed: run `make clean-nbs` and commit')
    import json
    unexecuted = []
    for nb in nb_files():
        cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
        plots = [c for c in cells if c['cell_type'] == 'code' and 'plt.' in ''.join(c['source'])
                 and not any(d in ''.join(c['source']) for d in ('#| eval: false', '#| slow', '#| cuda'))]
        images = sum('image/png' in o.get('data', {}) for c in cells if c['cell_type'] == 'code' for o in c.get('outputs', []))
        if plots and not images: unexecuted.append(str(nb.relative_to(ROOT)))
    record('notebooks that plot carry their figures (executed with `make nbs`)', not unexecuted, ', '.join(unexecuted))
    import jupytext
    stale = []
    for nb in nb_files():
        pair = ROOT/'nbs_py'/nb.relative_to(ROOT/'nbs').with_suffix('.py')
        text = jupytext.writes(jupytext.read(nb), fmt='py:percent')
        if not pair.exists() or pair.read_text(encoding='utf-8') != text: stale.append(str(pair.relative_to(ROOT)))
    record('jupytext pairs in nbs_py/ match their notebooks', not stale, ', '.join(stale[:5]) + (' … (run `make sync`)' if stale else ''))


def notebooks(flags, workers):
    from nbdev.test import test_nb
    from nbdev.config import get_config
    from fastcore.parallel import parallel
    cfg = get_config()
    files = sorted(p.absolute() for p in nb_files() if not p.name.startswith('_'))
    os.chdir(cfg.nbs_path)
    t = time.time()
    res = parallel(test_nb, files, skip_flags=cfg.tst_flags.split(), force_flags=flags.split(), n_workers=workers,
                   basepath=cfg.config_path, pause=0.01)
    for f, (ok, secs) in zip(files, res): record(f'notebook {f.relative_to(ROOT)}', ok, f'{secs:.1f}s')
    os.chdir(ROOT)
    print(f'notebooks took {time.time()-t:.0f}s', flush=True)


def pytest_stage():
    xml = ROOT/'.pytest-results.xml'
    r = subprocess.run([PY, '-m', 'pytest', 'tests', f'--junitxml={xml}', '-q', '-p', 'no:cacheprovider'], cwd=ROOT)
    if not xml.exists(): record('pytest tests/', False, f'pytest exited {r.returncode} without results'); return
    n = 0
    for case in ET.parse(xml).getroot().iter('testcase'):
        n += 1
        bad = case.find('failure') is not None or case.find('error') is not None
        if case.find('skipped') is not None: continue
        record(f"pytest {case.get('classname')}::{case.get('name')}", not bad)
    xml.unlink()
    if r.returncode not in (0, 5) and n == 0: record('pytest tests/', False, f'exit {r.returncode}')


def docs():
    r = run([PY, 'tools/docs.py', '--check-readme'])
    record('README.md is generated from nbs/index.ipynb and fresh', r.returncode == 0, (r.stdout + r.stderr).strip()[-300:])
    r = run([PY, 'tools/docs.py', '--site'])
    out = (r.stdout + r.stderr).strip()
    record('offline docs site renders with local MathJax and no network loads', r.returncode == 0, out.splitlines()[-1] if out else '')
    if r.returncode: print(out[-3000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', default='checks,nbs,pytest,docs')
    ap.add_argument('--flags', default='')
    ap.add_argument('--workers', type=int, default=min(os.cpu_count() or 1, 2))
    a = ap.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
    os.environ.setdefault('MPLBACKEND', 'Agg')
    if a.workers > 1: os.environ.setdefault('OMP_NUM_THREADS', '1')
    t = time.time()
    stages = a.only.split(',')
    if 'checks' in stages: checks()
    if 'nbs' in stages: notebooks(a.flags, a.workers)
    if 'pytest' in stages: pytest_stage()
    if 'docs' in stages: docs()
    npass = sum(ok for _, ok, _ in results); nfail = len(results) - npass
    if nfail:
        print('\nFailures:'); [print(f'  {n}' + (f' — {note}' if note else '')) for n, ok, note in results if not ok]
    print(f'suite took {time.time()-t:.0f}s')
    print(f'{npass} passed, {nfail} failed')
    return 1 if nfail or not results else 0


if __name__ == '__main__': sys.exit(main())
