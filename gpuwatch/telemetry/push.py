"""Push gpuwatch's own metrics to a Pushgateway, for CronJob mode.

A CronJob's process is gone before Prometheus could scrape it, so its metrics are
pushed instead. Each push replaces its group (HTTP PUT): the group is one cluster's
gpuwatch, named by the grouping key, which must therefore name the cluster, or
several clusters pushing to one gateway would overwrite each other.

A failed push is a data-quality note for the caller, never a failed cycle: the
cycle's findings and actions stand whether or not the gateway took its metrics.
Failures raise ``PushError``, whose message names the URL without its credentials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

from gpuwatch.model.errors import GpuwatchError
from gpuwatch.util.redact import redact, without_userinfo

CLUSTER_KEYS = ("cluster", "instance")
"""A grouping key needs one of these, naming the cluster the metrics are about."""

Handler = Callable[..., Callable[[], None]]


class PushError(GpuwatchError):
    """The Pushgateway did not take the metrics. ``url`` carries no credentials;
    ``status`` is the HTTP status when the gateway answered, else None."""

    def __init__(self, url: str, job: str, detail: str, status: int | None = None) -> None:
        self.url = url
        self.job = job
        self.status = status
        self.detail = detail
        answer = redact(f"HTTP {status}: {detail}" if status is not None else detail)
        super().__init__(f"push of job {job!r} to Pushgateway {url} failed: {answer}")


def cluster_grouping_key(cluster: str) -> dict[str, str]:
    """The grouping key for one cluster's gpuwatch: ``{"cluster": <name>}``."""
    return {"cluster": cluster}


def push(
    registry: CollectorRegistry,
    url: str,
    job: str,
    grouping_key: Mapping[str, str],
    *,
    timeout_s: float = 10.0,
) -> None:
    """Replace the group ``job`` + ``grouping_key`` on the Pushgateway at ``url`` with
    the samples in ``registry``.

    ``url`` may carry ``user:password@``: they are sent as basic auth, and left out of
    every message. ``grouping_key`` must hold ``cluster`` or ``instance`` (see
    ``cluster_grouping_key``); ValueError otherwise, a bug rather than a failed push.
    Raises ``PushError`` when the gateway cannot be reached or refuses the push.
    """
    if not any(grouping_key.get(key) for key in CLUSTER_KEYS):
        raise ValueError(
            f"grouping key {dict(grouping_key)} names no cluster: it needs one of "
            f"{', '.join(CLUSTER_KEYS)}, or clusters pushing to one gateway overwrite each other"
        )
    shown = without_userinfo(url)
    try:
        target, handler = _split_credentials(url)
        push_to_gateway(
            target,
            job=job,
            registry=registry,
            grouping_key=dict(grouping_key),
            timeout=timeout_s,
            handler=handler,
        )
    except HTTPError as exc:
        raise PushError(shown, job, _error_body(exc) or str(exc.reason), exc.code) from exc
    except URLError as exc:
        raise PushError(shown, job, f"cannot connect: {exc.reason}") from exc
    except (OSError, HTTPException, ValueError) as exc:
        # Timeouts, resets, a malformed URL, and prometheus_client's own OSError for a
        # status of 400 and above that urllib let through.
        raise PushError(shown, job, f"{type(exc).__name__}: {exc}") from exc


def _split_credentials(url: str) -> tuple[str, Handler]:
    """The URL to push to, and a handler that sends any ``user:password@`` in ``url``
    as basic auth (urllib would take them for part of the host)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return urlunsplit(parts), default_handler
    username, password = unquote(parts.username), unquote(parts.password or "")
    netloc = parts.netloc.rpartition("@")[2]
    bare = urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, ""))

    def with_auth(
        url: str,
        method: str,
        timeout: float | None,
        headers: list[tuple[str, str]],
        data: bytes,
    ) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username, password)

    return bare, with_auth


def _error_body(exc: HTTPError) -> str:
    """The first line of what the gateway said (it explains a 400), if anything."""
    try:
        text = exc.read(2048).decode("utf-8", errors="replace").strip()
    except (OSError, HTTPException):
        return ""
    return text.splitlines()[0][:300] if text else ""
