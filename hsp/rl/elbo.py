"""The masked-diffusion ELBO and its Monte Carlo estimator.

For a response y (length L) given prompt x, one MC sample masks some response tokens
(never the prompt) and scores the masked ones:

    l(y_t, t) = w * sum_i 1[y_t^i = MASK] * log p_theta(y^i | y_t, x)

- continuous form: t ~ U(min_t, 1), each response token masked independently with
  probability t, weight w = 1/t (min_t > 0 bounds the weight; min_t = 0 is the exact
  ELBO but has infinite variance: a single masked token at tiny t gets weight 1/t);
- discrete form (LLaDA's low-variance estimator): l ~ U{1..L}, exactly l positions
  masked uniformly, weight w = L/l.

Both have the same expectation when min_t = 0: a mask set M of size l gets probability
B(l, L-l+1) = 1 / (l * C(L, l)) times its score in both forms. The ELBO B = mean_j l_j.
"""

from __future__ import annotations

import torch

from hsp.rl.names import ELBO_FORMS as FORMS


def sample_masks(
    num_samples: int,
    response_len: int,
    form: str,
    generator: torch.Generator,
    min_t: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (num_samples, L) bool and weights (num_samples,) float64 for the response."""
    if form not in FORMS:
        raise ValueError(f"ELBO form must be one of {FORMS}, got {form!r}")
    if num_samples <= 0 or response_len <= 0:
        raise ValueError(f"need num_samples > 0 and response_len > 0, got {num_samples}, {response_len}")
    u = torch.rand(num_samples, response_len, generator=generator, dtype=torch.float64)
    if form == "continuous":
        if not 0.0 <= min_t < 1.0:
            raise ValueError(f"min_t must be in [0, 1), got {min_t}")
        # 1 - U is in (0, 1]: t never hits 0 exactly
        t = min_t + (1.0 - min_t) * (1.0 - torch.rand(num_samples, generator=generator, dtype=torch.float64))
        return u < t[:, None], 1.0 / t
    num_masked = torch.randint(1, response_len + 1, (num_samples,), generator=generator)
    # the l smallest of L iid uniforms are a uniformly random l-subset
    ranks = u.argsort(dim=1).argsort(dim=1)  # (n, L): rank of each position
    masks = ranks < num_masked[:, None]
    return masks, response_len / num_masked.double()


def likelihood_temperature(temperature: float) -> float:
    """The temperature the likelihood divides logits by: the sampler's T for T > 0.
    T = 0 (greedy rollouts) has no density to match (argmax is a point mass), so the
    likelihood uses T = 1, the model's own distribution."""
    return temperature if temperature > 0 else 1.0


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[target]: the per-token log-probability of the policy that
    sampled with temperature T (see likelihood_temperature). logits (K, L, V) -> (K, L)."""
    scaled = logits if temperature == 1.0 else logits / temperature
    return torch.log_softmax(scaled, dim=-1).gather(-1, targets[..., None]).squeeze(-1)


def elbo_terms(
    logits: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-sample ELBO terms l_j. logits (K, L, V) at response positions, targets (K, L),
    masks (K, L) bool, weights (K,) -> (K,); token log-probs at `temperature`."""
    logp = token_logprobs(logits, targets, temperature)  # (K, L)
    return weights.to(logp.dtype) * (logp * masks).sum(dim=-1)


def apply_masks(prompts: torch.Tensor, responses: torch.Tensor, masks: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Sequences [prompt | response with masked positions = mask_id]: (K, Lp + L)."""
    masked = torch.where(masks, torch.full_like(responses, mask_id), responses)
    return torch.cat([prompts, masked], dim=1)
