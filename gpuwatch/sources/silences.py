"""Silences read from a ConfigMap, so that muting an alert needs no redeploy.

``notify.silences`` in the config file changes only when gpuwatch is redeployed; the
person on call at 3 a.m. needs to mute a known-bad node now. ``kubectl edit configmap``
on ``notify.silences_configmap`` (key ``silences.yaml``: a YAML list in the form of
``notify.silences``) takes effect on the next cycle::

    - match: {rule: [my-idle-rule], pool: [a100-spot]}
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

Requests and retries are the Kubernetes layer's (``gpuwatch.kube``); a refusal raises
``SourceAuthRefused`` naming the RBAC rule to grant.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from gpuwatch.config.settings import AlertMatch, Silence
from gpuwatch.config.yamlfile import YamlDocument, format_loc, load_yaml_text
from gpuwatch.kube.api import KubeApi
from gpuwatch.kube.errors import KubeError, KubeForbidden, KubeNotFound, as_source_error
from gpuwatch.kube.resources import CONFIGMAPS
from gpuwatch.model.errors import ConfigError, SourceAuthRefused, SourceBadResponse

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

    def __init__(self, api: KubeApi, reference: str) -> None:
        """``reference`` is ``namespace/name`` (``notify.silences_configmap``); ConfigError
        when it is not. No I/O here."""
        namespace, _, config_map = reference.partition("/")
        if not namespace or not config_map or "/" in config_map:
            raise ConfigError(
                f"notify.silences_configmap: {reference!r}; expected namespace/name, "
                "e.g. gpuwatch/gpuwatch-silences"
            )
        self.namespace = namespace
        self.config_map = config_map
        self.api = api

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
        try:
            found = self.api.get(CONFIGMAPS, self.config_map, self.namespace)
        except KubeNotFound:
            log.debug("%s: not found; no silences from it", self.where)
            return None
        except KubeForbidden as exc:
            raise SourceAuthRefused(
                f"{exc} (resourceNames [{self.config_map}] may narrow it)"
            ) from exc
        except KubeError as exc:
            raise as_source_error(exc) from exc
        text = (found.get("data") or {}).get(SILENCES_KEY)
        return text if isinstance(text, str) else None


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
