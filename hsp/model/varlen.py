"""Packed variable-length streams: the input contract of the model and its attention ops.

S sequences are packed back to back into one stream of T tokens with no batch dim;
``cu_seqlens`` (S+1,) int32 holds the boundaries and ``position_ids`` (T,) restart at
0 in every sequence. Attention never crosses a boundary.

An `AttentionOp` takes q (T, H, hd) and k, v (T, H_kv, hd) with H_kv | H (grouped-query
attention: K/V head j serves query heads [j*H/H_kv, (j+1)*H/H_kv)) and returns
(T, H, hd). `local_attention` runs the whole stream on this rank; the Ulysses op
(`hsp.parallel.ulysses`) gets a rank's 1/d shard while cu_seqlens describes the group's
whole padded stream.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class AttentionOp(Protocol):
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, causal: bool) -> torch.Tensor:
        """q: (T_local, H, hd), k, v: (T_local, H_kv, hd) -> (T_local, H, hd)."""
        ...


BUCKET_MAX_LEN = 256
"""Sequences up to this long are batched with others of similar length (padded to a
power of two, padding masked out); longer ones run one SDPA call each."""


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, causal: bool) -> torch.Tensor:
    """Attention inside each [cu[i], cu[i+1]) segment only. q (T, H, hd), k, v (T, H_kv, hd) -> (T, H, hd).

    Tokens are moved with one gather per bucket and one final gather (not one slice per
    sequence, whose backward would allocate a full-stream gradient per sequence)."""
    bounds = cu_seqlens.tolist()
    if bounds[-1] != q.shape[0]:
        raise ValueError(f"cu_seqlens ends at {bounds[-1]} but the stream has {q.shape[0]} tokens")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{k.shape[1]} key/value heads do not divide {q.shape[1]} query heads")
    spans = [(a, b - a) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    buckets: dict[int, list[tuple[int, int]]] = {}
    for start, n in spans:
        key = 1 << (n - 1).bit_length() if n <= BUCKET_MAX_LEN else -start  # long: a bucket of its own
        buckets.setdefault(key, []).append((start, n))
    pieces, order = [], []
    for members in buckets.values():
        pieces.append(_bucket_attention(q, k, v, members, causal))
        order += [torch.arange(start, start + n) for start, n in members]
    out = torch.cat(pieces)  # rows in bucket order
    inverse = torch.empty(q.shape[0], dtype=torch.long)
    inverse[torch.cat(order)] = torch.arange(q.shape[0])
    return out.index_select(0, inverse.to(out.device))  # back to stream order


def _bucket_attention(q, k, v, members: list[tuple[int, int]], causal: bool) -> torch.Tensor:
    """Sequences `members` [(start, length)] as one padded SDPA batch; returns their rows concatenated."""
    gqa = k.shape[1] != q.shape[1]
    if len(members) == 1:  # no padding: the unmasked (flash) path
        start, n = members[0]
        qs, ks, vs = (x.narrow(0, start, n).transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, H or H_kv, s, hd)
        out = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, enable_gqa=gqa)  # (1, H, s, hd)
        return out.squeeze(0).transpose(0, 1)
    width = max(n for _, n in members)
    steps = torch.arange(width)
    starts = torch.tensor([start for start, _ in members])
    lengths = torch.tensor([n for _, n in members])
    valid = steps[None, :] < lengths[:, None]  # (B, M)
    index = torch.where(valid, starts[:, None] + steps[None, :], starts[:, None]).to(q.device)  # pads read a real row
    batch, hd = len(members), q.shape[2]
    # (T, heads, hd) -> (B*M, heads, hd) -> (B, M, heads, hd) -> (B, heads, M, hd)
    qb, kb, vb = (x.index_select(0, index.reshape(-1)).view(batch, width, x.shape[1], hd).transpose(1, 2) for x in (q, k, v))
    mask = valid[:, None, None, :].expand(batch, 1, width, width)  # padded keys never attended
    if causal:
        mask = mask & torch.ones(width, width, dtype=torch.bool).tril()
    o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask.to(q.device), enable_gqa=gqa)  # (B, H, M, hd)
    rows = valid.reshape(-1).nonzero().squeeze(1).to(q.device)
    return o.transpose(1, 2).reshape(batch * width, q.shape[1], hd).index_select(0, rows)  # (sum of lengths, H, hd)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, causal: bool) -> torch.Tensor:
    """Degree-1 attention: the whole stream is on this rank, no communication."""
    return varlen_attention(q, k, v, cu_seqlens, causal)


def pack_positions(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(position_ids (T,), cu_seqlens (S+1,) int32) for sequences of `lengths` packed back to back."""
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0).to(torch.int32)
    pos = torch.cat([torch.arange(n) for n in lengths]) if lengths else torch.zeros(0, dtype=torch.long)
    return pos, cu
