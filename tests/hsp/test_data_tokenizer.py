"""Tokenizers: the byte tokenizer and a local tokenizer.json behind one interface."""

import json

import numpy as np
import pytest

from tests.hf_fixtures import train_bpe, word_level
from hsp.data import BOS, EOS, PAD, ByteTokenizer, load_tokenizer


def test_data_byte_tokenizer_is_the_default_and_frames_documents():
    tok = load_tokenizer("")
    assert isinstance(tok, ByteTokenizer) and load_tokenizer("byte").fingerprint == tok.fingerprint
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (260, BOS, EOS, PAD)
    text = "héllo ✓"
    assert tok.encode_document(text).tolist() == [BOS, *text.encode(), EOS]
    assert tok.decode(tok.encode_document(text)) == text


def test_data_bpe_tokenizer_from_a_folder_or_file(tmp_path):
    folder = train_bpe(tmp_path / "bpe")
    tok = load_tokenizer(str(folder))
    assert load_tokenizer(str(folder / "tokenizer.json")).fingerprint == tok.fingerprint
    assert tok.vocab_size == 320 and "BPE" in tok.name
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    text = "the quick brown fox — 日本語"
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and len(ids) < len(text.encode())  # merges happened
    assert tok.decode(ids) == text
    doc = tok.encode_document(text)
    assert doc[0] == 1 and doc[-1] == 2 and np.array_equal(doc[1:-1], ids)
    assert [x.tolist() for x in tok.encode_batch([text, "fox"])] == [ids.tolist(), tok.encode("fox").tolist()]


def test_data_fingerprint_follows_the_vocabulary_not_the_formatting(tmp_path):
    folder = train_bpe(tmp_path / "a")
    tok = load_tokenizer(str(folder))
    file = folder / "tokenizer.json"
    file.write_text(json.dumps(json.loads(file.read_text()), indent=7))  # same tokenizer, other formatting
    assert load_tokenizer(str(folder)).fingerprint == tok.fingerprint
    assert load_tokenizer(str(train_bpe(tmp_path / "b", vocab_size=300))).fingerprint != tok.fingerprint
    assert load_tokenizer(str(train_bpe(tmp_path / "c", with_config=False))).fingerprint != tok.fingerprint  # no BOS/EOS
    assert tok.fingerprint != ByteTokenizer().fingerprint


def test_data_tokenizer_without_config_frames_nothing(tmp_path):
    tok = load_tokenizer(str(word_level(tmp_path / "w", 10)))
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, None, 0)
    assert tok.encode_document("w3 w4 nope").tolist() == [3, 4, 0]


def test_data_tokenizer_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_tokenizer(str(tmp_path / "missing"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read by the tokenizers library"):
        load_tokenizer(str(tmp_path / "bad.json"))
    folder = train_bpe(tmp_path / "bpe")
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>"}))
    with pytest.raises(ValueError, match="bos_token='<bos>' is not in the vocabulary"):
        load_tokenizer(str(folder))
