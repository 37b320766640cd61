"""Pack a group's sequences into one stream and cut this rank's contiguous shard.

Targets are built *before* sharding (next token of the same sequence; a sequence's
last token has none), so a shard boundary inside a sequence loses nothing. The stream
is padded to a multiple of the degree with pad tokens that form their own attention
segment and carry no target: they never attend to, or are attended by, a real token,
and add nothing to the loss or the gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

IGNORE = -100
"""Target id of tokens without a next-token target (cross_entropy's ignore_index)."""


@dataclass
class Shard:
    tokens: torch.Tensor
    """(T/d,) token ids of this rank's slice of the padded stream."""
    position_ids: torch.Tensor
    """(T/d,) positions, restarting at 0 in every sequence."""
    targets: torch.Tensor
    """(T/d,) next-token ids, IGNORE where there is none (last token, padding)."""
    cu_seqlens: torch.Tensor
    """(S+1,) or (S+2,) int32 boundaries of the whole padded stream (padding is the last segment)."""
    num_real_tokens: int
    """Unpadded tokens in this rank's slice."""


def pack_shard(seqs: Sequence[torch.Tensor], degree: int, index: int, pad_id: int = 0) -> Shard:
    """The `index`-th of `degree` contiguous slices of the packed stream of `seqs`."""
    if not 0 <= index < degree:
        raise ValueError(f"shard index {index} outside 0..{degree - 1}")
    lengths = [int(s.numel()) for s in seqs]
    total = sum(lengths)
    padded = -(-max(total, 1) // degree) * degree  # ceil to a multiple of d (an empty group still runs)
    pad = padded - total
    tokens = torch.full((padded,), pad_id, dtype=torch.long)
    positions = torch.zeros(padded, dtype=torch.long)
    targets = torch.full((padded,), IGNORE, dtype=torch.long)
    start = 0
    for seq, n in zip(seqs, lengths):
        tokens[start : start + n] = seq
        positions[start : start + n] = torch.arange(n)
        targets[start : start + n - 1] = seq[1:]
        start += n
    positions[total:] = torch.arange(pad)
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    if pad:
        bounds.append(padded)
    t_local = padded // degree
    lo, hi = index * t_local, (index + 1) * t_local
    return Shard(
        tokens=tokens[lo:hi],
        position_ids=positions[lo:hi],
        targets=targets[lo:hi],
        cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
        num_real_tokens=max(0, min(hi, total) - lo),
    )
