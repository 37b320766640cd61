"""Datasets addressed by index: `lengths[i]` on the driver, `tokens(i)` on the workers.

Both sides build the same dataset from the same `DataSpec`, so the driver ships only
indices and every worker materialises its own tokens, deterministically. Three kinds:

- prepared data (`prepared_dir`, written by `hsp.data.prepare`), memory-mapped;
- a folder of raw .txt/.jsonl/.parquet (`data_dir`): prepared once into a cache folder
  by the same `prepare` (so the same checks apply), then read like prepared data;
- the synthetic corpus (neither), generated from a seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from hsp.data.prepare import DEFAULT_MAX_UNDECODABLE_FRACTION, prepare
from hsp.data.prepared import FORMAT_VERSION, MANIFEST_FILE, PreparedDataset
from hsp.data.sources import list_inputs
from hsp.data.tokenizer import BOS, Tokenizer, load_tokenizer

CACHE_ENV = "HSP_DATA_CACHE"
"""Environment variable naming the default cache folder of prepared raw-text folders."""


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Everything a process needs to rebuild a dataset; plain values, picklable."""

    max_len: int
    """Longest sequence in tokens (the model's max_seq_len); longer documents are cut."""
    data_dir: str = ""
    """Folder of raw .txt / .jsonl / .parquet files, prepared into `cache_dir` on first use."""
    prepared_dir: str = ""
    """Folder written by `hsp.data.prepare` (memory-mapped). Neither this nor data_dir:
    the synthetic corpus."""
    tokenizer: str = ""
    """Tokenizer spec ('byte', a tokenizer.json or its folder). For data_dir: the one to
    prepare with ('' = byte). For prepared_dir: checked against the data's fingerprint
    ('' = take the data's own)."""
    text_field: str = "text"
    """Field of a .jsonl object / column of a .parquet file holding the text (data_dir)."""
    cache_dir: str = ""
    """Where data_dir is prepared; '' = $HSP_DATA_CACHE or <temp dir>/hsp-data-cache."""
    max_undecodable_fraction: float = DEFAULT_MAX_UNDECODABLE_FRACTION
    """Largest fraction of data_dir's documents that may hold bytes that are not UTF-8."""
    seed: int = 0
    """Seed of the synthetic corpus (lengths and text)."""
    num_docs: int = 100_000
    """Documents in the synthetic corpus."""
    reference_len: int = 10_921
    """Wikipedia length mapped onto max_len when scaling the synthetic corpus
    (10,921 is the Wikipedia p99, so ~1% of sequences reach max_len)."""
    min_len: int = 16
    """Shortest synthetic sequence in tokens."""

    def __post_init__(self) -> None:
        if self.max_len < 2:
            raise ValueError(f"max_len={self.max_len} leaves nothing to predict; use max_len >= 2")
        synthetic = not (self.data_dir or self.prepared_dir)
        if synthetic and (self.min_len < 2 or self.min_len > self.max_len):
            raise ValueError(f"min_len={self.min_len} must be in 2..max_len={self.max_len}")
        if self.num_docs < 1 or self.reference_len < 1:
            raise ValueError(f"num_docs={self.num_docs} and reference_len={self.reference_len} must be >= 1")
        if self.data_dir and self.prepared_dir:
            raise ValueError(
                f"data_dir={self.data_dir!r} and prepared_dir={self.prepared_dir!r} are both set; "
                "pass raw text (data_dir) or prepared data (prepared_dir), not both"
            )
        if not (math.isfinite(self.max_undecodable_fraction) and 0.0 <= self.max_undecodable_fraction <= 1.0):
            raise ValueError(f"max_undecodable_fraction must be in [0, 1], got {self.max_undecodable_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


class Dataset(Protocol):
    lengths: np.ndarray
    """(num_docs,) int64 token count of each sample."""

    def tokens(self, index: int) -> np.ndarray:
        """(lengths[index],) int64 token ids of sample `index`."""
        ...

    def fingerprint(self) -> dict:
        """Values that identify the dataset (checked on resume)."""
        ...


def open_dataset(spec: DataSpec) -> Dataset:
    if spec.prepared_dir:
        tokenizer = load_tokenizer(spec.tokenizer) if spec.tokenizer else None
        return PreparedDataset(spec.prepared_dir, max_len=spec.max_len, tokenizer=tokenizer)
    if spec.data_dir:
        tokenizer = load_tokenizer(spec.tokenizer)
        folder = prepared_text_folder(spec, tokenizer)
        source = str(Path(spec.data_dir).resolve())
        return PreparedDataset(folder, max_len=spec.max_len, tokenizer=tokenizer, kind="text", source=source)
    return SyntheticCorpus(spec)


def prepared_text_folder(spec: DataSpec, tokenizer: Tokenizer) -> Path:
    """The cache folder holding spec.data_dir prepared with `tokenizer`, preparing it if missing.

    The folder's name hashes everything the result depends on (every file's path, size
    and mtime, the tokenizer's fingerprint, the text field, the threshold), so an edited
    corpus is prepared again. Processes that race (the driver and the workers of one
    node) each prepare into a private folder and rename it into place; the first wins."""
    data_dir = Path(spec.data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"data_dir {str(data_dir)!r} is not a folder; pass a folder of .txt/.jsonl/.parquet files")
    files = list_inputs([data_dir])
    key = json.dumps({
        "version": FORMAT_VERSION,
        "tokenizer": tokenizer.fingerprint,
        "text_field": spec.text_field,
        "max_undecodable_fraction": spec.max_undecodable_fraction,
        "files": [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
    })
    root = Path(spec.cache_dir or os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "hsp-data-cache")
    target = root / f"{data_dir.resolve().name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (target / MANIFEST_FILE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    private = root / f".{target.name}.{os.getpid()}"
    shutil.rmtree(private, ignore_errors=True)
    prepare([data_dir], private, tokenizer, text_field=spec.text_field,
            max_undecodable_fraction=spec.max_undecodable_fraction)
    try:
        private.rename(target)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(private, ignore_errors=True)
    return target


# ---- synthetic ----------------------------------------------------------------------


def _vocabulary(num_words: int = 400) -> tuple[list[bytes], np.ndarray]:
    """A fixed pseudo-language: words of 1-9 letters with Zipf frequencies.

    Fixed (seed 1234) so every corpus seed speaks the same language; what a model
    learns on it (letters, spaces, frequent words) makes the loss fall quickly.
    """
    rng = np.random.default_rng(1234)
    letters = np.frombuffer(b"etaoinshrdlucmfwypvbgkjqxz", dtype=np.uint8)
    letter_p = 1.0 / np.arange(1, len(letters) + 1)
    letter_p /= letter_p.sum()
    words = []
    for _ in range(num_words):
        size = int(rng.integers(1, 10))
        words.append(bytes(rng.choice(letters, size=size, p=letter_p).tolist()))
    freq = 1.0 / np.arange(1, num_words + 1)
    return words, freq / freq.sum()


class SyntheticCorpus:
    """Documents whose lengths follow the Wikipedia shape scaled to `max_len`.

    Raw Wikipedia lengths (FlexSP's evaluation set, via solver.workloads) are multiplied
    by max_len / reference_len and clipped to [min_len, max_len]: long documents are
    truncated, as a real pipeline truncates at the model's context. Text is a Zipf
    word stream, one sentence after another, starting with BOS.
    """

    def __init__(self, spec: DataSpec):
        from solver.workloads import get_workload

        self.spec = spec
        raw = get_workload("wikipedia").sample(spec.num_docs, np.random.default_rng([spec.seed, 0]))
        scaled = np.ceil(np.asarray(raw, dtype=np.float64) * spec.max_len / spec.reference_len)
        self.lengths = np.clip(scaled, spec.min_len, spec.max_len).astype(np.int64)
        words, word_p = _vocabulary()
        self._word_cdf = np.minimum(np.cumsum(word_p), 1.0)
        self._word_cdf[-1] = 1.0
        self._with_space = [w + b" " for w in words]
        self._with_period = [w + b". " for w in words]

    def tokens(self, index: int) -> np.ndarray:
        length = int(self.lengths[index])
        rng = np.random.default_rng([self.spec.seed, 1, index])
        # every word plus its separator is >= 2 bytes, so length // 2 + 1 words always suffice
        num_words = length // 2 + 1
        ids = np.searchsorted(self._word_cdf, rng.random(num_words), side="right")
        sentence_ends = np.cumsum(rng.integers(4, 16, size=num_words // 4 + 1)) - 1
        ends = np.zeros(num_words, dtype=bool)
        ends[sentence_ends[sentence_ends < num_words]] = True
        text = b"".join([self._with_period[i] if end else self._with_space[i] for i, end in zip(ids, ends)])
        body = np.frombuffer(text, dtype=np.uint8)[: length - 1].astype(np.int64)
        return np.concatenate([np.array([BOS], dtype=np.int64), body])

    def fingerprint(self) -> dict:
        keys = ("max_len", "data_dir", "seed", "num_docs", "reference_len", "min_len")
        return {"kind": "synthetic", **{k: getattr(self.spec, k) for k in keys}, "total_tokens": int(self.lengths.sum())}
