"""Cluster state from the Kubernetes API.

It lists nodes, pods (all namespaces, Pending ones included), namespaces and the kinds
that own pods: apps/v1 ReplicaSets, Deployments, StatefulSets; batch/v1 Jobs,
CronJobs; kubeflow.org/v1 PyTorchJobs and Notebooks (custom resources: a 404 because
the CRD is not installed means "none of that kind").

Requests, retries and the wording of failures are the Kubernetes layer's
(``gpuwatch.kube``); lists are read page by page and translated as they arrive
(``gpuwatch.kube.listing``), so memory holds one page of raw JSON, never 10,000
client models. What this module adds is what to read, and the translation of the
layer's errors into the cycle's source errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from gpuwatch.kube.api import KubeApi
from gpuwatch.kube.errors import KubeError, KubeNotFound, as_source_error
from gpuwatch.kube.listing import list_objects
from gpuwatch.kube.objects import (
    GPU_RESOURCE_ALIASES,
    controller_from_kube,
    namespace_from_kube,
    node_from_kube,
    pod_from_kube,
)
from gpuwatch.kube.resources import (
    CRONJOBS,
    DEPLOYMENTS,
    JOBS,
    NAMESPACES,
    NODES,
    NOTEBOOKS,
    PODS,
    PYTORCHJOBS,
    REPLICASETS,
    STATEFULSETS,
    Resource,
)
from gpuwatch.model.cluster import ClusterState, Controller
from gpuwatch.model.errors import ConfigError, SourceBadQuery

log = logging.getLogger(__name__)

OWNER_RESOURCES: tuple[Resource, ...] = (
    REPLICASETS,
    DEPLOYMENTS,
    STATEFULSETS,
    JOBS,
    CRONJOBS,
    PYTORCHJOBS,
    NOTEBOOKS,
)
"""The kinds that own pods, read by default; add RayJob, MPIJob... with
``ClusterReadOptions.owner_resources``."""


@dataclass(frozen=True)
class ClusterReadOptions:
    """What a snapshot reads (how hard each request tries is the ``KubeApi``'s policy)."""

    page_size: int = 500
    """Objects per list request: kubectl's default chunk size, small enough that one
    page of pods is a few MB of JSON, large enough that 10,000 pods take 20 requests."""
    owner_resources: tuple[Resource, ...] = OWNER_RESOURCES
    gpu_aliases: Mapping[str, str] = field(default_factory=lambda: dict(GPU_RESOURCE_ALIASES))
    """Renamed GPU resources (time-slicing) -> the resource they stand for."""

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ConfigError(
                f"kubernetes options: page_size: {self.page_size}; expected at least 1"
            )


class KubernetesClusterSource:
    """``ClusterSource`` over the Kubernetes API. No I/O at construction."""

    name = "kubernetes"

    def __init__(self, api: KubeApi, options: ClusterReadOptions | None = None) -> None:
        self.api = api
        self.options = options or ClusterReadOptions()

    def listed(self) -> list[tuple[str, str]]:
        """(API group, resource) of every list call a snapshot makes: what the RBAC
        must grant ``list`` on (``gpuwatch.sources.kubernetes_rbac``)."""
        resources = [NODES, PODS, NAMESPACES, *self.options.owner_resources]
        return [(r.group, r.plural) for r in resources]

    def close(self) -> None:
        self.api.close()

    def snapshot(self, at: datetime) -> ClusterState:
        """The cluster now (a live source: ``at`` does not move it back in time)."""
        observed_at = self.api.now()
        started = time.monotonic()
        before = (self.api.counters.requests, self.api.counters.retries)
        aliases = self.options.gpu_aliases
        nodes = self._list(NODES, partial(node_from_kube, gpu_aliases=aliases))
        pods = self._list(PODS, partial(pod_from_kube, gpu_aliases=aliases))
        namespaces = self._list(NAMESPACES, namespace_from_kube)
        controllers: list[Controller] = []
        for resource in self.options.owner_resources:
            controllers.extend(
                self._list(resource, partial(controller_from_kube, kind=resource.kind))
            )
        log.info(
            "read %d nodes, %d pods, %d owners in %d requests (%d retried) in %.2f s",
            len(nodes),
            len(pods),
            len(controllers),
            self.api.counters.requests - before[0],
            self.api.counters.retries - before[1],
            time.monotonic() - started,
        )
        return ClusterState.of(observed_at, nodes, pods, controllers, namespaces)

    def _list(self, resource: Resource, translate: Any) -> list[Any]:
        try:
            return list_objects(self.api, resource, translate, page_size=self.options.page_size)
        except KubeNotFound as exc:
            raise SourceBadQuery(f"{exc}; is {self.api.host} a Kubernetes API server?") from exc
        except KubeError as exc:
            raise as_source_error(exc) from exc
