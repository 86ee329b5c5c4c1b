"""One-way, content-based sync of the chapter sources: `nbs_py/*.py` (py:percent, hand-edited) -> `nbs/*.ipynb`.

The text file is the source of every chapter. A notebook is rewritten from its text (outputs kept, `jupytext
--update`, then `nbdev_clean`) when the two differ in content (blank lines between cells aside); modification times play no part, so a fresh checkout syncs to nothing.
A notebook edited directly (in Jupyter without the jupytext contents manager) whose text pair is unchanged in git is
never overwritten: the sync stops and names it, and `--adopt` takes that notebook's edit into its text file.

Usage:
  python tools/sync.py            # bring every notebook in line with its text (creates missing notebooks)
  python tools/sync.py --check    # only report pairs out of step; exit 1 if any (writes nothing)
  python tools/sync.py --adopt nbs/05_data.ipynb   # the notebook's content becomes the text source
"""
import argparse, subprocess, sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
SRC, NBS = ROOT/'nbs_py', ROOT/'nbs'


def pairs():
    "(text source, notebook) for every chapter: every nbs_py/**/*.py and every notebook with no text yet."
    out = {py: NBS/py.relative_to(SRC).with_suffix('.ipynb') for py in sorted(SRC.rglob('*.py'))}
    for nb in sorted(NBS.rglob('*.ipynb')):
        if '.ipynb_checkpoints' in nb.parts: continue
        py = SRC/nb.relative_to(NBS).with_suffix('.py')
        out.setdefault(py, nb)
    return sorted(out.items())


def as_text(nb:Path) -> str: return jupytext.writes(jupytext.read(nb), fmt='py:percent')


def same(a:str, b:str) -> bool:
    "Equal cells, whatever the blank lines between them (jupytext and nbdev_clean space cells differently)."
    norm = lambda t: [l.rstrip() for l in t.splitlines() if l.strip()]
    return norm(a) == norm(b)


def git_modified(p:Path) -> bool:
    "True when the file differs from HEAD (or is untracked); False outside a git checkout."
    r = subprocess.run(['git', 'status', '--porcelain', '--', str(p)], cwd=ROOT, capture_output=True, text=True)
    return r.returncode == 0 and bool(r.stdout.strip())


def nb_source_edited(nb:Path) -> bool:
    "True when the notebook's cells (not just its outputs) differ from the committed notebook's."
    r = subprocess.run(['git', 'show', f'HEAD:{nb.relative_to(ROOT).as_posix()}'], cwd=ROOT, capture_output=True, text=True)
    if r.returncode: return False                                          # new or outside git: nothing to protect
    return not same(jupytext.writes(jupytext.reads(r.stdout, fmt='ipynb'), fmt='py:percent'), as_text(nb))


def stale():
    "[(py, nb, why)] for pairs whose contents differ."
    res = []
    for py, nb in pairs():
        if not py.exists(): res.append((py, nb, 'notebook without a text source')); continue
        if not nb.exists(): res.append((py, nb, 'text without a notebook')); continue
        if not same(as_text(nb), py.read_text(encoding='utf-8')): res.append((py, nb, 'contents differ'))
    return res


def sync() -> int:
    bad = 0
    for py, nb, why in stale():
        rel_py, rel_nb = py.relative_to(ROOT), nb.relative_to(ROOT)
        if not py.exists():
            print(f"{rel_nb}: no text source {rel_py}; create it with: python tools/sync.py --adopt {rel_nb}"); bad += 1; continue
        if nb.exists() and not git_modified(py) and nb_source_edited(nb):
            print(f"{rel_nb} was edited directly, but {rel_py} is the source and is unchanged: not overwriting. "
                  f"Take the notebook's edit with `python tools/sync.py --adopt {rel_nb}`, or discard it with "
                  f"`git checkout {rel_nb}`"); bad += 1; continue
        nb.parent.mkdir(parents=True, exist_ok=True)
        args = ['--update'] if nb.exists() else []
        subprocess.run([sys.executable, '-m', 'jupytext', '--quiet', *args, '--to', 'ipynb', '-o', str(nb), str(py)], check=True)
        subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(nb)], cwd=ROOT, check=True)   # as committed
        print(f"{rel_py} -> {rel_nb}")
    return 1 if bad else 0


def adopt(nbs) -> int:
    for nb in map(Path, nbs):
        nb = nb.resolve()
        py = SRC/nb.relative_to(NBS).with_suffix('.py')
        py.parent.mkdir(parents=True, exist_ok=True)
        py.write_text(as_text(nb), encoding='utf-8')
        print(f"{nb.relative_to(ROOT)} -> {py.relative_to(ROOT)}")
    return 0


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='report pairs out of step, write nothing')
    ap.add_argument('--adopt', nargs='+', metavar='NB', help="take these notebooks' content into their text sources")
    a = ap.parse_args()
    if a.adopt: sys.exit(adopt(a.adopt))
    if a.check:
        s = stale()
        for py, nb, why in s: print(f"{py.relative_to(ROOT)} / {nb.relative_to(ROOT)}: {why}")
        sys.exit(1 if s else 0)
    sys.exit(sync())
