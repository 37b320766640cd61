"""A real Prometheus, configured from deploy/prometheus/prometheus.yml, scrapes a short
real `hsp train` run and a short real `hsp rl` run; every dashboard panel's query must
return data through Prometheus's HTTP API, and every alert rule must evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from deploy_testlib import (DASHBOARD, DEPLOY, ROOT, PrometheusServer,
                            dashboard_queries, free_port, grafana_expand, require_tool)

PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
SCRAPE_INTERVAL = "250ms"
TRAIN_STEPS = 30
TRAIN = ["train", "--steps", str(TRAIN_STEPS), "--num-workers", "2", "--checkpoint-every", "0", "--no-progress"]
# A tiny SFT warm-up, then enough RL steps (15-100 ms each here) for several scrapes.
RL = ["rl", "--steps", "120", "--sft-steps", "2", "--mc-samples", "2", "--group-size", "2",
      "--prompts-per-step", "1", "--train-items", "20", "--test-items", "4", "--eval-every", "1000",
      "--num-threads", "1", "--no-progress"]
RL_PANEL = "RL reward"


def start_run(argv: list[str], log_path) -> subprocess.Popen:
    with open(log_path, "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "cluster.cli", *argv], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait(proc: subprocess.Popen, log_path, timeout_s: float):
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{log_path.name}: run did not finish in {timeout_s} s:\n{log_path.read_text()[-3000:]}")
    assert rc == 0, f"{log_path.name}:\n{log_path.read_text()[-3000:]}"


def scrape_config(train_port: int, rl_port: int) -> dict:
    """The shipped local config, pointed at this test's ports and scraping fast."""
    config = yaml.safe_load(PROM_CONFIG.read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, evaluation_interval="1s")
    config["rule_files"] = [str(PROM_CONFIG.parent / f) for f in config["rule_files"]]
    (hsp_job,) = [j for j in config["scrape_configs"] if j["job_name"] == "hsp"]
    ports = {"train": train_port, "rl": rl_port}
    assert {t["labels"]["run"] for t in hsp_job["static_configs"]} == set(ports)
    for target in hsp_job["static_configs"]:
        target["targets"] = [f"127.0.0.1:{ports[target['labels']['run']]}"]
    return config


def hsp_targets(prom: PrometheusServer) -> dict[str, dict]:
    targets = prom.api("targets")["data"]["activeTargets"]
    return {t["labels"]["run"]: t for t in targets if "run" in t["labels"]}


def wait_for_targets(prom: PrometheusServer, runs: set[str], timeout_s: float = 30.0) -> None:
    """Prometheus hands discovered targets to its scrape loops in batches (every ~5 s),
    so a run shorter than that could end before its first scrape: wait for them first."""
    deadline = time.monotonic() + timeout_s
    while set(hsp_targets(prom)) < runs:
        assert time.monotonic() < deadline, f"Prometheus did not load targets {runs}: {hsp_targets(prom)}"
        time.sleep(0.2)


def wait_scraped(prom: PrometheusServer, runs: dict[str, subprocess.Popen]) -> dict[str, str]:
    """Poll until every run's target has been scraped ('up'); returns the last scrape
    error of each run that ended before that happened."""
    pending, errors = set(runs), {}
    while pending:
        targets = hsp_targets(prom)
        for name in list(pending):
            if targets[name]["health"] == "up":
                pending.discard(name)
            elif runs[name].poll() is not None:
                errors[name] = targets[name].get("lastError") or "never scraped"
                pending.discard(name)
        time.sleep(0.1)
    return errors


def last_sample_time(prom: PrometheusServer, selector: str) -> float:
    """Time of the newest scraped sample of `selector`. The runs have ended, so instant
    queries at `now` would only see stale series: panels are evaluated at this time."""
    body = prom.api("query", query=f"{selector}[10m]")
    assert body["status"] == "success" and body["data"]["result"], (selector, body)
    return max(float(v[0]) for r in body["data"]["result"] for v in r["values"])


@pytest.mark.slow
def test_deploy_prometheus_scrapes_hsp_runs_and_every_panel_has_data(tmp_path):
    require_tool("prometheus")
    train_port, rl_port = free_port(), free_port()
    prom = PrometheusServer(scrape_config(train_port, rl_port), tmp_path / "prom")
    try:
        wait_for_targets(prom, {"train", "rl"})
        logs = {"train": tmp_path / "train.log", "rl": tmp_path / "rl.log"}
        runs = {
            "train": start_run(TRAIN + ["--metrics-port", str(train_port), "--run-dir", str(tmp_path / "train")], logs["train"]),
            "rl": start_run(RL + ["--metrics-port", str(rl_port), "--run-dir", str(tmp_path / "rl")], logs["rl"]),
        }
        errors = wait_scraped(prom, runs)
        for name, proc in runs.items():
            wait(proc, logs[name], timeout_s=300)
        assert not errors, f"runs ended before Prometheus scraped them: {errors}"

        at = last_sample_time(prom, 'hsp_steps_total{run="train"}')
        at_rl = last_sample_time(prom, 'hsp_rl_reward{run="rl"}')

        def query(expr: str, time: float) -> list[dict]:
            body = prom.api("query", query=expr, time=time)
            assert body["status"] == "success", (expr, body.get("error"))
            return [r for r in body["data"]["result"] if r["value"][1] != "NaN"]

        def values(expr: str, time: float = at) -> list[float]:
            return [float(r["value"][1]) for r in query(expr, time)]

        # The final scrape may precede the last step or two by a scrape interval.
        (train_steps,) = values('hsp_steps_total{run="train"}')
        assert TRAIN_STEPS - 2 <= train_steps <= TRAIN_STEPS

        empty = []
        for title, expr in dashboard_queries(json.loads(DASHBOARD.read_text())):
            if title == RL_PANEL:
                # Real RL data: the series scraped from `hsp rl`, not train's idle gauge.
                result = [r for r in query(grafana_expand(expr), at_rl) if r["metric"].get("run") == "rl"]
            else:
                result = query(grafana_expand(expr), at)
            if not result:
                empty.append((title, expr))
        assert not empty, f"panels without data: {empty}"

        assert min(values('rate(hsp_tokens_total{run="train"}[1m])')) > 0
        assert min(values('hsp_step_measured_seconds{run="train"}')) > 0
        assert min(values('hsp_loss{run="train"}')) > 0
        assert sum(values('hsp_sp_groups{run="train"}')) > 0
        assert len(values('hsp_peak_memory_bytes{run="train"} > 0')) == 2  # one series per rank
        # hsp rl had finished RL steps (its reward gauge was set, not just registered).
        (rl_steps,) = values('hsp_steps_total{run="rl"}', at_rl)
        assert rl_steps >= 1

        rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
        assert len(rules) == 4 and all(r["health"] == "ok" for r in rules), rules
    finally:
        prom.close()
