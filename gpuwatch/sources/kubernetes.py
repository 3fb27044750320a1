"""Cluster state from the Kubernetes API, through the official ``kubernetes`` client.

The cluster source over the ``kubernetes`` client (the actions, the state ConfigMap and
the silences ConfigMap use their own modules). It lists nodes, pods (all namespaces,
Pending ones included) and the kinds that own pods: apps/v1 ReplicaSets, Deployments,
StatefulSets; batch/v1 Jobs, CronJobs; kubeflow.org/v1 PyTorchJobs and Notebooks (custom
resources: a 404 because the CRD is not installed means "none of that kind").

How it reads, and why:

- lists are paginated (``limit``/``continue``, 500 by default, as kubectl does) and read
  with ``_preload_content=False``: each page's JSON is parsed here and translated to
  domain objects (``kube_objects``) before the next page is asked for, so memory holds
  one page of raw JSON, never 10,000 ``V1Pod`` models. A continue token that expired
  (410) restarts that list, since a list stitched across revisions is not consistent;
- 429 (API priority and fairness) and 5xx are retried with capped exponential backoff,
  honouring ``Retry-After`` up to the cap; connection failures likewise, then
  ``SourceUnreachable``; 401/403 raise ``SourceAuthRefused`` naming the verb and
  resource to grant, because that is what the person reading it must fix;
- the urllib3 pool under the client would itself retry 429/503, sleeping whatever
  ``Retry-After`` says, uncapped: ``new_api_client`` builds clients whose transport does
  not, so that retries happen once, here, under the caps.

Build it with ``KubernetesClusterSource.from_options(options)`` (loads in-cluster or
kubeconfig credentials), or hand ``KubernetesClusterSource(api_client)`` a ready client,
as tests do with ``Configuration(host=<emulator>)``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from gpuwatch.kube.objects import (
    GPU_RESOURCE_ALIASES,
    controller_from_kube,
    namespace_from_kube,
    node_from_kube,
    pod_from_kube,
)
from gpuwatch.model.cluster import ClusterState, Controller, Node, Pod
from gpuwatch.model.errors import (
    ConfigError,
    SourceAuthRefused,
    SourceBadQuery,
    SourceBadResponse,
    SourceError,
    SourceUnreachable,
)
from gpuwatch.util.http_retry import backoff_s, retryable_status

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class CustomResource:
    """A custom resource that owns pods (its CRD may or may not be installed)."""

    group: str
    version: str
    plural: str
    kind: str


KUBEFLOW_RESOURCES = (
    CustomResource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    CustomResource("kubeflow.org", "v1", "notebooks", "Notebook"),
)


@dataclass(frozen=True)
class KubernetesOptions:
    """How to reach the API server and how hard to try."""

    in_cluster: bool = False
    """Use the pod's service account (``/var/run/secrets/kubernetes.io/serviceaccount``);
    what the CronJob deployment does. Otherwise a kubeconfig is read."""
    kubeconfig: str | None = None
    """Kubeconfig path; None: ``$KUBECONFIG`` or ``~/.kube/config``, as kubectl."""
    context: str | None = None
    """Kubeconfig context; None: the file's current context."""
    page_size: int = 500
    """Objects per list request: kubectl's default chunk size, small enough that one
    page of pods is a few MB of JSON, large enough that 10,000 pods take 20 requests."""
    request_timeout_s: float = 30.0
    """Per request (connect and read). A 500-pod page is served in well under a second;
    30 s outlasts an API server under load without hanging a cycle for long."""
    retries: int = 5
    """Retries per request after 429, 5xx or a connection failure (not after 4xx)."""
    backoff_initial_s: float = 0.5
    """First retry delay; doubled each retry, jittered."""
    backoff_max_s: float = 30.0
    """Cap on any one delay, ``Retry-After`` included."""
    custom_resources: tuple[CustomResource, ...] = KUBEFLOW_RESOURCES
    """Owner kinds served by CRDs; add RayJob, MPIJob... where the cluster runs them."""
    gpu_aliases: Mapping[str, str] = field(default_factory=lambda: dict(GPU_RESOURCE_ALIASES))
    """Renamed GPU resources (time-slicing) -> the resource they stand for."""

    def __post_init__(self) -> None:
        problems = []
        if self.page_size < 1:
            problems.append(f"page_size: {self.page_size}; expected at least 1")
        if self.request_timeout_s <= 0:
            problems.append(f"request_timeout_s: {self.request_timeout_s}; expected > 0")
        if self.retries < 0:
            problems.append(f"retries: {self.retries}; expected 0 or more")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            problems.append(
                f"backoff_initial_s {self.backoff_initial_s}, backoff_max_s "
                f"{self.backoff_max_s}: expected 0 <= initial <= max"
            )
        if problems:
            raise ConfigError([f"kubernetes options: {p}" for p in problems])


