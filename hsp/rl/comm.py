"""Collectives of data-parallel `hsp rl` (torch.distributed, gloo on CPU).

One flat all-reduce per RL update: every parameter's gradient plus a few scalars the
driver reports (loss, reward sum), so a step costs a single collective.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Iterable

import torch
import torch.distributed as dist


def join_group(rank: int, world_size: int, rendezvous: str, timeout_s: float) -> None:
    """Join the gloo process group at `rendezvous` (tcp://host:port, the same mechanism as
    `hsp train`); collectives that wait longer than timeout_s fail instead of hanging."""
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))


def all_reduce_grads(params: Iterable[torch.nn.Parameter], scalars: list[float]) -> list[float]:
    """Sum .grad of every parameter and `scalars` over all ranks, in place; returns the
    summed scalars. A parameter without a gradient contributes zeros."""
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    # float64 buffer: the scalars (reward sums) stay exact, and a float32 gradient summed
    # in float64 and rounded back is at least as accurate as a float32 sum
    flat = torch.cat([g.reshape(-1).double() for g in grads] + [torch.tensor(scalars, dtype=torch.float64)])  # (P + S,)
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        if p.grad is None:
            p.grad = g
        p.grad.copy_(flat[offset : offset + n].view_as(g))  # copy_ casts back to the grad's dtype
        offset += n
    return [float(v) for v in flat[offset:]]


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few float64 scalars over all ranks."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(value: int) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)
