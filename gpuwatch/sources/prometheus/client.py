"""The HTTP side: prometheus-api-client for the connection, gpuwatch's errors for failures.

prometheus-api-client's ``PrometheusConnect`` carries the session (auth, TLS, headers,
retries); answers are turned straight into numpy arrays here. Its exceptions never
leave this module: they become ``SourceError`` subclasses that say what to fix, naming
the server by its URL without the password and with every secret read here masked.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import requests
import urllib3
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from gpuwatch.config.settings import PrometheusSettings
from gpuwatch.model.errors import (
    ConfigError,
    SourceAuthRefused,
    SourceBadQuery,
    SourceBadResponse,
    SourceError,
    SourceTooLarge,
    SourceUnreachable,
)
from gpuwatch.util.redact import (
    redact,
    redact_url,
    register_basic_auth,
    register_secret,
    register_url,
)

log = logging.getLogger(__name__)
_STATUS = re.compile(r"HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)


@dataclass(frozen=True)
class Connection:
    """Everything needed to talk to the server, secrets already read."""

    url: str
    timeout_s: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None
    verify: bool | str = True
    cert: tuple[str, str] | str | None = None

    @classmethod
    def from_settings(cls, settings: PrometheusSettings, env: Mapping[str, str]) -> Connection:
        """Resolve secrets from files and environment variables (read on every call, so
        rotated tokens are picked up); raise ConfigError naming a missing one."""
        if not settings.url:
            raise ConfigError("prometheus.url: required when metrics.source is prometheus")
        register_url(settings.url)
        for value in settings.headers.values():
            register_secret(value)
        headers = dict(settings.headers)
        if settings.tenant:
            headers["X-Scope-OrgID"] = settings.tenant
        token = _secret(settings.bearer_token_file, settings.bearer_token_env, env, "bearer_token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        basic = None
        if settings.username:
            password = _secret(settings.password_file, settings.password_env, env, "password")
            basic = (settings.username, password or "")
            register_basic_auth(*basic)
        verify: bool | str = True
        if settings.insecure_skip_verify:
            verify = False
        elif settings.ca_file:
            verify = str(settings.ca_file)
        cert: tuple[str, str] | str | None = None
        if settings.cert_file:
            cert = (
                (str(settings.cert_file), str(settings.key_file))
                if settings.key_file
                else str(settings.cert_file)
            )
        return cls(settings.url.rstrip("/"), settings.timeout_s, headers, basic, verify, cert)


def _secret(path: Any, variable: str | None, env: Mapping[str, str], name: str) -> str | None:
    """The secret from the file or the variable, registered for redaction."""
    if path is not None:
        try:
            value = str(path.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise ConfigError(
                f"prometheus.{name}_file: cannot read {path}: {exc.strerror}"
            ) from exc
    elif variable:
        if variable not in env:
            raise ConfigError(f"prometheus.{name}_env: environment variable {variable} is unset")
        value = env[variable].strip()
    else:
        return None
    register_secret(value)
    return value


@dataclass(frozen=True)
class InstantSeries:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    times_s: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]


class PrometheusClient:
    """Instant and range queries with typed failures. Thread-safe for concurrent calls."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.shown_url = redact_url(connection.url)
        """The server's URL as messages show it: without its password."""
        session = requests.Session()
        session.verify = connection.verify
        if connection.verify is False:
            # Asked for explicitly: say so once here rather than once per request.
            log.warning("TLS certificate verification is off for %s", self.shown_url)
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session.cert = connection.cert
        # Retry only what is transient and cheap to repeat; a request refused as too
        # big (422, 503) comes back to the caller, which splits it instead.
        retry = Retry(
            total=2,
            read=False,  # a timed-out query is too big: re-raise at once, to be split
            backoff_factor=0.5,
            status_forcelist=(429, 502, 504),
            allowed_methods=None,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        self._prom = PrometheusConnect(
            url=connection.url,
            headers=dict(connection.headers),
            auth=connection.basic_auth,
            session=session,
            retry=retry,
            timeout=connection.timeout_s,  # type: ignore[arg-type]
        )
        self.requests_made = 0
        self.bytes_received = 0
        self.samples_received = 0
        self.recorded: list[tuple[str, dict[str, str]]] | None = None
        """When a list, every request's (API path, parameters) is appended (benchmarks)."""
        session.hooks["response"].append(self._count_bytes)

    def _count_bytes(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.bytes_received += len(response.content)

    def close(self) -> None:
        self._prom.close()

    def instant(self, promql: str, at: datetime) -> list[InstantSeries]:
        params = {"time": f"{at.timestamp():.3f}", "timeout": self._server_timeout()}
        if self.recorded is not None:
            self.recorded.append(("/api/v1/query", {"query": promql, **params}))
        result = self._call(lambda: self._prom.custom_query(promql, params=params), promql)
        self.samples_received += len(result)
        try:
            return [
                InstantSeries(item["metric"], float(item["value"][1]))
                for item in result  # type: ignore[union-attr]
            ]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise SourceBadResponse(self._where(f"unexpected answer shape: {exc!r}")) from exc

    def range(self, promql: str, start_s: int, end_s: int, step_s: int) -> list[RangeSeries]:
        params = {"timeout": self._server_timeout()}
        if self.recorded is not None:
            self.recorded.append(
                (
                    "/api/v1/query_range",
                    {
                        "query": promql,
                        "start": str(start_s),
                        "end": str(end_s),
                        "step": f"{step_s}s",
                        **params,
                    },
                )
            )
        start = datetime.fromtimestamp(start_s, tz=UTC)
        end = datetime.fromtimestamp(end_s, tz=UTC)
        result = self._call(
            lambda: self._prom.custom_query_range(
                promql, start_time=start, end_time=end, step=f"{step_s}s", params=params
            ),
            promql,
        )
        series = []
        try:
            for item in result:  # type: ignore[union-attr]
                pairs = np.asarray(item["values"], dtype=np.float64).reshape(-1, 2)
                series.append(RangeSeries(item["metric"], pairs[:, 0], pairs[:, 1]))
                self.samples_received += len(pairs)
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceBadResponse(self._where(f"unexpected answer shape: {exc!r}")) from exc
        return series

    def _server_timeout(self) -> str:
        # The server gives up when the client does, instead of computing for nobody.
        return f"{int(self.connection.timeout_s * 1000)}ms"

    def _where(self, detail: str) -> str:
        # Client exceptions quote URLs, headers and bodies: whatever they say is redacted.
        return redact(f"{self.shown_url}: {detail}")

    def _call(self, request: Any, promql: str) -> Any:
        self.requests_made += 1
        try:
            result = request()
        except requests.exceptions.Timeout as exc:
            raise SourceTooLarge(self._where("request timed out")) from exc
        except requests.exceptions.SSLError as exc:
            raise SourceUnreachable(self._where(f"TLS failed: {exc}")) from exc
        except requests.exceptions.ConnectionError as exc:
            raise SourceUnreachable(self._where(f"cannot connect: {_root(exc)}")) from exc
        except PrometheusApiClientException as exc:
            raise _from_status(self.shown_url, redact(str(exc)), promql) from exc
        except (ValueError, KeyError, TypeError) as exc:
            # A 200 whose body is not the Prometheus API's JSON (a proxy's HTML page).
            raise SourceBadResponse(self._where(f"answer is not Prometheus JSON: {exc}")) from exc
        if not isinstance(result, list):
            raise SourceBadResponse(self._where("answer's data.result is not a list"))
        return result


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__


def _from_status(url: str, message: str, promql: str) -> SourceError:
    match = _STATUS.match(message)
    status = int(match.group(1)) if match else 0
    body = match.group(2) if match else message
    detail = _error_text(body)
    where = f"{url}: HTTP {status}"
    if status in (401, 403):
        return SourceAuthRefused(
            f"{where}: {detail}; check prometheus.bearer_token_*, username/password_*, or tenant"
        )
    if "same labelset" in detail:
        # The query itself cannot run here (an execution error, 422 on Prometheus): no
        # smaller piece of it would.
        return SourceBadQuery(f"{where}: {detail} (query: {_near_error(promql, detail)})")
    if status in (422, 503) or "too many" in detail.lower() or "timeout" in detail.lower():
        return SourceTooLarge(f"{where}: {detail}")
    if status == 400:
        return SourceBadQuery(f"{where}: {detail} (query: {_near_error(promql, detail)})")
    if status == 429 or status >= 500:
        return SourceUnreachable(f"{where}: {detail}")
    return SourceBadResponse(f"{where}: {detail}")


def _near_error(promql: str, detail: str, width: int = 300) -> str:
    """The query, shortened to ``width`` characters around the position a parse error
    names (``1:1342: parse error``), so that the part at fault is the part shown."""
    if len(promql) <= width:
        return promql
    found = _PARSE_POSITION.search(detail)
    lines = promql.split("\n")
    if found is None or int(found.group(1)) > len(lines):
        return promql[:width] + "…"
    offset = sum(len(line) + 1 for line in lines[: int(found.group(1)) - 1])
    at = offset + int(found.group(2)) - 1
    start = max(0, min(at - width * 2 // 3, len(promql) - width))
    return (
        ("…" if start else "") + promql[start : start + width] + "…" * (start + width < len(promql))
    )


_PARSE_POSITION = re.compile(r"(\d+):(\d+): parse error")


def _error_text(body: str) -> str:
    """The ``error`` field of a Prometheus error body, else the body, shortened.

    prometheus-api-client puts ``repr(response.content)`` in its message.
    """
    try:
        raw = ast.literal_eval(body)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    except (ValueError, SyntaxError):
        text = body
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and parsed.get("error"):
            text = str(parsed["error"])
    except ValueError:
        pass
    return " ".join(text.split())[:300]
