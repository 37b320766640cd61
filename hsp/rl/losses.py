"""RL objectives for masked-diffusion LMs, as pure tensor functions.

Notation (BGPO, arXiv 2510.11683): N responses, G per prompt, n_t Monte Carlo ELBO
samples per response. ``d[i, j] = l_theta(y_i, sample j) - l_old(y_i, sample j)`` is the
difference of the per-sample ELBO terms of the current and the rollout policy on the
*same* mask (see `hsp.rl.elbo`). ``adv[i]`` is the group-relative advantage.

All losses are *minimised*; the objectives they negate are what the paper maximises.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A = (r - mean r) / (std r + eps) within each group. rewards: (P, G) -> (P, G).

    Population std (a group of identical rewards gets A = 0, so it contributes nothing).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (num_prompts, group_size), got shape {tuple(rewards.shape)}")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def bgpo_terms(d: torch.Tensor, adv: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Per-(response, sample) terms g_ij of BGPO's lower bound.

    g_ij = (1 + d_ij) A_i / n_t   if A_i >= 0  (tangent line of exp at 0: 1 + x <= e^x)
    g_ij = exp(d_ij) A_i / n_t    if A_i < 0   (Jensen: mean_j e^{d_j} >= e^{mean_j d_j})
    d: (..., ) and adv broadcastable to d's shape. Summed over j, each bound is <= the
    ELBO ratio objective exp(mean_j d_ij) A_i, with equality (value and gradient) at d = 0.
    """
    adv = adv.expand_as(d)
    positive = (1.0 + d) * adv
    negative = torch.exp(d) * adv
    return torch.where(adv >= 0, positive, negative) / num_samples


def bgpo_loss(d: torch.Tensor, adv: torch.Tensor, num_responses: int | None = None) -> torch.Tensor:
    """-sum_ij g_ij / N for d: (N, n_t), adv: (N,).

    ``num_responses`` overrides N so that a *subset* of (response, sample) units can be
    scored on its own (chunked accumulation): chunk losses then sum to the full loss.
    With one prompt group N = G and this is the paper's -sum g / G.
    """
    if d.dim() != 2 or adv.shape != d.shape[:1]:
        raise ValueError(f"d must be (N, n_t) and adv (N,), got {tuple(d.shape)} and {tuple(adv.shape)}")
    n = d.shape[0] if num_responses is None else num_responses
    return -bgpo_terms(d, adv[:, None], d.shape[1]).sum() / n


def full_elbo_loss(d: torch.Tensor, adv: torch.Tensor, num_responses: int | None = None) -> torch.Tensor:
    """ELBO-ratio baseline (VRPO-OL style): -sum_i exp(mean_j d_ij) A_i / N.

    The mean over the n_t samples sits inside the exp, so the gradient of every sample
    depends on all the others: all n_t graphs of a response must be alive at backward.
    """
    if d.dim() != 2 or adv.shape != d.shape[:1]:
        raise ValueError(f"d must be (N, n_t) and adv (N,), got {tuple(d.shape)} and {tuple(adv.shape)}")
    n = d.shape[0] if num_responses is None else num_responses
    return -(torch.exp(d.mean(dim=1)) * adv).sum() / n


def diffu_grpo_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    adv: torch.Tensor,
    clip_eps: float = 0.2,
    num_responses: int | None = None,
) -> torch.Tensor:
    """diffu-GRPO-style one-sample baseline (d1, arXiv 2504.12216).

    logp, logp_old: (N, L) per-token log-probabilities of the response tokens from one
    forward pass with the whole response masked (one MC sample); token-level ratios with
    PPO clipping, averaged over the L tokens of a response, summed over responses / N.
    """
    if logp.shape != logp_old.shape or logp.dim() != 2 or adv.shape != logp.shape[:1]:
        raise ValueError(f"logp/logp_old must be (N, L) and adv (N,), got {tuple(logp.shape)}, {tuple(logp_old.shape)}, {tuple(adv.shape)}")
    n = logp.shape[0] if num_responses is None else num_responses
    ratio = torch.exp(logp - logp_old)  # (N, L)
    a = adv[:, None]
    surrogate = torch.minimum(ratio * a, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * a)
    return -surrogate.mean(dim=1).sum() / n
