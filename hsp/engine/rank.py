"""The one rank runtime: a process of the world, its model, optimizer and groups.

Every rank of `hsp train`, `hsp rl` (any number of workers, one included) and `hsp
profile` is a `Rank`. A spec says how the rank joins and which step program it runs:

    rank = Rank()
    rank.setup(r, world_size, "tcp://host:port", spec)  # join, then rank.program = spec.start(rank)
    rank.program.step(...)                              # hsp.engine.sft.SupervisedStep or hsp.rl.step.RLProgram
    rng = rank.save_checkpoint(folder)                  # collective: this rank's shard into folder
    rank.load_checkpoint(folder, step, rng)             # collective: reshards onto this world
    rank.shutdown()

The programs build their model through `Rank.build` and run every collective through
the rank (`collectives`, `all_reduce_grads`, `sum_scalars`, `max_scalar`), so a dead or
stuck peer reads the same everywhere: a `CollectiveError` naming where it happened.
No Ray here: cluster/actors.py hosts a Rank in an actor, tests drive it through
`hsp.testing.run_ranks`.

`Rank.build` is the one place where a model becomes a rank's model and gets its
optimizer, in the layout hsp.engine.state describes: FSDP2 `fully_shard` over all ranks
(zero3, the SFT default) or a replica per rank (RL). FSDP2's all-gathers and
reduce-scatters are collectives over all ranks, so every rank runs the same number of
forward/backward passes per micro-batch: the SFT step derives them in one place
(`hsp.engine.sft.plan_work`), from the plan alone, identically everywhere.

Checkpoints are written by the ranks themselves (hsp.engine.dcp): each rank its own
shard file, nothing gathered on the driver, which keeps only the step and the ranks'
RNG states (returned by `save_checkpoint`) as JSON beside the shards.

Hung-rank attribution: every collective section of every program is entered through
`Rank.collectives(where)`, which counts it in `Rank.progress` (hsp/engine/progress.py);
the driver reads the counter while the rank blocks (cluster/attribution.py).
"""

from __future__ import annotations

import base64
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterable, Protocol

import torch
import torch.distributed as dist
from torch import nn

from hsp.engine.dcp import load_states, save_states
from hsp.engine.progress import Progress
from hsp.engine.state import param_groups, place_model, state_bytes
from hsp.model.config import ModelConfig
from hsp.model.decoder import Decoder
from hsp.model.hf import load_decoder
from hsp.parallel.grads import all_reduce_grads
from hsp.parallel.groups import GroupCatalogue

BACKENDS = ("auto", "gloo", "nccl")


class CollectiveError(RuntimeError):
    """A collective failed or timed out: a peer rank crashed, hung, or lost its connection."""


def build_model(config: ModelConfig, init_from: str = "") -> nn.Module:
    """The model every rank builds: hsp's one decoder family, initialised from
    config.init_seed, or with the weights of the local Hugging Face folder `init_from`."""
    if not init_from:
        return Decoder(config)
    model = load_decoder(init_from, max_seq_len=config.max_seq_len, bidirectional=config.bidirectional,
                         init_seed=config.init_seed, init_std=config.init_std)
    changed = [f"{k}={v!r} (the run has {getattr(config, k)!r})" for k, v in model.config.to_dict().items()
               if getattr(config, k) != v]
    if changed:  # the driver read config.json before the ranks started; they must load that same model
        raise ValueError(f"{init_from}/config.json now gives {', '.join(changed)}; it changed after the run "
                         "started: start the run again")
    return model


