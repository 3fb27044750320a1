"""The Kubernetes API's answers, translated once into gpuwatch's own errors.

Every adapter that talks to the API server (the cluster source, the state and silences
ConfigMaps, the actuator, the Lease) gets the same error for the same answer, worded
for the person who must act on it: a 403 names the permission to grant and whether it
belongs in a Role or a ClusterRole, a 401 says the credentials were refused, a failure
after retries says how many attempts were made. No caller ever sees the client
library's ``ApiException`` or urllib3's errors (as in kopf's ``clients/errors.py``).

Callers that speak for a seam map these to that seam's errors in one call:
``as_source_error`` for sources; the state store wraps them in ``StateError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuwatch.model.errors import (
    GpuwatchError,
    SourceAuthRefused,
    SourceBadQuery,
    SourceBadResponse,
    SourceError,
    SourceUnreachable,
)


@dataclass(frozen=True)
class Permission:
    """One RBAC permission: a verb on a resource of an API group, in a namespace or
    cluster-wide. ``resource`` may name a subresource (``pods/eviction``)."""

    verb: str
    group: str
    resource: str
    namespace: str | None = None
    """None: cluster-wide (a ClusterRole), or a cluster-scoped resource."""

    def rule(self) -> dict[str, list[str]]:
        """The RBAC rule that grants it, as a Role or ClusterRole lists it."""
        return {"apiGroups": [self.group], "resources": [self.resource], "verbs": [self.verb]}

    def grant(self) -> str:
        """What to do about a 403, in one sentence."""
        group = f'"{self.group}"' if not self.group else self.group
        where = (
            f"a Role in namespace {self.namespace}"
            if self.namespace
            else "a ClusterRole (bound with a ClusterRoleBinding)"
        )
        return (
            f"RBAC does not allow verb {self.verb} on {self.resource} in API group "
            f"{group}: grant the service account {where} with the rule apiGroups "
            f"[{group}], resources [{self.resource}], verbs [{self.verb}]"
        )


class KubeError(GpuwatchError):
    """An answer (or the lack of one) from the Kubernetes API.

    ``what`` names the request (``get configmap gpuwatch/gpuwatch-state``); ``status``
    is the HTTP status (0 when no answer came); ``server_message`` is the ``message``
    of the Status object the API server answered with; ``retried`` says whether an
    earlier attempt of the same request was made, so that its effect may have landed
    even though its answer was lost.
    """

    def __init__(
        self,
        message: str,
        *,
        what: str = "",
        status: int = 0,
        server_message: str = "",
        retried: bool = False,
    ) -> None:
        super().__init__(message)
        self.what = what
        self.status = status
        self.server_message = server_message
        self.retried = retried


class KubeUnauthorized(KubeError):
    """401: the API server refused the credentials."""


class KubeForbidden(KubeError):
    """403: RBAC refused the verb; ``permission`` is what to grant."""

    def __init__(self, message: str, *, permission: Permission, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.permission = permission


class KubeNotFound(KubeError):
    """404: no such object, or (for a custom resource) the CRD is not installed."""


class KubeConflict(KubeError):
    """409: the object changed since it was read (stale resourceVersion), or already exists."""


class KubeGone(KubeError):
    """410: a list's continue token outlived the server's history."""


class KubeInvalid(KubeError):
    """Any other 4xx: a request the server will not take as it is (400, 405, 415, 422)."""


class KubeUnavailable(KubeError):
    """No usable answer after every retry: connection failures, 429 and 5xx that did
    not stop, TLS failures."""


class KubeBadResponse(KubeError):
    """The server answered 2xx, but not with the JSON object the API promises."""


def as_source_error(exc: KubeError) -> SourceError:
    """The same failure as a source error (the cycle's typed failure kinds)."""
    if isinstance(exc, KubeUnauthorized | KubeForbidden):
        return SourceAuthRefused(str(exc))
    if isinstance(exc, KubeUnavailable):
        return SourceUnreachable(str(exc))
    if isinstance(exc, KubeBadResponse):
        return SourceBadResponse(str(exc))
    return SourceBadQuery(str(exc))
