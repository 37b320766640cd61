"""The Dockerfile (parsed: no Docker engine here) and the Ray job examples."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import tomllib

import yaml

from deploy_testlib import CHART, DEPLOY, ROOT, crd_errors, k8s_errors

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def instructions(path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        pending += " " + line.rstrip("\\").strip() if pending else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    return out


def test_deploy_dockerfile_structure():
    ins = instructions(DOCKERFILE)
    known = {"ARG", "FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "EXPOSE", "CMD", "LABEL"}
    assert {i for i, _ in ins} <= known
    names = [i for i, _ in ins]
    assert names[0] == "ARG" and ins[0][1].startswith("BASE=python:3.11"), "CPU python base by default"
    assert ins[names.index("FROM")][1] == "${BASE}", "the base must be selectable (--build-arg BASE=)"
    runs = [a for i, a in ins if i == "RUN"]
    torch_at = next(k for k, a in enumerate(runs) if "torch==${TORCH_VERSION}" in a)
    hsp_at = next(k for k, a in enumerate(runs) if re.search(r"pip install \.(\s|$)", a))
    assert torch_at < hsp_at, "torch must be installed (pinned, CPU index) before hsp"
    args = dict(a.split("=", 1) for i, a in ins if i == "ARG")
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    import torch
    assert args["TORCH_VERSION"] == torch.__version__.split("+")[0] == "2.13.0"
    # Non-root at runtime, matching the chart's podSecurityContext.
    user_at = max(k for k, (i, _) in enumerate(ins) if i == "USER")
    assert ins[user_at][1] == "1000:1000" and all(i != "RUN" for i, _ in ins[user_at:])
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart_values["podSecurityContext"]["runAsUser"] == 1000
    exposed = {int(p) for i, a in ins if i == "EXPOSE" for p in a.split()}
    assert exposed == {chart_values["train"]["metricsPort"], chart_values["monitoring"]["rayMetricsPort"]}


def test_deploy_dockerfile_copies_exist_and_survive_the_dockerignore():
    ignore = [l.strip() for l in (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]

    def included(rel: str) -> bool:
        keep = True
        for pattern in ignore:  # last match wins, as in Docker
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(rel, pat) or rel.startswith(pat + "/") or fnmatch.fnmatch(rel, pat.replace("**/", "*/")):
                keep = negate
        return keep

    for i, a in instructions(DOCKERFILE):
        if i == "COPY":
            *sources, _dest = a.split()
            for src in sources:
                assert (ROOT / src).exists(), src
                assert included(src), f"{src} is excluded by Dockerfile.dockerignore"
    assert not included(".venv") and not included("runs")


def test_deploy_image_packages_every_file_hsp_train_reads():
    # `pip install .` (not editable) only ships package data matching pyproject's globs.
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, globs in data.items():
        base = ROOT / package
        for sub in ("configs", "presets", "data"):
            for path in (base / sub).glob("*") if (base / sub).is_dir() else []:
                rel = str(path.relative_to(base))
                assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{package}/{rel} would be missing from the image"


def hsp_command_from(text: str) -> list[str]:
    argv = shlex.split(text)
    return argv[argv.index("hsp") + 1:]


def test_deploy_rayjob_example_validates():
    objects = [d for d in yaml.safe_load_all((DEPLOY / "ray" / "rayjob.yaml").read_text()) if d]
    kinds = [o["kind"] for o in objects]
    assert kinds == ["ConfigMap", "RayJob"]
    assert k8s_errors(objects[0]) == []
    assert crd_errors(objects[1]) == []


def test_deploy_rayjob_example_runs_a_valid_hsp_train(tmp_path):
    from cluster.cli import build_parser
    from cluster.commands.train import load

    config_map, job = [d for d in yaml.safe_load_all((DEPLOY / "ray" / "rayjob.yaml").read_text()) if d]
    args = build_parser().parse_args(hsp_command_from(job["spec"]["entrypoint"]))
    (tmp_path / "config.yaml").write_text(config_map["data"]["config.yaml"])
    args.config = str(tmp_path / "config.yaml")
    config = load(args)
    assert config.cluster.num_workers == sum(g["replicas"] for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"])


def test_deploy_submit_script_is_valid_bash_running_hsp_train():
    script = DEPLOY / "ray" / "submit-job.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    from cluster.cli import build_parser

    text = script.read_text()
    command = text[text.index("-- hsp train"):].split('"$@"')[0].replace("\\\n", " ")
    for var, default in re.findall(r'(\w+)="\$\{\w+:-([^}]*)\}"', text):
        command = command.replace(f'"${{{var}}}"', default)
    args = build_parser().parse_args(hsp_command_from(command))
    assert args.address == "auto" and args.metrics_port == 9400 and args.num_workers == 2
    assert (ROOT / args.config).is_file()
