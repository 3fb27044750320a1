"""An emulated Kubernetes API server on loopback, driven by the real ``kubernetes`` client.

No API server binary can be installed here, and patching the client's methods would
test nothing of how gpuwatch talks to a cluster. This serves HTTP on 127.0.0.1 (an
ephemeral port) and answers the way kube-apiserver does for what gpuwatch uses:

- list and get for core/v1 (``/api/v1/nodes``, ``/api/v1/pods``,
  ``/api/v1/namespaces/{ns}/pods``), named groups (``/apis/apps/v1/replicasets``...)
  and custom resources once "installed" (``/apis/kubeflow.org/v1/pytorchjobs``);
- ``resourceVersion`` on objects and lists; items of built-in lists without
  ``kind``/``apiVersion`` (as the API serves them), custom resources with them;
- pagination: ``limit``, an opaque ``continue`` token, ``metadata.continue``,
  ``metadata.remainingItemCount``, a consistent list across pages (objects created after
  the first page stay out), and 410 Expired once the token's revision is compacted;
- errors as ``Status`` objects: 404 for resources that are not installed (a CRD
  missing) or objects that do not exist, 401 for a wrong bearer token, 403 for a verb
  RBAC would refuse (configurable per verb, resource and namespace);
- injected faults: the next N requests to a path answered 429 with ``Retry-After``, or
  500/503;
- bounds: a maximum number of requests and a deadline, after which it answers 503 and
  stops by itself, so that a client stuck in a loop cannot hang the test run.

Requests are dispatched by verb (``get``, ``list``; ``create``, ``patch``, ``update``,
``delete`` and subresources such as ``eviction`` or ``scale`` are routed but answered
405 until a handler is added for them), so that writes can be added later without
reshaping it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

# --- resource types -------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    group: str
    """API group; "" for core."""
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def builtin(self) -> bool:
        """Built-in lists serve items without kind/apiVersion; custom resources with."""
        return "." not in self.group

    @property
    def qualified(self) -> str:
        """``pods``, ``replicasets.apps``: how RBAC messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)


