"""A LLaDA-style masked-diffusion LM: hsp's decoder, bidirectional, with a MASK token.

The model sees a batch of equal-length sequences [prompt | response]; some response
tokens are replaced by `mask_id` and the model predicts them. It never predicts the
mask token itself (its logit is -inf), so sampling and likelihoods live on real tokens.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from hsp.engine.rank import build_model
from hsp.model.config import ModelConfig
from hsp.model.varlen import pack_positions
from hsp.rl.elbo import apply_masks


def equal_length_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, causal: bool) -> torch.Tensor:
    """`hsp.model.varlen.AttentionOp` for a stream of equal-length sequences: one batched
    SDPA call instead of one per sequence (same result, rollouts have thousands).
    q (T, H, hd), k, v (T, H_kv, hd) with H_kv | H (grouped-query) -> (T, H, hd)."""
    num_seqs = cu_seqlens.numel() - 1
    t, hd = q.shape[0], q.shape[2]
    if t % num_seqs or not torch.equal(cu_seqlens, torch.arange(num_seqs + 1, dtype=cu_seqlens.dtype) * (t // num_seqs)):
        raise ValueError(f"equal_length_attention needs {num_seqs} sequences of equal length, got cu_seqlens={cu_seqlens.tolist()}")
    # (T, heads, hd) -> (S, heads, s, hd)
    qs, ks, vs = (x.view(num_seqs, t // num_seqs, x.shape[1], hd).transpose(1, 2) for x in (q, k, v))
    out = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])
    return out.transpose(1, 2).reshape(t, q.shape[1], hd)  # (S, H, s, hd) -> (T, H, hd)


class DiffusionLM(nn.Module):
    """The bidirectional decoder over (B, T) batches of equal-length sequences."""

    def __init__(self, config: ModelConfig, mask_id: int):
        super().__init__()
        if not 0 <= mask_id < config.vocab_size:
            raise ValueError(f"mask_id={mask_id} is outside the vocabulary of size {config.vocab_size}")
        if not config.bidirectional:
            config = dataclasses.replace(config, bidirectional=True)
        self.config = config
        self.mask_id = mask_id
        self.decoder = build_model(config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, V), mask-token logit = -inf."""
        b, t = tokens.shape
        if t > self.config.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len={self.config.max_seq_len}; raise model.max_seq_len")
        pos, cu = pack_positions([t] * b)
        logits = self.decoder(tokens.reshape(-1), pos, cu, attention=equal_length_attention).view(b, t, -1)  # (B*T, V) -> (B, T, V)
        return logits.index_fill(-1, torch.tensor([self.mask_id]), float("-inf"))

    def response_logits(self, prompts: torch.Tensor, responses: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Logits (K, L, V) at the response positions with `masks` applied to the responses."""
        tokens = apply_masks(prompts, responses, masks, self.mask_id)
        return self(tokens)[:, prompts.shape[1] :]


def sft_loss(
    model: DiffusionLM,
    prompts: torch.Tensor,
    answers: torch.Tensor,
    generator: torch.Generator,
    min_t: float = 1e-3,
) -> torch.Tensor:
    """LLaDA SFT loss: mask each response token w.p. t ~ U(min_t, 1) (prompt never masked);
    cross-entropy on masked tokens weighted 1/t, summed, / response length, batch mean."""
    n, length = answers.shape
    t = min_t + (1.0 - min_t) * torch.rand(n, generator=generator)
    masks = torch.rand(n, length, generator=generator) < t[:, None]
    logits = model.response_logits(prompts, answers, masks)  # (N, L, V)
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), answers.flatten(), reduction="none").view(n, length)
    return ((nll * masks).sum(dim=1) / t.to(nll.dtype)).mean() / length