def transport_retries() -> urllib3.Retry:
    """The urllib3 policy for clients this source uses: a quick retry of a failed
    connect or a dropped keep-alive connection; nothing by status and never a sleep on
    ``Retry-After`` (the source does that, capped)."""
    return urllib3.Retry(
        total=2,
        connect=2,
        read=1,
        status=0,
        other=0,
        redirect=0,
        respect_retry_after_header=False,
        raise_on_status=False,
    )


def new_api_client(configuration: k8s.Configuration) -> k8s.ApiClient:
    """An ``ApiClient`` on ``configuration`` whose transport leaves retries to the source."""
    configuration.retries = transport_retries()
    return k8s.ApiClient(configuration)


def api_client_from_options(options: KubernetesOptions) -> k8s.ApiClient:
    """Load credentials (in-cluster, or kubeconfig and context) into a new API client.

    Raises ``ConfigError`` when the credentials cannot be loaded, naming the file and
    context, since that is a setting to fix rather than a cluster that is down.
    """
    configuration = k8s.Configuration()
    try:
        if options.in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=options.kubeconfig,
                context=options.context,
                client_configuration=configuration,
                persist_config=False,  # never write refreshed tokens into a user's file
            )
    except (ConfigException, OSError) as exc:
        kubeconfig = options.kubeconfig or "$KUBECONFIG or ~/.kube/config"
        context = f", context {options.context}" if options.context else ""
        where = (
            "in-cluster service account"
            if options.in_cluster
            else f"kubeconfig {kubeconfig}{context}"
        )
        raise ConfigError(f"{where}: cannot load Kubernetes credentials: {exc}") from exc
    return new_api_client(configuration)


@dataclass(frozen=True)
class _Resource:
    """One list call: what it reads, how to call it, what a 404 means."""

    plural: str
    group: str
    call: Callable[..., Any]
    kind: str
    optional: bool
    """A 404 means the resource is not served (CRD not installed): no objects."""

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def grant(self) -> str:
        group = f" in API group {self.group}" if self.group else ""
        return f"grant the ClusterRole verb list on {self.plural}{group}"


class _Expired(Exception):
    """410 Gone on a continued list: the token outlived the server's history."""


@dataclass
class _Counters:
    requests: int = 0
    retries: int = 0


