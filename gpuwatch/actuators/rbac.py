"""The Kubernetes permissions gpuwatch needs: per action mechanism, and per configuration.

A cluster should grant a verb only where the configuration uses it, so ``deploy/`` grants
the actions' verbs as kustomize Components, one per entry of ``COMPONENT_RULES``
(``deploy/components/<name>``), each a ClusterRole: the objects they touch are
cluster-scoped (nodes, NodeClaims) or in namespaces gpuwatch does not choose (the pods
and jobs of every team, the Machines of a pool's MachineDeployment, the Events beside
them). gpuwatch's own objects (its Leases, and the state, silences and kill-switch
ConfigMaps) live in namespaces the settings name, so they are granted by a Role in that
namespace and never cluster-wide.

``required`` answers what a pod running one gpuwatch command with given settings asks
the API server for. ``tests/deploy`` compares it with what each entry point renders, and
``tests/integration/test_rbac_derived.py`` derives the verbs from the requests each path
actually makes (nothing here is trusted without that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gpuwatch.config.settings import ActionsSettings, Settings
from gpuwatch.kube import lease
from gpuwatch.sources import kubernetes_rbac, silences
from gpuwatch.state import configmap

Rule = Mapping[str, Any]
"""An RBAC PolicyRule: ``apiGroups``, ``resources``, ``verbs``."""

# The drain every scale-down starts with (actuators/drain.py).
CORDON_DRAIN: tuple[Rule, ...] = (
    # Read the node's cordon and action key; cordon, mark, and uncordon on rollback.
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
    # Pods leave through the Eviction API, which honours disruption budgets; never delete.
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    # Every outcome is an Event (a node's go to namespace default).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
)
# Beyond the drain: the node's Machine is marked, then its MachineDeployment lowered.
CLUSTER_API: tuple[Rule, ...] = (
    {"apiGroups": ["cluster.x-k8s.io"], "resources": ["machines"], "verbs": ["list", "patch"]},
    {
        "apiGroups": ["cluster.x-k8s.io"],
        "resources": ["machinedeployments/scale"],
        "verbs": ["get", "patch"],
    },
)
# Beyond the drain: the node's NodeClaim is found and deleted (Karpenter ends the node).
KARPENTER: tuple[Rule, ...] = (
    {"apiGroups": ["karpenter.sh"], "resources": ["nodeclaims"], "verbs": ["list", "delete"]},
)
# Checkpoint-and-migrate to spot (actuators/migrate.py), with its follow-up.
MIGRATION: tuple[Rule, ...] = (
    # The job read, its templates pointed at spot (a Job suspended and resumed), and the
    # migrating jobs listed by later cycles to confirm or undo the move.
    {
        "apiGroups": ["kubeflow.org"],
        "resources": ["pytorchjobs"],
        "verbs": ["get", "list", "patch"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "patch"]},
    # The job's pods, and the nodes they run on (on the spot pool yet?).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
    # A PyTorchJob's pods are evicted to checkpoint and come back on spot.
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
)

COMPONENT_RULES: Mapping[str, tuple[Rule, ...]] = {
    "cordon-drain": CORDON_DRAIN,
    "cluster-api": CLUSTER_API,
    "karpenter": KARPENTER,
    "migration": MIGRATION,
}
"""Each is the ClusterRole of the Component ``deploy/components/<name>``."""

MECHANISM_COMPONENTS: Mapping[str, tuple[str, ...]] = {
    "cordon-drain": ("cordon-drain",),
    "cluster-api": ("cordon-drain", "cluster-api"),
    "karpenter": ("cordon-drain", "karpenter"),
}
"""The Components a pool's ``mechanism`` needs: every mechanism drains the node first."""

KILL_SWITCH: tuple[Rule, ...] = (
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
)
"""Reading ``actions.kill_switch``, in its namespace."""

CYCLE_COMMANDS = ("once", "run")
"""The commands that run cycles (state, silences, actions); ``report`` only reads."""


class Grant(NamedTuple):
    """One verb on one resource, cluster-wide (``namespace`` None) or in one namespace."""

    group: str
    resource: str
    verb: str
    namespace: str | None


@dataclass(frozen=True)
class Permissions:
    """Rules granted cluster-wide (a ClusterRole) and per namespace (a Role there)."""

    cluster: tuple[Rule, ...] = ()
    namespaced: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)

    def __or__(self, other: Permissions) -> Permissions:
        namespaces = dict.fromkeys([*self.namespaced, *other.namespaced])
        return Permissions(
            (*self.cluster, *other.cluster),
            {
                ns: (*self.namespaced.get(ns, ()), *other.namespaced.get(ns, ()))
                for ns in namespaces
            },
        )

    def grants(self) -> frozenset[Grant]:
        """Every (group, resource, verb, namespace) granted, to compare permission sets."""
        scoped = [(None, self.cluster), *self.namespaced.items()]
        return frozenset(
            Grant(group, resource, verb, namespace)
            for namespace, rules in scoped
            for rule in rules
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        )


def in_namespace_of(reference: str, rules: tuple[Rule, ...]) -> Permissions:
    """``rules`` in the namespace of ``reference`` (``namespace/name[/key]``)."""
    return Permissions(namespaced={reference.partition("/")[0]: rules})


def components(actions: ActionsSettings) -> tuple[str, ...]:
    """The Components of ``deploy/components`` that ``actions`` need: the drain and the
    mechanism of each pool listed, and migration when jobs may move to spot at all."""
    needed = {
        name for policy in actions.pools.values() for name in MECHANISM_COMPONENTS[policy.mechanism]
    }
    if actions.migration.max_per_cycle > 0:
        needed.add("migration")
    return tuple(name for name in COMPONENT_RULES if name in needed)


def component_permissions(names: Iterable[str]) -> Permissions:
    """What the Components ``names`` grant."""
    return Permissions(cluster=tuple(rule for name in names for rule in COMPONENT_RULES[name]))


def actions_permissions(actions: ActionsSettings) -> Permissions:
    """What the Kubernetes actuator asks for when it writes: its mechanisms' verbs, the
    actions Lease and the kill switch (both in their own namespaces)."""
    return (
        component_permissions(components(actions))
        | in_namespace_of(actions.lease, lease.RBAC_RULES)
        | in_namespace_of(actions.kill_switch, KILL_SWITCH)
    )


def required(settings: Settings, command: str) -> Permissions:
    """What a pod running ``gpuwatch <command>`` (``once``, ``run``, ``report``) with
    ``settings`` asks the API server for."""
    cycle = command in CYCLE_COMMANDS
    needed = Permissions()
    if cycle and settings.state.backend == "configmap":
        needed |= in_namespace_of(settings.state.configmap, configmap.RBAC_RULES)
    if settings.cluster_source != "kubernetes":
        return needed
    needed |= Permissions(cluster=kubernetes_rbac.RBAC_RULES)
    if cycle and settings.notify.silences_configmap:
        needed |= in_namespace_of(settings.notify.silences_configmap, silences.RBAC_RULES)
    if command == "run" and settings.daemon.lease:
        needed |= in_namespace_of(settings.daemon.lease, lease.RBAC_RULES)
    if cycle and not settings.dry_run:
        needed |= actions_permissions(settings.actions)
    return needed
