"""What the machine or cluster can hold, checked before anything slow, and worker counts
that used to fail late: 1 worker with the automatic memory budget, 3 workers (not a power
of two) planning with degree-2 groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cluster_testlib import tiny_config

from cluster.trainer import run_training

pytestmark = pytest.mark.timeout(300)


def test_cluster_cli_more_workers_than_this_machine_fail_before_ray_starts(tmp_path):
    """A fresh process (no Ray yet): refused by the pre-Ray check, exit 2, one line."""
    n = max(64, 2 * len(os.sched_getaffinity(0)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "train", "--num-workers", str(n), "--metrics-port", "0",
         "--run-dir", str(tmp_path / "run"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr  # nothing else ran
    assert proc.stderr.startswith(f"hsp train: error: cluster.num_workers={n} needs {n} x 1 CPU = {n} CPUs")
    assert "but this machine has" in proc.stderr and "lower --num-workers to " in proc.stderr
    assert not (tmp_path / "run").exists()


def test_cluster_more_workers_than_the_joined_ray_cluster_holds(ray_session, tmp_path):
    """Checked right after connecting, before any actor is placed (ray_session: 4 CPUs)."""
    with pytest.raises(ValueError) as err:
        run_training(tiny_config(tmp_path, **{"cluster.num_workers": 5}), progress=False)
    message = str(err.value)
    assert "cluster.num_workers=5 needs 5 x 1 CPU = 5 CPUs" in message, message
    assert "the Ray cluster this process joined has 4 CPUs" in message and "lower --num-workers to 4" in message
    assert "--cluster.cpus_per_worker 0.8" in message and not (tmp_path / "summary.json").exists()


def test_cluster_one_worker_trains_with_the_automatic_memory_budget(ray_session, tmp_path):
    config = tiny_config(tmp_path, **{"cluster.num_workers": 1, "train.steps": 2, "cluster.memory_budget_bytes": 0})
    summary = run_training(config, progress=False)
    assert summary["steps"] == 2 and summary["capacity_tokens_per_rank"] >= config.model.max_seq_len
    assert summary["placement"]["ranks_per_node"] == 1


def test_cluster_three_workers_plan_with_degree_2_groups(ray_session, tmp_path):
    """3 ranks on one node: the ClusterSpec gets ranks_per_node 4 (no node boundary to
    respect), so the planner may use degree 2 and the longest samples fit."""
    summary = run_training(tiny_config(tmp_path, **{"cluster.num_workers": 3, "train.steps": 2}), progress=False)
    assert summary["steps"] == 2
    assert summary["placement"]["ranks_per_node"] == 4 and summary["placement"]["node_counts"] == [3]
    rows = [json.loads(line) for line in open(tmp_path / "history.jsonl")]
    assert any(int(degree) == 2 for row in rows for degree in row["sp_groups"]), rows
