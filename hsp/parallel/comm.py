"""Ulysses all-to-alls as autograd Functions.

A degree-d group holds a packed stream of T tokens (T divisible by d); rank j of the
group holds tokens [j*T/d, (j+1)*T/d) with all H heads. Before attention each rank
needs the whole stream for H/d of the heads; after attention it goes back:

    heads_to_tokens:  (T/d, H, hd)  ->  (T, H/d, hd)     rank j keeps heads [j*H/d, (j+1)*H/d)
    tokens_to_heads:  (T, H/d, hd)  ->  (T/d, H, hd)     the exact inverse

The backward of each is the other one (an all-to-all is a permutation of blocks), so
gradients flow to the ranks that own the activations. Each call adds its wall time to
an optional `CommTimer` so the engine can report all-to-all seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class CommTimer:
    seconds: float = 0.0
    calls: int = 0


def all_to_all_blocks(x: torch.Tensor, group, timer: CommTimer | None) -> torch.Tensor:
    """Block i of dim 0 goes to group rank i; block i of the output came from group rank i."""
    start = time.perf_counter()
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous: the collective writes raw blocks
    dist.all_to_all_single(out, x, group=group)
    if out.is_cuda:
        torch.cuda.synchronize(out.device)  # so the timer measures the transfer, not the launch
    if timer is not None:
        timer.seconds += time.perf_counter() - start
        timer.calls += 1
    return out


def _heads_to_tokens(x: torch.Tensor, group, degree: int, timer: CommTimer | None) -> torch.Tensor:
    t_local, heads, hd = x.shape
    # (T/d, H, hd) -> (T/d, d, H/d, hd) -> (d, T/d, H/d, hd): block j = my tokens, heads of rank j
    blocks = x.view(t_local, degree, heads // degree, hd).transpose(0, 1)
    out = all_to_all_blocks(blocks, group, timer)  # (d, T/d, H/d, hd): block i = rank i's tokens, my heads
    return out.reshape(degree * t_local, heads // degree, hd)  # (T, H/d, hd)


def _tokens_to_heads(y: torch.Tensor, group, degree: int, timer: CommTimer | None) -> torch.Tensor:
    t, heads_local, hd = y.shape
    # (T, H/d, hd) -> (d, T/d, H/d, hd): block i = rank i's tokens, my heads
    blocks = y.reshape(degree, t // degree, heads_local, hd)
    out = all_to_all_blocks(blocks, group, timer)  # (d, T/d, H/d, hd): block j = my tokens, heads of rank j
    return out.transpose(0, 1).reshape(t // degree, degree * heads_local, hd)  # (T/d, H, hd)


class HeadsToTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, degree, timer):
        ctx.group, ctx.degree, ctx.timer = group, degree, timer
        return _heads_to_tokens(x, group, degree, timer)

    @staticmethod
    def backward(ctx, grad):
        return _tokens_to_heads(grad, ctx.group, ctx.degree, ctx.timer), None, None, None


class TokensToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, group, degree, timer):
        ctx.group, ctx.degree, ctx.timer = group, degree, timer
        return _tokens_to_heads(y, group, degree, timer)

    @staticmethod
    def backward(ctx, grad):
        return _heads_to_tokens(grad, ctx.group, ctx.degree, ctx.timer), None, None, None


def heads_to_tokens(x: torch.Tensor, group, degree: int, timer: CommTimer | None = None) -> torch.Tensor:
    """(T/d, H, hd) -> (T, H/d, hd), autograd-aware."""
    return HeadsToTokens.apply(x, group, degree, timer)


def tokens_to_heads(y: torch.Tensor, group, degree: int, timer: CommTimer | None = None) -> torch.Tensor:
    """(T, H/d, hd) -> (T/d, H, hd), autograd-aware."""
    return TokensToHeads.apply(y, group, degree, timer)
