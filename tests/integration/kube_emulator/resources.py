"""The resource types the emulator serves: where each lives and which subresources it has.

A ``ResourceType`` is what a discovery document says about a resource (group, version,
plural, kind, scope) plus what the API server's registry decides per type and the tests
rely on: whether writes to the main resource ignore ``.status`` (a status subresource),
whether it has a scale subresource and where its replicas live, and whether an update
may omit ``metadata.resourceVersion``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScalePaths:
    """Where the scale subresource reads and writes, as a CRD's ``subresources.scale``."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"
    """Built-in kinds: ``.spec.selector`` (a LabelSelector, served as a string)."""


APPS_SCALE = ScalePaths(label_selector=".spec.selector")


@dataclass(frozen=True)
class ResourceType:
    group: str
    """API group; "" for core."""
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = True
    """Writes to the main resource keep the stored ``.status``; ``/status`` writes only it
    (every built-in kind with a status, and most CRDs)."""
    scale: ScalePaths | None = None
    unconditional_update: bool | None = None
    """May a PUT omit ``metadata.resourceVersion``? None: as the API server decides,
    yes for built-in kinds, no for custom resources."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def builtin(self) -> bool:
        """Built-in lists serve items without kind/apiVersion; custom resources with.

        Built-in groups are the core group, dotless ones (``apps``, ``batch``,
        ``policy``) and ``*.k8s.io`` (``coordination.k8s.io``); ``cluster.x-k8s.io`` is
        not one (``x-k8s.io`` is the prefix for groups that are not part of Kubernetes).
        """
        return "." not in self.group or self.group.endswith(".k8s.io")

    @property
    def qualified(self) -> str:
        """``pods``, ``replicasets.apps``: how RBAC and error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Pod``, ``Job.batch``: how validation (422) messages name a kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def allows_unconditional_update(self) -> bool:
        if self.unconditional_update is not None:
            return self.unconditional_update
        return self.builtin

    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)


PODS = ResourceType("", "v1", "pods", "Pod")
EVENTS = ResourceType("", "v1", "events", "Event", status_subresource=False)
PDBS = ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
JOBS = ResourceType("batch", "v1", "jobs", "Job")
LEASES = ResourceType(
    "coordination.k8s.io",
    "v1",
    "leases",
    "Lease",
    status_subresource=False,
    # The Lease registry refuses an update without a resourceVersion: leader election
    # is exactly the case where a blind overwrite would be a bug.
    unconditional_update=False,
)

BUILTIN_RESOURCES = (
    ResourceType("", "v1", "nodes", "Node", namespaced=False),
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False),
    PODS,
    ResourceType("", "v1", "configmaps", "ConfigMap", status_subresource=False),
    EVENTS,
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", scale=APPS_SCALE),
    ResourceType("apps", "v1", "deployments", "Deployment", scale=APPS_SCALE),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", scale=APPS_SCALE),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet"),
    JOBS,
    ResourceType("batch", "v1", "cronjobs", "CronJob"),
    PDBS,
    LEASES,
)
KUBEFLOW_RESOURCES = (
    ResourceType("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    ResourceType("kubeflow.org", "v1", "notebooks", "Notebook"),
)
KARPENTER_RESOURCES = (
    ResourceType("karpenter.sh", "v1", "nodeclaims", "NodeClaim", namespaced=False),
    ResourceType("karpenter.sh", "v1", "nodepools", "NodePool", namespaced=False),
)
# Cluster API declares a scale subresource on MachineDeployments and MachineSets with
# specReplicasPath .spec.replicas, statusReplicasPath .status.replicas and
# labelSelectorPath .status.selector: what these defaults say.
CLUSTER_API_RESOURCES = (
    ResourceType("cluster.x-k8s.io", "v1beta1", "machines", "Machine"),
    ResourceType("cluster.x-k8s.io", "v1beta1", "machinesets", "MachineSet", scale=ScalePaths()),
    ResourceType(
        "cluster.x-k8s.io", "v1beta1", "machinedeployments", "MachineDeployment", scale=ScalePaths()
    ),
)
