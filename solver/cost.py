"""FlexSP's cost model: time and memory of sequences on Ulysses groups of degree d.

time(s, d)  = (a1 * s^2 + a2 * s) / d + comm(s, d)        (seconds, forward + backward)
comm(s, d)  = 0 if d == 1 else 8 * num_layers * hidden * (1 + kv(d) / H) * s / d / bw[d]
group(S, d) = b1 + sum_{s in S} time(s, d)                 (0 for an idle group)
memory/rank = state_bytes_per_param * num_params / S + act_bytes_per_token * tokens / d
             (S = N when model states are sharded over all ranks (state_sharding 'zero3',
             FSDP2), S = 1 when every rank holds a replica ('replicated'))

The all-to-all volume: per layer, forward and backward each move Q and the attention
output (H heads) and K and V (kv(d) heads each) through one all-to-all of s/d tokens x
head_dim 2-byte elements per rank: 2 passes x 2 bytes x (2 H + 2 kv(d)) x head_dim x
s/d = 8 hidden (1 + kv(d)/H) s/d bytes. kv(d) = max(num_kv_heads, d): K/V heads are
split over the group when d divides num_kv_heads, replicated to d heads when
num_kv_heads divides d. With num_kv_heads = H this is FlexSP's 16 * layers * hidden *
s / d (8 all-to-alls of s*hidden/d 2-byte elements), so MHA presets are unchanged.

Presets are data files in ``solver/presets`` in FlexSP's own units: parameter counts in
units of 2^30, all-to-all bandwidth in MiB/ms (2^20 bytes per millisecond), as its code
reads them. `hsp profile` writes fitted models in the CostModel JSON format.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from solver.spec import ClusterSpec, is_power_of_two

PRESETS_PACKAGE = "solver.presets"
PARAMS_UNIT = float(1 << 30)
"""FlexSP's parameter counts are in units of 2^30 (its memory model divides by 2^30)."""
MIB_PER_MS = float(1 << 20) * 1e3
"""Bytes/s of one MiB/ms, FlexSP's bandwidth unit."""
STATE_SHARDINGS = ("zero3", "replicated")


