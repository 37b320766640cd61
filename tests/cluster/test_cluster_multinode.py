"""`hsp train --address` across a real multi-node Ray cluster on this machine: a head
with no CPUs and two worker nodes of 2 CPUs each (tests/cluster/ray_cluster.py). The
placement group puts 2 ranks on each node, the ranks rendezvous across nodes, the plans
use the ranks per node of the real placement (2, where one node of 4 would give 4), and
SIGKILL of a rank on the second node recovers with every step finished exactly once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from cluster_testlib import free_port
from prometheus_client.parser import text_string_to_metric_families
from ray_cluster import RayCluster, child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STEPS = 10
GROUP_LINE = re.compile(r"worker group: (\d+) ranks on (\d+) node\(s\), ranks_per_node (\d+): (.*)")
NODE_PART = re.compile(r"node (\S+) \(\S+\) ranks (\d+)-(\d+) pids ([\d,]+)")


def _steps_done(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hsp_steps_total":
                return sample.value
    return 0.0


def _first_group(log_path, driver: subprocess.Popen, timeout_s: float) -> dict[int, tuple[str, int]]:
    """rank -> (node id prefix, pid) from the driver's first `worker group:` log line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = GROUP_LINE.search(log_path.read_text())
        if match:
            ranks = {}
            for node, first, last, pids in NODE_PART.findall(match.group(4)):
                for rank, pid in zip(range(int(first), int(last) + 1), pids.split(",")):
                    ranks[rank] = (node, int(pid))
            return ranks
        assert driver.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.5)
    raise TimeoutError(f"no worker group within {timeout_s:.0f}s:\n{log_path.read_text()[-3000:]}")


def _wait_for(predicate, driver, log_path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert driver.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)


def test_cluster_train_across_nodes_and_recover_a_killed_rank(tmp_path):
    with RayCluster(tmp_path, worker_cpus=(2, 2)) as cluster:
        port, run_dir, log_path = free_port(), tmp_path / "run", tmp_path / "driver.log"
        argv = [sys.executable, "-m", "cluster.cli", "train", "--address", cluster.address, "--num-workers", "4",
                "--steps", str(STEPS), "--checkpoint-every", "3", "--data.num_seqs_per_step", "16",
                "--metrics-port", str(port), "--run-dir", str(run_dir), "--no-progress"]
        with open(log_path, "w") as log:
            driver = subprocess.Popen(argv, env={**child_env(), "PYTHONUNBUFFERED": "1"}, stdout=log,
                                      stderr=subprocess.STDOUT)
        try:
            ranks = _first_group(log_path, driver, timeout_s=240)
            assert sorted(ranks) == [0, 1, 2, 3]
            assert len({node for node, _ in ranks.values()}) == 2  # the placement group used both nodes
            assert ranks[0][0] == ranks[1][0] != ranks[2][0] == ranks[3][0]  # numbered node by node
            _wait_for(lambda: _steps_done(port) >= 4, driver, log_path, timeout_s=240)  # past the step-3 checkpoint
            os.kill(ranks[2][1], signal.SIGKILL)  # a rank process of the second node
            assert driver.wait(timeout=300) == 0, log_path.read_text()[-3000:]
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    summary = json.loads((run_dir / "summary.json").read_text())
    placement = summary["placement"]
    assert placement["ranks_per_node"] == 2 and placement["node_counts"] == [2, 2]
    assert len(set(placement["node_ids"])) == 2
    (event,) = summary["recoveries"]
    assert (event["rank"], event["cause"]) == (2, "died"), event
    assert event["resumed_at_step"] % 3 == 0 and event["resumed_at_step"] < event["at_step"]
    rows = [json.loads(line) for line in open(run_dir / "history.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # none lost, none repeated
    assert summary["steps"] == STEPS and summary["worker_restarts"] == 1
