"""Data-parallel `hsp rl` on Ray: one actor per rank around the plain `hsp.rl.distributed`
worker, placed and joined by the same WorkerGroup (placement group, tcp rendezvous,
bounded waits) as `hsp train`. No RL logic lives here.
"""

from __future__ import annotations

import os

import ray

from cluster.actors import free_rendezvous_address
from cluster.launch import RaySession, WorkerGroup, connect

SETUP_TIMEOUT_S = 300.0
"""Placing the actors, importing torch and joining the gloo group."""
STEP_TIMEOUT_S = 3600.0
"""One RL step or evaluation on every rank; a rank that takes longer fails the run."""


@ray.remote(max_restarts=0, max_task_retries=0)
class RLWorkerActor:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.worker = None

    def rendezvous_address(self) -> str:
        return free_rendezvous_address()

    def setup(self, rank: int, world_size: int, rendezvous: str, state: dict) -> int:
        """Join the group and load the driver's SFT weights `state`."""
        from hsp.rl.distributed import start_worker

        self.worker = start_worker(rank, world_size, rendezvous, self.cfg, state, timeout_s=STEP_TIMEOUT_S)
        return os.getpid()

    def step(self, step: int) -> dict:
        return self.worker.step(step)

    def evaluate(self) -> dict:
        return self.worker.evaluate()

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.shutdown()


class RayPolicy:
    """hsp.rl.trainer's Policy on Ray ranks: every call runs on all ranks; the reduced
    results are the same on each, rank 0's is returned."""

    def __init__(self, cfg, state: dict, *, cpus_per_worker: float, session: RaySession | None = None):
        self.session = session
        self.group = WorkerGroup(num_workers=cfg.num_workers, worker_config=state, data_spec=cfg,
                                 cpus_per_worker=cpus_per_worker, gpus_per_worker=0, setup_timeout_s=SETUP_TIMEOUT_S,
                                 actor_class=RLWorkerActor)

    def step(self, step: int) -> dict:
        return self._all("step", step)[0]

    def evaluate(self) -> dict:
        return self._all("evaluate")[0]

    def close(self) -> None:
        try:
            self.group.shutdown(graceful=True)
        finally:
            if self.session is not None:
                self.session.close()

    def _all(self, method: str, *args) -> list:
        return self.group.gather([getattr(a, method).remote(*args) for a in self.group.actors], STEP_TIMEOUT_S)


def parallel_factory(address: str, cpus_per_worker: float):
    """make_parallel for hsp.rl.trainer.train: joins `address` (or starts an embedded
    local Ray) when the RL steps begin, and disconnects when they end."""

    def make(cfg, state: dict) -> RayPolicy:
        session = connect(address, cfg.num_workers, cpus_per_worker)
        try:
            return RayPolicy(cfg, state, cpus_per_worker=cpus_per_worker, session=session)
        except BaseException:
            session.close()
            raise

    return make