@dataclass(frozen=True, kw_only=True)
class CostModel:
    name: str
    attn_s_per_token2: float
    """a1: quadratic (attention) seconds per token^2 on one rank."""
    linear_s_per_token: float
    """a2: linear seconds per token on one rank."""
    group_fixed_s: float
    """b1: fixed seconds a group pays per micro-batch in which it runs sequences."""
    act_bytes_per_token: float
    """Activation bytes per token held until backward (on one rank, degree 1)."""
    num_params: float
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int | None = None
    """K/V heads (grouped-query attention); None means num_heads. Sets the K/V share of
    the all-to-all volume."""
    a2a_bytes_per_s: dict[int, float] = field(default_factory=dict)
    """Measured all-to-all bandwidth per rank by degree (degree > 1)."""
    state_bytes_per_param: float = 16.0
    """Weights + grads + Adam states per parameter (16: bf16 compute with fp32 master
    weights, fp32 gradient shards and fp32 Adam moments; also float32 training)."""
    state_sharding: str = "zero3"
    """How the executor lays model states out: 'zero3' shards them over all N ranks
    (FSDP2, hsp's default), 'replicated' keeps a full copy on every rank."""
    activation_checkpointing: bool = False
    """Whether act_bytes_per_token was measured with per-block activation checkpointing
    (blocks recomputed in backward); the executor must run the same way."""
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("attn_s_per_token2", "linear_s_per_token", "group_fixed_s", "act_bytes_per_token"):
            if getattr(self, name) < 0:
                raise ValueError(f"CostModel.{name} must be >= 0, got {getattr(self, name)}")
        if self.act_bytes_per_token <= 0:
            raise ValueError("CostModel.act_bytes_per_token must be > 0")
        kv = self.num_kv_heads
        if kv is not None and (kv <= 0 or self.num_heads % kv):
            raise ValueError(
                f"CostModel.num_kv_heads={kv} must be a positive divisor of num_heads={self.num_heads}"
            )
        if self.state_sharding not in STATE_SHARDINGS:
            raise ValueError(
                f"CostModel.state_sharding={self.state_sharding!r} is unknown; use one of {', '.join(STATE_SHARDINGS)}"
            )
        for d, bw in self.a2a_bytes_per_s.items():
            if not is_power_of_two(d) or d < 2 or bw <= 0:
                raise ValueError(f"a2a bandwidth entry {d}: {bw} needs a power-of-two degree >= 2 and bw > 0")

    # ---- time ---------------------------------------------------------------------

    def bandwidth(self, degree: int) -> float:
        """All-to-all bytes/s per rank at `degree`.

        Known degrees are used as measured; between known degrees we interpolate
        log-log; beyond the largest known degree we continue the last doubling's ratio
        (e.g. 64 -> 128 scales by bw[64]/bw[32]), which keeps the trend of per-rank
        bandwidth falling as more peers sit on other nodes, floored at 1/4 of the
        largest-degree figure so it never collapses to zero; below the smallest known
        degree we use the smallest known one.
        """
        if not self.a2a_bytes_per_s:
            raise ValueError(f"cost model {self.name!r} has no all-to-all bandwidth; profile or load one")
        known = sorted(self.a2a_bytes_per_s)
        if degree in self.a2a_bytes_per_s:
            return self.a2a_bytes_per_s[degree]
        if degree < known[0]:
            return self.a2a_bytes_per_s[known[0]]
        if degree > known[-1]:
            last = self.a2a_bytes_per_s[known[-1]]
            if len(known) == 1:
                return last
            prev = self.a2a_bytes_per_s[known[-2]]
            ratio = min(1.0, last / prev) ** (1.0 / math.log2(known[-1] / known[-2]))
            doublings = math.log2(degree / known[-1])
            return max(last * ratio**doublings, last / 4)
        lo = max(k for k in known if k < degree)
        hi = min(k for k in known if k > degree)
        w = math.log2(degree / lo) / math.log2(hi / lo)
        return math.exp((1 - w) * math.log(self.a2a_bytes_per_s[lo]) + w * math.log(self.a2a_bytes_per_s[hi]))

    def a2a_bytes_per_token(self, degree: int) -> float:
        """All-to-all bytes per rank per token of a sequence on a degree-`degree` group,
        times `degree` (the module docstring's 8 hidden (1 + kv(d)/H) per layer)."""
        kv = self.num_heads if self.num_kv_heads is None else self.num_kv_heads
        kv_moved = min(self.num_heads, max(kv, degree))
        return 8.0 * self.num_layers * self.hidden_size * (1.0 + kv_moved / self.num_heads)

    def comm_s(self, lengths: np.ndarray | float, degree: int) -> np.ndarray | float:
        if degree == 1:
            return np.zeros_like(np.asarray(lengths, dtype=np.float64)) if np.ndim(lengths) else 0.0
        volume_bytes = self.a2a_bytes_per_token(degree) * np.asarray(lengths, dtype=np.float64) / degree
        return volume_bytes / self.bandwidth(degree)

    def seq_time_s(self, lengths: np.ndarray | float, degree: int) -> np.ndarray | float:
        """Seconds to run sequence(s) of the given length(s) on a degree-`degree` group."""
        s = np.asarray(lengths, dtype=np.float64)
        compute = (self.attn_s_per_token2 * s * s + self.linear_s_per_token * s) / degree
        out = compute + self.comm_s(s, degree)
        return float(out) if out.ndim == 0 else out

    def group_time_s(self, lengths: Sequence[int] | np.ndarray, degree: int) -> float:
        """Seconds for one group to run `lengths` in one micro-batch (0 if idle)."""
        s = np.asarray(lengths, dtype=np.float64)
        if s.size == 0:
            return 0.0
        return float(self.group_fixed_s + np.sum(self.seq_time_s(s, degree)))

    # ---- memory -------------------------------------------------------------------

    def state_bytes_per_rank(self, num_ranks: int) -> float:
        """Model-state bytes one rank holds: a 1/N shard (zero3) or a full replica."""
        shards = num_ranks if self.state_sharding == "zero3" else 1
        return self.state_bytes_per_param * self.num_params / shards

    def token_capacity(self, spec: ClusterSpec) -> int:
        """C: tokens one rank can hold activations for in one micro-batch."""
        free = spec.device_memory_bytes - self.state_bytes_per_rank(spec.num_ranks)
        capacity = int(free // self.act_bytes_per_token)
        if capacity < 1:
            raise ValueError(
                f"model states need {self.state_bytes_per_rank(spec.num_ranks) / 2**30:.2f} GiB per rank "
                f"({self.state_bytes_per_param:g} B/param x {self.num_params:.3g} params, {self.state_sharding}, "
                f"{spec.num_ranks} ranks) "
                f"but each rank has {spec.device_memory_bytes / 2**30:.2f} GiB: add ranks or memory"
            )
        return capacity

    def min_degree(self, length: int, spec: ClusterSpec) -> int | None:
        """Smallest usable degree whose group holds `length` tokens, or None if none does."""
        capacity = self.token_capacity(spec)
        for d in spec.degrees:
            if length <= d * capacity:
                return d
        return None

    # ---- files --------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = asdict(self)
        data["a2a_bytes_per_s"] = {str(k): v for k, v in sorted(self.a2a_bytes_per_s.items())}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "CostModel":
        data = dict(data)
        data["a2a_bytes_per_s"] = {int(k): float(v) for k, v in data.get("a2a_bytes_per_s", {}).items()}
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "CostModel":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"cost model file {path} is not valid JSON: {err}") from None
        if "num_params_gi_by_max_len" in data:  # a preset-format file
            return _from_preset_data(data, max_len=None)
        try:
            return cls.from_dict(data)
        except TypeError as err:
            raise ValueError(f"cost model file {path} has wrong fields: {err}") from None


# ---- presets ----------------------------------------------------------------------


def preset_names() -> list[str]:
    files = resources.files(PRESETS_PACKAGE).iterdir()
    return sorted(f.name[: -len(".json")] for f in files if f.name.endswith(".json"))


