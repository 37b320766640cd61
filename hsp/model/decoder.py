"""hsp's decoder: a Llama-style transformer over packed variable-length streams.

    cfg = ModelConfig(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2)
    model = Decoder(cfg)                   # deterministic init from cfg.init_seed
    logits = model(tokens, position_ids, cu_seqlens, attention=None)

- ``tokens``: LongTensor (T,) -- S sequences packed back to back, no batch dim.
- ``position_ids``: LongTensor (T,) -- restart at 0 at every sequence (RoPE angles).
- ``cu_seqlens``: IntTensor (S+1,) -- sequence boundaries, cu_seqlens[0] == 0.
- ``attention``: an `AttentionOp` (hsp.model.varlen) or None. None is local attention
  over the T tokens given (cu_seqlens[-1] == T). A sharded op (Ulysses,
  `hsp.parallel.ulysses`) gets the rank's 1/d shard of tokens while ``cu_seqlens``
  describes the group's whole padded stream, so cu_seqlens[-1] == d * T there.
- returns logits (T, vocab_size).

Embedding -> num_layers x [RMSNorm, GQA attention with RoPE, residual, RMSNorm, SwiGLU,
residual] -> RMSNorm -> output projection (the embedding matrix when tied). Causal
inside each sequence, or bidirectional (``config.bidirectional``: the LLaDA-style
diffusion LM is this model without the causal mask). Hugging Face Llama/Qwen2
checkpoints load through `hsp.model.hf`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hsp.model.config import ModelConfig
from hsp.model.layers import Block, RMSNorm, RotaryEmbedding
from hsp.model.varlen import AttentionOp, local_attention

_RESIDUAL_OUTPUTS = ("attn.o.weight", "mlp.down.weight")
"""Projections that write into the residual stream: initialised with std / sqrt(2L)
(GPT-2's scaling), so the stream's variance does not grow with depth."""


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta)
        if not self.embed.weight.is_meta:  # on the meta device (loading a checkpoint) there is nothing to fill
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fill every parameter from `config.init_seed` alone (the same weights on every rank)."""
        gen = torch.Generator().manual_seed(self.config.init_seed)
        std = self.config.init_std
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    scale = std / math.sqrt(2 * self.config.num_layers) if name.endswith(_RESIDUAL_OUTPUTS) else std
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale)

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
        x = self.embed(tokens)  # (T, h)
        rope = self.rope.tables(position_ids, x.dtype)  # shared by all blocks: 2 x (T, hd/2)
        for block in self.blocks:
            x = block(x, rope, cu_seqlens, attention)
        x = self.norm(x)
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, weight)  # (T, vocab)