def free_rendezvous(host: str = "127.0.0.1") -> str:
    """tcp://host:port with a port free on `host` right now (for rank 0's store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return f"tcp://{host}:{sock.getsockname()[1]}"


@dataclass(frozen=True, kw_only=True)
class JoinOptions:
    """How a rank joins the world; a spec derives them from its own config."""

    backend: str = "auto"
    """'auto' (nccl when CUDA is available and the program runs on it, else gloo), 'gloo' or 'nccl'."""
    collective_timeout_s: float
    """A collective waiting longer than this (a dead or stuck peer) raises instead of hanging."""
    num_threads: int = 1
    """torch intra-op threads of this process; 0 leaves torch's default."""
    pin_cpus: bool = False
    """Pin rank r to its own slice of this process's CPUs (see pin_to_cpus)."""
    degrees: tuple[int, ...] = (1,)
    """Sequence-parallel degrees whose aligned process groups the program uses (1 needs none)."""
    cuda: bool = True
    """Whether the program can run on CUDA tensors; False keeps 'auto' on gloo and refuses 'nccl'."""
    seed: int = 0
    """Seed of torch's global RNG on this rank."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "nccl" and not self.cuda:
            raise ValueError("backend 'nccl' needs CUDA tensors but this program runs on CPU tensors; use 'gloo' or 'auto'")
        if not self.collective_timeout_s > 0:
            raise ValueError(f"collective_timeout_s must be > 0, got {self.collective_timeout_s}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = torch's default), got {self.num_threads}")


class Program(Protocol):
    """A step function hosted by a rank (SFT: hsp.engine.sft, RL: hsp.rl.step)."""

    def step(self, *args) -> object: ...


class RankSpec(Protocol):
    """What one rank runs: plain values, picklable, the same for every rank."""

    def join_options(self, world_size: int) -> JoinOptions:
        """Checked before the rank connects to anyone (a bad spec fails alike on every rank)."""
        ...

    def start(self, rank: "Rank") -> Program:
        """Build the program on a joined rank (its model through rank.build)."""
        ...


class Rank:
    """One process of the world: joined, with its groups, model, optimizer and program."""

    def __init__(self) -> None:
        self.rank = -1
        self.world_size = 0
        self.device = torch.device("cpu")
        self.timeout_s = 0.0
        self.catalogue: GroupCatalogue | None = None
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.sharding = "replicated"
        """'zero3' or 'replicated' (hsp.engine.state), set by build."""
        self.program: Program | None = None
        self.step = 0
        """Optimizer steps this rank has finished (its program counts them)."""
        self.progress = Progress()
        """Collective sections entered and left, readable from another thread while the rank blocks."""

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self, rank: int, world_size: int, rendezvous: str, spec: RankSpec) -> None:
        """Join the world at `rendezvous` (tcp://host:port) and start `spec`'s program."""
        self.join(rank, world_size, rendezvous, spec.join_options(world_size))
        try:
            self.program = spec.start(self)
        except BaseException:
            self.shutdown()  # leave the process able to join again (a rank in the driver's process)
            raise

    def join(self, rank: int, world_size: int, rendezvous: str, options: JoinOptions) -> None:
        """Choose backend and device, join the process group, create the SP groups."""
        self.rank, self.world_size, self.timeout_s = rank, world_size, options.collective_timeout_s
        if options.num_threads > 0:
            torch.set_num_threads(options.num_threads)
        if options.pin_cpus:
            pin_to_cpus(rank, world_size)
        backend = choose_backend(options.backend, options.cuda)
        if backend == "nccl":
            self.device = torch.device("cuda", rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        timeout = timedelta(seconds=options.collective_timeout_s)
        dist.init_process_group(backend, init_method=rendezvous, rank=rank, world_size=world_size, timeout=timeout)
        self.catalogue = GroupCatalogue.create(world_size, options.degrees, options.collective_timeout_s)
        torch.manual_seed(options.seed)

    def build(self, make_model: Callable[[], nn.Module], *, dtype: torch.dtype, lr: float, weight_decay: float,
              sharding: str, activation_checkpointing: bool = False) -> None:
        """The one place a rank's model and optimizer come to be: `sharding` 'zero3'
        (FSDP2 over all ranks) or 'replicated' (hsp.engine.state), AdamW without decay on
        norms, biases and embeddings."""
        self.sharding = sharding
        self.model = place_model(make_model(), device=self.device, dtype=dtype, sharding=sharding,
                                 world_size=self.world_size, activation_checkpointing=activation_checkpointing)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, weight_decay), lr=lr)

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def save_checkpoint(self, folder: str) -> str:
        """Write this rank's shard of model and optimizer into `folder` (all ranks call it
        together); returns this rank's RNG state (base64) for the driver's JSON."""
        with self.collectives(f"saving the checkpoint into {folder}"):
            save_states(self.model, self.optimizer, folder)
        return base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()

    def load_checkpoint(self, folder: str, step: int, rng: str | None) -> None:
        """Load `folder` (written by any number of ranks) into this rank's layout; `rng` is
        this rank's saved RNG state, None when the checkpoint had no rank with this index
        (it was written by fewer ranks), which keeps the rank's seeded RNG."""
        with self.collectives(f"loading the checkpoint {folder}"):
            load_states(self.model, self.optimizer, folder)
        if rng is not None:
            torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(rng)), dtype=torch.uint8))
        self.step = int(step)

    def model_state_bytes(self) -> int:
        """Bytes of parameters, gradients and optimizer states this rank holds."""
        return state_bytes(self.model, self.optimizer)

    # ---- collectives ----------------------------------------------------------------

    @contextmanager
    def collectives(self, where: str):
        """Run a section of collectives; a lost or stuck peer becomes a CollectiveError.
        Every program enters its collectives here, so `progress` counts the same
        sections in the same order on every rank (hung-rank attribution)."""
        self.progress.enter(where)
        try:
            yield
        except RuntimeError as err:
            if isinstance(err, CollectiveError) or not _is_comm_error(err):
                raise
            raise CollectiveError(
                f"rank {self.rank}: a collective in {where} failed after at most "
                f"{self.timeout_s:g}s (collective_timeout_s): a peer rank crashed or is stuck; "
                f"check the other ranks' logs. Cause: {err}"
            ) from err
        finally:
            self.progress.leave()

    def all_reduce_grads(self, params: Iterable[nn.Parameter], scalars: list[float],
                         buffer_dtype: torch.dtype | None = None) -> list[float]:
        """Sum the gradients of `params` and `scalars` over all ranks in one collective."""
        with self.collectives("the gradient all-reduce over all ranks"):
            return all_reduce_grads(params, scalars, buffer_dtype=buffer_dtype)

    def sum_scalars(self, values: list[float]) -> list[float]:
        """Sum a few float64 scalars over all ranks."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        with self.collectives("a scalar sum over all ranks"):
            dist.all_reduce(t)
        return t.tolist()

    def max_scalar(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        with self.collectives("a scalar max over all ranks"):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)


def choose_backend(requested: str, cuda: bool) -> str:
    """'auto' is nccl when CUDA is available and the program can use it, else gloo."""
    if requested == "auto":
        return "nccl" if cuda and torch.cuda.is_available() else "gloo"
    return requested


def pin_to_cpus(rank: int, world_size: int) -> set[int]:
    """Restrict this process to rank `rank`'s slice of the CPUs it may use (ranks
    r*C/N .. (r+1)*C/N - 1, shared when N > C): ranks then behave like devices with a
    fixed share of the machine, which the cost model assumes."""
    cpus = sorted(os.sched_getaffinity(0))
    if world_size >= len(cpus):
        mine = {cpus[rank * len(cpus) // world_size]}
    else:
        mine = set(cpus[rank * len(cpus) // world_size : (rank + 1) * len(cpus) // world_size])
    os.sched_setaffinity(0, mine)
    return mine


def _is_comm_error(err: RuntimeError) -> bool:
    text = str(err).lower()
    return any(word in text for word in ("gloo", "nccl", "timed out", "timeout", "connection", "peer"))
