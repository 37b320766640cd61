"""A small GPT-style decoder that runs on packed variable-length streams.

API (the contract other parts of hsp build on):

    cfg = GPTConfig(vocab_size=260, num_layers=2, hidden_size=64, num_heads=4)
    model = GPT(cfg)                      # deterministic init from cfg.init_seed
    logits = model(tokens, position_ids, cu_seqlens, attention=None)

- ``tokens``: LongTensor (T,) -- S sequences packed back to back, no batch dim.
- ``position_ids``: LongTensor (T,) -- restart at 0 at every sequence.
- ``cu_seqlens``: IntTensor (S+1,) -- sequence boundaries, cu_seqlens[0] == 0.
- ``attention``: an `AttentionOp` or None. None means plain local attention over the
  T tokens given (cu_seqlens[-1] == T). A sharded op (Ulysses, `hsp.parallel`) gets
  the rank's 1/d shard of tokens while ``cu_seqlens`` describes the group's whole
  (padded) stream, so cu_seqlens[-1] == d * T there.
- returns logits (T, vocab_size).

Attention never crosses a sequence boundary: causal inside a sequence, or
bidirectional when ``config.bidirectional`` (the diffusion LM of the RL part).
Pre-norm blocks, learned position embeddings, tied input/output embeddings.

Superseded by `hsp.model.decoder.Decoder` (Llama-style, RoPE); kept until the engine,
profiler and RL switch to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hsp.model.varlen import AttentionOp, local_attention, pack_positions, varlen_attention

__all__ = ["GPT", "GPTConfig", "AttentionOp", "local_attention", "pack_positions", "varlen_attention"]


@dataclass(kw_only=True)
class GPTConfig:
    vocab_size: int = 260
    """Vocabulary size; 260 = bytes + PAD/BOS/EOS/MASK (hsp.data.tokenizer)."""
    num_layers: int = 2
    """Number of transformer blocks."""
    hidden_size: int = 64
    """Model width; must be divisible by num_heads."""
    num_heads: int = 4
    """Attention heads; a Ulysses group of degree d needs d | num_heads."""
    mlp_ratio: int = 4
    """MLP hidden width = mlp_ratio * hidden_size."""
    max_seq_len: int = 1024
    """Longest sequence in tokens (size of the learned position table; longer documents are cut)."""
    bidirectional: bool = False
    """Attend to the whole sequence instead of causally (masked-diffusion LM)."""
    dropout: float = 0.0
    """Dropout probability; 0 keeps the forward deterministic (exactness tests rely on it)."""
    init_seed: int = 0
    """Seed of the parameter initialisation: same seed, same weights on every rank."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_layers", "hidden_size", "num_heads", "mlp_ratio", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                f"pick hidden_size a multiple of {self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.proj = nn.Linear(h, h)
        self.ln2 = nn.LayerNorm(h)
        self.fc = nn.Linear(h, cfg.mlp_ratio * h)
        self.out = nn.Linear(cfg.mlp_ratio * h, h)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor, attention: AttentionOp) -> torch.Tensor:
        t = x.shape[0]
        q, k, v = self.qkv(self.ln1(x)).split(self.cfg.hidden_size, dim=-1)
        # (T, h) -> (T, H, hd)
        q, k, v = (y.view(t, self.cfg.num_heads, self.cfg.head_dim) for y in (q, k, v))
        a = attention(q, k, v, cu_seqlens, not self.cfg.bidirectional)
        x = x + self.drop(self.proj(a.reshape(t, self.cfg.hidden_size)))  # (T, H, hd) -> (T, h)
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_seq_len, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size)
        self._init_weights(config.init_seed)

    def _init_weights(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        # GPT-2 style: N(0, 0.02), residual projections scaled by 1/sqrt(2L)
        resid_std = 0.02 / math.sqrt(2 * self.config.num_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif "ln" in name:
                    p.fill_(1.0)
                else:
                    std = resid_std if name.endswith(("proj.weight", "out.weight")) else 0.02
                    p.copy_(torch.randn(p.shape, generator=gen) * std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        attention: AttentionOp | None = None,
    ) -> torch.Tensor:
        if tokens.shape != position_ids.shape or tokens.dim() != 1:
            raise ValueError(f"tokens {tuple(tokens.shape)} and position_ids {tuple(position_ids.shape)} must be equal 1-D shapes")
        attention = attention or local_attention
        x = self.wte(tokens) + self.wpe(position_ids)  # (T, h)
        for block in self.blocks:
            x = block(x, cu_seqlens, attention)
        return F.linear(self.ln_f(x), self.wte.weight)  # (T, vocab), tied embeddings

