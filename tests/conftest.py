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
