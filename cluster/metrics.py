"""Prometheus series exported by the `hsp train` / `hsp rl` driver.

`SERIES` is the single source of truth: the README table, the alert rules, the Grafana
dashboard and the Helm chart are checked against it by tests, so names cannot drift.
Base units in names (`_seconds`, `_bytes`, `_total` for counters) and low-cardinality
labels only (`sp_degree`, `rank`, `strategy`, `cause`), never per-sequence ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STEP_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class Series:
    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...] = ()


SERIES: tuple[Series, ...] = (
    Series("hsp_step_duration_seconds", "histogram", "Measured wall seconds of a training step (driver view)."),
    Series("hsp_steps_total", "counter", "Training steps finished, each counted once (re-runs: hsp_rerun_steps_total)."),
    Series("hsp_rerun_steps_total", "counter", "Steps run again after a recovery went back to the last checkpoint."),
    Series("hsp_solve_seconds", "gauge", "Planner seconds spent on the latest step's plan.", ("strategy",)),
    Series("hsp_step_predicted_seconds", "gauge", "Cost-model predicted seconds of the latest step."),
    Series("hsp_step_measured_seconds", "gauge", "Measured seconds of the latest step (slowest rank)."),
    Series("hsp_prediction_error_ratio", "gauge", "|predicted - measured| / measured for the latest step."),
    Series("hsp_tokens_total", "counter", "Tokens processed (forward+backward)."),
    Series("hsp_loss", "gauge", "Training loss of the latest step."),
    Series("hsp_sp_groups", "gauge", "SP groups of each degree in the latest step's plan (summed over micro-batches).", ("sp_degree",)),
    Series("hsp_imbalance_ratio", "gauge", "Slowest group / mean group measured seconds in the latest step."),
    Series("hsp_peak_memory_bytes", "gauge", "Peak memory of each rank in the latest step (RSS on CPU, allocated on CUDA).", ("rank",)),
    Series("hsp_worker_restarts_total", "counter", "Worker-group rebuilds after a failure."),
    Series("hsp_worker_failures_total", "counter",
           "Worker failures by why the blamed rank failed (died, raised, hung, behind, collective, timeout).",
           ("cause",)),
    Series("hsp_last_failed_rank", "gauge", "Rank blamed for the latest worker failure (-1: none yet)."),
    Series("hsp_planner_fallbacks_total", "counter", "Steps whose plan missed the deadline and used the fast fallback."),
    Series("hsp_last_step_timestamp_seconds", "gauge", "Unix time at which the latest step finished."),
    Series("hsp_rl_reward", "gauge", "Mean reward of the latest RL step (hsp rl)."),
)


@dataclass(kw_only=True)
class MetricsConfig:
    port: int = 9400
    """Prometheus /metrics port on the driver; 0 = off."""
    host: str = "127.0.0.1"
    """Address the metrics server binds (0.0.0.0 to expose it)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"metrics.port={self.port} is not a TCP port: use 1..65535, or 0 to turn metrics off")


class Metrics:
    """The driver's metric objects, registered on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._metrics = {}
        for s in SERIES:
            # prometheus_client appends _total to counters itself
            name = s.name[: -len("_total")] if s.kind == "counter" else s.name
            if s.kind == "counter":
                metric = Counter(name, s.help, s.labels, registry=self.registry)
            elif s.kind == "gauge":
                metric = Gauge(name, s.help, s.labels, registry=self.registry)
            else:
                metric = Histogram(name, s.help, s.labels, buckets=STEP_BUCKETS_S, registry=self.registry)
            self._metrics[s.name] = metric

    def __getitem__(self, name: str):
        return self._metrics[name]

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Serve /metrics on host:port; returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)

    def serve_config(self, config: MetricsConfig):
        """Serve as `config` says; returns the server (None when metrics are off). A port
        that cannot be bound is a user error naming the fix."""
        if config.port == 0:
            return None
        try:
            server, _thread = self.serve(config.port, config.host)
        except OSError as err:
            raise ValueError(
                f"cannot serve metrics on {config.host}:{config.port} ({err.strerror}); "
                "pass another --metrics-port, or --metrics-port 0 to turn metrics off"
            ) from None
        return server