class KubernetesClusterSource:
    """``ClusterSource`` over the Kubernetes API."""

    name = "kubernetes"

    def __init__(
        self,
        api_client: k8s.ApiClient,
        options: KubernetesOptions | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """No I/O here. ``sleep`` and ``now`` are for tests; ``api_client`` is best built
        with ``new_api_client`` (otherwise urllib3 also retries 429/503 on its own)."""
        self.api_client = api_client
        self.options = options or KubernetesOptions()
        self._sleep = sleep
        self._now = now
        self._counters = _Counters()
        core = k8s.CoreV1Api(api_client)
        apps = k8s.AppsV1Api(api_client)
        batch = k8s.BatchV1Api(api_client)
        custom = k8s.CustomObjectsApi(api_client)
        self._nodes = _Resource("nodes", "", core.list_node, "Node", optional=False)
        self._pods = _Resource("pods", "", core.list_pod_for_all_namespaces, "Pod", False)
        self._namespaces = _Resource("namespaces", "", core.list_namespace, "Namespace", False)
        builtin = (
            ("replicasets", "apps", apps.list_replica_set_for_all_namespaces, "ReplicaSet"),
            ("deployments", "apps", apps.list_deployment_for_all_namespaces, "Deployment"),
            ("statefulsets", "apps", apps.list_stateful_set_for_all_namespaces, "StatefulSet"),
            ("jobs", "batch", batch.list_job_for_all_namespaces, "Job"),
            ("cronjobs", "batch", batch.list_cron_job_for_all_namespaces, "CronJob"),
        )
        self._owners = [_Resource(p, g, call, kind, True) for p, g, call, kind in builtin]
        for crd in self.options.custom_resources:
            call = partial(custom.list_cluster_custom_object, crd.group, crd.version, crd.plural)
            self._owners.append(_Resource(crd.plural, crd.group, call, crd.kind, True))

    @classmethod
    def from_options(cls, options: KubernetesOptions) -> KubernetesClusterSource:
        """Load credentials (in-cluster, or kubeconfig and context) and build the source."""
        return cls(api_client_from_options(options), options)

    def listed(self) -> list[tuple[str, str]]:
        """(API group, resource) of every list call a snapshot makes: what the RBAC
        must grant ``list`` on (``gpuwatch.sources.kubernetes_rbac``)."""
        resources = [self._nodes, self._pods, self._namespaces, *self._owners]
        return [(r.group, r.plural) for r in resources]

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    # -- ClusterSource ---------------------------------------------------------------------
    def snapshot(self, at: datetime) -> ClusterState:
        """The cluster now (a live source: ``at`` does not move it back in time)."""
        observed_at = self._now()
        started = time.monotonic()
        self._counters = _Counters()
        aliases = self.options.gpu_aliases
        nodes: list[Node] = self._list(self._nodes, lambda o: node_from_kube(o, aliases))
        pods: list[Pod] = self._list(self._pods, lambda o: pod_from_kube(o, aliases))
        namespaces = self._list(self._namespaces, namespace_from_kube)
        controllers: list[Controller] = []
        for resource in self._owners:
            translate = partial(controller_from_kube, kind=resource.kind)
            controllers.extend(self._list(resource, translate))
        log.info(
            "read %d nodes, %d pods, %d owners in %d requests (%d retried) in %.2f s",
            len(nodes),
            len(pods),
            len(controllers),
            self._counters.requests,
            self._counters.retries,
            time.monotonic() - started,
        )
        return ClusterState(
            observed_at=observed_at,
            nodes=tuple(nodes),
            pods=tuple(pods),
            controllers=tuple(controllers),
            namespaces=tuple(namespaces),
        )

    # -- reading -----------------------------------------------------------------------------
    def _list(self, resource: _Resource, translate: Callable[[Mapping[str, Any]], T]) -> list[T]:
        """Every object of ``resource``, translated page by page."""
        for _restart in range(self.options.retries + 1):
            out: list[T] = []
            try:
                for items in self._pages(resource):
                    for index, item in enumerate(items):
                        if not isinstance(item, Mapping):
                            raise SourceBadResponse(
                                f"list {resource.qualified}: items[{index}] is not an object"
                            )
                        try:
                            out.append(translate(item))
                        except SourceBadResponse as exc:
                            raise SourceBadResponse(
                                f"list {resource.qualified} at {self._host}: {exc}"
                            ) from exc
            except _Expired:
                log.warning("list %s: continue token expired; listing again", resource.qualified)
                continue
            return out
        raise SourceUnreachable(
            f"list {resource.qualified}: the continue token expired "
            f"{self.options.retries + 1} times; the list cannot be read consistently"
        )

    def _pages(self, resource: _Resource) -> Iterator[list[Any]]:
        token: str | None = None
        while True:
            page = self._request(resource, token)
            if page is None:  # not served: a CRD that is not installed
                return
            metadata = page.get("metadata") or {}
            items = page.get("items") or []
            if not isinstance(items, list) or not isinstance(metadata, Mapping):
                raise SourceBadResponse(
                    f"list {resource.qualified}: the answer is not a list (no items array)"
                )
            yield items
            token = metadata.get("continue") or None
            if token is None:
                return

    def _request(self, resource: _Resource, token: str | None) -> Mapping[str, Any] | None:
        """One page, retried as the options allow; None for an optional 404."""
        what = f"list {resource.qualified} at cluster scope"
        attempt = 0
        while True:
            self._counters.requests += 1
            try:
                response = resource.call(
                    limit=self.options.page_size,
                    _continue=token,
                    _preload_content=False,
                    _request_timeout=self.options.request_timeout_s,
                )
                try:
                    raw = response.data
                finally:
                    response.release_conn()
            except ApiException as exc:
                status = int(exc.status or 0)
                if status in (401, 403):
                    raise SourceAuthRefused(_refusal(what, resource, exc)) from exc
                if status == 404 and resource.optional:
                    log.info("%s: 404, not served here (CRD not installed?)", what)
                    return None
                if status == 410 and token is not None:
                    raise _Expired from exc
                if retryable_status(status) and attempt < self.options.retries:
                    delay = self._delay(attempt, exc)
                    log.warning("%s: %s %s; retrying in %.1f s", what, status, exc.reason, delay)
                    self._backoff(delay)
                    attempt += 1
                    continue
                raise _failure(what, self._host, exc) from exc
            except urllib3.exceptions.HTTPError as exc:
                if attempt < self.options.retries:
                    delay = self._delay(attempt, None)
                    log.warning("%s: %s; retrying in %.1f s", what, _cause(exc), delay)
                    self._backoff(delay)
                    attempt += 1
                    continue
                raise SourceUnreachable(
                    f"{what}: cannot reach the Kubernetes API at {self._host}: {_cause(exc)}"
                ) from exc
            try:
                page = json.loads(raw)
            except ValueError as exc:
                raise SourceBadResponse(f"{what}: the answer is not JSON: {exc}") from exc
            if not isinstance(page, Mapping):
                raise SourceBadResponse(f"{what}: the answer is not a JSON object")
            return page

    @property
    def _host(self) -> str:
        return str(self.api_client.configuration.host)

    def _backoff(self, delay: float) -> None:
        self._counters.retries += 1
        self._sleep(delay)

    def _delay(self, attempt: int, exc: ApiException | None) -> float:
        """``Retry-After`` when the server gave one, else exponential with jitter; capped."""
        after = exc.headers.get("Retry-After") if exc is not None and exc.headers else None
        return backoff_s(
            attempt, after, self._now(), self.options.backoff_initial_s, self.options.backoff_max_s
        )


def _server_message(exc: ApiException) -> str:
    """The ``message`` of the Status object the API server answered with, if any."""
    try:
        body = json.loads(exc.body) if exc.body else None
    except ValueError:
        return str(exc.body)[:200]
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return ""


def _refusal(what: str, resource: _Resource, exc: ApiException) -> str:
    status = int(exc.status or 0)
    message = _server_message(exc)
    server = f" (server: {message})" if message else ""
    if status == 401:
        return (
            f"{what}: 401 Unauthorized; the API server refused the credentials (an expired "
            f"token or client certificate? check the kubeconfig user or the service "
            f"account token){server}"
        )
    return f"{what}: 403 Forbidden; {resource.grant}{server}"


def _failure(what: str, host: str, exc: ApiException) -> SourceError:
    status = int(exc.status or 0)
    message = _server_message(exc)
    detail = f"{status} {exc.reason}" + (f": {message}" if message else "")
    if status == 0:  # TLS failure or a request the client could not even build
        return SourceUnreachable(f"{what}: cannot talk to the Kubernetes API at {host}: {detail}")
    if status >= 500 or status == 429:
        return SourceUnreachable(f"{what}: the Kubernetes API at {host} kept failing: {detail}")
    if status == 404:
        return SourceBadQuery(f"{what}: {detail}; is {host} a Kubernetes API server?")
    return SourceBadQuery(f"{what}: {detail}")


def _cause(exc: urllib3.exceptions.HTTPError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)
