"""Execute notebooks in place so that their outputs (figures, printed figures of merit) are stored for the docs.

Cells marked `#| eval: false`, `#| slow` or `#| cuda` are not run (pass `--flags slow` to run slow cells too),
exactly as `nbdev_test` skips them. Then run `nbdev_clean` to strip execution metadata.

Usage: python tools/run_nbs.py nbs/05_data.ipynb [more.ipynb ...] [--flags slow] [--timeout 600]
"""
import argparse, os, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient


def _skip(src, flags):
    "True when the cell carries a directive that nbdev_test would skip."
    for line in src.splitlines():
        m = re.match(r'^\s*#\|\s*(.*)$', line)
        if not m: continue
        d = m.group(1).strip().replace(' ', '')
        if d in ('eval:false', 'eval:False'): return True
        if d in ('slow', 'cuda') and d not in flags: return True
    return False


def run(path, flags=(), timeout=600):
    "Execute one notebook in its own folder, leaving skipped cells' source intact and their outputs empty."
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    saved = {}
    for i, c in enumerate(nb.cells):
        if c.cell_type == 'code' and _skip(c.source, flags):
            saved[i] = c.source; c.source = ''
    t = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    for i, src in saved.items():
        nb.cells[i].source = src; nb.cells[i].outputs = []; nb.cells[i].execution_count = None
    nbformat.write(nb, path)
    print(f'{path}: ran in {time.time()-t:.1f}s ({len(saved)} cells skipped)')


if __name__ == '__main__':
    # the kernel must use the inline backend so figures are stored: drop a non-interactive backend set for tests
    os.environ.pop('MPLBACKEND', None)
    # keep environment noise out of the stored outputs: tqdm warns at import when ipywidgets is not installed
    os.environ['PYTHONWARNINGS'] = 'ignore:IProgress not found'
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('nbs', nargs='+')
    ap.add_argument('--flags', nargs='*', default=[])
    ap.add_argument('--timeout', type=int, default=600)
    a = ap.parse_args()
    for p in a.nbs: run(p, a.flags, a.timeout)
