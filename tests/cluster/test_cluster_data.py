"""hsp.data: byte tokenizer, synthetic corpus, text folders, the data cursor (no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hsp.data import BOS, EOS, MASK, PAD, VOCAB_SIZE, DataCursor, DataSpec, SyntheticCorpus, decode, encode, open_dataset


def _text_folder(path, cache, max_len):
    return open_dataset(DataSpec(max_len=max_len, data_dir=str(path), cache_dir=str(cache)))


def test_cluster_tokenizer_round_trips_any_text():
    text = "héllo wörld — 日本語 ✓"
    ids = encode(text)
    assert ids[0] == BOS and ids[-1] == EOS
    assert ids.max() < VOCAB_SIZE and ids.dtype == np.int64
    assert decode(ids) == text
    assert (PAD, BOS, EOS, MASK, VOCAB_SIZE) == (256, 257, 258, 259, 260)


def test_cluster_synthetic_corpus_is_deterministic_and_wikipedia_shaped():
    spec = DataSpec(max_len=512, num_docs=20_000, seed=3)
    a, b = SyntheticCorpus(spec), SyntheticCorpus(spec)
    assert np.array_equal(a.lengths, b.lengths)
    assert a.lengths.min() >= spec.min_len and a.lengths.max() == 512
    for i in (0, 17, 19_999):
        tokens = a.tokens(i)
        assert len(tokens) == a.lengths[i] and tokens[0] == BOS
        assert np.array_equal(tokens, b.tokens(i))
    # long-tailed: the median is far below the max, and ~1% of sequences reach max_len
    assert np.median(a.lengths) < 64
    assert 0.002 < np.mean(a.lengths == 512) < 0.03
    other = SyntheticCorpus(DataSpec(max_len=512, num_docs=20_000, seed=4))
    assert not np.array_equal(a.lengths, other.lengths)


def test_cluster_text_folder_cuts_documents_at_max_len(tmp_path):
    cache = tmp_path / "cache"
    tmp_path = tmp_path / "data"
    tmp_path.mkdir()
    (tmp_path / "a.txt").write_text("x" * 25)
    sub = tmp_path / "sub"
    sub.mkdir()
    lines = [json.dumps({"text": "hello"}), "", json.dumps("plain string")]
    (sub / "b.jsonl").write_text("\n".join(lines))
    (tmp_path / "ignored.md").write_text("not read")
    corpus = _text_folder(tmp_path, cache, max_len=10)
    # a.txt: 27 tokens -> 10 + 10 + 7; "hello": 7; "plain string": 14 -> 10 + 4
    assert corpus.lengths.tolist() == [10, 10, 7, 7, 10, 4]
    assert decode(np.concatenate([corpus.tokens(i) for i in range(3)])) == "x" * 25
    assert decode(corpus.tokens(3)) == "hello"
    fingerprint = corpus.fingerprint()
    assert (fingerprint["kind"], fingerprint["data"], fingerprint["num_samples"]) == ("text", str(tmp_path), 6)


def test_cluster_text_folder_errors_name_the_problem(tmp_path):
    cache, tmp_path = tmp_path / "cache", tmp_path / "data"
    tmp_path.mkdir()
    with pytest.raises(ValueError, match="holds no .txt, .jsonl or .parquet files"):
        _text_folder(tmp_path, cache, max_len=10)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a string or an object with a \"text\""):
        _text_folder(tmp_path, cache, max_len=10)


def test_cluster_cursor_visits_every_sample_once_per_epoch():
    cursor = DataCursor(num_samples=10, num_seqs_per_step=4, seed=1)
    first_epoch = np.concatenate([cursor.indices(s) for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(first_epoch[:10].tolist()) == list(range(10))
    assert sorted(first_epoch[10:].tolist()) == list(range(10))
    assert not np.array_equal(first_epoch[:10], first_epoch[10:])  # reshuffled
    assert np.array_equal(cursor.indices(3), DataCursor(10, 4, 1).indices(3))
