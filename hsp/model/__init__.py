"""hsp's model family: a Llama-style decoder over packed variable-length streams.

- `config.ModelConfig`: the one flat config (the `model` section of a run).
- `decoder.Decoder`: the model; `layers`: RMSNorm, RoPE, GQA attention, SwiGLU.
- `varlen`: the packed-stream contract (`AttentionOp`, `local_attention`, `pack_positions`).
- `hf`: Hugging Face Llama/Qwen2 checkpoints in and out.
"""

from hsp.model.config import ModelConfig
from hsp.model.decoder import Decoder
from hsp.model.varlen import AttentionOp, local_attention, pack_positions

__all__ = ["AttentionOp", "Decoder", "ModelConfig", "local_attention", "pack_positions"]
