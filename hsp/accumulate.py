"""Memory-bounded gradient accumulation, shared by SFT steps (engine) and BGPO (RL).

API:

    chunks = split_into_chunks(unit_bytes, budget_bytes)        # [[0, 1], [2], [3, 4]]
    loss = accumulate_backward(units, unit_bytes, budget_bytes, loss_fn)

- ``unit_bytes[i]``: estimated activation bytes of work unit i (held until its backward).
- `split_into_chunks` keeps the units' order and greedily fills each chunk up to the
  budget, so every chunk's total is <= budget_bytes; the result depends only on the
  inputs (ranks that share a plan derive identical chunks). A unit that alone exceeds
  the budget is a ValueError naming the unit, its bytes, the budget and the fix.
- `accumulate_backward` calls ``loss_fn(list_of_units)`` per chunk and backwards it at
  once, so only one chunk's activations are alive at a time. ``loss_fn`` must already be
  weighted so that the chunk losses *sum* to the full-batch loss (e.g. token-sum divided
  by the global token count, not a per-chunk mean); then the accumulated gradient equals
  the full-batch gradient whatever the budget. Returns the summed loss value.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import torch

U = TypeVar("U")


def split_into_chunks(unit_bytes: Sequence[int], budget_bytes: int) -> list[list[int]]:
    """Unit indices per chunk, order kept, each chunk's byte total <= budget_bytes."""
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes must be > 0, got {budget_bytes}")
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, nbytes in enumerate(unit_bytes):
        if nbytes < 0:
            raise ValueError(f"unit {i} has negative size {nbytes} bytes")
        if nbytes > budget_bytes:
            raise ValueError(
                f"unit {i} needs {nbytes} bytes of activations but the budget is {budget_bytes} bytes; "
                f"raise the activation budget to at least {nbytes} bytes, or split the unit "
                f"(shorter sequences, fewer tokens per sample, or a larger sequence-parallel degree)"
            )
        if current and used + nbytes > budget_bytes:
            chunks.append(current)
            current, used = [], 0
        current.append(i)
        used += nbytes
    if current:
        chunks.append(current)
    return chunks


def accumulate_backward(
    units: Sequence[U],
    unit_bytes: Sequence[int],
    budget_bytes: int,
    loss_fn: Callable[[list[U]], torch.Tensor],
) -> float:
    """Backward chunk by chunk within the budget; returns the summed loss value."""
    if len(units) != len(unit_bytes):
        raise ValueError(f"{len(units)} units but {len(unit_bytes)} byte estimates")
    total = 0.0
    for chunk in split_into_chunks(unit_bytes, budget_bytes):
        loss = loss_fn([units[i] for i in chunk])
        if loss.requires_grad:
            loss.backward()
        total += float(loss.detach())
    return total
