"""The Helm chart, linted and rendered by Helm's own engine, validated by real schemas."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from deploy_testlib import (CHART, DASHBOARD, RULES, by_kind, crd_errors, k8s_errors, render,
                            render_notes)

MONITORING_ON = {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                 "dashboard": {"enabled": True}}
GPU_VALUES = yaml.safe_load((CHART / "values-gpu.yaml").read_text())

COMBOS = {
    "job-default": {},
    "cluster-default": {"mode": "cluster"},
    "job-monitoring": {"monitoring": MONITORING_ON},
    "cluster-monitoring": {"mode": "cluster", "monitoring": MONITORING_ON},
    "job-gpu": GPU_VALUES,
    "cluster-mixed-groups": {
        "mode": "cluster",
        "serviceAccount": {"create": False, "name": "ml-runner"},
        "imagePullSecrets": ["regcred"],
        "runsVolume": {"existingClaim": "hsp-runs"},
        "train": {"resume": True, "numWorkers": 5, "extraArgs": ["--strategy", "fast"]},
        "head": {"nodeSelector": {"pool": "system"}, "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]},
        "workerGroups": [
            {"name": "cpu", "replicas": 1, "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}},
            {"name": "gpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 4, "gpusPerWorker": 4,
             "resources": {"limits": {"cpu": "8", "memory": "64Gi"}},
             "nodeSelector": {"gpu": "a100"}},
        ],
        "monitoring": {**MONITORING_ON, "labels": {"release": "kube-prometheus-stack"},
                       "dashboard": {"enabled": True, "namespace": "grafana"}},
        "networkPolicy": {"enabled": True},
    },
}


@pytest.fixture(scope="module", params=sorted(COMBOS))
def rendered(request):
    return request.param, COMBOS[request.param], render(COMBOS[request.param])


def ray_objects(objects):
    return by_kind(objects, "RayJob") + by_kind(objects, "RayCluster")


def cluster_spec(obj):
    return obj["spec"]["rayClusterSpec"] if obj["kind"] == "RayJob" else obj["spec"]


def pod_templates(obj):
    spec = cluster_spec(obj)
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_deploy_chart_lints_clean(combo):
    import helm_python as helm

    report = helm.lint(CHART, COMBOS[combo], strict=True, namespace="ml", kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_deploy_chart_mode_selects_ray_kind(rendered):
    combo, values, objects = rendered
    (ray,) = ray_objects(objects)
    assert ray["apiVersion"] == "ray.io/v1"
    assert ray["kind"] == {"job": "RayJob", "cluster": "RayCluster"}[values.get("mode", "job")]


def test_deploy_chart_ray_objects_validate_strictly_against_kuberay_crds(rendered):
    _, _, objects = rendered
    for obj in ray_objects(objects):
        assert crd_errors(obj) == [], obj["kind"]


def test_deploy_chart_core_objects_validate_against_kubernetes_schemas(rendered):
    _, _, objects = rendered
    core = [o for o in objects if o["apiVersion"] in ("v1", "apps/v1", "networking.k8s.io/v1")]
    assert core, "expected at least the run-config ConfigMap"
    for obj in core:
        assert k8s_errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_deploy_crd_validator_rejects_unknown_and_mistyped_fields():
    # Guards the strictness of the validator itself: without it every check above passes.
    (job,) = by_kind(render(), "RayJob")
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParamz"] = {}
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "x"
    job["spec"]["backoffLimit"] = "zero"
    errors = "\n".join(crd_errors(job))
    assert "rayStartParamz" in errors and "imagePullPolcy" in errors and "'zero'" in errors


def test_deploy_chart_security_defaults(rendered):
    combo, _, objects = rendered
    for obj in ray_objects(objects):
        assert cluster_spec(obj)["headGroupSpec"]["serviceType"] == "ClusterIP"
        for template in pod_templates(obj):
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["automountServiceAccountToken"] is False
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
    kinds = {o["kind"] for o in objects}
    # Nothing that exposes ports beyond the cluster or carries credentials.
    assert not kinds & {"Secret", "Ingress", "Service", "Route"}, kinds


def test_deploy_chart_values_hold_no_secrets():
    # Credentials never live in values: only names of Secrets created elsewhere.
    allowed = {"automountToken", "imagePullSecrets"}

    def keys(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k
                yield from keys(v)
        elif isinstance(node, list):
            for v in node:
                yield from keys(v)

    for path in (CHART / "values.yaml", CHART / "values-gpu.yaml"):
        for key in keys(yaml.safe_load(path.read_text())):
            assert key in allowed or not re.search(r"pass|secret|token|credential|apikey", key, re.I), (path, key)


def test_deploy_chart_entrypoint_is_a_valid_hsp_train_command(rendered):
    combo, values, objects = rendered
    from cluster.cli import build_parser

    notes = render_notes(values)
    if values.get("mode") == "cluster":
        command = next(line.split(" -- ", 1)[1] for line in notes.splitlines() if "ray job submit" in line)
    else:
        command = by_kind(objects, "RayJob")[0]["spec"]["entrypoint"]
        assert command in notes
    argv = shlex.split(command)
    assert argv[0] == "hsp"
    args = build_parser().parse_args(argv[1:])  # SystemExit on a flag hsp train lacks
    spec = cluster_spec(ray_objects(objects)[0])
    expected = values.get("train", {}).get("numWorkers") or sum(
        g["replicas"] * max(int(g["rayStartParams"].get("num-gpus", "0")), 1) for g in spec["workerGroupSpecs"])
    assert args.num_workers == expected
    assert args.config == "/etc/hsp/config.yaml" and args.address == "auto"
    assert args.metrics_port == 9400 and args.metrics_host == "0.0.0.0"


def test_deploy_chart_run_config_loads_with_hsp_train_loader(rendered, tmp_path):
    # The ConfigMap + entrypoint flags, read exactly as `hsp train` reads them in the pod.
    combo, values, objects = rendered
    from cluster.cli import build_parser
    from cluster.commands.train import load

    (cm,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(cm["data"]["config.yaml"])
    (ray,) = ray_objects(objects)
    command = ray["spec"]["entrypoint"] if ray["kind"] == "RayJob" else shlex.join(
        ["hsp", "train", "--config", "/etc/hsp/config.yaml"])
    args = build_parser().parse_args(shlex.split(command)[1:])
    args.config = str(config_file)
    config = load(args)  # ValueError naming the key on any drift
    assert config.metrics.host == ("0.0.0.0" if ray["kind"] == "RayJob" else "127.0.0.1")
    gpus = [int(g["rayStartParams"].get("num-gpus", "0")) for g in cluster_spec(ray)["workerGroupSpecs"]]
    if all(gpus):
        assert config.cluster.gpus_per_worker == 1.0 and config.cluster.backend == "nccl"


def test_deploy_chart_config_map_carries_the_run_config():
    objects = render({"train": {"config": {"model": {"num_layers": 4}, "optimizer": {"lr": 0.001}}}})
    (cm,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    config = yaml.safe_load(cm["data"]["config.yaml"])
    # Helm merges user values into the defaults key by key.
    assert config["model"]["num_layers"] == 4 and config["model"]["hidden_size"] == 64
    assert config["optimizer"]["lr"] == 0.001
    (job,) = by_kind(objects, "RayJob")
    for template in pod_templates(job):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["hsp-config"]["configMap"]["name"] == cm["metadata"]["name"]
        mounts = {m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert "/etc/hsp" in mounts


def test_deploy_chart_network_policy_admits_namespace_and_monitoring_only():
    assert not by_kind(render(), "NetworkPolicy")
    objects = render({"mode": "cluster", "networkPolicy": {"enabled": True}})
    (policy,) = by_kind(objects, "NetworkPolicy")
    (cluster,) = by_kind(objects, "RayCluster")
    for template in pod_templates(cluster):
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    same_ns, monitoring = policy["spec"]["ingress"]
    assert same_ns == {"from": [{"podSelector": {}}]}
    assert monitoring["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert {p["port"] for p in monitoring["ports"]} == {8080, 9400}


def test_deploy_chart_gpu_group_requests_gpus_and_tolerates_the_taint():
    (job,) = by_kind(render(GPU_VALUES), "RayJob")
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert group["rayStartParams"]["num-gpus"] == "8"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in group["template"]["spec"]["tolerations"]
    assert group["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_deploy_chart_monitoring_objects_follow_switches():
    off = {o["kind"] for o in render()}
    assert not off & {"PodMonitor", "PrometheusRule"}
    assert not [o for o in render() if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]]
    on = render({"monitoring": MONITORING_ON})
    assert {"PodMonitor", "PrometheusRule"} <= {o["kind"] for o in on}


def test_deploy_chart_podmonitor_matches_ray_pods_and_ports():
    objects = render({"mode": "cluster", "monitoring": MONITORING_ON})
    (pm,) = by_kind(objects, "PodMonitor")
    (cluster,) = by_kind(objects, "RayCluster")
    selector = pm["spec"]["selector"]["matchLabels"]
    templates = pod_templates(cluster)
    for template in templates:
        assert selector.items() <= template["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for t in templates for c in t["spec"]["containers"] for p in c["ports"]}
    endpoints = {e["port"] for e in pm["spec"]["podMetricsEndpoints"]}
    assert endpoints == {"metrics", "hsp-metrics"} and endpoints <= ports.keys()
    assert ports["hsp-metrics"] == 9400 and ports["metrics"] == 8080
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["metrics-export-port"] == "8080"
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert group["rayStartParams"]["metrics-export-port"] == "8080"


def test_deploy_chart_ships_the_same_rules_and_dashboard_as_deploy():
    # One source of truth: the chart's files are byte-identical copies of deploy/'s.
    for src, copy in ((RULES, CHART / "files" / "hsp-rules.yml"),
                      (DASHBOARD, CHART / "files" / "hsp-dashboard.json")):
        assert copy.read_bytes() == src.read_bytes(), f"run: cp {src.relative_to(CHART.parents[1])} {copy.relative_to(CHART.parents[1])}"
    objects = render({"monitoring": {**MONITORING_ON, "labels": {"release": "kps"}}})
    (rule,) = by_kind(objects, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kps"
    (dash,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    import json
    assert json.loads(dash["data"]["hsp.json"]) == json.loads(DASHBOARD.read_text())


INVALID = {
    "unknown-mode": {"mode": "serve"},
    "unknown-top-level-key": {"replicaCount": 3},
    "bad-pull-policy": {"image": {"pullPolicy": "Sometimes"}},
    "privileged-metrics-port": {"train": {"metricsPort": 80}},
    "port-out-of-range": {"monitoring": {"rayMetricsPort": 70000}},
    "negative-replicas": {"workerGroups": [{"name": "cpu", "replicas": -1}]},
    "fractional-gpus": {"workerGroups": [{"name": "gpu", "replicas": 1, "gpusPerWorker": 0.5}]},
    "bad-group-name": {"workerGroups": [{"name": "CPU_Group", "replicas": 1}]},
    "no-worker-groups": {"workerGroups": []},
    "steps-as-string": {"train": {"steps": "many"}},
    "relative-run-dir": {"train": {"runDir": "runs"}},
    "bad-service-type": {"head": {"serviceType": "ExternalName"}},
    "pull-secret-as-credentials": {"imagePullSecrets": [{"username": "u", "password": "p"}]},
    "bad-resource-quantity": {"head": {"resources": {"limits": {"cpu": "two"}}}},
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_deploy_chart_schema_rejects_invalid_values(case):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError, match="schema"):
        render(INVALID[case])


def test_deploy_chart_packaged_archive_renders_the_same(tmp_path):
    # `helm package` output is what gets published: the rules/dashboard files must travel.
    import helm_python as helm

    archive = helm.package(CHART, destination=tmp_path)
    values = {"monitoring": MONITORING_ON}
    with helm.Chart.load(archive) as chart:
        packaged = chart.render(values, name="demo", namespace="ml")
    with helm.Chart.load(CHART) as chart:
        unpacked = chart.render(values, name="demo", namespace="ml")
    assert packaged == unpacked
    assert "HspTrainingStalled" in packaged["hsp/templates/prometheusrule.yaml"]
