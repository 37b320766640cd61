"""Ulysses sequence-parallel attention over a packed variable-length stream, with GQA.

Each of the d ranks of a group holds a contiguous 1/d of the group's packed (and
padded) stream with all heads: q (T/d, H, hd), k and v (T/d, H_kv, hd). One fused
all-to-all gives every rank the whole stream for a slice of the heads, attention runs
per sequence (never across a boundary; the padding forms its own segment, so it never
touches a real token), and the output goes back through the inverse all-to-all.
Degree 1 is plain local attention.

Head-to-rank mapping. Rank r gets query heads [r*H/d, (r+1)*H/d). With g = H/H_kv
query heads per K/V head, query head i needs K/V head i // g, so rank r needs K/V heads
[r*H_kv/d, (r+1)*H_kv/d) when d | H_kv, or the single K/V head r // (d/H_kv) when
H_kv | d (its H/d query heads all fall inside one group of g, since g = (H/d) * (d/H_kv)).
So K/V heads are first repeated rep = max(1, d/H_kv) times each (head j -> copies
j*rep .. j*rep+rep-1), which makes H_kv*rep a multiple of d, and the repeated heads are
split like the query heads: rank r gets repeated heads [r*H_kv*rep/d, (r+1)*H_kv*rep/d),
exactly the K/V heads its query heads need. Autograd sums the gradients of the copies.
Any other combination (d does not divide H, or neither of d, H_kv divides the other)
is rejected by `check_ulysses_degree`.
"""

from __future__ import annotations

import torch

from hsp.model.varlen import varlen_attention
from hsp.parallel.comm import CommTimer, heads_to_tokens, tokens_to_heads
from solver.spec import usable_degree


def check_ulysses_degree(degree: int, num_heads: int, num_kv_heads: int) -> None:
    """Raise ValueError unless a degree-`degree` Ulysses group can run a model with these heads:
    the planner's rule (`solver.spec.usable_degree`), with a message per way it fails."""
    if degree < 1:
        raise ValueError(f"sequence-parallel degree must be >= 1, got {degree}")
    if usable_degree(degree, num_heads, num_kv_heads):
        return
    if num_heads % degree:
        raise ValueError(
            f"Ulysses degree {degree} does not divide the head count {num_heads}: each rank needs H/d whole heads; "
            f"use a degree that divides {num_heads} or a model with a multiple of {degree} heads"
        )
    raise ValueError(
        f"Ulysses degree {degree} and num_kv_heads={num_kv_heads}: neither divides the other, so the "
        f"key/value heads cannot be split or replicated evenly over {degree} ranks; use a degree that divides "
        f"{num_kv_heads} or is a multiple of it, or a model whose num_kv_heads divides or is a multiple of {degree}"
    )


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
        kv_heads, d = k.shape[1], self.degree
        check_ulysses_degree(d, heads, kv_heads)
        if int(cu_seqlens[-1]) != d * t_local:
            raise ValueError(
                f"cu_seqlens ends at {int(cu_seqlens[-1])} but {d} ranks x {t_local} tokens = {d * t_local}; "
                f"pad the stream to a multiple of {d} and shard it evenly"
            )
        rep = max(1, d // kv_heads)
        if rep > 1:  # (T/d, H_kv, hd) -> (T/d, H_kv*rep, hd), head j -> copies j*rep .. j*rep+rep-1
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        hq, hkv = heads // d, k.shape[1] // d  # heads per rank after the all-to-all
        # fuse q, k, v into one all-to-all: block r of dim 1 holds rank r's [q | k | v] heads
        # q (T/d, d, H/d, hd), k, v (T/d, d, H_kv'/d, hd) -> (T/d, d, H/d + 2 H_kv'/d, hd) -> (T/d, H + 2 H_kv', hd)
        qkv = torch.cat((q.view(t_local, d, hq, hd), k.view(t_local, d, hkv, hd), v.view(t_local, d, hkv, hd)), dim=2)
        qkv = qkv.reshape(t_local, d * (hq + 2 * hkv), hd)
        full = heads_to_tokens(qkv, self.group, d, self.timer)  # (T, H/d + 2 H_kv'/d, hd)
        fq, fk, fv = full.split((hq, hkv, hkv), dim=1)  # (T, H/d, hd), 2 x (T, H_kv'/d, hd)
        out = varlen_attention(fq, fk, fv, cu_seqlens, causal)  # (T, H/d, hd)
        return tokens_to_heads(out, self.group, d, self.timer)  # (T/d, H, hd)
