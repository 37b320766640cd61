"""Where a worker group's ranks landed, and the ClusterSpec's ranks per node derived from it.

Ray's placement group decides which node hosts each rank's actor; the group then numbers
the ranks node by node (nodes holding more ranks first), so the ranks of a node are
consecutive, and hands the planner the node size it can rely on:

    ranks_per_node P = the largest power of two that divides every node boundary

(a boundary is the first rank of the next node). An aligned power-of-two group of degree
d <= P then lies inside one node and a larger one is made of whole P-blocks, which is
what `solver.spec.ClusterSpec.ranks_per_node` promises. Cases:

- one node (the embedded cluster): no boundary, P = the smallest power of two >= N;
- equal nodes of k = 2^j ranks (8 GPUs per node): P = k;
- uneven or non-power-of-two nodes (3 + 1 ranks, 3 + 3): P is smaller (1 for both), so
  groups may span nodes. That is correct, gloo and NCCL groups work across nodes, only
  slower; the group logs a warning naming the node sizes and the fix.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Sequence


def next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def ranks_per_node(counts: Sequence[int]) -> int:
    """P for ranks numbered node by node with `counts` ranks on each node, in that order."""
    if not counts or min(counts) < 1:
        raise ValueError(f"every node needs at least one rank, got counts {list(counts)}")
    boundaries, first = [], 0
    for count in counts[:-1]:
        first += count
        boundaries.append(first)
    p = next_power_of_two(sum(counts))
    while any(b % p for b in boundaries):
        p //= 2
    return p


def rank_order(bundle_nodes: Sequence[str]) -> list[int]:
    """Bundle (actor) index of each rank: nodes with more bundles first (ties: the node
    seen first), a node's bundles in index order. Bigger nodes first keep P as large as
    the node sizes allow (4 + 2 ranks: P = 4; 2 + 4 would give 2)."""
    count = Counter(bundle_nodes)
    first_seen = {node: i for i, node in reversed(list(enumerate(bundle_nodes)))}
    nodes = sorted(count, key=lambda node: (-count[node], first_seen[node]))
    return [b for node in nodes for b, where in enumerate(bundle_nodes) if where == node]


@dataclass(frozen=True)
class Placement:
    """Node and process of every rank, in rank order."""

    node_ids: tuple[str, ...]
    """Ray node id (hex) of each rank's actor, as the actor itself reports it."""
    node_ips: tuple[str, ...]
    """IP address of each rank's node."""
    pids: tuple[int, ...]
    """Process id of each rank's actor on its node."""

    @property
    def counts(self) -> list[int]:
        """Ranks on each node, nodes in rank order."""
        return list(Counter(self.node_ids).values())  # Counter keeps first-seen order

    @property
    def ranks_per_node(self) -> int:
        return ranks_per_node(self.counts)

    def warning(self) -> str | None:
        """Why groups may span nodes, or None when every node holds P ranks (or one node all)."""
        counts, p = self.counts, self.ranks_per_node
        if len(counts) == 1 or all(c == p for c in counts):
            return None
        return (
            f"the placement group put {counts} ranks on {len(counts)} nodes, so the planner uses ranks_per_node={p} "
            f"and sequence-parallel groups larger than {p} rank(s) may span nodes (correct, but slower); give every "
            "node the same power-of-two number of workers (cluster.cpus_per_worker / gpus_per_worker sized to the nodes)"
        )

    def describe(self) -> str:
        """One line: the nodes, their ranks and pids."""
        parts = []
        for node in dict.fromkeys(self.node_ids):
            ranks = [r for r, n in enumerate(self.node_ids) if n == node]
            pids = ",".join(str(self.pids[r]) for r in ranks)
            parts.append(f"node {node[:12]} ({self.node_ips[ranks[0]]}) ranks {ranks[0]}-{ranks[-1]} pids {pids}")
        return (f"{len(self.node_ids)} ranks on {len(parts)} node(s), ranks_per_node {self.ranks_per_node}: "
                + "; ".join(parts))

    def to_dict(self) -> dict:
        return {"ranks_per_node": self.ranks_per_node, "node_counts": self.counts, **dataclasses.asdict(self)}


def with_ranks_per_node(rank_spec, placement: Placement):
    """An hsp.engine.sft.SupervisedSpec whose ClusterSpec has the placement's ranks per
    node (GroupSpec.for_placement of `hsp train`)."""
    worker = rank_spec.worker
    spec = dataclasses.replace(worker.spec, ranks_per_node=placement.ranks_per_node)
    return dataclasses.replace(rank_spec, worker=dataclasses.replace(worker, spec=spec))
