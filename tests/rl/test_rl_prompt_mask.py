"""diffu-GRPO's random prompt masking: a config field that reaches the update."""

import pytest
import torch
from rl_helpers import make_rollouts, tiny_model

from hsp.rl.config import RLConfig
from hsp.rl.step import rl_step
from hsp.rl.update import PolicyUpdate


def _update(prob: float, seed: int = 0) -> PolicyUpdate:
    return PolicyUpdate(tiny_model(), "diffu-grpo", make_rollouts(num_prompts=8, prompt_len=6), num_samples=1, elbo_form="discrete",
                        generator=torch.Generator().manual_seed(seed), prompt_mask_prob=prob)


def test_rl_prompt_mask_prob_zero_masks_no_prompt_token():
    assert not _update(0.0).prompt_masks.any()
    frac = float(_update(0.5).prompt_masks.double().mean())
    assert 0.3 < frac < 0.7  # 144 prompt tokens at p = 0.5


def _step_params(prob: float) -> torch.Tensor:
    """Parameters after one SGD rl_step of diffu-grpo with this prompt_mask_prob."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    cfg = RLConfig(algo="diffu-grpo", prompt_mask_prob=prob, max_grad_norm=1e9, kl_coef=0.0)
    rl_step(model, opt, make_rollouts(num_prompts=4, prompt_len=6), cfg, torch.Generator().manual_seed(0), sample_bytes=1)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_rl_prompt_mask_prob_reaches_the_update_from_the_config():
    # with p = 0 the step must equal the step computed on never-masked prompts
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    update = PolicyUpdate(model, "diffu-grpo", make_rollouts(num_prompts=4, prompt_len=6), num_samples=1, elbo_form="discrete",
                          generator=torch.Generator().manual_seed(0), prompt_mask_prob=0.0)
    opt.zero_grad(set_to_none=True)
    update.backward(1, 1)
    opt.step()
    unmasked = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(_step_params(0.0), unmasked, rtol=0, atol=1e-12)  # chunking changes only the summation order
    assert (_step_params(0.9) - unmasked).abs().max() > 1e-6  # masking most prompt tokens changes the gradient


@pytest.mark.parametrize("prob", [-0.1, 1.0, 1.5])
def test_rl_prompt_mask_prob_out_of_range_is_a_clear_error(prob):
    with pytest.raises(ValueError, match=r"prompt_mask_prob=.*must be in \[0, 1\).*--prompt-mask-prob 0.15"):
        RLConfig(prompt_mask_prob=prob)
