"""The API resources gpuwatch reads and writes, and the URL paths that name them.

A resource is an API group, version and plural (the names RBAC rules use), whether it
is namespaced, and whether a CustomResourceDefinition serves it. That last fact decides
two things: a 404 on a list may mean "the CRD is not installed" rather than a broken
request, and a patch must be a JSON merge patch, since the API server supports
strategic merge patches only for its built-in kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    group: str
    """API group; "" for the core group (``/api/v1``)."""
    version: str
    plural: str
    kind: str
    namespaced: bool
    custom: bool = False
    """Served by a CustomResourceDefinition (which may not be installed)."""

    @property
    def qualified(self) -> str:
        """``pods``, ``pytorchjobs.kubeflow.org``: how kubectl names it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str = ""
    ) -> str:
        """``/api/v1/namespaces/ns/pods/p/eviction``; a namespaced resource without a
        namespace is the list across all namespaces."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod", namespaced=True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", namespaced=True)
EVENTS = Resource("", "v1", "events", "Event", namespaced=True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet", namespaced=True)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", namespaced=True)
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet", namespaced=True)
JOBS = Resource("batch", "v1", "jobs", "Job", namespaced=True)
CRONJOBS = Resource("batch", "v1", "cronjobs", "CronJob", namespaced=True)
PYTORCHJOBS = Resource(
    "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", namespaced=True, custom=True
)
NOTEBOOKS = Resource("kubeflow.org", "v1", "notebooks", "Notebook", namespaced=True, custom=True)
MACHINES = Resource(
    "cluster.x-k8s.io", "v1beta1", "machines", "Machine", namespaced=True, custom=True
)
MACHINE_DEPLOYMENTS = Resource(
    "cluster.x-k8s.io",
    "v1beta1",
    "machinedeployments",
    "MachineDeployment",
    namespaced=True,
    custom=True,
)
NODE_CLAIMS = Resource(
    "karpenter.sh", "v1", "nodeclaims", "NodeClaim", namespaced=False, custom=True
)


def custom_resource(group: str, version: str, plural: str, kind: str) -> Resource:
    """A namespaced kind served by a CRD (RayJob, MPIJob...), for owners to read."""
    return Resource(group, version, plural, kind, namespaced=True, custom=True)
