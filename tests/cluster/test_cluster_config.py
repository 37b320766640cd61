"""`hsp train` config: files, overrides and the documented errors (no Ray)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster.commands.train import DEFAULT_CONFIG
from cluster.config import build_config, cluster_spec, read_file
from cluster.trainer import prepare


def test_cluster_default_config_prepares_a_degree_two_workload():
    config = build_config(read_file(DEFAULT_CONFIG))
    p = prepare(config)
    capacity = p.cost.token_capacity(p.spec)
    assert p.spec.num_ranks == 2 and p.spec.degrees == (1, 2)
    # the longest sequences need an SP2 group, most fit on one rank
    assert capacity < config.model.max_seq_len <= 2 * capacity
    assert (p.dataset.lengths > capacity).any()
    assert p.worker_config.model.max_seq_len == config.model.max_seq_len


def test_cluster_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 7\nmodel:\n  num_layers: 3\n")
    config = build_config(read_file(path), {"train.steps": 9, "cluster.num_workers": 4})
    assert (config.train.steps, config.model.num_layers, config.cluster.num_workers) == (9, 3, 4)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"num_head": 4}}, r"unknown config key model\.num_head = 4 \(did you mean .*model\.num_heads"),
        ({"modle": {}}, r"unknown config section 'modle'"),
        ({"train": {"steps": "ten"}}, r"config key train\.steps = 'ten' has type str, expected int"),
        ({"optimizer": {"lr": True}}, r"optimizer\.lr = True has type bool, expected float"),
        ({"train": {"steps": -1}}, r"train\.steps=-1 must be >= 0"),
        ({"planner": {"strategy": "magic"}}, r"planner\.strategy = 'magic' is not one of fast, flexsp"),
        ({"model": {"num_heads": 5}}, r"model\.hidden_size=64 is not divisible by model\.num_heads=5"),
    ],
)
def test_cluster_bad_config_names_key_value_and_fix(data, message):
    with pytest.raises(ValueError, match=message):
        build_config(data)


def test_cluster_heads_that_no_usable_degree_divides_are_rejected():
    config = build_config(read_file(DEFAULT_CONFIG), {"model.num_heads": 1, "model.num_kv_heads": 1, "model.hidden_size": 64})
    with pytest.raises(ValueError, match=r"num_heads=1 is odd.*use an even head count"):
        cluster_spec(config, config.planner.load_cost())
    # grouped-query: 3 K/V heads can be neither split nor replicated evenly over 2 or 4 ranks
    config = build_config(read_file(DEFAULT_CONFIG), {"model.num_heads": 12, "model.num_kv_heads": 3,
                                                      "model.hidden_size": 96, "cluster.num_workers": 4})
    with pytest.raises(ValueError, match=r"num_kv_heads=3 is odd.*cluster\.num_workers=4 ranks could never share a "
                                         r"sequence; use a power of two num_kv_heads that divides 12 \(e\.g\. model\.num_kv_heads=4\)"):
        cluster_spec(config, config.planner.load_cost())
    # 4 ranks but 2 heads: SP4 is not allowed, and 512 tokens need more than 2 ranks here
    config = build_config(
        read_file(DEFAULT_CONFIG),
        {"model.num_heads": 2, "cluster.num_workers": 4, "cluster.memory_budget_bytes": 0},
    )
    cost = config.planner.load_cost()
    budget = int(cost.state_bytes_per_rank(4) + 200 * cost.act_bytes_per_token)
    config.cluster.memory_budget_bytes = budget
    with pytest.raises(ValueError, match=r"degree 2; degrees usable with num_heads=2, num_kv_heads=2 and 4 workers: \[1, 2\]\)"
                                         r".*use head counts that allow degree 4"):
        cluster_spec(config, cost)


def test_cluster_memory_budget_below_one_sample_is_rejected():
    config = build_config(read_file(DEFAULT_CONFIG), {"cluster.memory_budget_bytes": 1000})
    with pytest.raises(ValueError, match=r"cluster\.memory_budget_bytes=1000 holds 0 tokens.*raise cluster\.memory_budget_bytes to >= \d+"):
        prepare(config)


def test_cluster_cli_rejects_bad_config_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "train", "--config", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "hsp train: error: unknown config key train.stepz = 3" in proc.stderr
    assert "valid keys in [train]: steps" in proc.stderr
    assert "Ray" not in proc.stderr  # nothing was started


def test_cluster_cli_flags_override_the_config_file(tmp_path):
    from cluster.cli import build_parser
    from cluster.commands.train import load

    path = tmp_path / "c.toml"
    path.write_text("[train]\nsteps = 50\n[checkpoint]\nevery_steps = 10\n[metrics]\nport = 9999\n")
    args = build_parser().parse_args(
        ["train", "--config", str(path), "--steps", "7", "--num-workers", "4", "--address", "auto", "--metrics-port", "0",
         "--metrics-host", "0.0.0.0", "--run-dir", "r", "--resume", "--data-dir", str(tmp_path), "--seed", "5",
         "--strategy", "static"]
    )
    c = load(args)
    assert (c.train.steps, c.checkpoint.every_steps, c.checkpoint.resume, c.train.seed, c.train.run_dir) == (7, 10, True, 5, "r")
    assert (c.cluster.num_workers, c.cluster.address, c.metrics.port, c.metrics.host) == (4, "auto", 0, "0.0.0.0")
    assert (c.data.data_dir, c.planner.strategy) == (str(tmp_path), "static")
    assert load(build_parser().parse_args(["train", "--config", str(path)])).checkpoint.resume is False


def test_cluster_default_toml_spells_out_the_dataclass_defaults():
    from cluster.config import TrainConfig

    assert build_config(read_file(DEFAULT_CONFIG)).to_dict() == TrainConfig().to_dict()


def test_cluster_engine_and_optimizer_keys_reach_the_workers():
    config = build_config({}, {"engine.dtype": "float64", "engine.pin_cpus": True, "optimizer.max_grad_norm": 0.0,
                               "optimizer.lr": 0.01, "engine.collective_timeout_s": 9.0, "model.rope_theta": 500.0})
    w = prepare(config).worker_config
    assert (w.dtype, w.pin_cpus, w.max_grad_norm, w.lr, w.collective_timeout_s) == ("float64", True, None, 0.01, 9.0)
    assert w.model.rope_theta == 500.0 and w.model.init_seed == config.train.seed
    assert build_config({}).optimizer.clip_norm == prepare(build_config({})).worker_config.max_grad_norm == 1.0
