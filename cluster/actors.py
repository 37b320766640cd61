"""The Ray actor hosting one rank, for `hsp train` and `hsp rl` alike: a thin shell
around the plain `hsp.engine.rank.Rank`.

No training logic lives here. `setup` joins the rank into the world and starts the
program its spec names (SupervisedSpec: SFT steps, RLRankSpec: RL steps); the other
methods forward to the rank and its program.

`progress` runs in a concurrency group of its own (a second thread), so the driver can
read a rank's collective counter while that rank blocks in `step`; a stopped or wedged
process does not answer (cluster/attribution.py tells the two apart).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import ray


@dataclass
class RankResult:
    """What a rank's program returned, and how long the actor call took."""

    value: object
    """The program's result (a StepReport for SFT, the step record for RL)."""
    in_actor_s: float
    """The whole actor call; the driver's wall time minus this is Ray transport."""


PROBE_GROUP = "probe"


@ray.remote(max_restarts=0, max_task_retries=0, concurrency_groups={PROBE_GROUP: 1})
class RankActor:
    def __init__(self) -> None:
        from hsp.engine.rank import Rank

        self.rank = Rank()

    def where(self) -> tuple[str, str, int]:
        """(Ray node id, node IP, pid) of this actor, as Ray placed it."""
        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), os.getpid()

    @ray.method(concurrency_group=PROBE_GROUP)
    def progress(self) -> dict:
        """The rank's collective progress (hsp.engine.progress), answered while `step` runs."""
        return self.rank.progress.snapshot()

    def rendezvous_address(self) -> str:
        """tcp://ip:port on this actor's node with a port free right now (rank 0 only)."""
        from hsp.engine.rank import free_rendezvous

        return free_rendezvous(ray.util.get_node_ip_address())

    def setup(self, rank: int, world_size: int, rendezvous: str, spec) -> int:
        self.rank.setup(rank, world_size, rendezvous, spec)
        return os.getpid()

    def step(self, *args) -> RankResult:
        start = time.perf_counter()
        value = self.rank.program.step(*args)
        return RankResult(value, time.perf_counter() - start)

    def evaluate(self) -> dict:
        return self.rank.program.evaluate()

    def save_checkpoint(self, folder: str) -> str:
        return self.rank.save_checkpoint(folder)

    def load_checkpoint(self, folder: str, step: int, rng: str | None) -> None:
        self.rank.load_checkpoint(folder, step, rng)

    def shutdown(self) -> None:
        self.rank.shutdown()
