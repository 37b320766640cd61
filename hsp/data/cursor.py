"""Which samples make up step t: a pure function of (seed, step), so a checkpoint only
needs the next step number to continue the data stream exactly."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class DataCursor:
    num_samples: int
    """Samples in the dataset (one epoch)."""
    num_seqs_per_step: int
    """Sequences in each global batch."""
    seed: int
    """Shuffle seed; epoch e uses permutation default_rng([seed, e])."""

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.num_seqs_per_step < 1:
            raise ValueError(
                f"need num_samples >= 1 and num_seqs_per_step >= 1, got {self.num_samples}, {self.num_seqs_per_step}"
            )

    def indices(self, step: int) -> np.ndarray:
        """(num_seqs_per_step,) sample indices of `step` (0-based); epochs are reshuffled
        and a batch may straddle two epochs."""
        first = step * self.num_seqs_per_step
        positions = np.arange(first, first + self.num_seqs_per_step)
        epochs = positions // self.num_samples
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            perm = _permutation(self.num_samples, self.seed, int(epoch))
            mask = epochs == epoch
            out[mask] = perm[positions[mask] % self.num_samples]
        return out


@lru_cache(maxsize=4)
def _permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(num_samples)
    perm.flags.writeable = False  # shared by every call of this epoch
    return perm
