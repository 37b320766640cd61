"""`hsp train` configuration: sections of typed fields, loaded from TOML or YAML,
overridden from the command line, and checked before Ray starts.

Every error names the key, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from solver.cost import CostModel
from solver.spec import ClusterSpec

DEFAULT_COST_MODEL = Path(__file__).parent / "configs" / "cost-cpu-tiny.json"
STRATEGIES = ("fast", "flexsp", "static", "batch-ada", "megatron-dcp")
AUTO_CAPACITY_FRACTION = 0.75
"""With memory_budget_bytes = 0, one rank holds activations for this share of
max_seq_len tokens, so the longest sequences need a degree-2 group."""


@dataclass(kw_only=True)
class ModelSection:
    num_layers: int = 2
    """Transformer blocks."""
    hidden_size: int = 64
    """Model width; must be divisible by num_heads."""
    num_heads: int = 4
    """Attention heads; an SP group of degree d needs d | num_heads."""
    max_seq_len: int = 1024
    """Longest sequence in tokens (longer documents are cut)."""

    def __post_init__(self) -> None:
        _positive(self, "model")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}; "
                f"pick a head count that divides it (e.g. {_divisor_near(self.hidden_size, self.num_heads)})"
            )


@dataclass(kw_only=True)
class DataSection:
    data_dir: str = ""
    """Folder of .txt/.jsonl files to train on; empty = synthetic Wikipedia-shaped corpus."""
    num_seqs_per_step: int = 64
    """Sequences in each global batch."""
    num_docs: int = 100_000
    """Documents in the synthetic corpus."""
    reference_len: int = 10_921
    """Wikipedia length mapped onto max_seq_len for the synthetic corpus (p99)."""
    seed: int = 0
    """Seed of the synthetic corpus and of the shuffle."""

    def __post_init__(self) -> None:
        _positive(self, "data", skip=("seed", "data_dir"))
        if self.data_dir and not Path(self.data_dir).is_dir():
            raise ValueError(f"data.data_dir={self.data_dir!r} is not a folder; pass a folder of .txt/.jsonl files")


@dataclass(kw_only=True)
class TrainSection:
    steps: int = 100
    """Optimizer steps to reach (a resumed run continues up to this step)."""
    lr: float = 2e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    seed: int = 0
    """Seed of model init and of every rank's RNG."""
    checkpoint_every: int = 25
    """Write a checkpoint every this many steps (0 = only at the end)."""
    run_dir: str = "runs/train"
    """Where summary.json, history.jsonl, plots and checkpoints go."""
    resume: bool = False
    """Continue from run_dir's latest checkpoint."""
    max_restarts: int = 3
    """Worker-group rebuilds allowed after failures before the run gives up."""
    step_timeout_s: float = 300.0
    """A step not finished by then counts as a failure (no hang)."""
    collective_timeout_s: float = 60.0
    """torch.distributed timeout: survivors of a dead peer error out after this."""

    def __post_init__(self) -> None:
        _positive(self, "train", skip=("seed", "checkpoint_every", "weight_decay", "max_restarts", "resume"))
        for key in ("checkpoint_every", "weight_decay", "max_restarts"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key}={getattr(self, key)} must be >= 0")


