"""Prepared (pre-tokenized) data on disk, and the memory-mapped reader of it.

A prepared folder holds three files (written by `hsp.data.prepare.prepare`):

- `tokens.bin`: every document's ids back to back, raw little-endian uint16 (when the
  tokenizer has <= 65,536 ids) or uint32; each document is [BOS] + text ids + [EOS].
- `index.npy`: (num_docs + 1,) int64 offsets into tokens.bin; document i is
  tokens[offsets[i]:offsets[i+1]].
- `manifest.json`: format and version, dtype, counts, the tokenizer (name, spec,
  fingerprint, vocabulary size, BOS/EOS ids), the source files, and the counts of empty
  and undecodable documents met while preparing. Written last: a folder without it is
  an unfinished preparation.

`PreparedDataset` opens the index with `numpy.memmap` and memory-maps tokens.bin only
when a sample is first read, so a driver that needs only `lengths` never touches the
tokens. A worker copies each sample out of the mapping and then drops the mapping's
resident pages (madvise MADV_DONTNEED; they stay in the shared page cache): without
that, kernels that cache files in large folios map whole megabytes per read, and a
worker's RSS grew to the size of the file after 400 random samples (measured, Linux 6.18).
"""

from __future__ import annotations

import json
import mmap
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hsp.data.tokenizer import Tokenizer

FORMAT = "hsp-tokens"
FORMAT_VERSION = 1
TOKENS_FILE = "tokens.bin"
INDEX_FILE = "index.npy"
MANIFEST_FILE = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


@dataclass(kw_only=True)
class Manifest:
    dtype: str
    """'uint16' or 'uint32': the element type of tokens.bin."""
    num_tokens: int
    num_docs: int
    tokenizer: dict
    """name, spec, fingerprint, vocab_size, bos_id, eos_id, pad_id."""
    text_field: str
    sources: list[dict]
    """[{path, num_bytes}] of the input files, in the order their documents were written."""
    num_empty_docs: int
    """Documents that were empty or whitespace only (not written)."""
    num_undecodable_docs: int
    """Documents with bytes that are not UTF-8 (written with U+FFFD in their place)."""
    num_replaced_sequences: int
    """Invalid UTF-8 sequences replaced by U+FFFD over all documents."""
    first_undecodable: str
    """The first source file holding a document that is not valid UTF-8, or ''."""
    max_undecodable_fraction: float
    """The threshold the preparation was held to."""
    seconds: float
    """Wall time of the preparation."""
    format: str = FORMAT
    version: int = FORMAT_VERSION

    def write(self, folder: Path) -> None:
        tmp = folder / (MANIFEST_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(folder / MANIFEST_FILE)

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        folder = Path(folder)
        file = folder / MANIFEST_FILE
        if not file.is_file():
            raise ValueError(
                f"{str(folder)!r} is not prepared data (no {MANIFEST_FILE}; an interrupted preparation leaves none); "
                "prepare it with hsp.data.prepare.prepare (hsp prepare) or pass the folder it wrote"
            )
        values = json.loads(file.read_text())
        if values.get("format") != FORMAT or values.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{file}: format {values.get('format')!r} version {values.get('version')!r}, this hsp reads "
                f"{FORMAT!r} version {FORMAT_VERSION}; prepare the data again"
            )
        return cls(**values)


def split_documents(doc_lengths: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the samples: each document cut into pieces of at most max_len
    tokens; a final piece shorter than 2 tokens (nothing to predict) is dropped."""
    pieces = -(-doc_lengths // max_len)  # (D,) ceil
    doc = np.repeat(np.arange(len(doc_lengths)), pieces)  # (P,) document of each piece
    first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
    cut = (np.arange(len(doc)) - first_piece) * max_len  # (P,) offset of the piece in its document
    lengths = np.minimum(max_len, doc_lengths[doc] - cut)
    keep = lengths >= 2
    return (offsets[doc] + cut)[keep], lengths[keep].astype(np.int64)


class PreparedDataset:
    """A `hsp.data.Dataset` over a prepared folder: `lengths` (num_samples,) int64 and
    `tokens(i)` -> (lengths[i],) int64, documents longer than max_len cut into samples."""

    def __init__(self, folder: str | Path, *, max_len: int, tokenizer: Tokenizer | None = None,
                 kind: str = "prepared", source: str = ""):
        self.folder = Path(folder)
        self.manifest = Manifest.read(self.folder)
        if tokenizer is not None:
            check_tokenizer(self.manifest, tokenizer, self.folder)
        offsets = np.load(self.folder / INDEX_FILE, mmap_mode="r")
        dtype = np.dtype(self.manifest.dtype)
        expected = self.manifest.num_tokens * dtype.itemsize
        actual = (self.folder / TOKENS_FILE).stat().st_size
        if len(offsets) != self.manifest.num_docs + 1 or offsets[-1] != self.manifest.num_tokens or actual != expected:
            raise ValueError(
                f"{self.folder}: {TOKENS_FILE} ({actual} bytes) or {INDEX_FILE} ({len(offsets) - 1} documents) does not "
                f"match {MANIFEST_FILE} ({self.manifest.num_tokens} tokens = {expected} bytes, {self.manifest.num_docs} "
                "documents); the folder is damaged, prepare it again"
            )
        self._starts, self.lengths = split_documents(np.diff(offsets), offsets[:-1], max_len)
        if not len(self.lengths):
            raise ValueError(f"{self.folder}: no document has 2 or more tokens; there is nothing to predict")
        self._dtype = dtype
        self._map: mmap.mmap | None = None
        self._tokens: np.ndarray | None = None
        self._kind, self._source, self._max_len = kind, source or str(self.folder.resolve()), max_len

    def tokens(self, index: int) -> np.ndarray:
        if self._tokens is None:  # mapped on first use: a driver reading only lengths never maps it
            with open(self.folder / TOKENS_FILE, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._tokens = np.frombuffer(self._map, dtype=self._dtype)
        start = int(self._starts[index])
        out = self._tokens[start : start + int(self.lengths[index])].astype(np.int64)
        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)  # read-only file pages: dropped from RSS, kept in the page cache
        return out

    def fingerprint(self) -> dict:
        return {
            "kind": self._kind,
            "data": self._source,
            "tokenizer": self.manifest.tokenizer["fingerprint"],
            "max_len": self._max_len,
            "num_samples": len(self.lengths),
            "total_tokens": int(self.lengths.sum()),
        }


def check_tokenizer(manifest: Manifest, tokenizer: Tokenizer, folder: Path) -> None:
    """The data was prepared with `tokenizer` (same fingerprint), or a ValueError naming both."""
    theirs = manifest.tokenizer
    if theirs["fingerprint"] != tokenizer.fingerprint:
        raise ValueError(
            f"{folder} was prepared with tokenizer {theirs['name']!r} ({theirs['spec']}, fingerprint "
            f"{theirs['fingerprint']}) but this run uses {tokenizer.name!r} ({tokenizer.spec}, fingerprint "
            f"{tokenizer.fingerprint}); pass the tokenizer the data was prepared with, or prepare the data again "
            "with this one"
        )
