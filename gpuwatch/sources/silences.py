"""Silences read from a ConfigMap, so that muting an alert needs no redeploy.

``notify.silences`` in the config file changes only when gpuwatch is redeployed; the
person on call at 3 a.m. needs to mute a known-bad node now. ``kubectl edit configmap``
on ``notify.silences_configmap`` (key ``silences.yaml``: a YAML list in the form of
``notify.silences``) takes effect on the next cycle::

    - match: {rule: [gpu-idle], pool: [a100-spot]}
      until: 2026-12-01T09:00:00Z
      comment: "node drained for repair; ask #gpu-infra"

A missing ConfigMap or key means no silences. Expired ones (``until`` at or before the
cycle's instant) are left out.

Invalid content fails the whole read (``SourceBadResponse``), listing every problem:
the ConfigMap and key, the line, the entry's index and field, and what was expected.
It is a choice: returning the valid entries would apply a list that is not the one
its author wrote (an entry whose typo made it invalid mutes nothing, and nobody sees
why), and a list is read whole the way gpuwatch reads its config file. The caller then
records a data-quality note and goes on with the config file's silences, so the
mistake shows on the very next cycle, named precisely enough to fix in one edit.

429 and 5xx are retried with capped backoff as the cluster source does
(``KubernetesOptions``); 401/403 raise ``SourceAuthRefused`` naming the RBAC rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from gpuwatch.config.settings import AlertMatch, Silence
from gpuwatch.config.yamlfile import YamlDocument, format_loc, load_yaml_text
from gpuwatch.model.errors import (
    ConfigError,
    SourceAuthRefused,
    SourceBadQuery,
    SourceBadResponse,
    SourceError,
    SourceUnreachable,
)
from gpuwatch.sources.kubernetes import (
    KubernetesOptions,
    _server_message,
)
from gpuwatch.util.http_retry import backoff_s, retryable_status

log = logging.getLogger(__name__)

SILENCES_KEY = "silences.yaml"

# The verb this module needs, in the ConfigMap's namespace (a Role; may be narrowed with
# resourceNames to the silences ConfigMap).
RBAC_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
)


class ConfigMapSilences:
    """Active silences from the ``silences.yaml`` key of a ConfigMap."""

    name = "configmap"

    def __init__(
        self,
        api_client: k8s.ApiClient,
        reference: str,
        options: KubernetesOptions | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``reference`` is ``namespace/name`` (``notify.silences_configmap``); ConfigError
        when it is not. No I/O here; ``sleep`` and ``now`` (for ``Retry-After`` dates)
        are for tests."""
        namespace, _, config_map = reference.partition("/")
        if not namespace or not config_map or "/" in config_map:
            raise ConfigError(
                f"notify.silences_configmap: {reference!r}; expected namespace/name, "
                "e.g. gpuwatch/gpuwatch-silences"
            )
        self.namespace = namespace
        self.config_map = config_map
        self.options = options or KubernetesOptions()
        self._core = k8s.CoreV1Api(api_client)
        self._host = str(api_client.configuration.host)
        self._sleep = sleep
        self._now = now

    @property
    def where(self) -> str:
        """``configmap gpuwatch/gpuwatch-silences key silences.yaml``."""
        return f"configmap {self.namespace}/{self.config_map} key {SILENCES_KEY}"

    def silences(self, at: datetime) -> list[Silence]:
        """The silences still in force at ``at`` (``until`` after it), in file order.

        Raises a ``SourceError``: ``SourceBadResponse`` for content that is not valid
        YAML or not a valid list of silences (every problem listed), and the kinds of
        the cluster source for an API server that refuses or cannot be reached."""
        text = self._read()
        if text is None:
            return []
        everything = _parse(text, self.where)
        active = [s for s in everything if s.until > at]
        if len(active) < len(everything):
            log.debug("%s: %d expired silences left out", self.where, len(everything) - len(active))
        return active

    def _read(self) -> str | None:
        """The key's text; None when the ConfigMap or the key is absent."""
        what = f"get configmap {self.namespace}/{self.config_map}"
        attempt = 0
        while True:
            try:
                found = self._core.read_namespaced_config_map(
                    self.config_map,
                    self.namespace,
                    _request_timeout=self.options.request_timeout_s,
                )
                break
            except ApiException as exc:
                status = int(exc.status or 0)
                if status == 404:
                    log.debug("%s: not found; no silences from it", what)
                    return None
                if retryable_status(status) and attempt < self.options.retries:
                    delay = self._delay(attempt, exc)
                    log.warning("%s: %s %s; retrying in %.1f s", what, status, exc.reason, delay)
                else:
                    raise self._failure(what, exc) from exc
            except urllib3.exceptions.HTTPError as exc:
                cause = getattr(exc, "reason", None) or exc
                if attempt >= self.options.retries:
                    raise SourceUnreachable(
                        f"{what}: cannot reach the Kubernetes API at {self._host}: {cause}"
                    ) from exc
                delay = self._delay(attempt, None)
                log.warning("%s: %s; retrying in %.1f s", what, cause, delay)
            self._sleep(delay)
            attempt += 1
        text = (found.data or {}).get(SILENCES_KEY)
        return text if isinstance(text, str) else None

    def _delay(self, attempt: int, exc: ApiException | None) -> float:
        """``Retry-After`` when the server gave one, else exponential with jitter; capped."""
        after = exc.headers.get("Retry-After") if exc is not None and exc.headers else None
        return backoff_s(
            attempt, after, self._now(), self.options.backoff_initial_s, self.options.backoff_max_s
        )

    def _failure(self, what: str, exc: ApiException) -> SourceError:
        status = int(exc.status or 0)
        message = _server_message(exc)
        server = f" (server: {message})" if message else ""
        if status == 401:
            return SourceAuthRefused(
                f"{what}: 401 Unauthorized; the API server refused the credentials (an "
                f"expired token? check the service account token or kubeconfig){server}"
            )
        if status == 403:
            return SourceAuthRefused(
                f"{what}: 403 Forbidden; grant the service account a Role in namespace "
                f'{self.namespace} with the rule apiGroups [""], resources [configmaps], '
                f"verbs [get] (resourceNames [{self.config_map}] may narrow it){server}"
            )
        detail = f"{status} {exc.reason}{server}"
        if retryable_status(status) or status == 0:
            return SourceUnreachable(
                f"{what}: the Kubernetes API at {self._host} kept failing "
                f"({self.options.retries + 1} attempts): {detail}"
            )
        return SourceBadQuery(f"{what}: {detail}")


