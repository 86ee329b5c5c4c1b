"""The installed `semsim` command: help, the data report, and one-line errors with a non-zero exit."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent/'semsim'


def run(*args, **kw):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300, **kw)


def test_help_lists_subcommands():
    r = run('--help')
    assert r.returncode == 0 and 'demo' in r.stdout and 'data' in r.stdout


def test_data_json_on_shared_corpus(shared_data, isolated_cache):
    r = run('data', '--json', env={**os.environ})
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s['tokens'], s['train_tokens'], s['val_tokens'], s['train_types']) == (338_025, 321_124, 16_901, 11_482)


def test_data_on_a_user_file(tmp_path, isolated_cache):
    p = tmp_path/'poem.txt'; p.write_text('The rain in Spain stays mainly in the plain.\n' * 40)
    r = run('data', str(p), '--block-size', '8')
    assert r.returncode == 0, r.stderr
    assert 'train' in r.stdout and 'sample batch' in r.stdout


def test_bad_input_is_one_line_error(tmp_path):
    (tmp_path/'bin.txt').write_bytes(b'\x80\x81\x82')
    r = run('data', str(tmp_path/'bin.txt'))
    assert r.returncode == 1 and 'not UTF-8' in r.stderr and 'Traceback' not in r.stderr
    r = run('data', 'no-such-corpus')
    assert r.returncode == 1 and 'unknown corpus' in r.stderr


def test_unknown_subcommand_exits_2():
    assert run('frobnicate').returncode == 2