@dataclass(kw_only=True)
class ClusterSection:
    num_workers: int = 2
    """Ranks, one Ray actor each."""
    address: str = ""
    """Existing Ray cluster ('auto' or host:port); empty = embedded local cluster on loopback."""
    memory_budget_bytes: int = 0
    """Per-rank memory for model states + activations; 0 = auto (see AUTO_CAPACITY_FRACTION)."""
    backend: str = "auto"
    """torch.distributed backend: auto (nccl with GPUs, else gloo), gloo or nccl."""
    gpus_per_worker: float = 0.0
    """GPUs each actor asks Ray for (0 on CPU)."""
    cpus_per_worker: float = 1.0
    """CPUs each actor asks Ray for."""

    def __post_init__(self) -> None:
        _positive(self, "cluster", skip=("address", "memory_budget_bytes", "backend", "gpus_per_worker"))
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"cluster.backend={self.backend!r} is not one of auto, gloo, nccl")
        if self.memory_budget_bytes < 0 or self.gpus_per_worker < 0:
            raise ValueError("cluster.memory_budget_bytes and cluster.gpus_per_worker must be >= 0")
        if self.backend == "nccl" and self.gpus_per_worker < 1:
            raise ValueError(
                f"cluster.backend='nccl' needs one GPU per worker but cluster.gpus_per_worker={self.gpus_per_worker}; "
                "set cluster.gpus_per_worker = 1.0, or use backend 'gloo' / 'auto' on CPU"
            )


@dataclass(kw_only=True)
class PlannerSection:
    strategy: str = "fast"
    """Planner strategy: fast, flexsp, static, batch-ada or megatron-dcp."""
    deadline_s: float = 2.0
    """A plan not ready this long after the previous step ends falls back to `fast`."""
    cost_model: str = ""
    """CostModel JSON (from `hsp profile`); empty = the shipped cost-cpu-tiny.json."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"planner.strategy={self.strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}")
        if self.deadline_s <= 0:
            raise ValueError(f"planner.deadline_s={self.deadline_s} must be > 0")

    def load_cost(self) -> CostModel:
        path = Path(self.cost_model or DEFAULT_COST_MODEL)
        if not path.is_file():
            raise ValueError(
                f"planner.cost_model={str(path)!r} does not exist; write one with "
                f"`hsp profile --out {path.name}` and pass it, or leave planner.cost_model empty for the shipped model"
            )
        return CostModel.load(path)


@dataclass(kw_only=True)
class MetricsSection:
    port: int = 9400
    """Prometheus /metrics port on the driver; 0 = off."""
    host: str = "127.0.0.1"
    """Address the metrics server binds (0.0.0.0 to expose it)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"metrics.port={self.port} must be in 0..65535 (0 turns metrics off)")


@dataclass(kw_only=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    planner: PlannerSection = field(default_factory=PlannerSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTION_TYPES = typing.get_type_hints(TrainConfig)


# ---- loading --------------------------------------------------------------------------


def read_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ValueError(f"config file {path}: TOML needs Python >= 3.11 here; write it as YAML instead") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config file {path}: invalid TOML: {err}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path}: invalid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {path}: the top level must be a mapping of sections")
        return data
    raise ValueError(f"config file {path}: unknown format {path.suffix!r}; use .toml, .yaml or .yml")


def build_config(data: dict, overrides: dict[str, object] | None = None) -> TrainConfig:
    """TrainConfig from nested `data` ({section: {key: value}}) plus dotted `overrides`
    ({"train.steps": 5}); unknown keys and wrong types raise ValueError."""
    merged: dict[str, dict] = {}
    for section, values in data.items():
        if section not in SECTION_TYPES:
            raise ValueError(f"unknown config section {section!r}; valid sections: {', '.join(SECTION_TYPES)}")
        if not isinstance(values, dict):
            raise ValueError(f"config section {section!r} must be a table of keys, got {values!r}")
        merged[section] = dict(values)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        merged.setdefault(section, {})[key] = value
    sections = {}
    for section, cls in SECTION_TYPES.items():
        sections[section] = _build_section(section, cls, merged.get(section, {}))
    return TrainConfig(**sections)


def _build_section(section: str, cls: type, values: dict):
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=2, cutoff=0.6)
            hint = f" (did you mean {', '.join(f'{section}.{k}' for k in close)}?)" if close else ""
            raise ValueError(
                f"unknown config key {section}.{key} = {value!r}{hint}; valid keys in [{section}]: {', '.join(hints)}"
            )
        values[key] = _check_type(f"{section}.{key}", value, hints[key])
    return cls(**values)


