"""Model FLOPs of a training step and a rank's measured peak FLOP/s (tokens/s and MFU).

Training FLOPs of a batch (forward + backward, backward = 2x forward), summed over its
sequences of length s, for the Decoder (hsp.model.decoder: GQA attention, SwiGLU MLP):

    6 * P_matmul * s  +  6 * L * (H * hd) * s^2     (causal; 12 * L * H * hd * s^2 bidirectional)

    P_matmul = L * (h * (H + 2 * H_kv) * hd      the fused Q, K, V projection (K and V: H_kv heads)
                    + H * hd * h                 the output projection
                    + 3 * h * I)                 SwiGLU: gate and up (h -> I), down (I -> h)
               + V * h                           the output projection to the vocabulary

- h = hidden_size, H = num_heads, H_kv = num_kv_heads, hd = head_dim (H * hd = h),
  I = intermediate_size, L = num_layers, V = vocab_size. Each weight matrix costs 2 FLOPs
  per element per token forward, 4 backward. The output projection is the embedding
  matrix when tied (a matmul all the same); embedding lookups, norms and the Qwen2 Q/K/V
  biases are no matmuls and are left out. Grouped-query attention shrinks only the K/V
  projection: every query head still scores against all keys.
- The attention term: per layer QK^T and PV are two s x s x (H * hd) products, 2 * 2 * s^2
  * H * hd forward FLOPs, halved by the causal mask, times 3 for forward + backward. This is
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

from hsp.model.config import ModelConfig

PEAK_MATMUL_SIZE = 512
"""n of the n x n x n matmul whose best time defines the peak (2 n^3 FLOPs)."""


def matmul_params(config: ModelConfig) -> int:
    """P_matmul of the module docstring: the weights of every matrix multiplication."""
    h, hd, heads, kv = config.hidden_size, config.head_dim, config.num_heads, config.num_kv_heads
    block = h * (heads + 2 * kv) * hd + heads * hd * h + 3 * h * config.intermediate_size
    return config.num_layers * block + config.vocab_size * h


def step_flops(lengths: Sequence[int], config: ModelConfig) -> float:
    """Training FLOPs (forward + backward) of one step over sequences of `lengths`."""
    attention = (12.0 if config.bidirectional else 6.0) * config.num_layers * config.num_heads * config.head_dim
    weights = 6.0 * matmul_params(config)
    return float(sum(weights * s + attention * s * s for s in lengths))


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
