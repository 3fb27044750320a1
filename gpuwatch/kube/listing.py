"""Whole lists, read page by page and translated as they arrive.

A cluster-wide list of pods is the largest thing gpuwatch reads: 10,000 pods are tens
of megabytes of JSON. Lists are therefore paginated (``limit``/``continue``, 500 by
default, as kubectl does), and each page is translated to domain objects before the
next is asked for, so memory holds one page of raw JSON at a time. A continue token
that expired (410 Gone) restarts the list, since a list stitched across revisions is
not consistent. A custom resource whose CRD is not installed answers 404: that means
"none of that kind", not a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from gpuwatch.kube.api import KubeApi, page_items
from gpuwatch.kube.errors import KubeBadResponse, KubeGone, KubeNotFound, KubeUnavailable
from gpuwatch.kube.resources import Resource
from gpuwatch.model.errors import SourceBadResponse

log = logging.getLogger(__name__)
T = TypeVar("T")


def list_objects(
    api: KubeApi,
    resource: Resource,
    translate: Callable[[Mapping[str, Any]], T],
    *,
    page_size: int = 500,
    restarts: int = 5,
) -> list[T]:
    """Every object of ``resource`` across namespaces, translated.

    Raises ``KubeError``s as ``KubeApi`` does, and ``KubeBadResponse`` when an item is
    not an object or ``translate`` finds it malformed (``SourceBadResponse``)."""
    for _restart in range(restarts + 1):
        out: list[T] = []
        token: str | None = None
        try:
            while True:
                try:
                    page = api.list_page(resource, limit=page_size, token=token)
                except KubeNotFound:
                    if resource.custom and token is None:
                        log.info(
                            "list %s: 404, not served here (CRD not installed?)", resource.qualified
                        )
                        return []
                    raise
                items, token = page_items(page, resource)
                out.extend(_translated(items, resource, translate, api.host))
                if token is None:
                    return out
        except KubeGone:
            if token is None:
                raise
            log.warning("list %s: continue token expired; listing again", resource.qualified)
    raise KubeUnavailable(
        f"list {resource.qualified}: the continue token expired {restarts + 1} times; "
        "the list cannot be read consistently"
    )


def _translated(
    items: list[Any],
    resource: Resource,
    translate: Callable[[Mapping[str, Any]], T],
    host: str,
) -> list[T]:
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise KubeBadResponse(f"list {resource.qualified}: items[{index}] is not an object")
        try:
            out.append(translate(item))
        except SourceBadResponse as exc:
            raise KubeBadResponse(f"list {resource.qualified} at {host}: {exc}") from exc
    return out
