"""Shared pieces of the model tests: tiny random Hugging Face checkpoints built on the fly,
transformers' reference logits, and transformers' float32 rounding applied to hsp.

Why the rounding: transformers' Llama/Qwen2 compute RMSNorm and the RoPE angles in
float32 even in a float64 model (LlamaRMSNorm casts to float32; LlamaRotaryEmbedding
computes `position_ids.float() * inv_freq` in float32). hsp keeps float64 there, so
plain float64 logits agree only to ~1e-7. `match_transformers_rounding` swaps in
modules that round exactly where transformers does; then the two differ only by
float64 summation order (~1e-15), and a test at 1e-12 checks every weight, name and
mask, while the plain comparison bounds what the rounding alone changes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hsp.model import Decoder
from hsp.model.layers import RMSNorm, RotaryEmbedding
from tests.hf_fixtures import build_hf  # noqa: F401 (the model tests' checkpoints)

TIGHT = dict(rtol=1e-12, atol=1e-12)
"""hsp (with transformers' rounding) vs transformers, float64: observed ~1e-15."""
PLAIN_ATOL = 1e-5
"""hsp as is vs transformers, float64, logits of size ~1-3: observed ~3e-7 (float32 rounding)."""

FAMILIES = ("llama", "qwen2", "mistral")


class _Float32RMSNorm(RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(torch.float32)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


class _Float32Rotary(RotaryEmbedding):
    def tables(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim))
        angles = position_ids.float()[:, None] * inv_freq[None, :]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def match_transformers_rounding(model: Decoder) -> Decoder:
    for module in model.modules():
        if type(module) is RMSNorm:
            module.__class__ = _Float32RMSNorm
    model.rope.__class__ = _Float32Rotary
    return model


def random_seqs(seed: int, lengths: list[int], vocab: int = 61) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen) for n in lengths]


def transformers_logits(path: Path, seqs: list[torch.Tensor], *, bidirectional: bool = False) -> torch.Tensor:
    """(T, V) float64 logits of each sequence run alone by transformers, concatenated.
    Bidirectional: an all-true 4-D attention mask replaces the causal one."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").double().eval()
    out = []
    with torch.no_grad():
        for s in seqs:
            mask = torch.ones(1, 1, len(s), len(s), dtype=torch.bool) if bidirectional else None
            out.append(model(s[None], attention_mask=mask).logits[0])
    return torch.cat(out)
