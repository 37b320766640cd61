"""A real Prometheus scrapes a short real `hsp train` run; every dashboard panel's query
must return data through Prometheus's HTTP API, and every alert rule must evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from deploy_testlib import (DASHBOARD, DEPLOY, ROOT, PrometheusServer, dashboard_queries, free_port,
                            grafana_expand, require_tool)

PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
STEPS = 30
SCRAPE_INTERVAL = "500ms"


def start_run(argv: list[str], log_path) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "cluster.cli", *argv], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait(proc: subprocess.Popen, log_path, timeout_s: float):
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"run did not finish in {timeout_s} s:\n{log_path.read_text()[-3000:]}")
    assert rc == 0, log_path.read_text()[-3000:]


def last_sample_time(prom: PrometheusServer, series: str) -> float:
    """Timestamp of the newest scraped sample of `series` (the run has ended since, so
    instant queries at `now` would only see stale series)."""
    body = prom.api("query", query=f"{series}[10m]")
    assert body["status"] == "success" and body["data"]["result"], body
    return max(float(v[0]) for r in body["data"]["result"] for v in r["values"])


@pytest.mark.slow
def test_deploy_prometheus_scrapes_hsp_train_and_every_panel_has_data(tmp_path):
    require_tool("prometheus")
    train_port = free_port()
    # The shipped local config, pointed at this run's port and scraping fast.
    config = yaml.safe_load(PROM_CONFIG.read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, evaluation_interval="1s")
    config["rule_files"] = [str(PROM_CONFIG.parent / f) for f in config["rule_files"]]
    (hsp_job,) = [j for j in config["scrape_configs"] if j["job_name"] == "hsp"]
    train_target = next(t for t in hsp_job["static_configs"] if t["labels"]["run"] == "train")
    train_target["targets"] = [f"127.0.0.1:{train_port}"]
    hsp_job["static_configs"] = [train_target]
    prom = PrometheusServer(config, tmp_path / "prom")
    try:
        log = tmp_path / "train.log"
        train = start_run(["train", "--config", "/tmp/deploy_try.yaml", "--steps", str(STEPS), "--num-workers", "2",
                           "--metrics-port", str(train_port), "--run-dir", str(tmp_path / "run"),
                           "--checkpoint-every", "0", "--no-progress"], log)
        wait(train, log, timeout_s=240)
        summary = json.loads((tmp_path / "run" / "summary.json").read_text()) \
            if (tmp_path / "run" / "summary.json").exists() else {}

        at = last_sample_time(prom, "hsp_steps_total")
        steps = prom.api("query", query='hsp_steps_total{job="hsp"}', time=at)["data"]["result"]
        assert float(steps[0]["value"][1]) >= STEPS - 2, (steps, summary)

        empty = []
        for title, expr in dashboard_queries(json.loads(DASHBOARD.read_text())):
            body = prom.api("query", query=grafana_expand(expr), time=at)
            assert body["status"] == "success", (title, expr, body.get("error"))
            result = body["data"]["result"]
            if not result or all(r["value"][1] == "NaN" for r in result):
                empty.append((title, expr))
        assert not empty, f"panels without data: {empty}"

        def value(expr):
            return [float(r["value"][1]) for r in prom.api("query", query=expr, time=at)["data"]["result"]]

        assert min(value("rate(hsp_tokens_total[1m])")) > 0
        assert min(value("hsp_step_measured_seconds")) > 0 and min(value("hsp_loss")) > 0
        assert sum(value("hsp_sp_groups")) > 0
        assert len(value("hsp_peak_memory_bytes > 0")) == 2  # one series per rank

        rules = prom.api("rules")["data"]["groups"]
        evaluated = [r for g in rules for r in g["rules"]]
        assert len(evaluated) == 4 and all(r["health"] == "ok" for r in evaluated), evaluated
    finally:
        prom.close()
