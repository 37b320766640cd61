"""Tokenize .txt/.jsonl/.parquet files once, in parallel processes, into a prepared folder.

    manifest = prepare(["corpus/"], "prepared/", "path/to/tokenizer.json", num_workers=8, progress=True)

The inputs are cut into units (`hsp.data.sources`) that worker processes tokenize
independently; results come back in input order and are appended to tokens.bin, so the
output does not depend on the number of workers. Each worker holds one unit (16 MiB of
text by default) at a time, and the parent one result, whatever the corpus size.

Nothing is dropped silently: empty (whitespace-only) documents are counted and skipped;
documents with bytes that are not UTF-8 are counted, kept with U+FFFD in their place,
and refused when they exceed `max_undecodable_fraction` of the documents. A corpus
without any text is an error. The counts go into the manifest (`hsp.data.prepared`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hsp.data.prepared import INDEX_FILE, TOKENS_FILE, Manifest, token_dtype
from hsp.data.sources import Unit, list_inputs, plan_units, read_unit
from hsp.data.tokenizer import Tokenizer, load_tokenizer

DEFAULT_MAX_UNDECODABLE_FRACTION = 0.001
"""Refuse data when more than 0.1% of its documents are not valid UTF-8 (unless told otherwise)."""
CHUNK_BYTES = 16 << 20
"""Bytes of .jsonl per work unit."""
BATCH_DOCS = 256
"""Documents per encode_batch call."""


@dataclass(kw_only=True)
class PrepareConfig:
    """What `hsp prepare` tokenizes, with what, into where (the arguments of `prepare`)."""

    inputs: tuple[str, ...] = ()
    """.txt/.jsonl/.parquet files, or folders searched recursively for them."""
    out: str = ""
    """New (or empty) folder for tokens.bin, index.npy and manifest.json."""
    tokenizer: str = "byte"
    """'byte', a tokenizer.json or a folder holding one (recorded in the manifest)."""
    text_field: str = "text"
    """Field of a .jsonl object / column of a .parquet file holding the text."""
    num_workers: int = 0
    """Tokenizing processes; 0 = one per CPU this process may use."""
    max_undecodable_fraction: float = DEFAULT_MAX_UNDECODABLE_FRACTION
    """Largest fraction of documents that may hold bytes that are not UTF-8 (kept with
    U+FFFD, counted in the manifest); above it the corpus is refused."""

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"prepare.num_workers={self.num_workers} must be >= 0 (0 = one per CPU)")
        if not 0.0 <= self.max_undecodable_fraction <= 1.0:
            raise ValueError(f"prepare.max_undecodable_fraction={self.max_undecodable_fraction} must be in [0, 1]")

    @property
    def processes(self) -> int:
        return self.num_workers or len(os.sched_getaffinity(0))


@dataclass
class UnitResult:
    tokens: np.ndarray
    """The unit's documents' ids back to back, in the output dtype."""
    lengths: np.ndarray
    """(docs,) int64 token count of each written document."""
    num_empty: int
    num_undecodable: int
    num_replaced: int
    num_bytes: int
    first_undecodable: str
    """The unit's file when it holds a document that is not valid UTF-8, else ''."""


_tokenizer: Tokenizer | None = None
"""This process's tokenizer (set once per worker by `_start_worker`)."""


def _start_worker(spec: str) -> None:
    global _tokenizer
    # processes are the unit of parallelism: no extra tokenizer threads per worker
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _tokenizer = load_tokenizer(spec)


def _tokenize(job: tuple[Unit, str, str]) -> UnitResult:
    """A pool worker's task: one unit with the worker's tokenizer."""
    return _tokenize_with(_tokenizer, job)


def _tokenize_with(tok: Tokenizer, job: tuple[Unit, str, str]) -> UnitResult:
    unit, text_field, dtype = job
    pieces, lengths, batch = [], [], []
    num_empty = num_undecodable = num_replaced = 0

    def flush() -> None:
        for ids in tok.encode_batch(batch):
            doc = tok.frame(ids)
            pieces.append(doc.astype(dtype))
            lengths.append(len(doc))
        batch.clear()

    for doc in read_unit(unit, text_field):
        num_undecodable += doc.num_replaced > 0
        num_replaced += doc.num_replaced
        if not doc.text.strip():
            num_empty += 1
            continue
        batch.append(doc.text)
        if len(batch) == BATCH_DOCS:
            flush()
    flush()
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    first = unit.path if num_undecodable else ""
    return UnitResult(tokens, np.asarray(lengths, dtype=np.int64), num_empty, num_undecodable, num_replaced, unit.num_bytes, first)


def _results(jobs: list, tok: Tokenizer, num_workers: int):
    if num_workers == 1:  # in this process: no start-up cost, no pickling
        yield from (_tokenize_with(tok, job) for job in jobs)
        return
    with mp.get_context("spawn").Pool(num_workers, initializer=_start_worker, initargs=(tok.spec,)) as pool:
        yield from pool.imap(_tokenize, jobs)


