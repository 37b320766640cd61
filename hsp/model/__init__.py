"""GPT decoder over packed variable-length streams (see `hsp.model.gpt`)."""

from hsp.model.gpt import GPT, AttentionOp, GPTConfig, local_attention

__all__ = ["GPT", "GPTConfig", "AttentionOp", "local_attention"]
