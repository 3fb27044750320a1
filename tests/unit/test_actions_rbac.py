"""The roles in deploy/ grant what gpuwatch.actuators.rbac declares, and the declarations
follow the settings: a verb only for the mechanism or the feature that uses it.

What the code really asks for is derived from its requests in
tests/integration/test_rbac_derived.py; this checks the files and the function offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuwatch.actuators import rbac
from gpuwatch.config.settings import ActionsSettings, DaemonSettings, Settings
from gpuwatch.kube import lease
from gpuwatch.sources import kubernetes_rbac, silences
from gpuwatch.state import configmap
from tests.builders import grants

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPONENTS = DEPLOY / "components"
SUBJECTS = [{"kind": "ServiceAccount", "name": "gpuwatch", "namespace": "gpuwatch"}]


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _role(path: Path, kind: str) -> dict[str, Any]:
    """The one role of ``kind`` in ``path``, after checking that it is bound to gpuwatch."""
    docs = _documents(path)
    (role,) = [d for d in docs if d["kind"] == kind]
    (binding,) = [d for d in docs if d["kind"] == f"{kind}Binding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": kind,
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == SUBJECTS
    assert binding["metadata"].get("namespace") == role["metadata"].get("namespace")
    return role


def _actions(pools: dict[str, str], migrations: int = 0) -> ActionsSettings:
    return ActionsSettings.model_validate(
        {
            "pools": {pool: {"mechanism": mechanism} for pool, mechanism in pools.items()},
            "migration": {"max_per_cycle": migrations},
        }
    )


@pytest.mark.parametrize("name", sorted(rbac.COMPONENT_RULES))
def test_each_mechanism_component_grants_its_declared_rules(name: str) -> None:
    folder = COMPONENTS / name
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    role = _role(folder / "rbac.yaml", "ClusterRole")
    assert role["metadata"]["name"] == f"gpuwatch-{name}"
    assert grants(role["rules"]) == grants(rbac.COMPONENT_RULES[name])


def test_the_components_are_the_mechanisms_and_the_leases() -> None:
    assert {p.name for p in COMPONENTS.iterdir()} == {*rbac.COMPONENT_RULES, "leases"}
    assert {c for needed in rbac.MECHANISM_COMPONENTS.values() for c in needed} <= set(
        rbac.COMPONENT_RULES
    )


def test_no_wildcards_no_pod_or_job_delete() -> None:
    declared = grants([rule for rules in rbac.COMPONENT_RULES.values() for rule in rules])
    assert not any("*" in grant for grant in declared)
    deleted = {resource for _, resource, verb in declared if verb == "delete"}
    assert deleted == {"nodeclaims"}  # pods leave through the Eviction API


def test_own_objects_are_granted_by_roles_in_gpuwatch_namespace() -> None:
    leases = _role(COMPONENTS / "leases" / "rbac.yaml", "Role")
    assert grants(leases["rules"]) == grants(lease.RBAC_RULES)
    state = _role(DEPLOY / "state" / "rbac.yaml", "Role")
    own_configmaps = [*configmap.RBAC_RULES, *silences.RBAC_RULES, *rbac.KILL_SWITCH]
    assert grants(state["rules"]) == grants(own_configmaps)
    settings = Settings()
    references = [
        settings.actions.lease,
        settings.actions.kill_switch,
        DaemonSettings().lease or "",
        "gpuwatch/gpuwatch-state",  # the deployed state.configmap
    ]
    namespaces = {reference.partition("/")[0] for reference in references}
    assert namespaces == {leases["metadata"]["namespace"]} == {state["metadata"]["namespace"]}


@pytest.mark.parametrize(
    ("actions", "components"),
    [
        (_actions({}), ()),
        (_actions({"a": "cordon-drain"}), ("cordon-drain",)),
        (_actions({"a": "cluster-api"}), ("cordon-drain", "cluster-api")),
        (_actions({"a": "karpenter", "b": "cordon-drain"}), ("cordon-drain", "karpenter")),
        (_actions({}, migrations=1), ("migration",)),
        (
            _actions({"a": "cluster-api", "b": "karpenter"}, migrations=2),
            ("cordon-drain", "cluster-api", "karpenter", "migration"),
        ),
        (ActionsSettings(), ("migration",)),  # the default moves one job per cycle
    ],
)
def test_components_follow_the_pools_and_migration(
    actions: ActionsSettings, components: tuple[str, ...]
) -> None:
    assert rbac.components(actions) == components


def _settings(**values: Any) -> Settings:
    base = {
        "cluster": {"source": "kubernetes"},
        "metrics": {"source": "prometheus"},
        "prometheus": {"url": "http://prometheus:9090"},
        "state": {"backend": "configmap", "configmap": "gpuwatch/gpuwatch-state"},
        "notify": {"silences_configmap": "gpuwatch/gpuwatch-silences"},
    }
    return Settings.model_validate(base | values)


def test_required_permissions_follow_the_command_and_the_settings() -> None:
    read = grants(kubernetes_rbac.RBAC_RULES)

    def cluster(permissions: rbac.Permissions) -> set[tuple[str, str, str]]:
        return {(g.group, g.resource, g.verb) for g in permissions.grants() if g.namespace is None}

    def own(permissions: rbac.Permissions) -> set[tuple[str, str, str]]:
        return {
            (g.group, g.resource, g.verb) for g in permissions.grants() if g.namespace == "gpuwatch"
        }

    dry = _settings()
    assert cluster(rbac.required(dry, "report")) == read and not own(rbac.required(dry, "report"))
    assert cluster(rbac.required(dry, "once")) == read
    assert own(rbac.required(dry, "once")) == grants([*configmap.RBAC_RULES, *silences.RBAC_RULES])
    assert own(rbac.required(dry, "run")) - own(rbac.required(dry, "once")) == grants(
        lease.RBAC_RULES
    )
    writing = _settings(
        dry_run=False,
        actions={"pools": {"a": {"mechanism": "karpenter"}}, "migration": {"max_per_cycle": 0}},
    )
    needed = rbac.required(writing, "once")
    mechanisms = grants([*rbac.CORDON_DRAIN, *rbac.KARPENTER])
    assert cluster(needed) == read | mechanisms
    assert grants(lease.RBAC_RULES) | grants(rbac.KILL_SWITCH) <= own(needed)
    # The report never writes, whatever dry_run says.
    assert cluster(rbac.required(writing, "report")) == read


def test_own_objects_elsewhere_are_granted_there_only() -> None:
    settings = _settings(
        dry_run=False,
        actions={"lease": "ops/gpuwatch", "kill_switch": "ops/switches/gpuwatch"},
    )
    needed = rbac.required(settings, "once")
    assert set(needed.namespaced) == {"gpuwatch", "ops"}
    ops = {(g.group, g.resource, g.verb) for g in needed.grants() if g.namespace == "ops"}
    assert ops == grants([*lease.RBAC_RULES, *rbac.KILL_SWITCH])
    assert not {g for g in needed.grants() if g.namespace is None and "lease" in g.resource}


def test_nothing_is_needed_from_a_cluster_that_is_not_read() -> None:
    simulated = Settings.model_validate({"dry_run": False, "state": {"backend": "memory"}})
    assert rbac.required(simulated, "once").grants() == frozenset()
