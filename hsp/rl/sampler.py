"""LLaDA sampling: low-confidence remasking, block by block (semi-autoregressive).

The response starts fully masked. It is split into blocks of `block_length` filled left
to right; each block gets steps / num_blocks denoising steps. At each step the model
predicts every masked position; the k most confident predictions inside the current
block are committed (k spreads the block's masks evenly over its steps), the rest stay
masked. Temperature > 0 samples the predicted token (Gumbel-max); confidence is the
model's probability of the chosen token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hsp.rl.diffusion import DiffusionLM


@dataclass(kw_only=True)
class SamplerConfig:
    gen_length: int
    """Response tokens to generate."""
    block_length: int
    """Tokens per block; gen_length must be a multiple of it."""
    steps: int
    """Total denoising steps (model calls); a multiple of the number of blocks."""
    temperature: float = 1.0
    """0 = greedy (argmax), > 0 samples from softmax(logits / temperature)."""

    def __post_init__(self) -> None:
        if self.gen_length <= 0 or self.block_length <= 0 or self.steps <= 0:
            raise ValueError(f"gen_length, block_length and steps must be > 0, got {self.gen_length}, {self.block_length}, {self.steps}")
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} is not a multiple of block_length={self.block_length}; pick a divisor")
        num_blocks = self.gen_length // self.block_length
        if self.steps % num_blocks:
            raise ValueError(f"steps={self.steps} is not a multiple of the {num_blocks} blocks; use a multiple of {num_blocks}")
        if self.steps // num_blocks > self.block_length:
            raise ValueError(f"{self.steps // num_blocks} steps per block > block_length={self.block_length}: some steps would commit nothing; lower steps")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


def tokens_per_step(num_masked: int, steps: int) -> list[int]:
    """Spread num_masked commits over steps as evenly as possible (earlier steps get the extra)."""
    base, extra = divmod(num_masked, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


@torch.no_grad()
def generate(model: DiffusionLM, prompts: torch.Tensor, cfg: SamplerConfig, generator: torch.Generator) -> torch.Tensor:
    """Responses (B, gen_length) for prompts (B, Lp); never contains the mask token."""
    was_training = model.training
    model.eval()
    b, lp = prompts.shape
    x = torch.cat([prompts, torch.full((b, cfg.gen_length), model.mask_id, dtype=prompts.dtype)], dim=1)
    num_blocks = cfg.gen_length // cfg.block_length
    steps_per_block = cfg.steps // num_blocks
    for blk in range(num_blocks):
        lo, hi = lp + blk * cfg.block_length, lp + (blk + 1) * cfg.block_length
        for k in tokens_per_step(cfg.block_length, steps_per_block):
            logits = model(x).double()  # (B, T, V)
            if cfg.temperature > 0:
                u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp_min(1e-20)
                pred = (logits / cfg.temperature - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max
            else:
                pred = logits.argmax(-1)
            conf = torch.softmax(logits, -1).gather(-1, pred[..., None]).squeeze(-1)  # (B, T)
            eligible = x == model.mask_id
            eligible[:, :lo] = False
            eligible[:, hi:] = False
            conf = torch.where(eligible, conf, torch.full_like(conf, -1.0))
            chosen = conf.topk(k, dim=1).indices  # (B, k): all eligible since every row has >= k masks
            x.scatter_(1, chosen, pred.gather(1, chosen))
    model.train(was_training)
    return x[:, lp:]
