"""The Grafana dashboard: structure, and every query parsed by a real Prometheus."""

from __future__ import annotations

import json

from deploy_testlib import DASHBOARD, dashboard_queries, grafana_expand, iter_panels

# What the issue asks the dashboard to show, and a series each panel must query.
REQUIRED_PANELS = {
    "throughput": "hsp_tokens_total",
    "step time: predicted vs measured": "hsp_step_predicted_seconds",
    "solve time": "hsp_solve_seconds",
    "sp-degree mix": "hsp_sp_groups",
    "imbalance": "hsp_imbalance_ratio",
    "memory per rank": "hsp_peak_memory_bytes",
    "restarts": "hsp_worker_restarts_total",
    "loss": "hsp_loss",
    "rl reward": "hsp_rl_reward",
}


def load():
    return json.loads(DASHBOARD.read_text())


def test_deploy_dashboard_panel_ids_unique_and_layout_sane():
    panels = list(iter_panels(load()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))


def test_deploy_dashboard_datasources_use_the_template_variable():
    dash = load()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${datasource}"}
    assert variables["job"]["datasource"] == expected
    for p in iter_panels(dash):
        assert p["datasource"] == expected, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == expected, p["title"]


def test_deploy_dashboard_has_the_panels_the_issue_asks_for():
    panels = {p["title"].lower(): " ".join(t["expr"] for t in p["targets"]) for p in iter_panels(load())}
    for wanted, series in REQUIRED_PANELS.items():
        matches = [title for title in panels if wanted in title]
        assert matches, f"no panel titled like {wanted!r}: {sorted(panels)}"
        assert any(series in panels[t] for t in matches), (wanted, series)
    step = next(q for t, q in panels.items() if "predicted vs measured" in t)
    assert "hsp_step_measured_seconds" in step


def test_deploy_dashboard_every_query_parses_in_prometheus(prometheus_idle):
    queries = dashboard_queries(load())
    variable_query = load()["templating"]["list"][1]["definition"]
    assert variable_query.startswith("label_values(")
    for title, expr in queries:
        body = prometheus_idle.api("format_query", query=grafana_expand(expr))
        assert body["status"] == "success", (title, expr, body.get("error"))
        # And it evaluates (type errors such as rate() over a gauge vector show here).
        body = prometheus_idle.api("query", query=grafana_expand(expr))
        assert body["status"] == "success", (title, expr, body.get("error"))


def test_deploy_dashboard_parse_check_rejects_a_broken_query(prometheus_idle):
    body = prometheus_idle.api("format_query", query=grafana_expand("sum by (instance (rate(hsp_tokens_total[$__rate_interval]))"))
    assert body["status"] == "error"
