"""A real multi-node Ray cluster on this machine: `ray start --head` plus one
`ray start --address` per worker node, each a `--block` process with its own CPUs.

Isolated from the tests' shared `ray_session` (an embedded Ray started with
address="local", which never attaches to another cluster): its own ports, its own temp
dir (so its address file never becomes anyone's `address="auto"`), RAY_ADDRESS removed
from every child's environment. Like the Helm chart's head, the head has no CPUs, so
ranks only land on worker nodes. Stopped by signalling the processes this helper
started (never `ray stop`, which would kill every Ray on the machine), also when the
test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cluster_testlib import free_port

RAY = str(Path(sys.executable).parent / "ray")
STARTED = "Ray runtime started."
"""What `ray start` prints once its node has registered with the GCS."""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    # a raylet registering with the GCS on 2 busy cores can take longer than Ray's 10 s default
    env["RAY_raylet_start_wait_time_s"] = "120"
    return env


class RayCluster:
    """with RayCluster(log_dir, worker_cpus=(2, 2)) as cluster: ... cluster.address ..."""

    def __init__(self, log_dir: Path, *, worker_cpus: tuple[int, ...], dashboard: bool = False):
        self.log_dir, self.worker_cpus, self.dashboard = Path(log_dir), worker_cpus, dashboard
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_port = free_port() if dashboard else None
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}" if dashboard else None
        # short: Ray's socket paths have a length limit
        self.temp_dir = tempfile.mkdtemp(prefix="hspray", dir="/tmp")
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []
        self._logs = []

    def __enter__(self) -> "RayCluster":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        head = ["--head", f"--port={self.port}", "--num-cpus=0",
                f"--ray-client-server-port={free_port()}", "--disable-usage-stats"]
        if self.dashboard:
            head += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        else:
            head += ["--include-dashboard=false"]
        self._node("head", head)
        self._wait_started(timeout_s=180)
        for i, cpus in enumerate(self.worker_cpus):
            # one at a time, as ray.cluster_utils.Cluster does: raylets starting together on
            # one machine can miss their registration
            self._node(f"worker{i}", [f"--address={self.address}", f"--num-cpus={cpus}"])
            self._wait_started(timeout_s=180)
        if self.dashboard:
            self._wait_for_dashboard(timeout_s=120)

    def _node(self, name: str, args: list[str]) -> None:
        # every node picks its own free ports: several raylets share this machine
        common = ["--block", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
                  f"--dashboard-agent-listen-port={free_port()}", "--min-worker-port=0", "--max-worker-port=0"]
        log = open(self.log_dir / f"ray-{name}.log", "w")
        self._logs.append(log)
        self.names.append(name)
        self.procs.append(subprocess.Popen([RAY, "start", *args, *common], env=child_env(), stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def _wait_started(self, timeout_s: float) -> None:
        """Until every node started so far has registered."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_running()
            if all(STARTED in (self.log_dir / f"ray-{name}.log").read_text() for name in self.names):
                return
            time.sleep(0.5)
        raise TimeoutError(f"Ray nodes {self.names} did not start within {timeout_s:.0f}s; see {self.log_dir}/ray-*.log")

    def _wait_for_dashboard(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_running()
            try:
                urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2).read()
                return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"the dashboard at {self.dashboard_url} did not come up in {timeout_s:.0f}s")

    def _check_running(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"`ray start` exited with {proc.returncode}; see {self.log_dir}/ray-*.log")

    def stop(self) -> None:
        """Workers first, then the head: SIGTERM (`ray start --block` stops its node's
        processes on it), then SIGKILL to the whole session of each."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs = []
        for log in self._logs:
            log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
