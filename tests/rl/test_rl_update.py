"""Policy updates on a real (tiny, float64) diffusion LM: chunking, on/off-policy, memory."""

import pytest
import torch
from rl_helpers import MASK_ID, make_rollouts, tiny_model

from hsp.rl import losses
from hsp.rl.elbo import elbo_terms
from hsp.rl.update import PolicyUpdate, Rollouts

N_T = 4


def _grads(model, algo: str, rollouts, budget_units: float, num_samples: int = N_T, seed: int = 0):
    """(loss, flat gradient, update) of one on-policy pass with a budget of budget_units samples."""
    model.zero_grad(set_to_none=True)
    update = PolicyUpdate(model, algo, rollouts, num_samples=num_samples, elbo_form="discrete", generator=torch.Generator().manual_seed(seed))
    sample_bytes = update.sample_bytes()
    loss = update.backward(int(budget_units * sample_bytes), sample_bytes)
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    return loss, grad, update


def test_rl_bgpo_gradient_independent_of_chunking():
    model, rollouts = tiny_model(), make_rollouts()
    ref_loss, ref_grad, _ = _grads(model, "bgpo", rollouts, budget_units=1.0)
    for units in (1.5, 3.0, 7.0, 1000.0):
        loss, grad, _ = _grads(model, "bgpo", rollouts, budget_units=units)
        assert abs(loss - ref_loss) < 1e-12
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert ref_grad.abs().max() > 1e-3  # the gradient is not trivially zero


def test_rl_bgpo_equals_full_elbo_on_policy_with_same_masks():
    model, rollouts = tiny_model(1), make_rollouts(seed=1)
    b_loss, b_grad, b_up = _grads(model, "bgpo", rollouts, budget_units=2.0, seed=3)
    f_loss, f_grad, f_up = _grads(model, "full-elbo", rollouts, budget_units=2.0 * N_T, seed=3)
    assert torch.equal(b_up.masks, f_up.masks)
    assert abs(b_loss - f_loss) < 1e-12
    torch.testing.assert_close(b_grad, f_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.tensor(b_loss, dtype=torch.float64), -rollouts.advantages.mean(), rtol=1e-12, atol=1e-12)


def test_rl_update_matches_direct_loss():
    """The chunked update's gradient equals autograd of the unchunked pure loss."""
    model, rollouts = tiny_model(2), make_rollouts(seed=2)
    _, grad, update = _grads(model, "bgpo", rollouts, budget_units=3.0, seed=4)
    n, n_t, length = update.masks.shape
    model.zero_grad(set_to_none=True)
    rows = torch.arange(n).repeat_interleave(n_t)
    masks = update.masks.reshape(n * n_t, length)
    logits = model.response_logits(rollouts.prompts[rows], rollouts.responses[rows], masks)
    terms = elbo_terms(logits, rollouts.responses[rows], masks, update.weights.reshape(-1)).view(n, n_t)
    losses.bgpo_loss(terms - terms.detach(), rollouts.advantages).backward()
    direct = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grad, direct, rtol=1e-10, atol=1e-12)


def test_rl_off_policy_bgpo_loss_is_upper_bound_of_full():
    """After a parameter change, the BGPO objective is <= the ELBO-ratio objective."""
    for seed in range(3):
        model, rollouts = tiny_model(seed), make_rollouts(seed=seed)
        ups = {}
        for algo in ("bgpo", "full-elbo"):
            ups[algo] = PolicyUpdate(model, algo, rollouts, num_samples=N_T, elbo_form="discrete", generator=torch.Generator().manual_seed(9))
            sb = ups[algo].sample_bytes()
            ups[algo].backward(10**12, sb)  # first pass records l_old
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype))
        b = ups["bgpo"].backward(10**12, 1)
        f = ups["full-elbo"].backward(10**12, 1)
        assert -b <= -f + 1e-12
        assert abs(b - f) > 1e-6  # genuinely off-policy


def test_rl_full_elbo_unit_holds_all_samples():
    model, rollouts = tiny_model(), make_rollouts()
    update = PolicyUpdate(model, "full-elbo", rollouts, num_samples=N_T, elbo_form="discrete", generator=torch.Generator().manual_seed(0))
    sb = update.sample_bytes()
    with pytest.raises(ValueError, match="budget"):
        update.backward(sb * (N_T - 1), sb)


def test_rl_diffu_grpo_update_runs_and_rejects_many_samples():
    model, rollouts = tiny_model(), make_rollouts()
    loss, grad, _ = _grads(model, "diffu-grpo", rollouts, budget_units=2.0, num_samples=1)
    assert abs(loss + float(rollouts.advantages.mean())) < 1e-12
    assert grad.abs().max() > 0
    with pytest.raises(ValueError, match="one sample"):
        PolicyUpdate(model, "diffu-grpo", rollouts, num_samples=4, elbo_form="discrete", generator=torch.Generator())


