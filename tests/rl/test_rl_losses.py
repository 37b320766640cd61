"""BGPO vs the full-graph ELBO objective, as pure tensor functions (float64)."""

import torch

from hsp.rl import losses


def _per_sample_terms(theta: torch.Tensor, n: int, n_t: int, seed: int) -> torch.Tensor:
    """A smooth stand-in for l_theta: (N, n_t) terms that depend on theta nonlinearly."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, n_t, theta.numel(), generator=g, dtype=torch.float64)
    return torch.tanh(feats @ theta) * 3.0 - (feats @ theta) ** 2 * 0.1


def test_rl_on_policy_value_and_gradient_match():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        n, n_t = 8, int(torch.randint(1, 9, (1,), generator=g))
        theta = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
        adv = torch.randn(n, generator=g, dtype=torch.float64)
        values = {}
        for name, fn in (("bgpo", losses.bgpo_loss), ("full", losses.full_elbo_loss)):
            l = _per_sample_terms(theta, n, n_t, seed)
            d = l - l.detach()  # on-policy: the old policy is the current one
            loss = fn(d, adv)
            (grad,) = torch.autograd.grad(loss, theta)
            values[name] = (loss.detach(), grad)
        torch.testing.assert_close(values["bgpo"][0], values["full"][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(values["bgpo"][1], values["full"][1], rtol=1e-12, atol=1e-12)
        # and the value is -mean(A): exp(0) = 1
        torch.testing.assert_close(values["bgpo"][0], -adv.mean(), rtol=1e-12, atol=1e-12)


def test_rl_off_policy_bgpo_objective_is_a_lower_bound():
    g = torch.Generator().manual_seed(1)
    for case in range(2000):
        n, n_t = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 33, (1,), generator=g))
        scale = float(torch.rand(1, generator=g)) * 4.0
        d = torch.randn(n, n_t, generator=g, dtype=torch.float64) * scale
        adv = torch.randn(n, generator=g, dtype=torch.float64)
        # per response (the bound holds term by term) and in total
        g_bgpo = losses.bgpo_terms(d, adv[:, None], n_t).sum(1)
        g_full = torch.exp(d.mean(1)) * adv
        assert (g_bgpo <= g_full + 1e-12 * g_full.abs().clamp(min=1)).all(), f"case {case}"
        assert -losses.bgpo_loss(d, adv) <= -losses.full_elbo_loss(d, adv) + 1e-10


def test_rl_bound_is_tight_only_at_zero():
    d = torch.full((1, 4), 0.5, dtype=torch.float64)
    for a in (1.0, -1.0):
        adv = torch.tensor([a], dtype=torch.float64)
        gap = losses.bgpo_loss(d, adv) - losses.full_elbo_loss(d, adv)
        # A > 0: tangent gap e^0.5 - 1.5 > 0; A < 0 with equal d_j: Jensen is tight
        assert (gap > 1e-3) if a > 0 else abs(gap) < 1e-12


def test_rl_chunked_bgpo_loss_sums_to_full():
    g = torch.Generator().manual_seed(2)
    d = torch.randn(6, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(6, generator=g, dtype=torch.float64)
    parts = [losses.bgpo_loss(d[i : i + 1], adv[i : i + 1], num_responses=6) for i in range(6)]
    torch.testing.assert_close(sum(parts), losses.bgpo_loss(d, adv), rtol=1e-12, atol=1e-12)


def test_rl_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)
    a = losses.group_advantages(r)
    torch.testing.assert_close(a.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert abs(float(a[0].std(unbiased=False)) - 1.0) < 1e-3
    assert torch.equal(a[1], torch.zeros(4, dtype=torch.float64))  # no signal, no update
    assert a[0, 0] > a[0, 2] > a[0, 1]


def test_rl_diffu_grpo_loss_on_policy_and_clipping():
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    logp = torch.log_softmax(theta, -1)
    loss = losses.diffu_grpo_loss(logp, logp.detach(), adv)
    torch.testing.assert_close(loss.detach(), -adv.mean(), rtol=1e-12, atol=1e-12)
    # a ratio far above 1 + eps with A > 0 is clipped: no gradient through it
    old = logp.detach() - 1.0
    (grad,) = torch.autograd.grad(losses.diffu_grpo_loss(logp, old, torch.ones(4, dtype=torch.float64)), theta)
    assert torch.count_nonzero(grad) == 0


def test_rl_shuffled_advantages_keep_each_group_and_move_them():
    from hsp.rl.rollout import group_diagnostics, shuffle_within_groups

    rewards = torch.tensor([[0.0, 1.0, 1.0, 0.5], [1.0, 1.0, 1.0, 1.0], [0.25, 0.0, 0.75, 1.0]], dtype=torch.float64)
    adv = losses.group_advantages(rewards)
    shuffled = shuffle_within_groups(adv, torch.Generator().manual_seed(0))
    torch.testing.assert_close(shuffled.sort(dim=1).values, adv.sort(dim=1).values, rtol=0, atol=0)
    assert not torch.equal(shuffled, adv)
    diag = group_diagnostics(rewards.flatten(), group_size=4)
    assert diag["tied_groups"] == 1.0
    assert abs(diag["group_std"] - float(rewards.std(dim=1, unbiased=False).sum())) < 1e-12
