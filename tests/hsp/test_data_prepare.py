"""prepare() and the memory-mapped reader: formats, parallel = serial, bad input."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.hf_fixtures import train_bpe, word_level
from hsp.data import DataSpec, Manifest, PreparedDataset, load_tokenizer, open_dataset, prepare
from hsp.data.prepared import INDEX_FILE, MANIFEST_FILE, TOKENS_FILE


def _corpus(root, num_lines=40):
    """A .txt, a .jsonl (strings and objects, blank lines) and a .parquet with two row groups."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text("a whole file is one document\nwith two lines")
    lines = [json.dumps({"text": f"line {i} " + "x" * (i % 7)}) if i % 3 else json.dumps(f"plain {i}") for i in range(num_lines)]
    lines.insert(5, "")
    (root / "b.jsonl").write_text("\n".join(lines) + "\n")
    table = pa.table({"body": [f"row {i} ü" for i in range(10)], "n": list(range(10))})
    pq.write_table(table, root / "c.parquet", row_group_size=6)
    texts = ["a whole file is one document\nwith two lines"]
    texts += [json.loads(line) if line.startswith('"') else json.loads(line)["text"] for line in lines if line]
    return texts + [f"row {i} ü" for i in range(10)]


def _docs(folder):
    m = Manifest.read(folder)
    tokens = np.fromfile(folder / TOKENS_FILE, dtype=m.dtype)
    offsets = np.load(folder / INDEX_FILE)
    return [tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def test_data_prepare_writes_every_document_in_order(tmp_path):
    texts = _corpus(tmp_path / "in")
    # the parquet column is "body": jsonl objects need "text"; use two runs with their own field
    m = prepare([tmp_path / "in" / "a.txt", tmp_path / "in" / "b.jsonl"], tmp_path / "out")
    tok = load_tokenizer("byte")
    assert (m.dtype, m.num_docs, m.num_empty_docs, m.num_undecodable_docs) == ("uint16", 41, 0, 0)
    assert [d.tolist() for d in _docs(tmp_path / "out")] == [tok.encode_document(t).tolist() for t in texts[:41]]
    assert m.num_tokens == sum(len(tok.encode_document(t)) for t in texts[:41])
    assert m.tokenizer["fingerprint"] == tok.fingerprint and [s["path"] for s in m.sources][1].endswith("b.jsonl")
    p = prepare([tmp_path / "in" / "c.parquet"], tmp_path / "pq", text_field="body")
    assert [tok.decode(d) for d in _docs(tmp_path / "pq")] == texts[41:]
    assert p.num_docs == 10


def test_data_prepare_is_the_same_with_two_workers_and_tiny_units(tmp_path):
    _corpus(tmp_path / "in", num_lines=200)
    (tmp_path / "in" / "c.parquet").unlink()
    bpe = load_tokenizer(str(train_bpe(tmp_path / "bpe")))
    one = prepare([tmp_path / "in"], tmp_path / "one", bpe)
    two = prepare([tmp_path / "in"], tmp_path / "two", bpe, num_workers=2, chunk_bytes=37)  # units cut lines apart
    for name in (TOKENS_FILE, INDEX_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert one.num_docs == two.num_docs == 201
    assert bpe.decode(_docs(tmp_path / "two")[2]) == "line 1 x"


def test_data_large_vocabulary_is_stored_as_uint32(tmp_path):
    tok = load_tokenizer(str(word_level(tmp_path / "w", 70_000)))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("w1 w65537 w69999")
    m = prepare([tmp_path / "in"], tmp_path / "out", tok)
    assert m.dtype == "uint32" and _docs(tmp_path / "out")[0].tolist() == [1, 65537, 69999]
    data = PreparedDataset(tmp_path / "out", max_len=8, tokenizer=tok)
    assert data.tokens(0).dtype == np.int64 and data.tokens(0).tolist() == [1, 65537, 69999]


def test_data_reader_splits_long_documents_and_maps_tokens_lazily(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x" * 25)  # 27 tokens -> 10 + 10 + 7
    (tmp_path / "in" / "b.txt").write_text("y" * 9)  # 11 tokens -> 10 + 1 (dropped: nothing to predict)
    prepare([tmp_path / "in"], tmp_path / "out")
    data = PreparedDataset(tmp_path / "out", max_len=10)
    assert data.lengths.tolist() == [10, 10, 7, 10]
    assert data._tokens is None  # lengths alone never map tokens.bin
    assert load_tokenizer().decode(np.concatenate([data.tokens(i) for i in range(3)])) == "x" * 25
    assert data.tokens(3).tolist()[:2] == [257, ord("y")]
    assert data.fingerprint()["total_tokens"] == 37


def test_data_reader_refuses_another_tokenizer_and_damaged_folders(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("hello there")
    prepare([tmp_path / "in"], tmp_path / "out")
    bpe = load_tokenizer(str(train_bpe(tmp_path / "bpe")))
    with pytest.raises(ValueError, match=r"prepared with tokenizer 'byte' .* but this run uses 'tokenizer.json \(BPE"):
        PreparedDataset(tmp_path / "out", max_len=16, tokenizer=bpe)
    with pytest.raises(ValueError, match="prepared with tokenizer 'byte'"):
        open_dataset(DataSpec(max_len=16, prepared_dir=str(tmp_path / "out"), tokenizer=str(tmp_path / "bpe")))
    assert len(open_dataset(DataSpec(max_len=16, prepared_dir=str(tmp_path / "out"))).lengths) == 1
    with open(tmp_path / "out" / TOKENS_FILE, "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ValueError, match="does not match manifest.json .* prepare it again"):
        PreparedDataset(tmp_path / "out", max_len=16)
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    (tmp_path / "out" / MANIFEST_FILE).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="version 99, this hsp reads 'hsp-tokens' version 1"):
        PreparedDataset(tmp_path / "out", max_len=16)
    (tmp_path / "out" / MANIFEST_FILE).unlink()
    with pytest.raises(ValueError, match="is not prepared data"):
        PreparedDataset(tmp_path / "out", max_len=16)


def test_data_prepare_refuses_empty_corpora_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.jsonl").write_text("")
    with pytest.raises(ValueError, match="no documents in .*empty: the files hold no text"):
        prepare([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "blank").mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / "blank" / name).write_text(" \n" if name == "c.txt" else "")
    with pytest.raises(ValueError, match=r"all 3 documents in .*blank are empty or whitespace only"):
        prepare([tmp_path / "blank"], tmp_path / "out")
    (tmp_path / "blank" / "d.txt").write_text("some text")
    with pytest.warns(UserWarning, match="3 of 4 documents in .* are empty or whitespace only; skipped"):
        m = prepare([tmp_path / "blank"], tmp_path / "out")
    assert (m.num_docs, m.num_empty_docs) == (1, 3)
    with pytest.raises(ValueError, match="is not empty; pass a new or empty folder"):
        prepare([tmp_path / "blank"], tmp_path / "out")
    with pytest.raises(ValueError, match="does not exist"):
        prepare([tmp_path / "nope"], tmp_path / "out2")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        prepare([tmp_path / "x.csv"], tmp_path / "out2")


def test_data_undecodable_bytes_are_counted_and_refused_above_the_threshold(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "latin1.txt").write_bytes("Grüße aus Köln".encode("latin-1"))
    (tmp_path / "in" / "ok.txt").write_text("fine \ufffd already here")  # a real U+FFFD is not an error
    with pytest.raises(ValueError, match=r"1 of 2 documents \(50.00%\) .* are not valid UTF-8 \(3 invalid byte "
                                         r"sequences, the first in .*latin1.txt\); this is above max_undecodable_fraction"
                                         r"=0.001. Convert the files to UTF-8 \(e.g. iconv"):
        prepare([tmp_path / "in"], tmp_path / "out")
    with pytest.warns(UserWarning, match="1 of 2 documents .* not valid UTF-8 .*kept with U"):
        m = prepare([tmp_path / "in"], tmp_path / "out", max_undecodable_fraction=0.5)
    assert (m.num_undecodable_docs, m.num_replaced_sequences) == (1, 3)
    assert load_tokenizer().decode(_docs(tmp_path / "out")[0]) == "Gr\ufffd\ufffde aus K\ufffdln"
    assert load_tokenizer().decode(_docs(tmp_path / "out")[1]) == "fine \ufffd already here"


def test_data_undecodable_jsonl_and_parquet_are_counted(tmp_path):
    (tmp_path / "in").mkdir()
    rows = [b'{"text": "ok"}', b'{"text": "bad \xff byte"}', b'{"text": "lone \\ud800 surrogate"}', b'"fine"']
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join(rows))
    pq.write_table(pa.table({"text": pa.array([b"good", b"\xfe\xff", None], type=pa.binary())}), tmp_path / "in" / "b.parquet")
    with pytest.warns(UserWarning):
        m = prepare([tmp_path / "in"], tmp_path / "out", max_undecodable_fraction=1.0)
    assert (m.num_docs, m.num_undecodable_docs, m.num_empty_docs) == (6, 3, 1)
    assert m.num_replaced_sequences == 4  # \xff, the surrogate, \xfe, \xff
    pq.write_table(pa.table({"other": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: \['other'\]\)"):
        prepare([tmp_path / "c.parquet"], tmp_path / "out2")


def test_data_raw_folder_goes_through_prepare_once_and_names_the_folder(tmp_path):
    """issue 14 item 2: empty documents and Latin-1 bytes in a --data-dir folder."""
    cache = tmp_path / "cache"
    spec = lambda folder, **kw: DataSpec(max_len=64, data_dir=str(folder), cache_dir=str(cache), **kw)
    (tmp_path / "empty").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "empty" / name).write_text("")
    with pytest.raises(ValueError, match=f"all 2 documents in {tmp_path / 'empty'} are empty"):
        open_dataset(spec(tmp_path / "empty"))
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "a.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"in .*latin are not valid UTF-8 .*the first in .*latin/a.txt.*iconv"):
        open_dataset(spec(tmp_path / "latin"))
    assert not any(p.name.startswith(".") for p in cache.iterdir())  # failed preparations leave nothing
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("hello world")
    first = open_dataset(spec(tmp_path / "text"))
    entries = sorted(cache.iterdir())
    assert len(entries) == 1 and open_dataset(spec(tmp_path / "text")).folder == first.folder  # reused
    (tmp_path / "text" / "a.txt").write_text("hello again, longer")
    assert open_dataset(spec(tmp_path / "text")).folder != first.folder  # edited: prepared again
    bpe = train_bpe(tmp_path / "bpe")
    assert open_dataset(spec(tmp_path / "text", tokenizer=str(bpe))).fingerprint()["tokenizer"] != first.fingerprint()["tokenizer"]


def test_data_spec_rejects_two_sources_and_bad_thresholds():
    with pytest.raises(ValueError, match="are both set"):
        DataSpec(max_len=16, data_dir="a", prepared_dir="b")
    with pytest.raises(ValueError, match=r"max_undecodable_fraction must be in \[0, 1\], got nan"):
        DataSpec(max_len=16, max_undecodable_fraction=float("nan"))


def test_data_prepare_shows_progress(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("hello")
    prepare([tmp_path / "in"], tmp_path / "out", progress=True)
    assert "prepare" in capsys.readouterr().err