def test_rl_saved_memory_constant_in_samples_for_bgpo_only():
    from hsp.engine.memory import SavedBytesMeter

    model, rollouts = tiny_model(), make_rollouts(num_prompts=1, group=2)
    peaks = {}
    for algo in ("bgpo", "full-elbo"):
        for n_t in (1, 16):
            update = PolicyUpdate(model, algo, rollouts, num_samples=n_t, elbo_form="discrete", generator=torch.Generator().manual_seed(0))
            sb = update.sample_bytes()
            meter = SavedBytesMeter(model.parameters())
            with meter:
                update.backward(max(2, n_t if algo == "full-elbo" else 2) * sb, sb)
            peaks[algo, n_t] = meter.peak_bytes
    assert peaks["bgpo", 16] <= 1.1 * peaks["bgpo", 1]
    assert peaks["full-elbo", 16] >= 6 * peaks["full-elbo", 1]


def test_rl_kl_penalty_keeps_bgpo_memory_flat_in_samples():
    """The reference's log-probs run under no_grad: with the KL penalty on, BGPO's peak
    saved bytes still do not grow with n_t, and the penalty changes the gradient."""
    from hsp.engine.memory import SavedBytesMeter
    from hsp.rl.step import frozen_copy

    model, rollouts = tiny_model(), make_rollouts(num_prompts=1, group=2)
    reference = frozen_copy(tiny_model(4))
    peaks, grads = {}, {}
    for kl_coef in (0.0, 0.5):
        for n_t in (1, 16):
            model.zero_grad(set_to_none=True)
            update = PolicyUpdate(model, "bgpo", rollouts, num_samples=n_t, elbo_form="discrete", generator=torch.Generator().manual_seed(0),
                                  reference=reference, kl_coef=kl_coef)
            sb = update.sample_bytes()
            meter = SavedBytesMeter(model.parameters())
            with meter:
                update.backward(2 * sb, sb)
            peaks[kl_coef, n_t] = meter.peak_bytes
            grads[kl_coef, n_t] = torch.cat([p.grad.flatten() for p in model.parameters()])
            assert (update.kl_sum > 0) == (kl_coef > 0)
    assert peaks[0.5, 16] <= 1.1 * peaks[0.5, 1]
    assert peaks[0.5, 16] <= 1.1 * peaks[0.0, 16]
    assert (grads[0.5, 16] - grads[0.0, 16]).abs().max() > 1e-6


def test_rl_kl_penalty_is_zero_with_gradient_zero_at_the_reference():
    """k3 = exp(r) - r - 1 has value and gradient 0 where the policy equals the reference."""
    from hsp.rl.step import frozen_copy

    model, rollouts = tiny_model(), make_rollouts()
    _, plain, _ = _grads(model, "bgpo", rollouts, budget_units=3.0)
    model.zero_grad(set_to_none=True)
    update = PolicyUpdate(model, "bgpo", rollouts, num_samples=N_T, elbo_form="discrete", generator=torch.Generator().manual_seed(0),
                          reference=frozen_copy(model), kl_coef=1.0)
    sb = update.sample_bytes()
    update.backward(3 * sb, sb)
    with_kl = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert update.kl_sum == 0.0
    torch.testing.assert_close(with_kl, plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("algo", ["bgpo", "diffu-grpo"])
def test_rl_likelihood_uses_the_sampling_temperature(algo):
    """At T = 0.7 the update's token log-probs are those of the distribution the sampler
    draws from: softmax(logits / 0.7) at the same masked input (the Gumbel-max draw of
    hsp.rl.sampler), checked against the sampler's empirical token frequencies."""
    from hsp.rl.sampler import SamplerConfig, generate

    temperature = 0.7
    model, rollouts = tiny_model(), make_rollouts(num_prompts=1, group=1, response_len=1)
    update = PolicyUpdate(model, algo, rollouts, num_samples=1, elbo_form="discrete", generator=torch.Generator().manual_seed(0),
                          temperature=temperature)
    # one response token: every mask masks it, so the likelihood conditions on the prompt alone,
    # as the sampler's only step does
    with torch.no_grad():
        logp_all = []
        for token in range(MASK_ID):
            r = Rollouts(rollouts.prompts, torch.tensor([[token]]), rollouts.advantages)
            up = PolicyUpdate(model, algo, r, num_samples=1, elbo_form="discrete", generator=torch.Generator().manual_seed(0),
                              temperature=temperature, prompt_mask_prob=0.0)  # the sampler sees the whole prompt
            terms = up._sample_terms([0], [0])
            logp_all.append(float(terms.flatten()[0]))
    probs = torch.tensor(logp_all, dtype=torch.float64).exp()
    assert abs(float(probs.sum()) - 1.0) < 1e-9
    draws = 20000
    out = generate(model, rollouts.prompts.expand(draws, -1), SamplerConfig(gen_length=1, block_length=1, steps=1, temperature=temperature),
                   torch.Generator().manual_seed(1))
    freq = torch.bincount(out.flatten(), minlength=MASK_ID + 1)[:MASK_ID].double() / draws
    assert (freq - probs).abs().max() < 4 * (0.25 / draws) ** 0.5  # 4 sigma of a binomial frequency
    untempered = torch.softmax(model(torch.cat([rollouts.prompts, torch.tensor([[MASK_ID]])], 1))[0, -1, :MASK_ID].double(), -1)
    assert (untempered - probs).abs().max() > 10 * (0.25 / draws) ** 0.5  # T = 1 would be distinguishably wrong
    assert update.temperature == temperature and PolicyUpdate(model, algo, rollouts, num_samples=1, elbo_form="discrete",
                                                              generator=torch.Generator(), temperature=0.0).temperature == 1.0
