"""The cluster a plan is made for: ranks, nodes, attention heads, device memory.

`usable_degrees` is the one rule for which Ulysses degrees a cluster can run; the
planner, `validate`, the executor's process-group catalogue and the config checks all
ask it rather than re-deriving "powers of two that divide the head count".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 1 << 30

MAX_NUM_RANKS = 16_384
"""Largest cluster a plan is made for: 16x the 1,024 ranks the planner is benchmarked at.
`fast` plans a batch of 8 sequences per rank in about 1 s at 1,024 ranks and 3 s at
4,096 on one core, growing with N; past 16,384 a plan lists tens of thousands of groups
per micro-batch and takes longer than the training step it plans, so a typo such as
num_ranks=1,000,000 is refused up front instead of planning for minutes."""


def is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def usable_degree(degree: int, num_heads: int, num_kv_heads: int) -> bool:
    """Whether a Ulysses group of `degree` ranks can run a model with these heads: each rank
    needs whole query heads (degree | num_heads), and its K/V heads either split evenly
    (degree | num_kv_heads) or replicated evenly (num_kv_heads | degree)."""
    return num_heads % degree == 0 and (num_kv_heads % degree == 0 or degree % num_kv_heads == 0)


def usable_degrees(
    num_ranks: int,
    num_heads: int,
    num_kv_heads: int | None = None,
    ranks_per_node: int | None = None,
) -> tuple[int, ...]:
    """Ulysses degrees d a cluster can run, ascending (always starts with 1).

    d is a power of two <= num_ranks with d | num_heads (each rank gets whole query
    heads) and, with grouped-query attention, d | num_kv_heads (K/V heads are split) or
    num_kv_heads | d (each K/V head is replicated d / num_kv_heads times). With
    `ranks_per_node`, a group never straddles a node boundary unless it is made of whole
    nodes, so d <= ranks_per_node or d is a multiple of ranks_per_node.
    """
    kv = num_heads if num_kv_heads is None else num_kv_heads
    out, d = [], 1
    while d <= num_ranks:
        heads_ok = usable_degree(d, num_heads, kv)
        nodes_ok = ranks_per_node is None or d <= ranks_per_node or d % ranks_per_node == 0
        if heads_ok and nodes_ok:
            out.append(d)
        d *= 2
    return tuple(out)


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterSpec:
    num_ranks: int
    """Number of ranks (devices) N; any positive integer up to MAX_NUM_RANKS."""
    ranks_per_node: int = 8
    """Ranks sharing one node (any positive integer); a group of degree <= this lies
    inside one node, a larger one is made of whole nodes."""
    num_heads: int
    """Attention (query) heads of the model; a Ulysses group of degree d needs d | num_heads."""
    num_kv_heads: int | None = None
    """K/V heads (grouped-query attention); None means num_heads (multi-head attention),
    also after `dataclasses.replace(spec, num_heads=...)`. Degree d also needs
    d | num_kv_heads or num_kv_heads | d. `kv_heads` is the resolved count."""
    device_memory_bytes: int
    """Memory budget per rank for model states plus activations."""

    def __post_init__(self) -> None:
        for name in ("num_ranks", "ranks_per_node", "num_heads", "kv_heads", "device_memory_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                shown = "num_kv_heads" if name == "kv_heads" else name
                raise ValueError(f"ClusterSpec.{shown} must be a positive integer, got {value!r}")
        if self.num_ranks > MAX_NUM_RANKS:
            raise ValueError(
                f"ClusterSpec.num_ranks={self.num_ranks:,} is above the planner's limit of {MAX_NUM_RANKS:,} ranks "
                f"(one plan would list up to {self.num_ranks:,} groups per micro-batch and take minutes); "
                f"plan for at most {MAX_NUM_RANKS:,} ranks"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"num_kv_heads={self.kv_heads} does not divide num_heads={self.num_heads}: grouped-query "
                f"attention shares each K/V head among num_heads / num_kv_heads query heads; use a K/V head "
                f"count that divides {self.num_heads}"
            )
        if self.num_ranks > 1 and len(self.degrees) == 1:
            why = (
                f"num_heads={self.num_heads} is odd" if self.num_heads % 2
                else f"num_kv_heads={self.kv_heads} is odd and > 1 (degree 2 needs 2 | num_kv_heads or "
                f"num_kv_heads | 2)"
            )
            raise ValueError(
                f"{why}, so no sequence-parallel degree > 1 is usable and {self.num_ranks} ranks could never "
                f"share a sequence; use a model whose head counts are even (e.g. num_heads={self.num_heads + 1} "
                f"if odd) or run on one rank"
            )

    @property
    def kv_heads(self) -> int:
        """K/V heads: num_kv_heads, or num_heads when that is None."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def degrees(self) -> tuple[int, ...]:
        """Usable Ulysses degrees (see `usable_degrees`)."""
        return usable_degrees(self.num_ranks, self.num_heads, self.kv_heads, self.ranks_per_node)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClusterSpec":
        return cls(**data)
