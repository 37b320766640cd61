"""The cluster a plan is made for: ranks, nodes, attention heads, device memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 1 << 30


def is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def usable_degree(degree: int, num_heads: int, num_kv_heads: int) -> bool:
    """Whether a Ulysses group of `degree` ranks can run a model with these heads: each rank
    needs whole query heads (degree | num_heads), and its K/V heads either split evenly
    (degree | num_kv_heads) or replicated evenly (num_kv_heads | degree)."""
    return num_heads % degree == 0 and (num_kv_heads % degree == 0 or degree % num_kv_heads == 0)


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterSpec:
    num_ranks: int
    """Number of ranks (devices) N; any positive integer."""
    ranks_per_node: int = 8
    """Ranks sharing one node; a group of degree <= this never straddles nodes."""
    num_heads: int
    """Attention heads of the model; a Ulysses group of degree d needs d | num_heads."""
    device_memory_bytes: int
    """Memory budget per rank for model states plus activations."""
    num_kv_heads: int | None = None
    """Key/value heads of the model (grouped-query attention); None = num_heads. A degree d
    also needs d | num_kv_heads or num_kv_heads | d (`usable_degree`)."""

    def __post_init__(self) -> None:
        optional = ("num_kv_heads",) if self.num_kv_heads is not None else ()
        for name in ("num_ranks", "ranks_per_node", "num_heads", "device_memory_bytes", *optional):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ClusterSpec.{name} must be a positive integer, got {value!r}")
        if self.num_ranks > 1 and self.num_heads % 2 != 0:
            raise ValueError(
                f"num_heads={self.num_heads} is odd, so no sequence-parallel degree > 1 divides it "
                f"and {self.num_ranks} ranks could only run degree-1 groups; use a model whose head "
                f"count is divisible by 2 (e.g. {self.num_heads + 1}) or run on one rank"
            )

    @property
    def kv_heads(self) -> int:
        """num_kv_heads, or num_heads when unset (unset, it follows a replaced num_heads)."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def degrees(self) -> tuple[int, ...]:
        """Usable Ulysses degrees: powers of two <= N that the head counts allow (`usable_degree`)."""
        out, d = [], 1
        while d <= self.num_ranks:
            if usable_degree(d, self.num_heads, self.kv_heads):
                out.append(d)
            d *= 2
        return tuple(out)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClusterSpec":
        return cls(**data)