BUILTIN_RESOURCES = (
    ResourceType("", "v1", "nodes", "Node", namespaced=False),
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False),
    ResourceType("", "v1", "pods", "Pod"),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet"),
    ResourceType("apps", "v1", "deployments", "Deployment"),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet"),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet"),
    ResourceType("batch", "v1", "jobs", "Job"),
    ResourceType("batch", "v1", "cronjobs", "CronJob"),
)
KUBEFLOW_RESOURCES = (
    ResourceType("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    ResourceType("kubeflow.org", "v1", "notebooks", "Notebook"),
)


# --- answers --------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def status_answer(
    code: int,
    reason: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """A ``Status`` object, the body of every error the API server returns."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": dict(details or {}),
        "code": code,
    }
    return Answer(code, json.dumps(body).encode(), dict(headers or {}))


def _not_found_resource() -> Answer:
    return status_answer(404, "NotFound", "the server could not find the requested resource")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    verb: str = ""
    """RBAC verb once routed: get, list, watch, create, update, patch, delete."""


@dataclass
class Fault:
    path: str
    status: int
    remaining: int
    retry_after_s: int | None = None

    def matches(self, path: str) -> bool:
        return self.remaining > 0 and path == self.path


@dataclass
class _Stored:
    obj: dict[str, Any]
    created_rv: int
    item_body: bytes
    """The object as a list item: without kind/apiVersion for built-in resources."""


# --- the emulator ---------------------------------------------------------------------------


class KubeEmulator:
    """An in-process API server. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        resources: Iterable[ResourceType] = BUILTIN_RESOURCES,
        token: str | None = None,
        max_requests: int = 5_000,
        deadline_s: float = 60.0,
        user: str = "system:serviceaccount:gpuwatch:gpuwatch",
    ) -> None:
        self.token = token
        self.max_requests = max_requests
        self.deadline_s = deadline_s
        self.user = user
        self.requests: list[Request] = []
        self.exhausted = False
        """True once the request budget or the deadline ran out (it then stopped)."""
        self.after_request: Callable[[Request, Answer], Answer | None] | None = None
        """Called after each answer is made and before it is sent: tests change the
        server's state at a precise point (compact history mid-list, create an object),
        or return another answer to send instead (a proxy's HTML page)."""
        self._lock = threading.RLock()
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        self._store: dict[tuple[str, str, str], dict[tuple[str, str], _Stored]] = {}
        self._sorted: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        self._rv = 1000
        self._compacted_rv = 0
        self._denied: set[tuple[str, str, str | None]] = set()
        self._faults: list[Fault] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        for rtype in resources:
            self.install(rtype)

    # -- setup -------------------------------------------------------------------------------
    def install(self, rtype: ResourceType) -> None:
        """Serve ``rtype`` (a built-in resource, or a CRD being installed)."""
        with self._lock:
            self._types[rtype.key()] = rtype
            self._by_kind[(rtype.api_version, rtype.kind)] = rtype
            self._store.setdefault(rtype.key(), {})

    def add(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``obj`` (kubectl-shaped, with apiVersion and kind) as a create would."""
        with self._lock:
            rtype = self._by_kind.get((obj.get("apiVersion", ""), obj.get("kind", "")))
            if rtype is None:
                raise KeyError(
                    f"no resource installed for {obj.get('apiVersion')} {obj.get('kind')}"
                )
            stored: dict[str, Any] = json.loads(json.dumps(obj))
            meta = stored.setdefault("metadata", {})
            if rtype.namespaced:
                meta.setdefault("namespace", "default")
            else:
                meta.pop("namespace", None)
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            item = (
                stored
                if not rtype.builtin
                else {k: v for k, v in stored.items() if k not in ("kind", "apiVersion")}
            )
            key = (meta.get("namespace", ""), meta["name"])
            self._store[rtype.key()][key] = _Stored(
                stored, self._rv, json.dumps(item, separators=(",", ":")).encode()
            )
            self._sorted.pop(rtype.key(), None)
            return stored

    def add_all(self, objects: Iterable[Mapping[str, Any]]) -> None:
        for obj in objects:
            self.add(obj)

    def deny(self, verb: str, plural: str, group: str = "", namespace: str | None = None) -> None:
        """Refuse ``verb`` on a resource as RBAC would (namespace None: cluster scope)."""
        with self._lock:
            self._denied.add((verb, f"{group}/{plural}", namespace))

    def fail_next(
        self, path: str, status: int, times: int = 1, retry_after_s: int | None = None
    ) -> None:
        """Answer the next ``times`` requests to ``path`` with ``status`` (429, 500, 503...)."""
        with self._lock:
            self._faults.append(Fault(path, status, times, retry_after_s))

    def compact(self) -> None:
        """Compact history: continue tokens issued so far now answer 410 Expired."""
        with self._lock:
            # etcd compacts while writes go on: the revision moves past every token issued.
            self._rv += 1
            self._compacted_rv = self._rv

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "the emulator is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KubeEmulator:
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="kube-emulator",
            daemon=True,
        )
        self._thread.start()
        self._timer = threading.Timer(self.deadline_s, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _expire(self) -> None:
        self.exhausted = True
        server = self._server
        if server is not None:
            threading.Thread(target=server.shutdown, daemon=True).start()

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling --------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Answer:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path.rstrip("/") or "/"
        route = _parse_route(method, path, query)
        request = Request(method, path, query, route.verb if route else "")
        with self._lock:
            self.requests.append(request)
        answer = self._answer(request, route, headers)
        if self.after_request is not None:
            answer = self.after_request(request, answer) or answer
        return answer

    def _answer(self, request: Request, route: _Route | None, headers: Mapping[str, str]) -> Answer:
        path, query = request.path, request.query
        with self._lock:
            if len(self.requests) > self.max_requests:
                self._expire()
                return status_answer(
                    503, "ServiceUnavailable", "emulator request budget exhausted; stopping"
                )
            fault = next((f for f in self._faults if f.matches(path)), None)
            if fault is not None:
                fault.remaining -= 1
                return self._fault_answer(fault)
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return status_answer(401, "Unauthorized", "Unauthorized")
        if path == "/version":
            return Answer(200, json.dumps({"major": "1", "minor": "31"}).encode())
        if route is None:
            return status_answer(404, "NotFound", f"404 page not found: {path}")
        return self._serve(route, query)

    @staticmethod
    def _fault_answer(fault: Fault) -> Answer:
        if fault.status == 429:
            retry = fault.retry_after_s if fault.retry_after_s is not None else 1
            return status_answer(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                {"retryAfterSeconds": retry},
                {"Retry-After": str(retry)},
            )
        headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s else {}
        reason = {500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}.get(
            fault.status, HTTPStatus(fault.status).phrase.replace(" ", "")
        )
        return status_answer(fault.status, reason, f"injected fault {fault.status}", None, headers)

    def _serve(self, route: _Route, query: Mapping[str, str]) -> Answer:
        with self._lock:
            if self._refused(route.verb, route.group, route.plural, route.namespace):
                return self._forbidden(route)
            rtype = self._types.get((route.group, route.version, route.plural))
        if rtype is None or (route.namespace is not None and not rtype.namespaced):
            return _not_found_resource()
        if route.subresource is not None or route.verb not in ("get", "list"):
            return status_answer(
                405,
                "MethodNotAllowed",
                f"the emulator does not implement {route.verb} on {rtype.qualified}"
                + (f"/{route.subresource}" if route.subresource else ""),
            )
        if route.verb == "list":
            return self._list(rtype, route.namespace, query)
        assert route.name is not None
        return self._get(rtype, route.namespace, route.name)

    def _refused(self, verb: str, group: str, plural: str, namespace: str | None) -> bool:
        resource = f"{group}/{plural}"
        # A cluster-scope denial also refuses the verb in every namespace.
        return (verb, resource, None) in self._denied or (
            namespace is not None and (verb, resource, namespace) in self._denied
        )

    def _forbidden(self, route: _Route) -> Answer:
        group, plural = route.group, route.plural
        qualified = f"{plural}.{group}" if group else plural
        scope = (
            f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
        )
        resource = f"{plural}/{route.subresource}" if route.subresource else plural
        message = (
            f'{qualified} is forbidden: User "{self.user}" cannot {route.verb} resource '
            f'"{resource}" in API group "{group}" {scope}'
        )
        return status_answer(403, "Forbidden", message, {"group": group, "kind": plural})

    def _get(self, rtype: ResourceType, namespace: str | None, name: str) -> Answer:
        with self._lock:
            stored = self._store[rtype.key()].get((namespace or "", name))
        if stored is None:
            return status_answer(
                404,
                "NotFound",
                f'{rtype.qualified} "{name}" not found',
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )
        return Answer(200, json.dumps(stored.obj).encode())

    def _list(self, rtype: ResourceType, namespace: str | None, query: Mapping[str, str]) -> Answer:
        for unsupported in ("labelSelector", "fieldSelector"):
            if query.get(unsupported):
                return status_answer(
                    400, "BadRequest", f"the emulator does not implement {unsupported}"
                )
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            return status_answer(400, "BadRequest", f"invalid limit {query['limit']!r}")
        token = query.get("continue") or ""
        with self._lock:
            if token:
                decoded = _decode_continue(token)
                if decoded is None:
                    return status_answer(400, "BadRequest", "continue key is not valid")
                list_rv, after = decoded
                if list_rv < self._compacted_rv:
                    return status_answer(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue "
                        "parameter.",
                    )
            else:
                list_rv, after = self._rv, None
            store = self._store[rtype.key()]
            keys = self._sorted.get(rtype.key())
            if keys is None:
                keys = self._sorted[rtype.key()] = sorted(store)
            chosen: list[_Stored] = []
            remaining = 0
            last_key: tuple[str, str] | None = None
            for key in keys:
                if (namespace is not None and key[0] != namespace) or (
                    after is not None and key <= after
                ):
                    continue
                stored = store[key]
                if stored.created_rv > list_rv:
                    continue  # created after the list began: not in this consistent list
                if limit and len(chosen) >= limit:
                    remaining += 1
                    continue
                chosen.append(stored)
                last_key = key
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if remaining and last_key is not None:
            meta["continue"] = _encode_continue(list_rv, last_key)
            meta["remainingItemCount"] = remaining
        head = json.dumps(
            {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta}
        ).encode()
        body = head[:-1] + b',"items":[' + b",".join(s.item_body for s in chosen) + b"]}"
        return Answer(200, body)


@dataclass(frozen=True)
class _Route:
    group: str
    version: str
    namespace: str | None
    plural: str
    name: str | None
    subresource: str | None
    verb: str


def _parse_route(method: str, path: str, query: Mapping[str, str]) -> _Route | None:
    """Split an API path into its parts, as kube-apiserver's request info resolver does."""
    segments = path.strip("/").split("/")
    if segments[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", segments[2:]
    elif segments[0] == "apis" and len(segments) >= 4:
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        return None
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or not rest[0]:
        return None
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return _Route(group, version, namespace, rest[0], name, subresource, _verb(method, name, query))


def _verb(method: str, name: str | None, query: Mapping[str, str]) -> str:
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method, method.lower())


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    # Opaque to clients, like the real token (base64 of the etcd key and revision).
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(key)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (binascii.Error, ValueError, KeyError, IndexError, TypeError):
        return None


# --- HTTP plumbing --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[..., BaseHTTPRequestHandler],
        emulator: KubeEmulator,
    ) -> None:
        super().__init__(address, handler)
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close kept-alive connections so that their handler threads end now."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    # Headers and body go out as two writes; with Nagle's algorithm the second waits for
    # the client's delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # writes are not implemented yet; drain the body
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.emulator.handle(self.command, self.path, headers)
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


# --- pytest fixtures ------------------------------------------------------------------------


@pytest.fixture
def kube_emulator() -> Iterator[KubeEmulator]:
    """A started emulator with the built-in resources (no CRDs), stopped afterwards.

    Fails the test if the emulator had to stop itself (a client looping on requests).
    """
    emulator = KubeEmulator(deadline_s=30.0)
    with emulator:
        yield emulator
    assert not emulator.exhausted, "the emulator's request budget or deadline ran out"


def free_port() -> int:
    """A loopback port nothing listens on (for unreachable-server tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
