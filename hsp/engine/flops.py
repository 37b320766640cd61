"""Model FLOPs of a training step and a rank's measured peak FLOP/s (tokens/s and MFU).

Training FLOPs of a batch (forward + backward, backward = 2x forward), summed over its
sequences of length s:

    6 * P_matmul * s  +  6 * L * h * s^2     (causal; 12 * L * h * s^2 bidirectional)

- P_matmul: weights of the matrix multiplications, i.e. every 2-D parameter of the
  blocks plus the output projection (vocab x h: the tied embedding or an lm_head).
  Embedding lookups, norms and biases are no matmuls and are left out.
- The attention term: per layer QK^T and PV are two s x s x h products, 2 * 2 * s^2 * h
  forward FLOPs, halved by the causal mask, times 3 for forward + backward. This is
  6N + 12 L H Q T of Kaplan et al. 2020 / PaLM (Chowdhery et al. 2022, appendix B) with
  the causal half made explicit.

Model FLOPs, not hardware FLOPs: padding, empty passes and recomputation (activation
checkpointing) are not counted, so MFU measures useful work.

The peak is measured, not a datasheet figure: the best of a few dense n x n matmuls in
the compute dtype on this rank's threads. On a CPU that is the honest ceiling of the
matmuls the model runs; MFU = step FLOPs / (step seconds x sum of the ranks' peaks).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Sequence

import torch
from torch import nn

from hsp.engine.state import blocks_of

PEAK_MATMUL_SIZE = 512
"""n of the n x n x n matmul whose best time defines the peak (2 n^3 FLOPs)."""


def matmul_params(model: nn.Module, vocab_size: int, hidden_size: int) -> int:
    """P_matmul: 2-D weights of all blocks plus the vocab x hidden output projection."""
    blocks = sum(p.numel() for block in blocks_of(model) for p in block.parameters() if p.ndim == 2)
    return int(blocks + vocab_size * hidden_size)


def step_flops(lengths: Sequence[int], *, matmul_params: int, num_layers: int, hidden_size: int, causal: bool) -> float:
    """Training FLOPs (forward + backward) of one step over sequences of `lengths`."""
    attention = (6.0 if causal else 12.0) * num_layers * hidden_size
    return float(sum(6.0 * matmul_params * s + attention * s * s for s in lengths))


@lru_cache(maxsize=8)
def peak_flops_per_s(device: torch.device, dtype: torch.dtype, num_threads: int, n: int = PEAK_MATMUL_SIZE) -> float:
    """Best observed FLOP/s of an n x n @ n x n matmul (cached per process, device, dtype, threads)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(4):  # the first call warms up allocator and kernels
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best
