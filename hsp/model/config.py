"""The configuration of hsp's one decoder family (Llama-style; see `hsp.model.decoder`).

One flat dataclass of plain values: it is the `model` section of the run configuration,
it round-trips through Hugging Face `config.json` (`hsp.model.hf`), and every process
rebuilds the same model from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

_POSITIVE_INTS = ("vocab_size", "num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "max_seq_len")
_POSITIVE_FLOATS = ("rope_theta", "rms_norm_eps", "init_std")


@dataclass(kw_only=True)
class ModelConfig:
    vocab_size: int = 260
    """Rows of the embedding table; 260 = bytes + PAD/BOS/EOS/MASK (the byte tokenizer,
    hsp.data.tokenizer). Must be >= the tokenizer's vocabulary."""
    num_layers: int = 2
    """Transformer blocks."""
    hidden_size: int = 64
    """Model width; num_heads * head_dim, where head_dim = hidden_size / num_heads."""
    num_heads: int = 4
    """Query heads. A Ulysses group of degree d needs d | num_heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention): num_kv_heads | num_heads; equal to
    num_heads is plain multi-head attention. A Ulysses group of degree d needs
    d | num_kv_heads or num_kv_heads | d (then K/V heads are replicated)."""
    intermediate_size: int = 176
    """Width of the SwiGLU MLP (gate and up projections); Llama uses about 8/3 * hidden_size."""
    rope_theta: float = 10000.0
    """RoPE base: rotation frequencies are rope_theta ** (-2i / head_dim)."""
    rms_norm_eps: float = 1e-6
    """Epsilon inside RMSNorm's square root."""
    tie_word_embeddings: bool = True
    """Use the embedding matrix as the output projection (no separate lm_head)."""
    attention_bias: bool = False
    """Bias on the q/k/v projections (Qwen2); the output projection never has one."""
    bidirectional: bool = False
    """Attend to the whole sequence instead of causally (the masked-diffusion LM of `hsp rl`)."""
    max_seq_len: int = 1024
    """Longest sequence the data and the planner may produce, in tokens (longer documents
    are cut). RoPE has no position table, so this is a limit of the run, not a size of the
    model."""
    init_seed: int = 0
    """Seed of the parameter initialisation: same seed, same weights on every rank."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of embeddings and projections
    (output projections of each block are scaled by 1/sqrt(2 * num_layers))."""

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        for name in _POSITIVE_FLOATS:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"model.{name} must be a finite number > 0, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}; "
                f"pick hidden_size a multiple of {self.num_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = hidden_size / num_heads = {self.hidden_size}/{self.num_heads} = {self.head_dim} is odd; "
                f"RoPE rotates pairs of dimensions, so pick hidden_size a multiple of {2 * self.num_heads}"
            )
        if self.num_kv_heads > self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_kv_heads={self.num_kv_heads} must divide model.num_heads={self.num_heads} "
                f"(each K/V head serves num_heads / num_kv_heads query heads); "
                f"use a divisor of {self.num_heads}, e.g. num_kv_heads={self.num_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """The inverse of `to_dict`; an unknown key is an error naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)
