"""The ELBO estimator: continuous and discrete forms, unbiasedness on enumerable models.

Enumeration: with a response of L tokens, a mask set M of size l gets probability
1 / (l * C(L, l)) in the discrete form and, integrated over t, in the continuous form,
so the exact ELBO is a finite sum over the 2^L - 1 non-empty masks.
"""

import itertools
import math

import pytest
import torch
from scipy import integrate

from hsp.rl.elbo import elbo_terms, sample_masks
from rl_helpers import MASK_ID, tiny_model

L = 3


def all_masks(length: int) -> list[tuple[int, ...]]:
    return [c for l in range(1, length + 1) for c in itertools.combinations(range(length), l)]


def model_scores(model, prompt: torch.Tensor, response: torch.Tensor) -> dict[tuple[int, ...], float]:
    """S(M) = sum_{i in M} log p(y_i | y with M masked, x) for every non-empty M (weight 1)."""
    masks_list = all_masks(len(response))
    masks = torch.zeros(len(masks_list), len(response), dtype=torch.bool)
    for k, m in enumerate(masks_list):
        masks[k, list(m)] = True
    k = len(masks_list)
    with torch.no_grad():
        logits = model.response_logits(prompt.expand(k, -1), response.expand(k, -1), masks)
        s = elbo_terms(logits, response.expand(k, -1), masks, torch.ones(k, dtype=torch.float64))
    return dict(zip(masks_list, s.tolist()))


def exact_discrete(scores: dict, length: int) -> float:
    return sum(s / (len(m) * math.comb(length, len(m))) for m, s in scores.items())


def exact_continuous(scores: dict, length: int, min_t: float = 0.0) -> float:
    """E_{t ~ U(min_t, 1)} E_{M | t} [(1/t) S(M)], integrated numerically."""

    def given_t(t: float) -> float:
        return sum(t ** (len(m) - 1) * (1 - t) ** (length - len(m)) * s for m, s in scores.items())

    value, _ = integrate.quad(given_t, min_t, 1.0, epsabs=1e-13, epsrel=1e-13)
    return value / (1.0 - min_t)


def _setup(seed: int = 0):
    model = tiny_model(seed)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, MASK_ID, (1, 2), generator=g)
    response = torch.randint(0, MASK_ID, (1, L), generator=g)
    return model, prompt, response


def _mc(scores: dict, form: str, num: int, min_t: float, seed: int) -> tuple[float, float]:
    """Mean and standard error of the MC estimator, looking S(M) up in the enumerated table."""
    masks, weights = sample_masks(num, L, form, torch.Generator().manual_seed(seed), min_t)
    # mask -> integer code (bit i = position i masked) -> score
    table = torch.zeros(2**L, dtype=torch.float64)
    for m, s in scores.items():
        table[sum(1 << i for i in m)] = s
    vals = table[(masks.long() << torch.arange(L)).sum(1)]
    est = weights * vals
    return float(est.mean()), float(est.std() / math.sqrt(num))


def test_rl_elbo_forms_agree_exactly():
    for seed in range(3):
        model, prompt, response = _setup(seed)
        scores = model_scores(model, prompt[0], response[0])
        assert abs(exact_discrete(scores, L) - exact_continuous(scores, L)) < 1e-10
        # the ELBO is not trivial: different masks score differently
        assert max(scores.values()) - min(scores.values()) > 0.1


def test_rl_elbo_discrete_mc_is_unbiased():
    model, prompt, response = _setup(1)
    scores = model_scores(model, prompt[0], response[0])
    mean, se = _mc(scores, "discrete", 40_000, 0.0, seed=5)
    assert abs(mean - exact_discrete(scores, L)) < 5 * se, (mean, exact_discrete(scores, L), se)
    assert se < 0.05 * abs(mean)  # the test has power


def test_rl_elbo_continuous_mc_is_unbiased():
    # min_t > 0 keeps the variance finite; its exact target is the truncated integral,
    # which tends to the discrete ELBO as min_t -> 0 (checked with the exact forms).
    model, prompt, response = _setup(2)
    scores = model_scores(model, prompt[0], response[0])
    min_t = 0.05
    mean, se = _mc(scores, "continuous", 40_000, min_t, seed=6)
    target = exact_continuous(scores, L, min_t)
    assert abs(mean - target) < 5 * se, (mean, target, se)
    assert abs(exact_continuous(scores, L, 1e-7) - exact_discrete(scores, L)) < 1e-5


def test_rl_elbo_mc_matches_on_the_real_forward_path():
    """Masks applied through DiffusionLM (not the lookup table): same unbiased estimate."""
    model, prompt, response = _setup(3)
    scores = model_scores(model, prompt[0], response[0])
    n = 4000
    masks, weights = sample_masks(n, L, "discrete", torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model.response_logits(prompt.expand(n, -1), response.expand(n, -1), masks)
        est = elbo_terms(logits, response.expand(n, -1), masks, weights)
    se = float(est.std()) / math.sqrt(n)
    assert abs(float(est.mean()) - exact_discrete(scores, L)) < 5 * se


def test_rl_elbo_equals_log_likelihood_with_exact_conditionals():
    """If the model's predictions are the exact conditionals of a joint q, the ELBO is log q(y)."""
    vocab = 3
    g = torch.Generator().manual_seed(0)
    q = torch.rand((vocab,) * L, generator=g, dtype=torch.float64) + 0.05
    q /= q.sum()
    for y in itertools.product(range(vocab), repeat=L):
        scores = {}
        for m in all_masks(L):
            # logits of each position given the unmasked ones: log of q's conditional marginal
            logits = torch.zeros(1, L, vocab, dtype=torch.float64)
            for i in m:
                index = tuple(slice(None) if (j in m) else y[j] for j in range(L))
                marginal = q[index]  # dims: masked positions in order
                axis = sorted(m).index(i)
                marg_i = marginal.sum(dim=[a for a in range(len(m)) if a != axis]) if len(m) > 1 else marginal
                logits[0, i] = torch.log(marg_i / marg_i.sum())
            mask = torch.zeros(1, L, dtype=torch.bool)
            mask[0, list(m)] = True
            scores[m] = float(elbo_terms(logits, torch.tensor([y]), mask, torch.ones(1, dtype=torch.float64)))
        assert abs(exact_discrete(scores, L) - math.log(q[y])) < 1e-12


def test_rl_discrete_masks_exact_count_and_weight():
    length = 5
    masks, weights = sample_masks(5000, length, "discrete", torch.Generator().manual_seed(0))
    counts = masks.sum(1)
    assert counts.min() >= 1 and counts.max() <= length
    torch.testing.assert_close(weights, length / counts.double())
    freq = torch.bincount(counts, minlength=length + 1)[1:].double() / 5000
    assert (freq - 1 / length).abs().max() < 0.03
    pos = masks.double().mean(0)
    assert (pos - pos.mean()).abs().max() < 0.03  # positions are exchangeable


def test_rl_sample_masks_rejects_bad_input():
    with pytest.raises(ValueError, match="form"):
        sample_masks(2, 3, "bogus", torch.Generator())
    with pytest.raises(ValueError, match="min_t"):
        sample_masks(2, 3, "continuous", torch.Generator(), min_t=1.5)