def _check_type(key: str, value, expected: type):
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[expected]
    if not ok:
        raise ValueError(
            f"config key {key} = {value!r} has type {type(value).__name__}, expected {expected.__name__}; "
            f"write e.g. {key.split('.')[1]} = {_example(expected)}"
        )
    return float(value) if expected is float else value


def _example(expected: type) -> str:
    return {bool: "true", int: "4", float: "0.5", str: '"text"'}[expected]


def _positive(obj, section: str, skip: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in skip or isinstance(value, (str, bool)):
            continue
        if value <= 0:
            raise ValueError(f"config key {section}.{f.name} = {value!r} must be > 0")


def _divisor_near(n: int, target: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), -d))


# ---- cross-section checks (before Ray starts) --------------------------------------------


def cluster_spec(config: TrainConfig, cost: CostModel) -> ClusterSpec:
    """The planner's ClusterSpec; checks heads and the memory budget against the longest
    sequence, naming the numbers and the fix."""
    n, heads = config.cluster.num_workers, config.model.num_heads
    if n > 1 and heads % 2:
        raise ValueError(
            f"model.num_heads={heads} is odd, so no sequence-parallel degree > 1 divides it and "
            f"cluster.num_workers={n} ranks could never share a sequence; use an even head count "
            f"(e.g. model.num_heads={heads + 1 if config.model.hidden_size % (heads + 1) == 0 else 2}) or num_workers = 1"
        )
    budget = config.cluster.memory_budget_bytes or auto_memory_budget(config, cost)
    spec = ClusterSpec(num_ranks=n, ranks_per_node=n, num_heads=heads, device_memory_bytes=int(budget))
    states = cost.state_bytes_per_rank(n)
    capacity = int((budget - states) // cost.act_bytes_per_token)
    longest, top = config.model.max_seq_len, max(spec.degrees)
    if capacity < 1 or longest > top * capacity:
        need = states + math.ceil(longest / top) * cost.act_bytes_per_token
        fixes = [f"raise cluster.memory_budget_bytes to >= {math.ceil(need)}"]
        if capacity >= 1:
            fixes.append(f"lower model.max_seq_len to <= {top * capacity}")
            if heads % (2 * top) == 0:
                fixes.append(f"use {2 * top} workers so degree-{2 * top} groups exist")
            else:
                fixes.append(f"use a head count divisible by {2 * top} with >= {2 * top} workers")
        raise ValueError(
            f"cluster.memory_budget_bytes={budget} holds {max(capacity, 0)} tokens per rank after "
            f"{states:.0f} bytes of model states, so a max_seq_len={longest} sample does not fit even on the "
            f"largest usable group (degree {top}; degrees usable with num_heads={heads} and {n} workers: "
            f"{list(spec.degrees)}); " + ", or ".join(fixes)
        )
    _warn_cost_mismatch(config, cost)
    return spec


def auto_memory_budget(config: TrainConfig, cost: CostModel) -> int:
    tokens = math.ceil(AUTO_CAPACITY_FRACTION * config.model.max_seq_len)
    states = cost.state_bytes_per_rank(config.cluster.num_workers)
    return int(math.ceil(states + tokens * cost.act_bytes_per_token))


def _warn_cost_mismatch(config: TrainConfig, cost: CostModel) -> None:
    m = config.model
    if (cost.num_layers, cost.hidden_size, cost.num_heads) != (m.num_layers, m.hidden_size, m.num_heads):
        warnings.warn(
            f"cost model {cost.name!r} was profiled for layers={cost.num_layers}, hidden={cost.hidden_size}, "
            f"heads={cost.num_heads} but the model has layers={m.num_layers}, hidden={m.hidden_size}, "
            f"heads={m.num_heads}; predictions will be off until the online rescale catches up "
            "(run `hsp profile` for this model and pass planner.cost_model)",
            stacklevel=2,
        )