def prepare(
    inputs: list[str | Path],
    out_dir: str | Path,
    tokenizer: Tokenizer | str = "byte",
    *,
    text_field: str = "text",
    num_workers: int = 1,
    progress: bool = False,
    max_undecodable_fraction: float = DEFAULT_MAX_UNDECODABLE_FRACTION,
    chunk_bytes: int = CHUNK_BYTES,
) -> Manifest:
    """Tokenize `inputs` (files or folders) into `out_dir` (new or empty) and return its manifest."""
    start = time.perf_counter()
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    if num_workers < 1 or chunk_bytes < 1:
        raise ValueError(f"need num_workers >= 1 and chunk_bytes >= 1, got {num_workers} and {chunk_bytes}")
    if not 0.0 <= max_undecodable_fraction <= 1.0:
        raise ValueError(f"max_undecodable_fraction must be in [0, 1], got {max_undecodable_fraction}")
    files = list_inputs(inputs)
    where = ", ".join(map(str, inputs))
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output folder {out} is not empty; pass a new or empty folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        manifest = _write(files, out, tok, text_field, num_workers, progress, chunk_bytes, max_undecodable_fraction)
        _check(manifest, where, max_undecodable_fraction)
    except BaseException:
        for name in (TOKENS_FILE, INDEX_FILE):
            (out / name).unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    manifest.seconds = time.perf_counter() - start
    manifest.write(out)
    return manifest


def _write(files, out: Path, tok: Tokenizer, text_field: str, num_workers: int, progress: bool, chunk_bytes: int,
           max_undecodable_fraction: float) -> Manifest:
    dtype = token_dtype(tok.vocab_size)
    units = plan_units(files, chunk_bytes)
    jobs = [(u, text_field, dtype.str) for u in units]
    lengths, counts, first_undecodable = [], np.zeros(3, dtype=np.int64), ""  # counts: empty, undecodable, replaced
    bar = tqdm(total=sum(u.num_bytes for u in units), unit="B", unit_scale=True, desc="prepare", disable=not progress)
    with open(out / TOKENS_FILE, "wb") as f, bar:
        for result in _results(jobs, tok, min(num_workers, max(len(units), 1))):
            result.tokens.tofile(f)
            lengths.append(result.lengths)
            counts += (result.num_empty, result.num_undecodable, result.num_replaced)
            first_undecodable = first_undecodable or result.first_undecodable
            bar.update(result.num_bytes)
    doc_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(doc_lengths) + 1, dtype=np.int64)
    np.cumsum(doc_lengths, out=offsets[1:])
    np.save(out / INDEX_FILE, offsets)
    return Manifest(
        dtype=dtype.name,
        num_tokens=int(offsets[-1]),
        num_docs=len(doc_lengths),
        tokenizer=tok.describe(),
        text_field=text_field,
        sources=[{"path": str(p.resolve()), "num_bytes": p.stat().st_size} for p in files],
        num_empty_docs=int(counts[0]),
        num_undecodable_docs=int(counts[1]),
        num_replaced_sequences=int(counts[2]),
        first_undecodable=first_undecodable,
        max_undecodable_fraction=max_undecodable_fraction,
        seconds=0.0,
    )


def _check(m: Manifest, where: str, max_fraction: float) -> None:
    """Refuse a corpus without text or with too many undecodable documents; warn about the rest."""
    total = m.num_docs + m.num_empty_docs
    if total == 0:
        raise ValueError(f"no documents in {where}: the files hold no text (empty .txt files or .jsonl/.parquet without rows)")
    if m.num_docs == 0:
        raise ValueError(f"all {m.num_empty_docs} documents in {where} are empty or whitespace only; there is nothing to train on")
    fraction = m.num_undecodable_docs / total
    bad = f"{m.num_undecodable_docs} of {total} documents ({fraction:.2%}) in {where} are not valid UTF-8"
    if fraction > max_fraction:
        raise ValueError(
            f"{bad} ({m.num_replaced_sequences} invalid byte sequences, the first in {m.first_undecodable}); this is above "
            f"max_undecodable_fraction={max_fraction:g}. Convert the files to UTF-8 (e.g. iconv -f latin1 -t utf-8 "
            "FILE), or raise max_undecodable_fraction to keep them with U+FFFD in place of the bad bytes"
        )
    if m.num_undecodable_docs:
        warnings.warn(f"{bad} (the first in {m.first_undecodable}); kept with U+FFFD in place of "
                      f"{m.num_replaced_sequences} invalid byte sequences", stacklevel=3)
    if m.num_empty_docs:
        warnings.warn(f"{m.num_empty_docs} of {total} documents in {where} are empty or whitespace only; skipped", stacklevel=3)

