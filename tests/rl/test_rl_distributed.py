"""Data-parallel `hsp rl`: 2 gloo ranks give the one-process update (float64), and
`hsp rl --num-workers 2` runs end to end on Ray."""

import json

import pytest
import torch
from rl_helpers import make_rollouts, tiny_model

from hsp.engine.rank import Rank
from hsp.model.config import ModelConfig
from hsp.rl.config import RLConfig
from hsp.rl.rollout import rollout, shard_range
from hsp.rl.step import RLRankSpec, data_parallel_update, frozen_copy, rl_step
from hsp.rl.tasks import get_task
from hsp.rl.update import PolicyUpdate, Rollouts
from hsp.rl.warmup import build_model, task_splits
from hsp.testing import run_ranks

P, G, N_T, MASK_SEED = 3, 3, 4, 7  # 3 prompts on 2 ranks: uneven shares (2 + 1)
ALGOS = {"bgpo": N_T, "full-elbo": N_T, "diffu-grpo": 1}


def _cfg(algo: str, **kw) -> RLConfig:
    # two inner steps: the second is off-policy, on the l_old recorded in the first;
    # no clipping, so a wrongly scaled gradient would show in the parameters; the KL
    # penalty to a reference with other weights is on, so its share is checked too
    return RLConfig(algo=algo, mc_samples=ALGOS[algo], group_size=G, prompts_per_step=P, inner_steps=2, max_grad_norm=1e9, **kw)


def _sample_bytes(model, algo: str) -> int:
    probe = make_rollouts(1, 2)
    return PolicyUpdate(model, algo, probe, num_samples=1, elbo_form="discrete", generator=torch.Generator()).sample_bytes()


def _reference(algo: str) -> tuple[float, torch.Tensor]:
    """The one-process update on all P*G rollouts (SGD: the step is proportional to the gradient)."""
    model, rollouts = tiny_model(3), make_rollouts(P, G, seed=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = rl_step(model, opt, rollouts, _cfg(algo), torch.Generator().manual_seed(MASK_SEED), _sample_bytes(model, algo),
                    reference=frozen_copy(tiny_model(5)))
    assert stats.kl > 0
    return stats.loss, torch.cat([p.detach().flatten() for p in model.parameters()])


def _rank(rank: int, world_size: int, rendezvous: str) -> dict:
    torch.set_num_threads(1)
    out = {}
    cfg = _cfg("bgpo", num_workers=world_size, train_items=16, test_items=4, model=ModelConfig(num_layers=1, hidden_size=16),
               num_threads=1)
    task = get_task(cfg.task)
    host = Rank()
    host.setup(rank, world_size, rendezvous, RLRankSpec(config=cfg, initial_state=build_model(cfg, task).state_dict(), collective_timeout_s=60))
    worker = host.program
    for algo in ALGOS:
        model, rollouts = tiny_model(3), make_rollouts(P, G, seed=4)
        lo, hi = shard_range(P, rank, world_size)
        mine = Rollouts(rollouts.prompts[lo * G : hi * G], rollouts.responses[lo * G : hi * G], rollouts.advantages[lo * G : hi * G])
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        stats, (count,) = data_parallel_update(host, model, opt, mine, (lo * G, P * G), _cfg(algo), torch.Generator().manual_seed(MASK_SEED),
                                               _sample_bytes(model, algo), scalars=(float(hi - lo),), reference=frozen_copy(tiny_model(5)))
        out[algo] = (stats.loss, count, torch.cat([p.detach().flatten() for p in model.parameters()]))
    # a real step (rollouts on each rank's own prompts) keeps the ranks' weights identical
    record = worker.step(0)
    out["step"] = (record, torch.cat([p.detach().flatten() for p in host.model.parameters()]), worker.evaluate())
    host.shutdown()
    return out


def test_rl_data_parallel_update_equals_single_process():
    results = run_ranks(_rank, 2, timeout_s=120)
    for algo in ALGOS:
        ref_loss, ref_params = _reference(algo)
        assert not torch.equal(ref_params, torch.cat([p.detach().flatten() for p in tiny_model(3).parameters()]))
        for rank_out in results:
            loss, count, params = rank_out[algo]
            assert count == P  # the scalars rode along in the gradient all-reduce
            assert abs(loss - ref_loss) < 1e-12, algo
            torch.testing.assert_close(params, ref_params, rtol=1e-10, atol=1e-12, msg=algo)
    (rec0, params0, eval0), (rec1, params1, eval1) = results[0]["step"], results[1]["step"]
    assert torch.equal(params0, params1)
    assert rec0["reward"] == rec1["reward"] and 0.0 <= rec0["reward"] <= 1.0
    assert rec0 == {**rec1, "rollout_s": rec0["rollout_s"], "update_s": rec0["update_s"]}  # the diagnostics are the whole step's
    assert 0.0 <= rec0["tied_group_share"] <= 1.0 and rec0["entropy"] > 0 and rec0["kl"] == 0.0  # step 0: still the reference
    assert eval0 == eval1 and 0.0 <= eval0["accuracy"] <= 1.0


def test_rl_shard_range_covers_everything():
    for total in range(0, 9):
        for world in range(1, 5):
            parts = [shard_range(total, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(h - l for l, h in parts) - min(h - l for l, h in parts) <= 1


def test_rl_rollout_shares_tile_the_one_rank_batch():
    """One rollout function for any world size: the ranks' prompts and rows tile the
    world-of-one batch, and all hold the same shared generator for the ELBO masks."""
    cfg = RLConfig(prompts_per_step=P, group_size=2, train_items=16, test_items=4, model=ModelConfig(num_layers=1, hidden_size=16))
    task, train_set, _ = task_splits(cfg)
    model = build_model(cfg, task)
    whole, rewards, rows, shared = rollout(model, task, train_set, cfg, 5)
    assert rows == (0, 2 * P) and rewards.shape == (2 * P,)
    parts = [rollout(model, task, train_set, cfg, 5, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([part[0].prompts for part in parts]), whole.prompts)
    assert [part[2] for part in parts] == [(0, 2 * P), (4, 2 * P)]
    assert all(torch.equal(part[3].get_state(), shared.get_state()) for part in parts)


def test_rl_num_workers_needs_enough_prompts():
    with pytest.raises(ValueError, match="prompts-per-step"):
        RLConfig(num_workers=4, prompts_per_step=2)


@pytest.mark.usefixtures("ray_session")
def test_rl_cli_num_workers_2_on_ray(tmp_path):
    from cluster.cli import main

    run_dir = tmp_path / "dp"
    args = ["rl", "--num-workers", "2", "--steps", "2", "--group-size", "2", "--prompts-per-step", "2", "--mc-samples", "2",
            "--train-items", "32", "--test-items", "8", "--hidden-size", "16", "--num-layers", "1", "--sft-steps", "3",
            "--eval-every", "1", "--no-progress", "--num-threads", "1", "--run-dir", str(run_dir)]
    assert main(args) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_workers"] == 2 and summary["config"]["num_workers"] == 2
    assert len(summary["history"]) == 2 and summary["peak_saved_bytes"] > 0
    assert 0.0 <= summary["test_accuracy_after"] <= 1.0
    assert (run_dir / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
