"""The configuration trees of `hsp train`, `hsp rl` and `hsp profile`.

Each component keeps its config dataclass next to its code; this module composes them
into one tree per command (cluster/configtree.py: files and checks, configflags.py: flags):

    hsp train    init_from                    a Hugging Face folder to start from (cluster/sources.py)
                 [model] ModelConfig          hsp/model/config.py (the model's own config)
                 [data] DataConfig            here
                 [train] TrainLoopConfig      here
                 [optimizer] OptimizerConfig  hsp/engine/options.py
                 [engine] EngineConfig        hsp/engine/options.py
                 [checkpoint] CheckpointConfig  cluster/checkpoint.py
                 [cluster] ClusterConfig      here
                 [planner] PlannerConfig      here (strategies: solver.STRATEGIES)
                 [metrics] MetricsConfig      cluster/metrics.py
    hsp rl       [model], [rl] RLConfig (hsp/rl/config.py), [cluster], [metrics], run_dir
    hsp profile  [model], [profile] ProfileConfig (hsp/engine/profile.py), out
    hsp prepare  PrepareConfig (hsp/data/prepare.py): plain keys, no sections
    hsp export   ExportConfig (cluster/export.py): plain keys, no sections

The checks across sections (heads against workers, memory against the longest sequence)
run before Ray starts; every error names the key, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cluster.checkpoint import CheckpointConfig
from cluster.configtree import Tree, build, read_file, to_dict
from cluster.export import ExportConfig
from cluster.metrics import MetricsConfig
from cluster.placement import next_power_of_two
from hsp.data.prepare import DEFAULT_MAX_UNDECODABLE_FRACTION, PrepareConfig
from hsp.engine.options import EngineConfig, OptimizerConfig
from hsp.engine.profile import ProfileConfig
from hsp.model.config import ModelConfig  # the one reference to the model's config class
from hsp.rl.config import RLConfig
from solver.cost import CostModel
from solver.spec import ClusterSpec, usable_degree
from solver import STRATEGIES

__all__ = ["TRAIN", "RL", "PROFILE", "PREPARE", "EXPORT", "TrainConfig", "build_config", "cluster_spec", "read_file"]

CONFIGS = Path(__file__).parent / "configs"
DEFAULT_COST_MODEL = CONFIGS / "cost-cpu-tiny.json"
AUTO_CAPACITY_FRACTION = 0.75
"""With memory_budget_bytes = 0, one rank holds activations for this share of
max_seq_len tokens, so the longest sequences need a degree-2 group (sequence parallelism
at work even on a laptop); where the largest usable degree d cannot hold that (one
rank: d = 1), the share is 1/d, so a max_seq_len sample always fits."""


def _positive(obj, section: str, names: tuple[str, ...]) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ValueError(f"config key {section}.{name} = {getattr(obj, name)!r} must be > 0")


@dataclass(kw_only=True)
class DataConfig:
    data_dir: str = ""
    """Folder of raw .txt/.jsonl/.parquet files, tokenized once (as `hsp prepare` does) into
    $HSP_DATA_CACHE or <run_dir>/data-cache; empty (and no prepared_dir) = synthetic
    Wikipedia-shaped corpus."""
    prepared_dir: str = ""
    """Folder written by `hsp prepare`: every worker memory-maps it, the driver reads only
    the lengths."""
    tokenizer: str = ""
    """'byte', a tokenizer.json or a folder holding one; empty = byte, or with prepared_dir
    the tokenizer the data was prepared with (which must match: fingerprint)."""
    text_field: str = "text"
    """Field of a .jsonl object / column of a .parquet file holding the text (data_dir)."""
    max_undecodable_fraction: float = DEFAULT_MAX_UNDECODABLE_FRACTION
    """Largest fraction of data_dir's documents that may hold bytes that are not UTF-8
    (kept with U+FFFD); above it the run refuses the data."""
    num_seqs_per_step: int = 64
    """Sequences in each global batch."""
    num_docs: int = 100_000
    """Documents in the synthetic corpus."""
    reference_len: int = 10_921
    """Wikipedia length mapped onto max_seq_len for the synthetic corpus (p99)."""
    seed: int = 0
    """Seed of the synthetic corpus and of the shuffle."""

    def __post_init__(self) -> None:
        _positive(self, "data", ("num_seqs_per_step", "num_docs", "reference_len"))
        for name in ("data_dir", "prepared_dir"):
            folder = getattr(self, name)
            if folder and not Path(folder).is_dir():
                raise ValueError(f"data.{name}={folder!r} is not a folder; pass "
                                 + ("a folder of .txt/.jsonl/.parquet files" if name == "data_dir" else "a folder written by `hsp prepare`"))
        if self.data_dir and self.prepared_dir:
            raise ValueError(f"data.data_dir={self.data_dir!r} and data.prepared_dir={self.prepared_dir!r} are both set; "
                             "train on raw text (--data-dir) or on prepared data (--data), not both")
        if not 0.0 <= self.max_undecodable_fraction <= 1.0:
            raise ValueError(f"data.max_undecodable_fraction={self.max_undecodable_fraction} must be in [0, 1]")
        if self.tokenizer not in ("", "byte") and not (self.data_dir or self.prepared_dir):
            raise ValueError(f"data.tokenizer={self.tokenizer!r} has nothing to tokenize: the synthetic corpus is made "
                             "of byte-tokenizer ids; pass --data or --data-dir, or leave --tokenizer out")


@dataclass(kw_only=True)
class TrainLoopConfig:
    steps: int = 100
    """Optimizer steps to reach (a resumed run continues up to this step); 0 writes the
    initial state as the checkpoint (e.g. an --init-from model for `hsp export`)."""
    seed: int = 0
    """Seed of model init and of every rank's RNG."""
    run_dir: str = "runs/train"
    """Where summary.json, history.jsonl, plots and checkpoints go."""
    max_restarts: int = 3
    """Worker-group rebuilds allowed after failures before the run gives up."""
    step_timeout_s: float = 300.0
    """A step not finished by then counts as a failure (no hang)."""

    def __post_init__(self) -> None:
        _positive(self, "train", ("step_timeout_s",))
        for name in ("steps", "max_restarts"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 0")


@dataclass(kw_only=True)
class ClusterConfig:
    num_workers: int = 2
    """Ranks, one Ray actor each."""
    address: str = ""
    """Existing Ray cluster ('auto' or host:port); empty = embedded local cluster on loopback."""
    memory_budget_bytes: int = 0
    """Per-rank memory for model states + activations; 0 = auto (activations of 3/4 of max_seq_len tokens, all of them on one rank)."""
    backend: str = field(default="auto", metadata={"choices": ("auto", "gloo", "nccl")})
    """torch.distributed backend: auto (nccl with GPUs, else gloo), gloo or nccl."""
    gpus_per_worker: float = 0.0
    """GPUs each actor asks Ray for (0 on CPU)."""
    cpus_per_worker: float = 1.0
    """CPUs each actor asks Ray for."""

    def __post_init__(self) -> None:
        _positive(self, "cluster", ("num_workers", "cpus_per_worker"))
        if self.memory_budget_bytes < 0 or self.gpus_per_worker < 0:
            raise ValueError("cluster.memory_budget_bytes and cluster.gpus_per_worker must be >= 0")
        if self.backend == "nccl" and self.gpus_per_worker < 1:
            raise ValueError(
                f"cluster.backend='nccl' needs one GPU per worker but cluster.gpus_per_worker={self.gpus_per_worker}; "
                "set cluster.gpus_per_worker = 1.0, or use backend 'gloo' / 'auto' on CPU"
            )


@dataclass(kw_only=True)
class PlannerConfig:
    strategy: str = field(default="fast", metadata={"choices": tuple(STRATEGIES)})
    """Planner strategy (solver.STRATEGIES)."""
    deadline_s: float = 2.0
    """A plan not ready this long after the previous step ends falls back to `fast`."""
    cost_model: str = ""
    """CostModel JSON (from `hsp profile`); empty = the shipped cost-cpu-tiny.json."""

    def __post_init__(self) -> None:
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


class _Tree:
    """A command's whole config."""

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass(kw_only=True)
class TrainConfig(_Tree):
    """`hsp train`."""

    init_from: str = ""
    """Local Hugging Face folder (config.json + safetensors; Llama, Qwen2, Mistral) to start
    from: the model comes from its config.json, every rank loads its weights. [model]
    keys other than max_seq_len must then be left out or agree with config.json."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

@dataclass(kw_only=True)
class RLRunConfig(_Tree):
    """`hsp rl`: rl.model is the [model] section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    metrics: MetricsConfig = field(default_factory=lambda: MetricsConfig(port=0))
    run_dir: str = "runs/rl"
    """Output directory (summary.json, reward_curve.png, sft.pt)."""

@dataclass(kw_only=True)
class ProfileRunConfig(_Tree):
    """`hsp profile`: profile.model is the [model] section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    out: str = ""
    """Where to write the CostModel JSON (required to run)."""

TRAIN = Tree(
    command="train",
    root=TrainConfig,
    derived={
        "model.vocab_size": "the tokenizer's vocabulary, or --init-from's config.json",
        "model.init_seed": "train.seed",
        "model.bidirectional": "causal for training",
    },
    aliases={
        "--steps": "train.steps",
        "--num-workers": "cluster.num_workers",
        "--address": "cluster.address",
        "--metrics-port": "metrics.port",
        "--metrics-host": "metrics.host",
        "--run-dir": "train.run_dir",
        "--resume": "checkpoint.resume",
        "--checkpoint-every": "checkpoint.every_steps",
        "--data-dir": "data.data_dir",
        "--data": "data.prepared_dir",
        "--tokenizer": "data.tokenizer",
        "--text-field": "data.text_field",
        "--init-from": "init_from",
        "--seed": "train.seed",
        "--strategy": "planner.strategy",
        "--dtype": "engine.dtype",
        "--state-sharding": "engine.state_sharding",
        "--activation-checkpointing": "engine.activation_checkpointing",
        "--keep-last": "checkpoint.keep_last",
    },
)
_RL_RANKS = "the RL ranks use gloo on CPU"
RL = Tree(
    command="rl",
    root=RLRunConfig,
    derived={
        "model.vocab_size": "the task's vocabulary",
        "model.max_seq_len": "the task's prompt + response length",
        "model.init_seed": "rl.seed",
        "model.bidirectional": "a diffusion LM attends both ways",
        "cluster.num_workers": "rl.num_workers",
        "cluster.memory_budget_bytes": "rl.act_budget_bytes bounds RL memory",
        "cluster.backend": _RL_RANKS,
        "cluster.gpus_per_worker": _RL_RANKS,
    },
    # every rl.* key keeps its short flag (--mc-samples, --num-workers, ...)
    aliases={
        **{"--" + name.replace("_", "-"): f"rl.{name}" for name in RLConfig.__dataclass_fields__ if name != "model"},
        "--num-layers": "model.num_layers",
        "--hidden-size": "model.hidden_size",
        "--num-heads": "model.num_heads",
        "--num-kv-heads": "model.num_kv_heads",
        "--run-dir": "run_dir",
        "--address": "cluster.address",
        "--cpus-per-worker": "cluster.cpus_per_worker",
        "--metrics-port": "metrics.port",
        "--metrics-host": "metrics.host",
    },
)
PROFILE = Tree(
    command="profile",
    root=ProfileRunConfig,
    derived={"model.init_seed": "every rank builds the same model", "model.bidirectional": "causal, as in training"},
    aliases={
        "--out": "out",
        "--num-ranks": "profile.num_ranks",
        "--num-layers": "model.num_layers",
        "--hidden-size": "model.hidden_size",
        "--num-heads": "model.num_heads",
        "--num-kv-heads": "model.num_kv_heads",
        "--vocab-size": "model.vocab_size",
        "--max-seq-len": "model.max_seq_len",
        "--lengths": "profile.lengths",
        "--repeats": "profile.num_repeats",
        "--dtype": "profile.dtype",
        "--state-sharding": "profile.state_sharding",
        "--activation-checkpointing": "profile.activation_checkpointing",
        "--backend": "profile.backend",
        "--pin-cpus": "profile.pin_cpus",
        "--name": "profile.name",
    },
)


def _kebab_aliases(names) -> dict[str, str]:
    """--num-workers for num_workers: the spelling of the other commands' flags."""
    return {"--" + name.replace("_", "-"): name for name in names if "_" in name}


PREPARE = Tree(command="prepare", root=PrepareConfig, positionals={"inputs": "INPUT"},
               aliases=_kebab_aliases(PrepareConfig.__dataclass_fields__))
EXPORT = Tree(command="export", root=ExportConfig, positionals={"run_dir": "RUN_DIR"},
              aliases=_kebab_aliases(ExportConfig.__dataclass_fields__))


def build_config(data: dict, overrides: dict[str, object] | None = None) -> TrainConfig:
    """`hsp train`'s TrainConfig from nested `data` plus dotted `overrides`."""
    return build(TRAIN, data, overrides)


# ---- cross-section checks (before Ray starts) --------------------------------------------


def cluster_spec(config: TrainConfig, cost: CostModel) -> ClusterSpec:
    """The planner's ClusterSpec; checks the head counts and the memory budget against the
    longest sequence, naming the numbers and the fix."""
    n, heads, kv = config.cluster.num_workers, config.model.num_heads, config.model.num_kv_heads
    if n > 1 and not any(usable_degree(2**k, heads, kv) for k in range(1, n.bit_length())):
        raise ValueError(_no_parallel_degree(config))
    # one node until the group is placed: the group then sets the real ranks per node
    # (cluster.placement), a power of two as this one, which leaves the usable degrees and
    # so every check below unchanged
    layout = ClusterSpec(num_ranks=n, ranks_per_node=next_power_of_two(n), num_heads=heads, num_kv_heads=kv,
                         device_memory_bytes=1)
    budget = config.cluster.memory_budget_bytes or auto_memory_budget(config, cost, max(layout.degrees))
    spec = dataclasses.replace(layout, device_memory_bytes=int(budget))
    states = cost.state_bytes_per_rank(n)
    capacity = int((budget - states) // cost.act_bytes_per_token)
    longest, top = config.model.max_seq_len, max(spec.degrees)
    if capacity < 1 or longest > top * capacity:
        need = states + math.ceil(longest / top) * cost.act_bytes_per_token
        fixes = [f"raise cluster.memory_budget_bytes to >= {math.ceil(need)}"]
        if capacity >= 1:
            fixes.append(f"lower model.max_seq_len to <= {top * capacity}")
            if usable_degree(2 * top, heads, kv):
                fixes.append(f"use {2 * top} workers so degree-{2 * top} groups exist")
            else:
                fixes.append(f"use head counts that allow degree {2 * top} (num_heads and num_kv_heads divisible by "
                             f"{2 * top}, or num_kv_heads dividing it) with >= {2 * top} workers")
        raise ValueError(
            f"cluster.memory_budget_bytes={budget} holds {max(capacity, 0)} tokens per rank after "
            f"{states:.0f} bytes of model states, so a max_seq_len={longest} sample does not fit even on the "
            f"largest usable group (degree {top}; degrees usable with num_heads={heads}, num_kv_heads={kv} and {n} workers: "
            f"{list(spec.degrees)}); " + ", or ".join(fixes)
        )
    _warn_cost_mismatch(config, cost)
    return spec


def _no_parallel_degree(config: TrainConfig) -> str:
    n, m = config.cluster.num_workers, config.model
    why = (f"model.num_heads={m.num_heads} is odd, so no sequence-parallel degree > 1 divides it"
           if m.num_heads % 2 else
           f"model.num_kv_heads={m.num_kv_heads} is odd, so no degree d > 1 either splits the key/value heads "
           f"(d | num_kv_heads) or replicates them evenly (num_kv_heads | d)")
    if config.init_from:
        fix = (f"the heads are --init-from {config.init_from}'s, so train it with cluster.num_workers = 1, "
               "or start from a checkpoint whose num_key_value_heads is a power of two")
    elif m.num_heads % 2:
        even = m.num_heads + 1 if m.hidden_size % (m.num_heads + 1) == 0 else 2
        fix = f"use an even head count (e.g. model.num_heads={even}, with num_kv_heads dividing it) or num_workers = 1"
    else:
        fix = (f"use a power of two num_kv_heads that divides {m.num_heads} (e.g. model.num_kv_heads="
               f"{m.num_heads & -m.num_heads}) or num_workers = 1")
    return f"{why}, and cluster.num_workers={n} ranks could never share a sequence; {fix}"


def auto_memory_budget(config: TrainConfig, cost: CostModel, top_degree: int) -> int:
    """Model states plus activations for max(AUTO_CAPACITY_FRACTION, 1 / top_degree) of
    max_seq_len tokens: runnable for any worker count (top_degree: largest usable degree)."""
    tokens = math.ceil(max(AUTO_CAPACITY_FRACTION, 1 / top_degree) * config.model.max_seq_len)
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


def check_resume(config: TrainConfig, saved_step: int | None) -> None:
    """--resume on a checkpoint at or past train.steps would train nothing: say so."""
    steps = config.train.steps
    if config.checkpoint.resume and saved_step is not None and saved_step >= steps:
        raise ValueError(
            f"the checkpoint in {config.train.run_dir} is at step {saved_step} >= --steps {steps}; "
            f"pass --steps > {saved_step} to continue training"
        )


def check_profile_backend(config: ProfileRunConfig, cuda_available: bool) -> None:
    if config.profile.backend == "nccl" and not cuda_available:
        raise ValueError(
            "profile.backend='nccl' needs CUDA GPUs but torch sees none on this machine; "
            "pass --backend gloo (or auto) to profile on CPU"
        )
