"""Prometheus config and alert rules, checked by promtool (Debian's prometheus package)."""

from __future__ import annotations

import subprocess

import yaml

from deploy_testlib import DEPLOY, RULES, require_tool

PROM_DIR = DEPLOY / "prometheus"
ALERTS = {"HspTrainingStalled", "HspSolverSlowerThanStep", "HspWorkerRestarted", "HspPredictionDrift"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([require_tool("promtool"), *args], cwd=PROM_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_deploy_promtool_check_config():
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out.stdout and "1 rule files found" in out.stdout


def test_deploy_promtool_check_rules():
    out = promtool("check", "rules", RULES.name)
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_deploy_promtool_rule_unit_tests_pass():
    promtool("test", "rules", "hsp-rules.test.yml")


def test_deploy_rule_unit_tests_cover_each_alert_firing_and_quiet():
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts == ALERTS
    tests = yaml.safe_load((PROM_DIR / "hsp-rules.test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fired == ALERTS and quiet == ALERTS


def test_deploy_rule_unit_tests_can_fail(tmp_path):
    # A rule that never fires must make `promtool test rules` fail: the tests have teeth.
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = f"({rule['expr']}) and on() vector(0) > 1"
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules))
    (tmp_path / "hsp-rules.test.yml").write_text((PROM_DIR / "hsp-rules.test.yml").read_text())
    result = subprocess.run([require_tool("promtool"), "test", "rules", "hsp-rules.test.yml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    for alert in ALERTS:
        assert f"alertname: {alert}" in result.stdout + result.stderr
