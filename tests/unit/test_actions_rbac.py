"""The roles in deploy/ grant exactly the verbs the code declares."""

from __future__ import annotations

from pathlib import Path

import yaml

from gpuwatch.actuators import kubernetes
from gpuwatch.kube import lease
from gpuwatch.sources import silences
from gpuwatch.state import configmap
from tests.builders import grants

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROLE = DEPLOY / "actions" / "rbac.yaml"


def _grants(rules):
    return grants(rules)


def test_deploy_role_matches_the_code():
    role = next(d for d in yaml.safe_load_all(ROLE.read_text()) if d["kind"] == "ClusterRole")
    assert _grants(role["rules"]) == _grants([*kubernetes.RBAC_RULES, *lease.RBAC_RULES])


def test_no_wildcards_and_no_pod_delete():
    grants = _grants([*kubernetes.RBAC_RULES, *lease.RBAC_RULES])
    assert not any("*" in grant for grant in grants)
    assert not any(resource == "pods" and verb == "delete" for _, resource, verb in grants)


def test_state_role_matches_the_code():
    docs = yaml.safe_load_all((DEPLOY / "state" / "rbac.yaml").read_text())
    role = next(d for d in docs if d["kind"] == "Role")
    assert _grants(role["rules"]) == _grants([*configmap.RBAC_RULES, *silences.RBAC_RULES])
