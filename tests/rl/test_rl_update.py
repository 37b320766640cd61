"""Policy updates on a real (tiny, float64) diffusion LM: chunking, on/off-policy, memory."""

import pytest
import torch
from rl_helpers import make_rollouts, tiny_model

from hsp.rl import losses
from hsp.rl.elbo import elbo_terms
from hsp.rl.update import PolicyUpdate

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
