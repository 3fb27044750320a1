"""The validation rules of kube-apiserver that gpuwatch's writes can run into (422).

Only the rules a scale-down or a migration could break are here: names, a negative
scale, a pod's spec being mostly immutable, and a Job's pod template being immutable
except for its scheduling directives while the Job is suspended and not started
(``JobMutableNodeSchedulingDirectives``, GA in 1.27): the very rule that decides how a
training Job can be moved to other nodes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from tests.integration.kube_emulator.resources import JOBS, PODS, ResourceType

Cause = tuple[str, str, str]
"""(field, cause reason, message) of a 422's ``details.causes``."""

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

POD_UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)"
)
# Fields of a suspended, never-started Job's pod template that an update may change.
JOB_SCHEDULING_DIRECTIVES = (
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("spec", "nodeSelector"),
    ("spec", "tolerations"),
    ("spec", "affinity"),
    ("spec", "schedulingGates"),
)


def validate_name(name: str) -> list[Cause]:
    if len(name) <= 253 and _SUBDOMAIN.match(name):
        return []
    return [
        (
            "metadata.name",
            "FieldValueInvalid",
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
            "case alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character",
        )
    ]


def validate_update(
    rtype: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[Cause]:
    if rtype == PODS:
        return _pod_update(old, new)
    if rtype == JOBS:
        return _job_update(old, new)
    return []


def _pod_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Cause]:
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    old_tolerations = old_spec.get("tolerations") or []
    new_tolerations = new_spec.get("tolerations") or []
    if any(t not in new_tolerations for t in old_tolerations):
        return [
            (
                "spec.tolerations",
                "FieldValueForbidden",
                "Forbidden: existing toleration can not be modified except its tolerationSeconds",
            )
        ]
    if _mutable_pod_fields_masked(old_spec) != _mutable_pod_fields_masked(new_spec):
        return [("spec", "FieldValueForbidden", POD_UPDATE_FORBIDDEN)]
    return []


def _mutable_pod_fields_masked(spec: Mapping[str, Any]) -> dict[str, Any]:
    masked = copy.deepcopy(dict(spec))
    for field in (
        "activeDeadlineSeconds",
        "tolerations",
        "terminationGracePeriodSeconds",
        "schedulingGates",
    ):
        masked.pop(field, None)
    for field in ("containers", "initContainers"):
        for container in masked.get(field) or []:
            container.pop("image", None)
    return masked


def _job_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Cause]:
    old_template = (old.get("spec") or {}).get("template") or {}
    new_template = (new.get("spec") or {}).get("template") or {}
    if old_template == new_template:
        return []
    suspended = (old.get("spec") or {}).get("suspend") is True
    started = bool((old.get("status") or {}).get("startTime"))
    if (
        suspended
        and not started
        and _without_directives(old_template) == _without_directives(new_template)
    ):
        return []
    return [
        (
            "spec.template",
            "FieldValueInvalid",
            "Invalid value: the pod template: field is immutable",
        )
    ]


def _without_directives(template: Mapping[str, Any]) -> dict[str, Any]:
    masked = copy.deepcopy(dict(template))
    for section, field in JOB_SCHEDULING_DIRECTIVES:
        (masked.get(section) or {}).pop(field, None)
    if masked.get("metadata") == {}:
        del masked["metadata"]  # labels were all it had: as if it had none
    return masked


def validate_replicas(replicas: Any) -> list[Cause]:
    if isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 0:
        return []
    return [
        (
            "spec.replicas",
            "FieldValueInvalid",
            f"Invalid value: {replicas}: must be greater than or equal to 0",
        )
    ]
