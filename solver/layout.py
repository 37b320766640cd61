"""Where groups may sit: aligned rank ranges that respect node boundaries, for any N and
any ranks per node, and a placement that finds such ranges for a list of degrees.

A group of degree d at `first_rank` is valid when it is aligned (first_rank % d == 0,
which the executor's process-group catalogue needs), inside 0..N-1, and either lies in
one node (d <= ranks_per_node) or is made of whole nodes (d a multiple of
ranks_per_node starting at a node boundary).

Placement: groups larger than a node take whole nodes from rank 0, largest first (their
degrees are multiples of the power-of-two node size, so each lands aligned). The ranks
left are cut, node by node, into maximal aligned power-of-two blocks (a node of 6 ranks
at rank 6 is blocks 6..7 and 8..11); the smaller groups go largest first into the first
block with room. Power-of-two items into power-of-two blocks, largest first, is exact:
when an item of size s finds no room, every block of size >= s is full (their free space
is a multiple of s), so no placement exists.
"""

from __future__ import annotations

from typing import Sequence

from solver.spec import ClusterSpec


def group_violation(spec: ClusterSpec, first_rank: int, degree: int) -> str | None:
    """Why a degree-`degree` group at `first_rank` is not a valid range, or None."""
    n, rpn = spec.num_ranks, spec.ranks_per_node
    last = first_rank + degree - 1
    if first_rank < 0 or last >= n:
        return f"ranks {first_rank}..{last} outside 0..{n - 1}"
    if first_rank % degree:
        return f"not aligned (first rank {first_rank} is not a multiple of {degree})"
    if degree <= rpn:
        if first_rank // rpn != last // rpn:
            return f"straddles nodes of {rpn} ranks (ranks {first_rank}..{last})"
    elif degree % rpn or first_rank % rpn:
        return f"spans part of a node: a group larger than a node ({rpn} ranks) must be whole nodes"
    return None


def node_blocks(spec: ClusterSpec, start: int = 0) -> list[tuple[int, int]]:
    """(first rank, size) of the maximal aligned power-of-two blocks inside each node,
    for the ranks from `start` (a node boundary) on."""
    n, rpn = spec.num_ranks, spec.ranks_per_node
    blocks = []
    for node_start in range(start, n, rpn):
        pos, end = node_start, min(node_start + rpn, n)
        while pos < end:
            size = 1
            while pos % (2 * size) == 0 and pos + 2 * size <= end:
                size *= 2
            blocks.append((pos, size))
            pos += size
    return blocks


def capacity_at_least(spec: ClusterSpec, degree: int) -> int:
    """Most ranks that groups of degree >= `degree` can cover at once: a valid linear
    constraint on any tiling (sum over degrees >= `degree` of d * count <= this)."""
    rpn = spec.ranks_per_node
    if degree > rpn:
        return (spec.num_ranks // rpn) * rpn
    return sum(size for _, size in node_blocks(spec) if size >= degree)


def place(spec: ClusterSpec, degrees: Sequence[int]) -> list[int] | None:
    """First ranks for groups of these degrees (in the given order), or None when no
    valid placement exists. Degrees must sum to at most N; ranks left over are unused."""
    if sum(degrees) > spec.num_ranks:
        return None
    rpn = spec.ranks_per_node
    order = sorted(range(len(degrees)), key=lambda g: -degrees[g])
    first = [0] * len(degrees)
    offset = 0
    small = []
    for g in order:
        if degrees[g] > rpn:
            first[g] = offset
            offset += degrees[g]
        else:
            small.append(g)
    if offset > (spec.num_ranks // rpn) * rpn:  # groups larger than a node need whole nodes
        return None
    blocks = [[pos, size, 0] for pos, size in node_blocks(spec, offset)]  # [first rank, size, used]
    cursor = 0  # blocks before it cannot take the current degree (degrees only fall)
    last_degree = None
    for g in small:
        d = degrees[g]
        if d != last_degree:
            cursor, last_degree = 0, d
        while cursor < len(blocks) and blocks[cursor][1] - blocks[cursor][2] < d:
            cursor += 1
        if cursor == len(blocks):
            return None
        block = blocks[cursor]
        first[g] = block[0] + block[2]
        block[2] += d
    return first


def fill_degree_one(spec: ClusterSpec, firsts: Sequence[int], degrees: Sequence[int]) -> list[int]:
    """The ranks no group covers (each becomes a degree-1 group), ascending."""
    taken = bytearray(spec.num_ranks)
    for r, d in zip(firsts, degrees):
        taken[r : r + d] = b"\x01" * d
    return [r for r in range(spec.num_ranks) if not taken[r]]
