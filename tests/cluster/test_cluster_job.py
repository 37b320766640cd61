"""`ray job submit -- hsp train --address auto` against a running head, as docs/deploy.md
tells users to: a head with the dashboard (the job server) and no CPUs, plus a worker
node with 2 CPUs (tests/cluster/ray_cluster.py), like the Helm chart's RayCluster. The
job's exit status, its status and its logs are checked for a run that succeeds and for
one that fails (a group the cluster cannot hold: one line, exit 2, no traceback)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from ray_cluster import RAY, RayCluster, child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

JOB_ID = re.compile(r"Job '(raysubmit_\w+)'")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with RayCluster(tmp_path_factory.mktemp("jobcluster"), worker_cpus=(2,), dashboard=True) as running:
        yield running


def _ray(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=child_env(), capture_output=True, text=True, timeout=timeout_s)


def _submit(cluster: RayCluster, *train_args: str) -> tuple[subprocess.CompletedProcess, str]:
    """`ray job submit` (waits and tails the logs) of `hsp train --address auto ...`."""
    proc = _ray("job", "submit", "--address", cluster.dashboard_url, "--",
                sys.executable, "-m", "cluster.cli", "train", "--address", "auto", "--metrics-port", "0",
                "--no-progress", *train_args)
    match = JOB_ID.search(proc.stdout + proc.stderr)
    assert match, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, match.group(1)


def _status_and_logs(cluster: RayCluster, job_id: str) -> tuple[str, str]:
    status = _ray("job", "status", "--address", cluster.dashboard_url, job_id, timeout_s=60)
    logs = _ray("job", "logs", "--address", cluster.dashboard_url, job_id, timeout_s=60)
    assert logs.returncode == 0, logs.stderr
    return status.stdout + status.stderr, logs.stdout


def test_cluster_ray_job_submit_runs_hsp_train(cluster, tmp_path):
    config = tmp_path / "job.toml"
    config.write_text("[data]\nnum_seqs_per_step = 16\n")
    run_dir = tmp_path / "run"
    proc, job_id = _submit(cluster, "--config", str(config), "--steps", "2", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Job '{job_id}' succeeded" in proc.stdout + proc.stderr
    status, logs = _status_and_logs(cluster, job_id)
    assert f"Job '{job_id}' succeeded" in status, status
    # the job's own output: where it ran and the summary table
    assert "worker group: 2 ranks on 1 node(s)" in logs and "loss (first -> last)" in logs, logs[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["num_workers"] == 2


def test_cluster_ray_job_of_a_group_the_cluster_cannot_hold_fails_in_one_line(cluster, tmp_path):
    proc, job_id = _submit(cluster, "--num-workers", "64", "--steps", "2", "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # `ray job submit` of a failed job
    assert f"Job '{job_id}' failed" in proc.stdout + proc.stderr
    status, logs = _status_and_logs(cluster, job_id)
    assert f"Job '{job_id}' failed" in status and "failed with exit code 2" in status, status
    (error,) = [line for line in logs.splitlines() if line.startswith("hsp train: error: ")]
    assert "cluster.num_workers=64 needs 64 x 1 CPU = 64 CPUs" in error and "has 2 CPUs" in error, error
    assert "lower --num-workers to 2" in error and "add nodes" in error, error
    assert "Traceback" not in logs and "worker group:" not in logs, logs[-3000:]  # refused before placing actors
    assert not (tmp_path / "run" / "summary.json").exists()
