"""Datasets addressed by index: `lengths[i]` on the driver, `tokens(i)` on the workers.

Both sides build the same dataset from the same `DataSpec`, so the driver ships only
indices and every worker materialises its own tokens, deterministically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from hsp.data.tokenizer import BOS, EOS, encode

TEXT_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Everything a process needs to rebuild a dataset; plain values, picklable."""

    max_len: int
    """Longest sequence in tokens (the model's max_seq_len); longer documents are cut."""
    data_dir: str = ""
    """Folder of .txt / .jsonl files; empty means the synthetic corpus."""
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
        if self.min_len < 2 or self.min_len > self.max_len:
            raise ValueError(f"min_len={self.min_len} must be in 2..max_len={self.max_len}")
        if self.num_docs < 1 or self.reference_len < 1:
            raise ValueError(f"num_docs={self.num_docs} and reference_len={self.reference_len} must be >= 1")

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
    if spec.data_dir:
        return TextFolderCorpus(spec.data_dir, max_len=spec.max_len)
    return SyntheticCorpus(spec)


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
        return {"kind": "synthetic", **self.spec.to_dict(), "total_tokens": int(self.lengths.sum())}


# ---- user text ----------------------------------------------------------------------


class TextFolderCorpus:
    """Every .txt file (one document) and .jsonl line (one document, field "text")
    under a folder, byte-tokenised as BOS + bytes + EOS and cut into samples of at
    most `max_len` tokens (a final piece shorter than 2 tokens is dropped)."""

    def __init__(self, path: str | Path, *, max_len: int):
        self.path = Path(path)
        files = sorted(p for p in self.path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
        if not self.path.is_dir():
            raise ValueError(f"data_dir {str(self.path)!r} is not a folder; pass a folder of .txt/.jsonl files")
        if not files:
            raise ValueError(
                f"data_dir {str(self.path)!r} has no .txt or .jsonl files; add some or drop --data-dir "
                "to train on the synthetic corpus"
            )
        docs = [encode(text) for file in files for text in _documents(file)]
        self._stream = np.concatenate(docs) if docs else np.zeros(0, dtype=np.int64)
        starts, lengths, offset = [], [], 0
        for doc in docs:
            for cut in range(0, len(doc), max_len):
                piece = min(max_len, len(doc) - cut)
                if piece >= 2:
                    starts.append(offset + cut)
                    lengths.append(piece)
            offset += len(doc)
        if not lengths:
            raise ValueError(f"data_dir {str(self.path)!r} holds no text (all files empty)")
        self._starts = np.asarray(starts, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._num_files = len(files)

    def tokens(self, index: int) -> np.ndarray:
        start = int(self._starts[index])
        return self._stream[start : start + int(self.lengths[index])].copy()

    def fingerprint(self) -> dict:
        return {
            "kind": "text",
            "data_dir": str(self.path.resolve()),
            "num_files": self._num_files,
            "num_samples": len(self.lengths),
            "total_tokens": int(self.lengths.sum()),
        }


def _documents(file: Path):
    if file.suffix == ".txt":
        yield file.read_text(encoding="utf-8", errors="replace")
        return
    for lineno, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}:{lineno}: not valid JSON ({err}); each line must be one JSON object") from None
        text = item if isinstance(item, str) else item.get("text") if isinstance(item, dict) else None
        if not isinstance(text, str):
            raise ValueError(f'{file}:{lineno}: expected a string or an object with a "text" string field')
        yield text
