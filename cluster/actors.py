"""The Ray actor hosting one rank: a thin shell around the plain `hsp` Worker.

No training logic lives here; the actor turns batch indices into token tensors (the
worker materialises its own data) and forwards everything else to `Worker`.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import ray


def free_rendezvous_address() -> str:
    """tcp://ip:port on the calling actor's node with a port free right now (rank 0 only)."""
    ip = ray.util.get_node_ip_address()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        port = sock.getsockname()[1]
    return f"tcp://{ip}:{port}"


@dataclass
class RankResult:
    """A rank's StepReport plus where its time went inside the actor."""

    report: object
    materialise_s: float
    """Turning the batch indices into token tensors."""
    in_actor_s: float
    """The whole actor call (materialise + Worker.run_step)."""


@ray.remote(max_restarts=0, max_task_retries=0)
class WorkerActor:
    def __init__(self, data_spec) -> None:
        from hsp.data import open_dataset
        from hsp.engine.worker import Worker

        self.dataset = open_dataset(data_spec)
        self.worker = Worker()

    def pid(self) -> int:
        return os.getpid()

    def rendezvous_address(self) -> str:
        return free_rendezvous_address()

    def setup(self, rank: int, world_size: int, rendezvous: str, config) -> int:
        self.worker.setup(rank, world_size, rendezvous, config)
        return os.getpid()

    def run_step(self, plan, indices) -> RankResult:
        """Materialise this rank's sequences and run the step.

        A rank only reads the sequences of its own groups (the Worker contract), so the
        others are passed as zero placeholders of the right length: on N ranks this
        cuts the data work per rank to roughly its share of the batch."""
        import torch

        start = time.perf_counter()
        rank = self.worker.rank
        mine = {i for mb in plan.micro_batches for g in mb.groups if rank in g.ranks for i in g.seq_ids}
        lengths = self.dataset.lengths
        batch = [
            torch.from_numpy(self.dataset.tokens(int(i))) if k in mine else torch.zeros(int(lengths[i]), dtype=torch.long)
            for k, i in enumerate(indices)
        ]
        materialise_s = time.perf_counter() - start
        report = self.worker.run_step(plan, batch)
        return RankResult(report, materialise_s, time.perf_counter() - start)

    def state_dict(self) -> dict:
        return self.worker.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.worker.load_state_dict(state)

    def shutdown(self) -> None:
        self.worker.shutdown()