def preset_data(name: str) -> dict:
    if name not in preset_names():
        raise ValueError(f"unknown cost-model preset {name!r}; choose one of {', '.join(preset_names())} or pass a file")
    return json.loads(resources.files(PRESETS_PACKAGE).joinpath(f"{name}.json").read_text())


def load_preset(name: str, max_len: int | None = None) -> CostModel:
    """A FlexSP preset; `max_len` picks the parameter count (the paper's 192K / 384K)."""
    return _from_preset_data(preset_data(name), max_len)


def preset_cluster(name: str, num_ranks: int) -> ClusterSpec:
    """The preset's hardware (28 GiB usable per GPU, 8 GPUs per node) at `num_ranks`."""
    data = preset_data(name)
    return ClusterSpec(
        num_ranks=num_ranks,
        ranks_per_node=data["ranks_per_node"],
        num_heads=data["num_heads"],
        num_kv_heads=data.get("num_kv_heads"),
        device_memory_bytes=data["device_memory_bytes"],
    )


def _from_preset_data(data: dict, max_len: int | None) -> CostModel:
    by_len = {int(k): float(v) * PARAMS_UNIT for k, v in data["num_params_gi_by_max_len"].items()}
    keys = sorted(by_len)
    # the parameter count grows with max length (position embeddings); take the
    # smallest tabulated max length that covers the requested one
    key = keys[-1] if max_len is None else next((k for k in keys if k >= max_len), keys[-1])
    return CostModel(
        name=data["name"],
        attn_s_per_token2=data["attn_s_per_token2"],
        linear_s_per_token=data["linear_s_per_token"],
        group_fixed_s=data["group_fixed_s"],
        act_bytes_per_token=data["act_bytes_per_token"],
        num_params=by_len[key],
        num_layers=data["num_layers"],
        hidden_size=data["hidden_size"],
        num_heads=data["num_heads"],
        num_kv_heads=data.get("num_kv_heads"),
        a2a_bytes_per_s={int(k): float(v) * MIB_PER_MS for k, v in data["a2a_mib_per_ms"].items()},
        state_bytes_per_param=data["state_bytes_per_param"],
        source=data["source"],
    )


# ---- fitting ----------------------------------------------------------------------


@dataclass(frozen=True)
class FitReport:
    model: CostModel
    num_samples: int
    rmse_s: float
    median_rel_error: float
    max_rel_error: float


def fit_cost_model(
    samples: Iterable[tuple[int, int, float]],
    template: CostModel,
) -> FitReport:
    """Least-squares fit of a1, a2, b1 and bw[d] from (length, degree, seconds) samples.

    Each sample is one group running one sequence of `length` tokens at `degree` in one
    micro-batch, so its time is b1 + (a1 s^2 + a2 s)/d + k_d s/d with k_d = a2a_bytes_per_token(d) / bw[d].
    `length` may also be a list of lengths: a group running that packed stream, whose
    time is b1 + sum over its sequences of the same terms (as `group_time_s` predicts).
    Non-negative least squares (scipy.optimize.nnls) keeps every coefficient >= 0.
    Memory and shape fields (act bytes, params, layers, hidden) come from `template`.
    """
    from scipy.optimize import nnls

    rows = [(np.atleast_1d(np.asarray(length, dtype=np.float64)), int(degree), float(t)) for length, degree, t in samples]
    if len(rows) < 3:
        raise ValueError(f"need at least 3 (length, degree, seconds) samples to fit, got {len(rows)}")
    s1 = np.array([r[0].sum() for r in rows])  # tokens of the group
    s2 = np.array([(r[0] ** 2).sum() for r in rows])  # sum of squared sequence lengths
    d = np.array([r[1] for r in rows])
    t = np.array([r[2] for r in rows])
    comm_degrees = sorted({int(x) for x in d if x > 1})
    columns = [np.ones_like(s1), s2 / d, s1 / d]
    columns += [np.where(d == k, s1 / d, 0.0) for k in comm_degrees]
    design = np.stack(columns, axis=1)
    # scale columns so nnls is well conditioned
    scale = np.maximum(np.abs(design).max(axis=0), 1e-30)
    coef, _ = nnls(design / scale, t)
    coef = coef / scale
    bandwidth = {}
    for k, kd in zip(comm_degrees, coef[3:]):
        # kd == 0 means communication was too small to measure: fall back to the template
        bandwidth[k] = template.a2a_bytes_per_token(k) / kd if kd > 0 else template.a2a_bytes_per_s.get(k, 1e12)
    model = replace(
        template,
        group_fixed_s=float(coef[0]),
        attn_s_per_token2=float(coef[1]),
        linear_s_per_token=float(coef[2]),
        a2a_bytes_per_s=bandwidth or dict(template.a2a_bytes_per_s),
        source=f"fitted from {len(t)} measured samples",
    )
    predicted = design @ coef
    rel = np.abs(predicted - t) / np.maximum(t, 1e-12)
    return FitReport(
        model=model,
        num_samples=len(t),
        rmse_s=float(np.sqrt(np.mean((predicted - t) ** 2))),
        median_rel_error=float(np.median(rel)),
        max_rel_error=float(np.max(rel)),
    )
