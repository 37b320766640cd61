"""Where sequence lengths come from: files, the built-in Wikipedia shape, synthetic tails.

A `LengthSource` draws i.i.d. sequence lengths; a `BatchSampler` turns a source into
deterministic global batches with a max-length filter. Sources:

- `FileSource`: a file of integers, one per line (e.g. the FlexSP paper's Wikipedia
  sample); sampled uniformly with replacement.
- `QuantileSource`: a shipped summary of such a file (``solver/data/*_quantiles.json``):
  a quantile table sampled by inverse-CDF interpolation in log space, plus the exact
  longest values (the tail dominates token counts and decides the SP degrees needed).
  The built-in ``wikipedia`` workload is one, so users without the data file get the
  same shape.
- synthetic workloads (``solver/synthetic.py``): Pareto and lognormal tails, long
  documents, bimodal, all-long and short-only batches, each labelled SYNTHETIC.
- `ScaledSource`: any source with every length multiplied by a factor, e.g. the
  Wikipedia shape shrunk to a tiny model's max length.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

WIKIPEDIA_TABLE = "data/wikipedia_quantiles.json"
_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000}
MAX_LENGTH = int(np.iinfo(np.int64).max)
"""Lengths are int64 token counts."""


def parse_length(text: str | int) -> int:
    """Tokens from '4096', '192k' (= 192,000, as in the FlexSP code), '1m', '1.5k'."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([kKmM]?)\s*", str(text))
        if not match:
            raise ValueError(
                f"cannot read {text!r} as a length: use a number of tokens such as 4096, "
                f"or a k/m suffix (192k = 192,000; 1m = 1,000,000)"
            )
        exact = float(match.group(1).replace("_", "")) * _SUFFIXES[match.group(2).lower()]
        value = round(exact)
        if abs(exact - value) > 1e-6:
            raise ValueError(f"length {text!r} is {exact:g} tokens, not a whole number")
    if value <= 0:
        raise ValueError(f"length {text!r} must be a positive number of tokens")
    if value > MAX_LENGTH:
        raise ValueError(f"length {text!r} is larger than the largest token count a plan can hold ({MAX_LENGTH:,})")
    return value


