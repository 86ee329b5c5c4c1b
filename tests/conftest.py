"""Shared pytest fixtures: an isolated cache per test, and the shared data folder when CI provides one."""
import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    "A fresh, empty semsim cache for the test."
    monkeypatch.setenv('SEMSIM_CACHE_DIR', str(tmp_path/'cache'))
    return tmp_path/'cache'


@pytest.fixture
def shared_data():
    "The folder named by $SEMSIM_DATA_DIR (CI points it at ../shared/data); skip when absent."
    d = os.environ.get('SEMSIM_DATA_DIR')
    if not d or not Path(d).is_dir(): pytest.skip('SEMSIM_DATA_DIR not set')
    return Path(d)


WORDS = 'the king and queen of a small city walked through the old market at night while soldiers sang'.split()


def write_salad(path:Path, n_lines:int=600) -> Path:
    "A word-salad training text (10 words a line from WORDS, seeded): enough for a few steps of a tiny model."
    import random
    rng = random.Random(0)
    path.write_text('\n'.join(' '.join(rng.choice(WORDS) for _ in range(10)) + '.' for _ in range(n_lines)), encoding='utf-8')
    return path


@pytest.fixture
def salad(tmp_path):
    "The word-salad corpus as a file."
    return write_salad(tmp_path/'salad.txt')


def run_train(argv) -> tuple:
    "(status, stdout, stderr) of `semsim.train.main(argv)`, in process."
    import contextlib, io
    from semsim.train import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(argv)
    return rc, out.getvalue(), err.getvalue()
