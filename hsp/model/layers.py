"""The pieces of a Llama-style block: RMSNorm, rotary embeddings, grouped-query
attention with an optional QKV bias, the SwiGLU MLP.

Shapes: T tokens of a packed stream (no batch dim), h = hidden_size, H query heads,
H_kv key/value heads, hd = head_dim = h / H, f = intermediate_size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hsp.model.config import ModelConfig
from hsp.model.varlen import AttentionOp


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in at least float32 (bf16 sums lose digits); float64 stays float64 so
        # that exactness tests see only summation-order differences
        dtype = torch.promote_types(x.dtype, torch.float32)
        y = x.to(dtype)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE in the "rotate half" layout: dimension i of a head is paired with i + hd/2
    (the layout of Hugging Face Llama/Qwen2 checkpoints, so their q/k weights load
    unpermuted). Angles are position_ids * theta^(-2i/hd), computed in float64 from the
    positions of each forward pass (no table, so no length limit and positions restart
    per sequence), then cast to the compute dtype."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def tables(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (T, hd/2), for the positions (T,)."""
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float64, device=position_ids.device) / self.head_dim
        inv_freq = self.theta ** -exponent  # (hd/2,)
        angles = position_ids.to(torch.float64)[:, None] * inv_freq[None, :]  # (T, hd/2)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (x_i, x_{i+hd/2}) by the angle of pair i. x (T, heads, hd), cos/sin (T, hd/2) -> (T, heads, hd)."""
    x1, x2 = x.chunk(2, dim=-1)  # each (T, heads, hd/2)
    c, s = cos[:, None, :], sin[:, None, :]  # (T, 1, hd/2)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


class Attention(nn.Module):
    """Grouped-query self-attention; q, k, v come from one fused projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, (cfg.num_heads + 2 * cfg.num_kv_heads) * hd, bias=cfg.attention_bias)
        self.o = nn.Linear(cfg.num_heads * hd, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cu_seqlens: torch.Tensor,
                attention: AttentionOp) -> torch.Tensor:
        cfg, t = self.cfg, x.shape[0]
        # (T, h) -> (T, H + 2 H_kv, hd) -> q (T, H, hd), k, v (T, H_kv, hd)
        qkv = self.qkv(x).view(t, cfg.num_heads + 2 * cfg.num_kv_heads, cfg.head_dim)
        q, k, v = qkv.split((cfg.num_heads, cfg.num_kv_heads, cfg.num_kv_heads), dim=1)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        out = attention(q, k, v, cu_seqlens, not cfg.bidirectional)  # (T, H, hd)
        return self.o(out.reshape(t, cfg.num_heads * cfg.head_dim))  # (T, H, hd) -> (T, h)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); gate and up are one fused projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (T, 2f) -> 2 x (T, f)
        return self.down(F.silu(gate) * up)  # (T, h)


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cu_seqlens: torch.Tensor,
                attention: AttentionOp) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, cu_seqlens, attention)
        return x + self.mlp(self.mlp_norm(x))
