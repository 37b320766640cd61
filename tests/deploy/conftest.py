"""Fixtures for the deploy tests (chart, monitoring config, dashboard, image)."""

from __future__ import annotations

import pytest

from deploy_testlib import PrometheusServer


@pytest.fixture(scope="session")
def prometheus_idle(tmp_path_factory):
    """A real Prometheus server with nothing to scrape: parses and evaluates PromQL."""
    server = PrometheusServer({"global": {"scrape_interval": "15s"}, "scrape_configs": []},
                              tmp_path_factory.mktemp("prom-idle"))
    yield server
    server.close()
