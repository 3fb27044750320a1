"""``KubeEmulator``: the server's lifecycle, its budget and faults, and the API tests use
to arrange state, script behaviour and read back what happened.

See the package docstring for what it emulates and what it leaves out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib3
from kubernetes import client as k8s

from gpuwatch.kube.api import KubeApi, RetryPolicy
from tests.integration.kube_emulator.answers import Answer, bad_request, status_answer
from tests.integration.kube_emulator.handlers import ApiHandlers
from tests.integration.kube_emulator.records import EvictionRefusal, Fault, Request, decode_body
from tests.integration.kube_emulator.resources import BUILTIN_RESOURCES, EVENTS, ResourceType
from tests.integration.kube_emulator.routing import Route, parse_route
from tests.integration.kube_emulator.store import Store, copy_json
from tests.integration.loopback import LoopbackHTTPServer, ServedDouble, Serving

# --- the emulator ---------------------------------------------------------------------------


class KubeEmulator(ServedDouble):
    """An in-process API server. Use as a context manager, or ``start()``/``stop()``."""

    thread_name = "kube-emulator"

    def __init__(
        self,
        *,
        resources: Iterable[ResourceType] = BUILTIN_RESOURCES,
        token: str | None = None,
        max_requests: int = 5_000,
        deadline_s: float = 60.0,
        user: str = "system:serviceaccount:gpuwatch:gpuwatch",
        graceful_pod_deletion: bool = False,
    ) -> None:
        """``graceful_pod_deletion``: a deleted or evicted pod bound to a node keeps
        running with a ``deletionTimestamp`` until ``finish_terminations()``, as while the
        kubelet waits out its grace period; otherwise it is gone at once."""
        self.token = token
        self.max_requests = max_requests
        self.deadline_s = deadline_s
        self.requests: list[Request] = []
        self.exhausted = False
        """True once the request budget or the deadline ran out (it then stopped)."""
        self.after_request: Callable[[Request, Answer], Answer | None] | None = None
        """Called after each answer is made and before it is sent: tests change the
        server's state at a precise point (compact history mid-list, create an object),
        or return another answer to send instead (a proxy's HTML page)."""
        self._store = Store(graceful_pod_deletion=graceful_pod_deletion)
        self._lock = self._store.lock
        self._faults: list[Fault] = []
        self._api = ApiHandlers(self._store, user)
        self._server: _Server | None = None
        self._serving: Serving | None = None
        self.install(*resources)

    @property
    def user(self) -> str:
        """Who RBAC refusals (403) name as the caller."""
        return self._api.user

    @user.setter
    def user(self, value: str) -> None:
        self._api.user = value

    # -- state, for tests --------------------------------------------------------------------
    def install(self, *rtypes: ResourceType) -> None:
        """Serve these resources (built-in ones, or CRDs being installed)."""
        for rtype in rtypes:
            self._store.install(rtype)

    def add(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``obj`` (kubectl-shaped, with apiVersion and kind) as it is, replacing one
        of the same name: what a test "finds" in the cluster. No validation, no defaults
        beyond uid, creationTimestamp, resourceVersion (and namespace "default")."""
        stored = copy_json(obj)
        with self._lock:
            rtype = self._store.type_of(stored)
            meta = stored.setdefault("metadata", {})
            namespace = meta.get("namespace", "default") if rtype.namespaced else None
            exists = self._store.get(rtype, namespace, meta["name"]) is not None
            return copy_json(self._store.put(rtype, stored, create=not exists))

    def add_all(self, objects: Iterable[Mapping[str, Any]]) -> None:
        for obj in objects:
            self.add(obj)

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """A copy of the object as the server holds it now, or None."""
        with self._lock:
            rtype = self._type(api_version, kind)
            obj = self._store.get(rtype, _ns(rtype, namespace), name)
            return copy_json(obj) if obj is not None else None

    def objects(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Copies of every object of a kind (in one namespace, or all)."""
        with self._lock:
            return copy_json(self._store.objects(self._type(api_version, kind), namespace))

    def mutate(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        change: Callable[[dict[str, Any]], None],
    ) -> dict[str, Any]:
        """Change an object in place, as a controller would (new resourceVersion, status
        included): ``change`` gets a copy to edit. Raises KeyError when it is absent."""
        with self._lock:
            rtype = self._type(api_version, kind)
            current = self._store.get(rtype, _ns(rtype, namespace), name)
            if current is None:
                raise KeyError(f"{rtype.qualified} {namespace}/{name} not found")
            edited = copy_json(current)
            change(edited)
            return copy_json(self._store.put(rtype, edited))

    def remove(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete an object as a controller would (finalizers and dependents honoured);
        True if it existed. Not recorded as a request."""
        with self._lock:
            rtype = self._type(api_version, kind)
            current = self._store.get(rtype, _ns(rtype, namespace), name)
            if current is None:
                return False
            self._store.delete(rtype, current)
            return True

    def finish_terminations(self) -> int:
        """Play the kubelet: pods in their grace period are gone now; how many."""
        return self._store.finish_terminations()

    def events_for(
        self, name: str, *, namespace: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """core/v1 Events whose involvedObject is ``name`` (of ``kind``), oldest first."""
        with self._lock:
            events = [
                e
                for e in self._store.objects(EVENTS)
                if (e.get("involvedObject") or {}).get("name") == name
                and namespace in (None, (e.get("involvedObject") or {}).get("namespace"))
                and kind in (None, (e.get("involvedObject") or {}).get("kind"))
            ]
            events.sort(key=lambda e: self._store.created_rv(EVENTS, e))
            return copy_json(events)

    def path(
        self,
        api_version: str,
        kind: str,
        name: str | None = None,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path of a collection, an object or a subresource (for faults, filters)."""
        rtype = self._type(api_version, kind)
        prefix = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else "/api/v1"
        if rtype.namespaced and namespace is not None:
            prefix += f"/namespaces/{namespace}"
        parts = [prefix, rtype.plural, name, subresource if name else None]
        return "/".join(p for p in parts if p)

    def compact(self) -> None:
        """Compact history: continue tokens issued so far now answer 410 Expired."""
        with self._lock:
            # etcd compacts while writes go on: the revision moves past every token issued.
            self._store.rv += 1
            self._store.compacted_rv = self._store.rv

    def _type(self, api_version: str, kind: str) -> ResourceType:
        return self._store.type_of({"apiVersion": api_version, "kind": kind})

    # -- behaviour, for tests ----------------------------------------------------------------
    def deny(self, verb: str, plural: str, group: str = "", namespace: str | None = None) -> None:
        """Refuse ``verb`` on a resource as RBAC would (namespace None: cluster scope).
        ``plural`` may name a subresource: ``deny("create", "pods/eviction")``."""
        with self._lock:
            self._api.denied.add((verb, f"{group}/{plural}", namespace))

    def grant_only(self, grants: Iterable[tuple[str, str, str, str | None]]) -> None:
        """From now on refuse (403) whatever ``grants`` do not allow, as RBAC bound with
        exactly those rules would: each (group, resource[/subresource], verb, namespace),
        namespace None for a ClusterRole's grant (every namespace, and cluster-scoped
        objects)."""
        with self._lock:
            self._api.granted = {
                (verb, f"{group}/{resource}", namespace)
                for group, resource, verb, namespace in grants
            }

    def fail_next(
        self,
        path: str,
        status: int,
        times: int = 1,
        retry_after_s: int | None = None,
        *,
        method: str | Collection[str] | None = None,
        message: str | None = None,
        after_effect: bool = False,
    ) -> None:
        """Answer the next ``times`` requests to ``path`` (exact, or a glob with ``*``)
        with ``status`` (429, 500, 503, 409, 422...) and a Status body, only for
        ``method`` if given. The request has no effect, unless ``after_effect``: then it
        is applied and its answer replaced (a write that happened, an answer lost)."""
        methods = (
            None if method is None else frozenset([method] if isinstance(method, str) else method)
        )
        with self._lock:
            self._faults.append(
                Fault(path, status, times, retry_after_s, methods, message, after_effect)
            )

    def fail_scale(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        status: int = 500,
        times: int = 1,
        message: str | None = None,
    ) -> None:
        """The next ``times`` writes (PUT or PATCH) of this object's scale fail."""
        path = self.path(api_version, kind, name, namespace, "scale")
        self.fail_next(path, status, times, method=("PUT", "PATCH"), message=message)

    def refuse_evictions(
        self, times: int = 1, *, pod: str | None = None, namespace: str | None = None
    ) -> None:
        """The next ``times`` evictions (of ``pod``/in ``namespace`` if given) answer 429
        as a disruption budget does, whatever the budgets say; then budgets decide."""
        with self._lock:
            self._api.refusals.append(EvictionRefusal(times, namespace, pod))

    # -- recorded requests -------------------------------------------------------------------
    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def requests_where(self, **fields: Any) -> list[Request]:
        """Requests whose attributes equal ``fields``: ``requests_where(verb="delete",
        plural="pods")``, ``requests_where(subresource="eviction", status=429)``."""
        unknown = set(fields) - set(Request.__dataclass_fields__)
        if unknown:
            raise TypeError(f"Request has no field {sorted(unknown)}")
        with self._lock:
            return [r for r in self.requests if all(getattr(r, k) == v for k, v in fields.items())]

    def writes(self) -> list[Request]:
        """Every request that could change state (anything but GET)."""
        with self._lock:
            return [r for r in self.requests if r.method != "GET"]

    def deletes(self, plural: str | None = None) -> list[Request]:
        """DELETE requests (of ``plural``): ``assert not emulator.deletes("pods")``."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "DELETE" and plural in (None, r.plural) and r.subresource is None
            ]

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "the emulator is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def api_client(self) -> k8s.ApiClient:
        """A client of this server whose transport neither retries by status nor sleeps
        on ``Retry-After``, so that tests see every answer the server gives."""
        configuration = k8s.Configuration(host=self.url)
        configuration.retries = urllib3.Retry(
            total=1, connect=1, read=0, status=0, other=0, redirect=0,
            respect_retry_after_header=False, raise_on_status=False,
        )  # fmt: skip
        return k8s.ApiClient(configuration)

    def kube_api(self, policy: RetryPolicy | None = None, **kwargs: Any) -> KubeApi:
        """gpuwatch's Kubernetes layer on this server (``kwargs``: ``sleep``, ``now``,
        ``monotonic``). Without ``sleep``, retries do not wait."""
        kwargs.setdefault("sleep", lambda seconds: None)
        return KubeApi(self.api_client(), policy, **kwargs)

    def _new_server(self) -> LoopbackHTTPServer:
        return _Server(("127.0.0.1", 0), _Handler, self)

    def stop(self) -> None:
        super().stop()
        self._server = None

    # -- request handling --------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Answer:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path.rstrip("/") or "/"
        route = parse_route(method, path, query)
        request = Request(
            method,
            path,
            query,
            route.verb if route else "",
            decode_body(body),
            headers.get("content-type", "").split(";")[0].strip(),
        )
        if route is not None:
            request.group, request.plural = route.group, route.plural
            request.namespace, request.name = route.namespace, route.name
            request.subresource = route.subresource
        with self._lock:
            self.requests.append(request)
        answer = self._answer(request, route, headers, body)
        if self.after_request is not None:
            answer = self.after_request(request, answer) or answer
        request.status = answer.status
        return answer

    def _answer(
        self, request: Request, route: Route | None, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        path = request.path
        with self._lock:
            if len(self.requests) > self.max_requests:
                self._exhaust()
                return status_answer(
                    503, "ServiceUnavailable", "emulator request budget exhausted; stopping"
                )
            fault = next((f for f in self._faults if f.matches(request.method, path)), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is not None and not fault.after_effect:
            return fault.answer()
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return status_answer(401, "Unauthorized", "Unauthorized")
        if path == "/version":
            return Answer(200, json.dumps({"major": "1", "minor": "31"}).encode())
        if route is None:
            return status_answer(404, "NotFound", f"404 page not found: {path}")
        if body and request.method != "GET" and isinstance(request.body, str):
            answer = bad_request(f"the request body is not JSON: {request.body[:80]!r}")
        else:
            answer = self._api.serve(route, request)
        return fault.answer() if fault is not None else answer


def _ns(rtype: ResourceType, namespace: str | None) -> str | None:
    return (namespace or "default") if rtype.namespaced else None


# --- HTTP plumbing --------------------------------------------------------------------------


class _Server(LoopbackHTTPServer):
    def __init__(self, address: tuple[str, int], handler: Any, emulator: KubeEmulator) -> None:
        super().__init__(address, handler)
        self.emulator = emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    # Headers and body go out as two writes; with Nagle's algorithm the second waits for
    # the client's delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.emulator.handle(self.command, self.path, headers, body)
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the emulator records requests itself; stderr noise helps nobody
