"""The data-parallel gradient all-reduce shared by the engine and data-parallel `hsp rl`.

Every rank is a data-parallel replica: after its local backward passes, gradients (and
a few scalars the driver reports, e.g. the loss) are summed over all ranks in one flat
collective, so a step costs a single all-reduce.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist


def all_reduce_grads(
    params: Iterable[torch.nn.Parameter],
    scalars: list[float],
    buffer_dtype: torch.dtype | None = None,
) -> list[float]:
    """Sum .grad of every parameter and `scalars` over all ranks, in place; returns the
    summed scalars. A parameter without a gradient contributes zeros (and gets the sum).

    `buffer_dtype` defaults to the gradients' dtype, or float32 for half-precision
    gradients (a bf16 sum loses digits); float64 keeps reported scalar sums exact.
    """
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    dtype = buffer_dtype or grads[0].dtype
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    device = grads[0].device
    extra = torch.tensor(scalars, dtype=dtype, device=device)
    flat = torch.cat([g.reshape(-1).to(dtype) for g in grads] + [extra])  # (P + S,)
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        if p.grad is None:
            p.grad = g
        p.grad.copy_(flat[offset : offset + n].view_as(g))  # copy_ casts back to the grad's dtype
        offset += n
    return [float(v) for v in flat[offset:]]
