"""The whole test suite behind `make test`, ending with one line `N passed, N failed`.

Stages (each counted): the library is what `nbdev_export` makes of the notebooks, notebooks are clean (`nbdev_clean`
changes nothing), every notebook equals its text source in `nbs_py/` — all three checked on scratch copies, so the
suite never overwrites a file —, the import-linter contracts of `.importlinter` hold, every notebook passes
nbdev's test (one count per notebook), every pytest test in `tests/` (one count per test), README.md is fresh and the
offline docs site renders without loading anything from the network. Exit status is non-zero on any failure.

Usage: python tools/suite.py [--only checks,arch,nbs,pytest,docs] [--flags slow] [--workers 2]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN = Path(PY).parent
results = []  # (name, passed, note)


def record(name, ok, note=''):
    results.append((name, ok, note))
    print(f"{'PASS' if ok else 'FAIL'}  {name}{(' — ' + note) if note else ''}", flush=True)


def nb_files(): return [p for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)


def _tree(root:Path) -> dict:
    "relative path -> bytes of every file under root (no caches)."
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob('*')
            if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts}


def _scratch_copy(d:Path, *names):
    "Copy settings.ini and the named folders of the checkout into the scratch folder d (links followed)."
    shutil.copy(ROOT/'settings.ini', d/'settings.ini')
    for n in names: shutil.copytree(ROOT/n, d/n)


def checks():
    "Read-only checks: each tool runs on a scratch copy, and its result is compared with the checkout."
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); _scratch_copy(d, 'nbs'); (d/'semsim').mkdir()
        r = subprocess.run([str(BIN/'nbdev_export')], cwd=d, capture_output=True, text=True)
        want, have = _tree(d/'semsim'), _tree(ROOT/'semsim')
        changed = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        record('semsim/ is what nbdev_export makes of the notebooks (exported into a scratch folder and compared)',
               r.returncode == 0 and not changed,
               r.stderr.strip()[-300:] if r.returncode else (f"differs in {', '.join(changed[:6])}: edit the chapter in "
               "nbs_py/ and run `make sync export`, or for a fix made in semsim/ run `make update`" if changed else ''))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); _scratch_copy(d, 'nbs')
        r = subprocess.run([str(BIN/'nbdev_clean')], cwd=d, capture_output=True, text=True)
        want, have = _tree(d/'nbs'), _tree(ROOT/'nbs')
        changed = sorted(k for k in have if k.endswith('.ipynb') and want.get(k) != have[k])
        record('notebooks are clean (nbdev_clean on a scratch copy changes nothing)', r.returncode == 0 and not changed,
               r.stderr.strip()[-300:] if r.returncode else (f"{', '.join(changed[:6])}: run `make clean-nbs`" if changed else ''))
    unexecuted = []
    for nb in nb_files():
        cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
        plots = [c for c in cells if c['cell_type'] == 'code' and 'plt.' in ''.join(c['source'])
                 and not any(d in ''.join(c['source']) for d in ('#| eval: false', '#| slow', '#| cuda'))]
        images = sum('image/png' in o.get('data', {}) for c in cells if c['cell_type'] == 'code' for o in c.get('outputs', []))
        if plots and not images: unexecuted.append(str(nb.relative_to(ROOT)))
    record('notebooks that plot carry their figures (executed with `make nbs`)', not unexecuted, ', '.join(unexecuted))
    sys.path.insert(0, str(ROOT/'tools'))
    from sync import stale
    bad = stale()
    record('every notebook equals its text source in nbs_py/ (content, not modification time)', not bad,
           ', '.join(f"{py.relative_to(ROOT)} ({why})" for py, _, why in bad[:5]) + (' … run `make sync`' if bad else ''))


def architecture():
    "The import-linter contracts of .importlinter, one count each (imports inside functions included)."
    r = run([str(BIN/'lint-imports'), '--no-cache'])
    out = ' '.join(r.stdout.split())                                        # contract names are wrapped over lines
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'.importlinter', encoding='utf-8')
    names = [cfg[s]['name'] for s in cfg.sections() if s.startswith('importlinter:contract:')]
    for n in names:
        flat = ' '.join(n.split())
        record(f'import contract: {flat}', f'{flat} KEPT' in out, '' if f'{flat} KEPT' in out else 'run `.venv/bin/lint-imports`')
    if r.returncode and all(f"{' '.join(n.split())} KEPT" in out for n in names): record('lint-imports', False, r.stderr.strip()[-300:])


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
    ap.add_argument('--only', default='checks,arch,nbs,pytest,docs')
    ap.add_argument('--flags', default='')
    ap.add_argument('--workers', type=int, default=min(os.cpu_count() or 1, 2))
    a = ap.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
    os.environ.setdefault('MPLBACKEND', 'Agg')
    if a.workers > 1: os.environ.setdefault('OMP_NUM_THREADS', '1')
    t = time.time()
    stages = a.only.split(',')
    if 'checks' in stages: checks()
    if 'arch' in stages: architecture()
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
