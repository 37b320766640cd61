"""Synthetic length workloads, each labelled SYNTHETIC in its description.

They exist to test and benchmark the planner on shapes unlike Wikipedia's, not to
stand in for any real corpus:

- `synthetic-pareto`: truncated Pareto, alpha 1.05 (p99.9 ~ 88K; Wikipedia 37K).
- `synthetic-pareto-heavy`: alpha 0.8 from 512 tokens: most tokens in the longest sequences.
- `synthetic-lognormal`: median 512, log-sd 1.6.
- `synthetic-longdoc`: long documents, lognormal median 6,600 and log-sd 1.9, which after
  a 192K max-length filter has median ~6.0K, mean ~18.7K and p90 ~54K tokens.
- `synthetic-bimodal`: 85% short (median 600) and 15% long (median 48K) sequences.
- `synthetic-all-long`: every sequence long (median 64K, log-sd 0.5).
- `synthetic-short`: short sequences only (median 400, log-sd 0.9, at most 16K).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from solver.workloads import LengthSource


class TruncatedParetoSource(LengthSource):
    """Synthetic: Pareto(alpha) lengths >= `min_len`, truncated at `max_len` (exact inverse CDF)."""

    def __init__(self, name: str, *, min_len: int, alpha: float, max_len: int) -> None:
        if not (0 < min_len < max_len and alpha > 0):
            raise ValueError(
                f"Pareto workload needs 0 < min_len < max_len and alpha > 0, got {min_len}, {max_len}, {alpha}"
            )
        self.name, self.min_len, self.alpha, self.max_len = name, min_len, alpha, max_len
        self.description = (
            f"SYNTHETIC truncated Pareto: P(len > x) ~ x^-{alpha:g} for {min_len:,} <= x <= {max_len:,}"
        )

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        # scale u into [0, F(max_len)) so nothing lands above the truncation point
        top = 1.0 - (self.min_len / self.max_len) ** self.alpha
        u = rng.random(num) * top
        return np.minimum(np.rint(self.min_len * (1.0 - u) ** (-1.0 / self.alpha)), self.max_len).astype(np.int64)

    def longest(self, at_most: int | None = None) -> int | None:
        if at_most is not None and at_most < self.min_len:
            return None
        return self.max_len if at_most is None else min(at_most, self.max_len)


class LognormalSource(LengthSource):
    """Synthetic: lognormal lengths (median `median_len`, log-sd `sigma`), clipped to [1, max_len]."""

    def __init__(self, name: str, *, median_len: int, sigma: float, max_len: int) -> None:
        if not (0 < median_len < max_len and sigma > 0):
            raise ValueError(
                f"lognormal workload needs 0 < median < max_len and sigma > 0, got {median_len}, {max_len}, {sigma}"
            )
        self.name, self.median_len, self.sigma, self.max_len = name, median_len, sigma, max_len
        self.description = f"SYNTHETIC lognormal: median {median_len:,}, log-sd {sigma:g}, at most {max_len:,}"

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        draws = self.median_len * np.exp(self.sigma * rng.standard_normal(num))
        return np.clip(np.rint(draws), 1, self.max_len).astype(np.int64)

    def longest(self, at_most: int | None = None) -> int | None:
        return self.max_len if at_most is None else min(at_most, self.max_len)


class MixtureSource(LengthSource):
    """Synthetic: each length from part k with probability weights[k]."""

    def __init__(self, name: str, parts: list[tuple[float, LengthSource]]) -> None:
        weights = np.asarray([w for w, _ in parts], dtype=np.float64)
        if not parts or np.any(weights <= 0):
            raise ValueError(f"mixture workload {name!r} needs parts with positive weights")
        self.name, self.parts = name, [p for _, p in parts]
        self.weights = weights / weights.sum()
        shares = ", ".join(f"{w:.0%} {p.description.removeprefix('SYNTHETIC ')}" for w, p in zip(self.weights, self.parts))
        self.description = f"SYNTHETIC mixture: {shares}"

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        which = rng.choice(len(self.parts), size=num, p=self.weights)
        out = np.empty(num, dtype=np.int64)
        for k, part in enumerate(self.parts):
            mask = which == k
            out[mask] = part.sample(int(mask.sum()), rng)
        return out

    def longest(self, at_most: int | None = None) -> int | None:
        tops = [t for t in (p.longest(at_most) for p in self.parts) if t is not None]
        return max(tops) if tops else None


def _lognormal(name: str, median: int, sigma: float, max_len: int = 2_000_000) -> LognormalSource:
    return LognormalSource(name, median_len=median, sigma=sigma, max_len=max_len)


SYNTHETIC: dict[str, Callable[[], LengthSource]] = {
    "synthetic-pareto": lambda: TruncatedParetoSource("synthetic-pareto", min_len=128, alpha=1.05, max_len=2_000_000),
    "synthetic-pareto-heavy": lambda: TruncatedParetoSource(
        "synthetic-pareto-heavy", min_len=512, alpha=0.8, max_len=2_000_000
    ),
    "synthetic-lognormal": lambda: _lognormal("synthetic-lognormal", 512, 1.6),
    "synthetic-longdoc": lambda: _lognormal("synthetic-longdoc", 6_600, 1.9),
    "synthetic-bimodal": lambda: MixtureSource(
        "synthetic-bimodal", [(0.85, _lognormal("short", 600, 0.8)), (0.15, _lognormal("long", 48_000, 0.35))]
    ),
    "synthetic-all-long": lambda: _lognormal("synthetic-all-long", 64_000, 0.5),
    "synthetic-short": lambda: _lognormal("synthetic-short", 400, 0.9, max_len=16_000),
}
"""name -> factory of the built-in synthetic workloads."""
