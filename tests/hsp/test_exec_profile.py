"""`hsp profile` end to end on 2 gloo ranks (short lengths, two repeats): the file it writes
is a CostModel that the planner accepts. The ranks run zero3 (FSDP2), whose per-pass
collectives put a fixed cost on every micro-batch; lengths up to 512 keep the per-token
terms measurable next to it on a loaded machine."""

import json

import numpy as np
import torch
import pytest

from cluster.cli import main
from hsp.engine.profile import activation_bytes_per_token
from hsp.model.config import ModelConfig
from solver.cost import CostModel
from solver.planner import plan
from solver.spec import ClusterSpec


@pytest.mark.slow
def test_profile_writes_a_cost_model_the_planner_accepts(tmp_path, capsys):
    out = tmp_path / "cost.json"
    args = ["profile", "--out", str(out), "--num-ranks", "2", "--hidden-size", "32", "--max-seq-len", "512",
            "--lengths", "64,128,256,512", "--repeats", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fit over" in printed and "median |error|" in printed
    cost = CostModel.load(out)
    assert cost.hidden_size == 32 and cost.num_heads == 4 and 2 in cost.a2a_bytes_per_s
    assert cost.attn_s_per_token2 + cost.linear_s_per_token > 0
    assert json.loads(out.read_text())["name"].startswith("profiled-")
    spec = ClusterSpec(num_ranks=2, num_heads=4, device_memory_bytes=int(cost.state_bytes_per_rank(2) + 200 * cost.act_bytes_per_token))
    step = plan(np.array([250, 40, 30, 20, 100]), spec, cost)  # 250 tokens need SP2 at a 200-token budget
    assert any(g.degree == 2 for mb in step.micro_batches for g in mb.groups)


def test_activation_bytes_grow_with_width_and_are_per_token():
    def model(width: int) -> ModelConfig:  # the MLP scales with the width, as in Llama (8/3 x)
        return ModelConfig(hidden_size=width, intermediate_size=width * 8 // 3, max_seq_len=512)

    small = activation_bytes_per_token(model(32), torch.float32, 256)
    wide = activation_bytes_per_token(model(64), torch.float32, 256)
    assert 1.5 < wide / small < 2.5  # activations are linear in the width (vocab logits aside)
    longer = activation_bytes_per_token(model(32), torch.float32, 512)
    assert longer == pytest.approx(small, rel=0.1)


def test_activation_checkpointing_lowers_the_measured_bytes_per_token():
    """With 4 blocks recomputed, the peak is the saved block inputs plus one recomputed
    block on top of the logits: well under half of keeping all four blocks."""
    cfg = ModelConfig(num_layers=4, hidden_size=64, max_seq_len=512)
    full = activation_bytes_per_token(cfg, torch.float32, 256)
    checkpointed = activation_bytes_per_token(cfg, torch.float32, 256, activation_checkpointing=True)
    hidden_bytes = 4 * cfg.hidden_size  # one float32 block input per token
    assert cfg.num_layers * hidden_bytes < checkpointed < 0.5 * full


def test_fit_accepts_packed_group_samples_and_recovers_coefficients():
    from solver.cost import fit_cost_model

    truth = CostModel(name="t", attn_s_per_token2=2e-8, linear_s_per_token=3e-5, group_fixed_s=4e-3,
                      act_bytes_per_token=1e4, num_params=1e5, num_layers=2, hidden_size=64, num_heads=4,
                      a2a_bytes_per_s={2: 5e7})
    samples = [([s] * k, d, truth.group_time_s([s] * k, d)) for s in (16, 64, 256, 1024) for k in (1, 4) for d in (1, 2)]
    fit = fit_cost_model(samples, truth).model
    assert fit.attn_s_per_token2 == pytest.approx(2e-8, rel=1e-6)
    assert fit.linear_s_per_token == pytest.approx(3e-5, rel=1e-6)
    assert fit.group_fixed_s == pytest.approx(4e-3, rel=1e-6)
    assert fit.a2a_bytes_per_s[2] == pytest.approx(5e7, rel=1e-6)