def _parse(text: str, where: str) -> list[Silence]:
    """Every silence in ``text``; SourceBadResponse listing every problem otherwise."""
    try:
        doc = load_yaml_text(text, where)
    except ConfigError as exc:
        raise SourceBadResponse(str(exc)) from exc
    if doc.data is None:
        return []  # an empty key: no silences
    if not isinstance(doc.data, list):
        raise SourceBadResponse(
            f"{doc.where(())}: expected a YAML list of silences (each with match, until and "
            f"an optional comment), got {_kind(doc.data)}"
        )
    silences: list[Silence] = []
    problems: list[str] = []
    for index, entry in enumerate(doc.data):
        if not isinstance(entry, dict):
            problems.append(
                f"{doc.where((index,))}: [{index}]: expected a mapping with match, until and "
                f"an optional comment, got {_kind(entry)}"
            )
            continue
        try:
            silences.append(Silence.model_validate(entry))
        except ValidationError as exc:
            problems.extend(_describe(exc, doc, index))
    if problems:
        raise SourceBadResponse("\n".join(problems))
    return silences


def _describe(exc: ValidationError, doc: YamlDocument, index: int) -> list[str]:
    """One line per problem: where, ``[index].field``, and what was expected."""
    lines = []
    for error in exc.errors():
        loc = (index, *(p if isinstance(p, int) else str(p) for p in error["loc"]))
        if error["type"] == "extra_forbidden":
            known = ", ".join(_known_fields(loc[1:-1]))
            detail = f"unknown field; expected one of: {known}"
        elif error["type"] == "missing":
            detail = "required, and missing"
        else:
            detail = str(error["msg"]).removeprefix("Value error, ")
            if "input" in error and not isinstance(error["input"], dict):
                detail += f" (got {_shown(error['input'])})"
        if len(loc) == 1 and error["type"] == "value_error":
            loc = (index, "match")  # a rule across fields: the silence matches nothing
        lines.append(f"{doc.where(loc)}: {format_loc(loc)}: {detail}")
    return lines


def _known_fields(loc: Sequence[str | int]) -> list[str]:
    """The fields of the model at ``loc`` below a Silence (``()`` or ``("match",)``)."""
    model: type[BaseModel] = AlertMatch if tuple(loc) == ("match",) else Silence
    return sorted(model.model_fields)


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_shown(value)}"


def _shown(value: object) -> str:
    """A value as the YAML had it: ``2026-12-01``, not ``datetime.date(2026, 12, 1)``."""
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)
