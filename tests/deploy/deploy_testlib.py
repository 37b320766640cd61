"""Helpers for the deploy tests: chart rendering, strict CRD schemas, tools, Prometheus.

Everything here drives the real tools (Helm's Go library through helm-python-sdk,
kubernetes-validate's schemas, KubeRay's CRD schemas, promtool, a Prometheus server).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.shared_data import KUBERAY_CRDS, in_ci, require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "hsp"
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "hsp-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "hsp-dashboard.json"
KUBE_VERSION = "1.30.0"

# Grafana variables in dashboard queries, replaced by what Grafana would send.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s", "$job": ".+"}


def require_tool(name: str) -> str:
    """Path of a command-line tool; under CI a missing tool fails the test, else skips."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not found: install Debian's 'prometheus' package (`make tools` as root)"
    if in_ci():
        pytest.fail(msg + " -- CI must run the deploy tests, not skip them")
    pytest.skip(msg)


# ---------------------------------------------------------------- Helm


def render(values: dict | None = None, name: str = "demo", namespace: str = "ml") -> list[dict]:
    """Render the chart with Helm's engine; returns the Kubernetes objects (NOTES excluded)."""
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def render_notes(values: dict | None = None) -> str:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="demo", namespace="ml", is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


# ---------------------------------------------------------------- KubeRay CRDs


def _strict(node, path=""):
    """Make an openAPIV3Schema reject unknown fields, as the API server's pruning would.

    Objects with `properties` and no `additionalProperties` get `additionalProperties:
    false`; `x-kubernetes-preserve-unknown-fields` subtrees are left open.
    """
    if isinstance(node, list):
        return [_strict(n, path) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v, f"{path}/{k}") for k, v in node.items()}
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return out
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    """A strict validator for ray.io/v1 `kind` (RayJob or RayCluster)."""
    files = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
    path = require(KUBERAY_CRDS) / files[kind]
    if not path.exists():
        pytest.fail(f"KubeRay CRD {path} missing from the CRD folder ({KUBERAY_CRDS[0]})")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    # The API server validates the root ObjectMeta itself; the CRD says only `object`.
    schema["properties"]["metadata"] = _object_meta_schema()
    schema["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    return jsonschema.Draft7Validator(schema)


def _object_meta_schema() -> dict:
    """ObjectMeta from kubernetes-validate's strict schemas (self-contained)."""
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    strict_dir = next(p for p in sorted(base.iterdir()) if p.name == f"v{KUBE_VERSION}-local-strict")
    defs = json.loads((strict_dir / "_definitions.json").read_text())["$defs"]
    meta = copy.deepcopy(defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"])
    # Inline the few references ObjectMeta makes (managedFields, ownerReferences).
    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(copy.deepcopy(defs[node["$ref"].split("/")[-1]]))
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(n) for n in node]
        return node
    return inline(meta)


def crd_errors(obj: dict) -> list[str]:
    validator = crd_validator(obj["kind"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def k8s_errors(obj: dict) -> list[str]:
    """Strict validation of a core object with kubernetes-validate ([] when valid)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'/'.join(map(str, err.path))}: {err.message}"]
    return []


# ---------------------------------------------------------------- Prometheus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """A real Prometheus server on loopback with its own config and temp storage."""

    def __init__(self, config: dict, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [require_tool("prometheus"), f"--config.file={config_path}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_ready(workdir)

    def _wait_ready(self, workdir: Path, timeout_s: float = 30.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready in 30 s")

    def api(self, endpoint: str, **params) -> dict:
        """GET /api/v1/<endpoint>; returns the JSON body (errors included, not raised)."""
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as err:
            return json.load(err)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows included."""
    out = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def iter_panels(dashboard: dict):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def grafana_expand(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr
