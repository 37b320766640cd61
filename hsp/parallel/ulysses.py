"""Ulysses sequence-parallel attention over a packed variable-length stream.

Each of the d ranks of a group holds a contiguous 1/d of the group's packed (and
padded) stream with all heads. q, k, v go through one fused all-to-all to the whole
stream with H/d heads, attention runs per sequence (never across a boundary; the
padding forms its own segment, so it never touches a real token), and the output
goes back through the inverse all-to-all. Degree 1 is plain local attention.
"""

from __future__ import annotations

import torch

from hsp.model.gpt import varlen_attention
from hsp.parallel.comm import CommTimer, heads_to_tokens, tokens_to_heads


class UlyssesAttention:
    """An `AttentionOp` for one degree-`degree` group; `cu_seqlens` describes the whole padded stream."""

    def __init__(self, group, degree: int, timer: CommTimer | None = None):
        if degree < 1:
            raise ValueError(f"degree must be >= 1, got {degree}")
        self.group, self.degree, self.timer = group, degree, timer

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.degree == 1:
            return varlen_attention(q, k, v, cu_seqlens, causal)
        t_local, heads, hd = q.shape
        d = self.degree
        if heads % d:
            raise ValueError(
                f"Ulysses degree {d} does not divide the head count {heads}: each rank needs H/d whole heads; "
                f"use a degree that divides {heads} or a model with a multiple of {d} heads"
            )
        if int(cu_seqlens[-1]) != d * t_local:
            raise ValueError(
                f"cu_seqlens ends at {int(cu_seqlens[-1])} but {d} ranks x {t_local} tokens = {d * t_local}; "
                f"pad the stream to a multiple of {d} and shard it evenly"
            )
        # fuse q, k, v into one all-to-all: (T/d, 3, H, hd) -> (T/d, d, 3, H/d, hd) -> (T/d, 3H, hd)
        # so that rank j's 3H/d "heads" are [q_j, k_j, v_j]
        qkv = torch.stack((q, k, v), dim=1).view(t_local, 3, d, heads // d, hd).transpose(1, 2)
        qkv = qkv.reshape(t_local, 3 * heads, hd)
        full = heads_to_tokens(qkv, self.group, d, self.timer)  # (T, 3H/d, hd)
        fq, fk, fv = full.view(d * t_local, 3, heads // d, hd).unbind(dim=1)  # each (T, H/d, hd)
        out = varlen_attention(fq, fk, fv, cu_seqlens, causal)  # (T, H/d, hd)
        return tokens_to_heads(out, self.group, d, self.timer)  # (T/d, H, hd)
