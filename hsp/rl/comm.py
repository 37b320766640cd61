"""Collectives of data-parallel `hsp rl` (torch.distributed, gloo on CPU).

Joining the group and small scalar reductions; the per-update gradient all-reduce (one
flat collective with the loss and reward sums) is `hsp.parallel.grads.all_reduce_grads`,
shared with the engine.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist


def join_group(rank: int, world_size: int, rendezvous: str, timeout_s: float) -> None:
    """Join the gloo process group at `rendezvous` (tcp://host:port, the same mechanism as
    `hsp train`); collectives that wait longer than timeout_s fail instead of hanging."""
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few float64 scalars over all ranks."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(value: int) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)
