"""The Ray actor hosting one rank, for `hsp train` and `hsp rl` alike: a thin shell
around the plain `hsp.engine.rank.Rank`.

No training logic lives here. `setup` joins the rank into the world and starts the
program its spec names (SupervisedSpec: SFT steps, RLRankSpec: RL steps); the other
methods forward to the rank and its program.
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


@ray.remote(max_restarts=0, max_task_retries=0)
class RankActor:
    def __init__(self) -> None:
        from hsp.engine.rank import Rank

        self.rank = Rank()

    def pid(self) -> int:
        return os.getpid()

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
