"""Shared helpers of the RL (BGPO) tests: a tiny float64 diffusion LM and rollouts for it."""

import torch

from hsp.model.config import ModelConfig
from hsp.rl.diffusion import DiffusionLM
from hsp.rl.update import Rollouts

VOCAB, MASK_ID = 7, 6


def tiny_model(seed: int = 0, vocab: int = VOCAB, mask_id: int = MASK_ID) -> DiffusionLM:
    cfg = ModelConfig(vocab_size=vocab, num_layers=1, hidden_size=16, num_heads=2, num_kv_heads=1, intermediate_size=40,
                      max_seq_len=16, init_seed=seed)
    model = DiffusionLM(cfg, mask_id=mask_id).double()
    # Default init gives near-uniform predictions; scale up so the terms vary visibly.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    return model


def make_rollouts(num_prompts: int = 2, group: int = 3, prompt_len: int = 3, response_len: int = 4, seed: int = 0) -> Rollouts:
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, MASK_ID, (num_prompts, prompt_len), generator=g).repeat_interleave(group, 0)
    responses = torch.randint(0, MASK_ID, (num_prompts * group, response_len), generator=g)
    adv = torch.randn(num_prompts * group, generator=g, dtype=torch.float64)
    return Rollouts(prompts, responses, adv)
