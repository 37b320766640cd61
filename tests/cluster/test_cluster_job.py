"""`ray job submit -- hsp train --address auto` against a head this test starts on
loopback. The head is its own Ray instance (own ports, own temp dir) and is stopped by
signalling the `ray start --block` process this test launched, never by `ray stop`,
which would also kill the shared test session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from cluster_testlib import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

RAY = str(Path(sys.executable).parent / "ray")


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2).read()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the dashboard at {url} did not come up in {timeout_s:.0f}s")


def _stop(head: subprocess.Popen) -> None:
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # leftovers of the session this test started
    except ProcessLookupError:
        pass


def test_cluster_ray_job_submit_runs_hsp_train(tmp_path):
    gcs, dash, client, agent = (free_port() for _ in range(4))
    temp_dir = tempfile.mkdtemp(prefix="hspjob", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [
            RAY, "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
            "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{dash}"
        _wait_for_dashboard(url, head, timeout_s=120)
        config = tmp_path / "job.toml"
        config.write_text("[data]\nnum_seqs_per_step = 16\n")
        run_dir = tmp_path / "run"
        proc = subprocess.run(
            [
                RAY, "job", "submit", "--address", url, "--",
                sys.executable, "-m", "cluster.cli", "train", "--address", "auto", "--config", str(config),
                "--steps", "2", "--metrics-port", "0", "--run-dir", str(run_dir), "--no-progress",
            ],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "succeeded" in proc.stdout
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["num_workers"] == 2
    finally:
        _stop(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