def load_lengths(path: str | Path) -> np.ndarray:
    """A file of positive integers, one per line (blank lines and '#' comments skipped)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"lengths file {path} is a directory; give a file with one sequence length per line")
    if not path.is_file():
        raise ValueError(f"lengths file {path} does not exist")
    values: list[int] = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                value = int(text)
            except ValueError:
                raise ValueError(
                    f"{path}:{number}: {text[:40]!r} is not an integer; the file needs one sequence length per line"
                ) from None
            if value <= 0:
                raise ValueError(f"{path}:{number}: length {value} must be positive (a sequence has >= 1 token)")
            if value > MAX_LENGTH:
                raise ValueError(
                    f"{path}:{number}: length {text[:40]} is larger than the largest token count a plan can hold "
                    f"({MAX_LENGTH:,} = 2^63 - 1); the file needs one sequence length (in tokens) per line"
                )
            values.append(value)
    if not values:
        raise ValueError(f"lengths file {path} holds no lengths (an empty batch); give one length per line")
    return np.asarray(values, dtype=np.int64)


class LengthSource(ABC):
    """Draws i.i.d. sequence lengths."""

    name: str
    description: str

    @abstractmethod
    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """`num` lengths (int64, each >= 1)."""

    @abstractmethod
    def longest(self, at_most: int | None = None) -> int | None:
        """The longest length this source can produce that is <= `at_most` (None: none)."""


class FileSource(LengthSource):
    """Uniform sampling, with replacement, from the lengths in a file (or an array)."""

    def __init__(self, lengths: np.ndarray, name: str = "file") -> None:
        self.lengths = np.sort(np.asarray(lengths, dtype=np.int64))
        if self.lengths.size == 0 or self.lengths[0] <= 0:
            raise ValueError(f"workload {name!r} needs at least one length and all lengths positive")
        self.name = name
        self.description = f"{self.lengths.size:,} lengths from {name}, sampled with replacement"

    @classmethod
    def from_file(cls, path: str | Path) -> "FileSource":
        return cls(load_lengths(path), name=str(path))

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        return self.lengths[rng.integers(0, self.lengths.size, size=num)]

    def longest(self, at_most: int | None = None) -> int | None:
        if at_most is None:
            return int(self.lengths[-1])
        k = int(np.searchsorted(self.lengths, at_most, side="right"))
        return int(self.lengths[k - 1]) if k else None


class QuantileSource(LengthSource):
    """Inverse-CDF sampling from a quantile table plus the exact longest values.

    For u < `tail_start` the length is interpolated linearly in log(length) between
    table points (lengths span 4 orders of magnitude, so log space keeps the shape
    between points); the top `len(tail)` order statistics of the summarised file are
    kept exactly and each is drawn with probability 1/num_lengths, so the longest
    sequences, which decide the SP degrees needed, are real values.
    """

    def __init__(self, table: dict, name: str) -> None:
        self.name = name
        self.description = table.get("description", name)
        self.probs = np.asarray(table["probs"], dtype=np.float64)
        self.log_lengths = np.log(np.asarray(table["lengths"], dtype=np.float64))
        self.tail = np.asarray(table["tail_lengths"], dtype=np.int64)
        self.tail_start = float(self.probs[-1])
        if not (np.all(np.diff(self.probs) > 0) and np.all(np.diff(self.log_lengths) >= 0)):
            raise ValueError(f"quantile table {name!r} must have increasing probs and non-decreasing lengths")
        if self.tail.size and np.any(np.diff(self.tail) < 0):
            raise ValueError(f"quantile table {name!r}: tail_lengths must be sorted ascending")

    @classmethod
    def from_package(cls, name: str, relpath: str) -> "QuantileSource":
        table = json.loads(resources.files("solver").joinpath(relpath).read_text())
        return cls(table, name)

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(num)
        out = np.rint(np.exp(np.interp(u, self.probs, self.log_lengths))).astype(np.int64)
        in_tail = u >= self.tail_start
        if self.tail.size and in_tail.any():
            frac = (u[in_tail] - self.tail_start) / (1.0 - self.tail_start)
            out[in_tail] = self.tail[np.minimum((frac * self.tail.size).astype(np.int64), self.tail.size - 1)]
        return np.maximum(out, 1)

    def longest(self, at_most: int | None = None) -> int | None:
        body_max = int(round(math.exp(self.log_lengths[-1])))
        top = int(self.tail[-1]) if self.tail.size else body_max
        if at_most is None or at_most >= top:
            return top
        k = int(np.searchsorted(self.tail, at_most, side="right"))
        if k:
            return int(self.tail[k - 1])
        # the body is continuous: anything up to its top can be drawn
        smallest = int(round(math.exp(self.log_lengths[0])))
        return min(at_most, body_max) if at_most >= smallest else None


@dataclass(frozen=True)
class ScaledSource(LengthSource):
    """`source` with every length multiplied by `factor` (rounded, at least 1 token).

    Keeps the *shape* (ratios between lengths) while moving the scale, e.g. the
    Wikipedia workload (max 1.8M tokens) scaled by 1/512 for a tiny CPU model whose
    max length is a few thousand tokens. Filter by max length *after* scaling.
    """

    source: LengthSource
    factor: float

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError(f"scale factor must be > 0, got {self.factor}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.source.name}*{self.factor:g}"

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{self.source.description}, lengths scaled by {self.factor:g}"

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        return np.maximum(np.rint(self.source.sample(num, rng) * self.factor), 1).astype(np.int64)

    def longest(self, at_most: int | None = None) -> int | None:
        inner = None if at_most is None else int(math.floor((at_most + 0.5) / self.factor))
        top = self.source.longest(inner)
        return None if top is None else max(1, round(top * self.factor))


def workload_names() -> list[str]:
    from solver.synthetic import SYNTHETIC

    return sorted(["wikipedia", *SYNTHETIC])


def get_workload(name: str) -> LengthSource:
    """A built-in workload by name, or a lengths file by path (sampled with replacement)."""
    from solver.synthetic import SYNTHETIC

    if name == "wikipedia":
        return QuantileSource.from_package("wikipedia", WIKIPEDIA_TABLE)
    if name in SYNTHETIC:
        return SYNTHETIC[name]()
    path = Path(name)
    if path.is_dir():
        raise ValueError(f"workload {name!r} is a directory, not a lengths file: give a file with one length per line")
    if path.is_file():
        return FileSource.from_file(name)
    raise ValueError(
        f"unknown workload {name!r}: choose one of {', '.join(workload_names())} or give the path of a lengths file"
    )


class BatchSampler:
    """Deterministic global batches of `batch_size` lengths <= `max_len`.

    As in the FlexSP paper, sequences longer than `max_len` are dropped from the data;
    we keep the global batch size fixed, so a dropped draw is replaced by a fresh draw
    (equivalent to sampling the length-filtered dataset). Batch `step` depends only on
    (seed, step), so any step can be regenerated without replaying earlier ones.
    """

    def __init__(self, source: LengthSource, batch_size: int, max_len: int, seed: int = 0) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        if max_len <= 0:
            raise ValueError(f"max length must be positive, got {max_len}")
        if source.longest(max_len) is None:
            raise ValueError(
                f"workload {source.name!r} produces no sequence of <= {max_len:,} tokens; raise the max length"
            )
        self.source, self.batch_size, self.max_len, self.seed = source, batch_size, max_len, seed

    def batch(self, step: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, step]))
        kept: list[np.ndarray] = []
        have = 0
        for _ in range(1000):
            draws = self.source.sample(self.batch_size, rng)
            draws = draws[draws <= self.max_len]
            kept.append(draws)
            have += draws.size
            if have >= self.batch_size:
                return np.concatenate(kept)[: self.batch_size]
        raise ValueError(
            f"workload {self.source.name!r} almost never yields sequences <= {self.max_len:,} tokens "
            f"({have} kept of {1000 * self.batch_size} draws); raise the max length"
        )


# ---- summarising a lengths file into a shipped quantile table ---------------------------


def quantile_table(lengths: np.ndarray, *, num_tail: int = 1000, description: str = "") -> dict:
    """Summarise `lengths` for `QuantileSource`: ~1,200 quantiles, finer towards the tail.

    Probabilities: every 0.1% up to 99%, then 200 points log-spaced in (1 - p) from 1% to
    `num_tail`/n; above that the `num_tail` longest values are stored exactly.
    """
    x = np.sort(np.asarray(lengths, dtype=np.int64))
    n = x.size
    tail_start = 1.0 - num_tail / n
    probs = np.concatenate([np.linspace(0.0, 0.99, 991), 1.0 - np.logspace(-2, math.log10(1.0 - tail_start), 201)[1:]])
    probs = np.unique(np.clip(probs, 0.0, tail_start))
    # empirical quantile: the value at rank ceil(p n) (1-based), p = 0 -> the minimum
    ranks = np.clip(np.ceil(probs * n).astype(np.int64) - 1, 0, n - 1)
    return {
        "description": description,
        "num_lengths": int(n),
        "probs": [round(float(p), 9) for p in probs],
        "lengths": x[ranks].tolist(),
        "tail_lengths": x[n - num_tail :].tolist(),
        "summary": summarize(x),
    }


def summarize(lengths: np.ndarray) -> dict:
    """Mean, quantiles, max and the share of long sequences/tokens (for notes and checks)."""
    x = np.asarray(lengths, dtype=np.float64)
    long = x > 4096
    return {
        "mean": round(float(x.mean()), 2),
        "median": float(np.median(x)),
        "p90": float(np.percentile(x, 90)),
        "p99": float(np.percentile(x, 99)),
        "p99.9": float(np.percentile(x, 99.9)),
        "max": int(x.max()),
        "frac_seqs_over_4k": round(float(long.mean()), 4),
        "frac_tokens_over_4k": round(float(x[long].sum() / x.sum()), 4),
    }


def main(argv: list[str] | None = None) -> None:
    """python -m solver.workloads LENGTHS_FILE OUT.json [DESCRIPTION]: write a quantile table."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        raise SystemExit(main.__doc__)
    table = quantile_table(load_lengths(args[0]), description=args[2] if len(args) == 3 else args[0])
    table["made_by"] = "python -m solver.workloads " + " ".join(repr(a) if " " in a else a for a in args)
    Path(args[1]).write_text(json.dumps(table, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
