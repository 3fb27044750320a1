"""What the registries do to an object on a write, whatever its kind: the fields only the
server sets, ``metadata.generation``, delete preconditions, and the Scale view of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.integration.kube_emulator.answers import Answer, conflict
from tests.integration.kube_emulator.resources import ResourceType
from tests.integration.kube_emulator.selectors import selector_string
from tests.integration.kube_emulator.store import get_path


def precondition_failure(
    rtype: ResourceType, obj: Mapping[str, Any], preconditions: Mapping[str, Any]
) -> Answer | None:
    meta, name = obj["metadata"], obj["metadata"]["name"]
    uid, rv = preconditions.get("uid"), preconditions.get("resourceVersion")
    if uid and uid != meta.get("uid"):
        why = (
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
            f"{meta.get('uid')}"
        )
        return conflict(rtype, name, why)
    if rv and rv != meta.get("resourceVersion"):
        why = (
            f"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in "
            f"object meta: {meta.get('resourceVersion')}"
        )
        return conflict(rtype, name, why)
    return None


def keep_system_fields(old: Mapping[str, Any], new: dict[str, Any]) -> None:
    """Fields only the server sets survive any update, as ``rest.BeforeUpdate`` keeps them."""
    for field in (
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ):
        if field in old:
            new[field] = old[field]
        else:
            new.pop(field, None)


def spec_of(rtype: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What ``metadata.generation`` counts changes of: all but metadata (and status,
    where a status subresource keeps it apart)."""
    skipped = {"metadata", "kind", "apiVersion"} | (
        {"status"} if rtype.status_subresource else set()
    )
    return {k: v for k, v in obj.items() if k not in skipped}


def scale_of(rtype: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale the scale subresource serves for ``obj``."""
    assert rtype.scale is not None
    paths, meta = rtype.scale, obj["metadata"]
    spec_replicas = get_path(obj, paths.spec_replicas)
    if spec_replicas is None:
        spec_replicas = 1 if rtype.builtin else 0  # apps/v1 defaults replicas to 1
    status: dict[str, Any] = {"replicas": int(get_path(obj, paths.status_replicas) or 0)}
    selector = get_path(obj, paths.label_selector) if paths.label_selector else None
    if isinstance(selector, Mapping):
        selector = selector_string(selector)
    if selector:
        status["selector"] = selector
    scale_meta = {
        k: meta[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if k in meta
    }
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": spec_replicas},
        "status": status,
    }
