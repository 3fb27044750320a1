"""One request wrapper for every call gpuwatch makes to the Kubernetes API.

Every adapter (the cluster source, the state and silences ConfigMaps, the actuator, the
Lease) sends its requests through ``KubeApi.request``, so that they all behave alike:

- **raw JSON in and out**: requests go through the official client's ``ApiClient``
  (credentials, TLS, token refresh, proxies), but bodies are plain dicts and answers are
  parsed here, never into ``V1Pod`` models: nothing of the client library crosses
  the seam, and a 10,000-pod list costs one JSON parse, not 10,000 model objects;
- **retries in one place**: 429 (API priority and fairness, a PodDisruptionBudget
  refusing an eviction) and 5xx are retried with capped exponential backoff and
  jitter, honouring ``Retry-After`` up to the cap; so are failed connections. The
  client's own urllib3 pool is built not to retry by status or sleep on
  ``Retry-After`` (``gpuwatch.kube.client``), so that retries happen once, here;
- **deadlines**: a request may carry an absolute deadline (monotonic seconds) shared
  by several requests, e.g. a drain's evictions; no retry starts that would end past it;
- **one translation of answers** into ``gpuwatch.kube.errors``: the caller sees
  ``KubeForbidden`` naming the permission to grant, ``KubeConflict``, ``KubeNotFound``,
  ``KubeUnavailable`` after retries, never ``ApiException``.

Patches are sent with an explicit content type: strategic merge for built-in kinds (what
``kubectl patch`` sends), JSON merge patch for custom resources (a CRD supports no
strategic merge patch; the API server answers 415).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from gpuwatch.kube.errors import (
    KubeBadResponse,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeUnauthorized,
    KubeUnavailable,
    Permission,
)
from gpuwatch.kube.resources import Resource
from gpuwatch.model.errors import ConfigError
from gpuwatch.util.http_retry import backoff_s, retryable_status

log = logging.getLogger(__name__)

Json = dict[str, Any]

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
_METHOD_OF_VERB = {
    "get": "GET",
    "list": "GET",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request tries."""

    retries: int = 5
    """Retries after 429, 5xx or a failed connection (never after another 4xx)."""
    backoff_initial_s: float = 0.5
    """First delay; doubled each retry, with jitter (half fixed, half random)."""
    backoff_max_s: float = 30.0
    """Cap on any one delay, ``Retry-After`` included."""
    request_timeout_s: float = 30.0
    """Per attempt, connect and read. A 500-pod page is served in well under a second;
    30 s outlasts an API server under load without hanging a cycle for long."""
    patient_statuses: frozenset[int] = frozenset()
    """Statuses retried until the request's deadline rather than ``retries`` times: an
    answer that means "not now" rather than trouble (429 from the Eviction API is a
    PodDisruptionBudget refusing for the moment)."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError([f"kubernetes options: {p}" for p in problems])

    def problems(self) -> list[str]:
        found = []
        if self.retries < 0:
            found.append(f"retries: {self.retries}; expected 0 or more")
        if self.request_timeout_s <= 0:
            found.append(f"request_timeout_s: {self.request_timeout_s}; expected > 0")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            found.append(
                f"backoff_initial_s {self.backoff_initial_s}, backoff_max_s "
                f"{self.backoff_max_s}: expected 0 <= initial <= max"
            )
        return found


@dataclass
class Counters:
    """Requests sent and retries made, for the adapters' log lines and benchmarks."""

    requests: int = 0
    retries: int = 0


@dataclass(frozen=True)
class _Request:
    verb: str
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str
    creates: str | None = None
    """The name of the object a create makes (it is in the body, not the path)."""

    def describe(self) -> str:
        """``list pods at cluster scope``, ``get configmap gpuwatch/gpuwatch-state``,
        ``create pod team-a/p eviction``: what a person would call the request."""
        if self.name is None and self.creates:
            return replace(self, name=self.creates, creates=None).describe()
        if self.name is None:
            where = f"in namespace {self.namespace}" if self.namespace else "at cluster scope"
            return f"{self.verb} {self.resource.qualified} {where}"
        kind = self.resource.kind.lower()
        target = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.verb} {kind} {target}" + (f" {self.subresource}" if self.subresource else "")

    def permission(self) -> Permission:
        plural = self.resource.plural + (f"/{self.subresource}" if self.subresource else "")
        namespace = self.namespace if self.resource.namespaced else None
        return Permission(self.verb, self.resource.group, plural, namespace)


