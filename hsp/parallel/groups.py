"""The process-group catalogue: every aligned power-of-two rank range a plan may use.

torch.distributed requires every rank to call `new_group` for every group, in the
same order, even for groups it is not part of. So all groups are created once at
start-up, in a fixed order (degree ascending, then first rank ascending), and a plan
only looks them up; nothing creates a group during a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import torch.distributed as dist


def catalogue_ranges(world_size: int, degrees: tuple[int, ...]) -> list[tuple[int, int]]:
    """(first_rank, degree) of every aligned range of each degree >= 2 in `degrees` (the
    usable degrees of the plans, `solver.spec.ClusterSpec.degrees`)."""
    return [(first, d) for d in sorted(degrees) if d >= 2 for first in range(0, world_size - d + 1, d)]


@dataclass
class GroupCatalogue:
    world_size: int
    degrees: tuple[int, ...]
    """The usable degrees the catalogue was created for."""
    groups: dict[tuple[int, int], object] = field(default_factory=dict)
    """(first_rank, degree) -> ProcessGroup; degree-1 ranges need no group."""

    @classmethod
    def create(cls, world_size: int, degrees: tuple[int, ...], timeout_s: float) -> "GroupCatalogue":
        """Collective: every rank must call this with the same arguments."""
        catalogue = cls(world_size, tuple(degrees))
        for first, degree in catalogue_ranges(world_size, degrees):
            ranks = list(range(first, first + degree))
            catalogue.groups[(first, degree)] = dist.new_group(ranks, timeout=timedelta(seconds=timeout_s))
        return catalogue

    def get(self, first_rank: int, degree: int):
        """The group of ranks first_rank..first_rank+degree-1; None for degree 1."""
        if degree == 1:
            return None
        if degree not in self.degrees:
            raise ValueError(
                f"sequence-parallel degree {degree} is not usable here (it must be a power of two <= "
                f"{self.world_size} ranks that the head counts allow, solver.spec.usable_degree); "
                f"use a degree among {sorted(set(self.degrees) | {1})}"
            )
        try:
            return self.groups[(first_rank, degree)]
        except KeyError:
            raise ValueError(
                f"no process group for ranks {first_rank}..{first_rank + degree - 1}: groups must be aligned "
                f"power-of-two ranges inside 0..{self.world_size - 1}"
            ) from None
