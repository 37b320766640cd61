"""Series names in rules, dashboard, chart and docs match what `hsp train` exports.

`cluster.metrics.SERIES` is the single source of truth; the exported names are taken
from a real `Metrics` registry rendered in Prometheus's exposition format, so histogram
(`_bucket`/`_sum`/`_count`) and counter suffixes are exactly what Prometheus scrapes.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from deploy_testlib import CHART, DASHBOARD, DEPLOY, ROOT, RULES, render

NAME = re.compile(r"\bhsp_[a-z0-9_]*[a-z0-9]")


def exported_names() -> set[str]:
    from cluster.metrics import SERIES, Metrics

    metrics = Metrics()
    for s in SERIES:  # labelled series only appear once a child exists
        if s.labels:
            metrics[s.name].labels(**{label: "x" for label in s.labels})
    names = set()
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        names |= {sample.name for sample in family.samples}
    return {n for n in names if not n.endswith("_created")}


def series_names() -> set[str]:
    from cluster.metrics import SERIES

    return {s.name for s in SERIES}


def used_in(text: str) -> set[str]:
    return set(NAME.findall(text))


def test_deploy_every_series_is_exported_under_its_name():
    exported = exported_names()
    for name in series_names():
        assert name in exported or f"{name}_bucket" in exported, name


SOURCES = {
    "alert rules": lambda: RULES.read_text(),
    "rule unit tests": lambda: (DEPLOY / "prometheus" / "hsp-rules.test.yml").read_text(),
    "dashboard": lambda: DASHBOARD.read_text(),
    "chart templates and values": lambda: "\n".join(
        p.read_text() for p in sorted(CHART.rglob("*")) if p.is_file()),
    "rendered chart": lambda: str(render({"monitoring": {"podMonitor": {"enabled": True},
                                                         "prometheusRule": {"enabled": True},
                                                         "dashboard": {"enabled": True}}})),
    "deploy/README.md": lambda: (DEPLOY / "README.md").read_text(),
    "README.md": lambda: (ROOT / "README.md").read_text(),
    "docs": lambda: "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_deploy_series_names_used_are_exported(source):
    unknown = used_in(SOURCES[source]()) - exported_names() - series_names()
    assert not unknown, f"{source} uses series hsp train does not export: {sorted(unknown)}"


def test_deploy_dashboard_shows_every_series():
    used = used_in(DASHBOARD.read_text())
    missing = {n for n in series_names() if n not in used and f"{n}_bucket" not in used}
    assert not missing, f"series without a dashboard panel: {sorted(missing)}"


def test_deploy_docs_document_every_series():
    # docs/deploy.md's metrics table (section "Prometheus metrics") lists every series
    page = (ROOT / "docs" / "deploy.md").read_text()
    missing = sorted(n for n in series_names() if not re.search(rf"\b{n}\b", page))
    assert not missing, f"docs/deploy.md does not document {missing}: add them to its metrics table"