class KubeApi:
    """Requests to one API server, with one retry policy. No I/O at construction.

    ``api_client`` is the official client's ``ApiClient`` (built by
    ``gpuwatch.kube.client``); ``sleep``, ``now`` and ``monotonic`` are for tests.
    """

    def __init__(
        self,
        api_client: Any,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_client = api_client
        self.policy = policy or RetryPolicy()
        self.counters = Counters()
        self._sleep = sleep
        self.now = now
        self.monotonic = monotonic

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def with_policy(self, policy: RetryPolicy) -> KubeApi:
        """The same connection under another retry policy."""
        twin = KubeApi(
            self.api_client, policy, sleep=self._sleep, now=self.now, monotonic=self.monotonic
        )
        twin.counters = self.counters
        return twin

    def close(self) -> None:
        self.api_client.close()

    # -- verbs ---------------------------------------------------------------------------
    def get(
        self, resource: Resource, name: str, namespace: str | None = None, subresource: str = ""
    ) -> Json:
        return self.request(
            "get", resource, namespace=namespace, name=name, subresource=subresource
        )

    def list_page(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        limit: int | None = None,
        token: str | None = None,
        label_selector: str | None = None,
    ) -> Json:
        """One page of a list; ``KubeGone`` when ``token`` has expired."""
        query = [("limit", limit), ("continue", token), ("labelSelector", label_selector)]
        return self.request(
            "list", resource, namespace=namespace, query=[(k, v) for k, v in query if v]
        )

    def list_items(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        limit: int = 500,
    ) -> Iterator[Json]:
        """Every object of a list, page by page. A continue token that expires midway
        raises ``KubeGone``; ``gpuwatch.kube.listing`` restarts such lists instead."""
        token: str | None = None
        while True:
            page = self.list_page(
                resource,
                namespace=namespace,
                limit=limit,
                token=token,
                label_selector=label_selector,
            )
            items, token = page_items(page, resource)
            for item in items:
                if isinstance(item, Mapping):
                    yield dict(item)
            if token is None:
                return

    def create(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        name: str | None = None,
        subresource: str = "",
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> Json:
        """POST ``body``; with ``name`` and ``subresource``, to that subresource (an
        eviction)."""
        return self.request(
            "create",
            resource,
            namespace=namespace,
            name=name,
            subresource=subresource,
            body=body,
            deadline=deadline,
            policy=policy,
        )

    def replace(
        self, resource: Resource, name: str, body: Mapping[str, Any], namespace: str | None = None
    ) -> Json:
        """PUT ``body``: with its ``metadata.resourceVersion``, the write fails with
        ``KubeConflict`` when the object changed since it was read."""
        return self.request("update", resource, namespace=namespace, name=name, body=body)

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str = "",
    ) -> Json:
        """A merge patch: ``None`` values delete keys (strategic merge for built-in
        kinds, JSON merge patch for custom resources)."""
        return self.request(
            "patch",
            resource,
            namespace=namespace,
            name=name,
            subresource=subresource,
            body=patch,
            content_type=MERGE_PATCH if resource.custom else STRATEGIC_MERGE_PATCH,
        )

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> Json:
        return self.request("delete", resource, namespace=namespace, name=name)

    # -- the one request path ------------------------------------------------------------
    def request(
        self,
        verb: str,
        resource: Resource,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str = "",
        query: Sequence[tuple[str, Any]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> Json:
        """Send one request, retried as the policy allows, and return the answer's JSON
        object. ``deadline`` (monotonic seconds) bounds the retries as well.

        Raises a ``KubeError`` subclass for every answer that is not a success."""
        policy = policy or self.policy
        creates = (body or {}).get("metadata", {}).get("name") if verb == "create" else None
        request = _Request(verb, resource, namespace, name, subresource, creates)
        what = request.describe()
        path = resource.path(namespace, name, subresource)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        attempt = 0  # every retry so far: how long the backoff has grown
        counted = 0  # the retries that count against ``policy.retries``
        while True:
            self.counters.requests += 1
            try:
                status, reason, raw, answer_headers = self._send(
                    _METHOD_OF_VERB[verb], path, query, headers, body, policy
                )
            except _NoAnswer as failure:
                if self._retry(attempt, counted, None, deadline, policy, what, failure.cause):
                    attempt, counted = attempt + 1, counted + 1
                    continue
                raise KubeUnavailable(
                    f"{what}: cannot reach the Kubernetes API at {self.host}: {failure.cause}",
                    what=what,
                    retried=attempt > 0,
                ) from failure.__cause__
            if 200 <= status < 300:
                return _json_object(raw, what)
            patient = status in policy.patient_statuses and deadline is not None
            if retryable_status(status) and self._retry(
                attempt,
                0 if patient else counted,
                answer_headers.get("Retry-After"),
                deadline,
                policy,
                what,
                status,
            ):
                attempt, counted = attempt + 1, counted + (0 if patient else 1)
                continue
            raise self._error(request, what, status, reason, raw, attempt)

    def _send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, Any]],
        headers: Mapping[str, str],
        body: Mapping[str, Any] | None,
        policy: RetryPolicy,
    ) -> tuple[int, str, bytes, Mapping[str, str]]:
        """(status, reason, body bytes, headers) of one attempt; ``_NoAnswer`` when the
        server could not be reached."""
        client = self.api_client
        try:
            serialized = client.param_serialize(
                method,
                path,
                query_params=list(query) or None,
                header_params=dict(headers),
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
            response = client.call_api(*serialized, _request_timeout=policy.request_timeout_s)
            try:
                raw = response.read()
            finally:
                response.response.release_conn()
        except ApiException as exc:  # the client raises these only for TLS failures
            raise _NoAnswer(f"{exc.reason or exc}".replace("\n", ": ")) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise _NoAnswer(str(getattr(exc, "reason", None) or exc)) from exc
        return int(response.status), str(response.reason or ""), raw or b"", response.headers

    def _retry(
        self,
        attempt: int,
        counted: int,
        retry_after: object,
        deadline: float | None,
        policy: RetryPolicy,
        what: str,
        cause: object,
    ) -> bool:
        """Sleep before retry number ``attempt`` and say True, or say False when the
        ``counted`` retries used up the policy's or the wait would end past the deadline."""
        if counted >= policy.retries:
            return False
        delay = backoff_s(
            attempt, retry_after, self.now(), policy.backoff_initial_s, policy.backoff_max_s
        )
        if deadline is not None and self.monotonic() + delay > deadline:
            return False
        log.warning("%s: %s; retrying in %.1f s", what, cause, delay)
        self.counters.retries += 1
        self._sleep(delay)
        return True

    def _error(
        self, request: _Request, what: str, status: int, reason: str, raw: bytes, attempt: int
    ) -> KubeError:
        message = _server_message(raw)
        detail = f"{status} {reason}".strip() + (f" (server: {message})" if message else "")
        common: dict[str, Any] = {
            "what": what,
            "status": status,
            "server_message": message,
            "retried": attempt > 0,
        }
        if status == 401:
            return KubeUnauthorized(
                f"{what}: {detail}; the API server refused the credentials (an expired "
                "token or client certificate? check the kubeconfig user or the service "
                "account token)",
                **common,
            )
        if status == 403:
            permission = request.permission()
            return KubeForbidden(
                f"{what}: {detail}; {permission.grant()}", permission=permission, **common
            )
        if retryable_status(status):
            return KubeUnavailable(
                f"{what}: the Kubernetes API at {self.host} kept failing "
                f"({attempt + 1} attempts): {detail}",
                **common,
            )
        error = {404: KubeNotFound, 409: KubeConflict, 410: KubeGone}.get(status, KubeInvalid)
        return error(f"{what}: {detail}", **common)


class _NoAnswer(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def page_items(page: Mapping[str, Any], resource: Resource) -> tuple[list[Any], str | None]:
    """A list answer's items and its continue token (None on the last page)."""
    metadata = page.get("metadata") or {}
    items = page.get("items") or []
    if not isinstance(items, list) or not isinstance(metadata, Mapping):
        raise KubeBadResponse(
            f"list {resource.qualified}: the answer is not a list (no items array)"
        )
    token = metadata.get("continue") or None
    return items, token if isinstance(token, str) else None


def _json_object(raw: bytes, what: str) -> Json:
    if not raw:
        return {}
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise KubeBadResponse(f"{what}: the answer is not JSON: {exc}", what=what) from exc
    if not isinstance(document, dict):
        raise KubeBadResponse(f"{what}: the answer is not a JSON object", what=what)
    return document


def _server_message(raw: bytes) -> str:
    """The ``message`` of the Status object the API server answered with, if any."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return raw[:200].decode("utf-8", "replace")
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return ""


def patient(policy: RetryPolicy, initial_s: float, max_s: float) -> RetryPolicy:
    """``policy`` for a request that waits on purpose (an eviction a disruption budget
    refuses for now): 429 retried until the request's deadline, from ``initial_s`` up
    to ``max_s``; other failures as ``policy`` says."""
    return replace(
        policy,
        backoff_initial_s=initial_s,
        backoff_max_s=max_s,
        patient_statuses=frozenset({429}),
    )
