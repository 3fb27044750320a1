"""The three patch formats the API server accepts from the ``kubernetes`` client.

- JSON merge patch (RFC 7386, ``application/merge-patch+json``): objects merge, ``null``
  deletes a key, anything else (lists included) replaces. What ``CustomObjectsApi``
  sends for a dict body.
- Strategic merge patch (``application/strategic-merge-patch+json``): what the client
  sends for a dict body to a built-in kind (``patch_node``, ``patch_namespaced_job``).
  Like a merge patch, except that lists the Go types tag with a ``patchMergeKey`` merge
  element by element on that key (containers by ``name``, conditions by ``type``...),
  ``finalizers`` merge as a set, and the directives ``$patch: replace|delete``,
  ``$retainKeys`` and ``$deleteFromPrimitiveList/<field>`` work. The merge keys are
  looked up by field name, not by Go type: right for every field tests touch, but a
  Service's ``ports`` (keyed by ``port``) would be merged by ``containerPort`` here.
  Custom resources refuse it (415), as the real server does.
- JSON patch (RFC 6902, ``application/json-patch+json``): a list of
  add/remove/replace/move/copy/test operations; what the client sends for a list body.

Errors carry the HTTP status the API server answers with: 400 for a patch it cannot
decode, 422 for one that does not apply to the object.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# patchMergeKey of the list fields of core/v1, apps/v1 and batch/v1 tests meet.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}
# patchStrategy "merge" on a list of strings: the patch's items are added to the set.
PRIMITIVE_SET_FIELDS = frozenset({"finalizers"})


class PatchError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """``target`` patched (a new object; ``target`` is left as it was)."""
    if content_type == JSON_PATCH:
        result = json_patch(target, patch)
    elif content_type == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise PatchError(400, "a merge patch must be a JSON object")
        result = merge_patch(target, patch)
    elif content_type == STRATEGIC_MERGE_PATCH:
        if not isinstance(patch, dict):
            raise PatchError(400, "a strategic merge patch must be a JSON object")
        result = strategic_merge_patch(target, patch)
    else:
        raise PatchError(415, f"unsupported patch type {content_type!r}")
    if not isinstance(result, dict):
        raise PatchError(422, "the patched object is not a JSON object")
    return result


# --- JSON merge patch -----------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- strategic merge patch ------------------------------------------------------------------

_DELETE = object()


def strategic_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = _smp_map(target, patch)
    return {} if result is _DELETE else result  # type: ignore[return-value]


def _smp_map(target: Any, patch: dict[str, Any]) -> dict[str, Any] | object:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip_directives(patch)
    if directive is not None:
        raise PatchError(422, f"unknown patch directive {directive!r}")
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith(("$setElementOrder/", "$retainKeys", "$patch")):
            continue  # ordering hints: the emulator keeps the stored order
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            current = result.get(key)
            result[key] = _smp_list(key, current if isinstance(current, list) else [], value)
        else:
            result[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    if field in PRIMITIVE_SET_FIELDS:
        return [*current, *(v for v in patch if v not in current)]
    key = MERGE_KEYS.get(field)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return _strip_directives(patch)  # no merge strategy: the list is replaced
    if any(item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(i) for i in patch if i.get("$patch") != "replace"]
    result = copy.deepcopy(current)
    for item in patch:
        if key not in item:
            raise PatchError(422, f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = _smp_map(result[index], item)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


# --- JSON patch -----------------------------------------------------------------------------


def json_patch(target: dict[str, Any], operations: Any) -> Any:
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise PatchError(400, "a JSON patch must be a list of operations")
    doc: Any = copy.deepcopy(target)
    for op in operations:
        name, path = op.get("op"), op.get("path")
        if not isinstance(path, str):
            raise PatchError(400, f"operation {op} has no path")
        if name == "add":
            doc = _add(doc, path, copy.deepcopy(_value(op)), name)
        elif name == "remove":
            doc, _ = _remove(doc, path, name)
        elif name == "replace":
            doc, _ = _remove(doc, path, name)
            doc = _add(doc, path, copy.deepcopy(_value(op)), name)
        elif name in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise PatchError(400, f"operation {op} has no from")
            if name == "move":
                doc, value = _remove(doc, source, name)
            else:
                value = copy.deepcopy(_get(doc, source, name))
            doc = _add(doc, path, value, name)
        elif name == "test":
            if _get(doc, path, name) != _value(op):
                raise PatchError(422, f"testing value {path} failed: test failed")
        else:
            raise PatchError(400, f"unexpected kind of operation {name!r}")
    return doc


def _value(op: dict[str, Any]) -> Any:
    if "value" not in op:
        raise PatchError(400, f"operation {op} has no value")
    return op["value"]


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(400, f"JSON pointer {path!r} does not start with /")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _missing(op: str, path: str) -> PatchError:
    return PatchError(422, f"{op} operation does not apply: doc is missing path: {path}")


def _parent(doc: Any, path: str, op: str) -> tuple[Any, str]:
    tokens = _tokens(path)
    if not tokens:
        raise PatchError(422, f"{op} operation on the whole document is not supported")
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, op, path)
    return node, tokens[-1]


def _child(node: Any, token: str, op: str, path: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    raise _missing(op, path)


def _get(doc: Any, path: str, op: str) -> Any:
    node = doc
    for token in _tokens(path):
        node = _child(node, token, op, path)
    return node


def _add(doc: Any, path: str, value: Any, op: str) -> Any:
    if path == "":
        return value
    parent, last = _parent(doc, path, op)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _missing(op, path)
    else:
        raise _missing(op, path)
    return doc


def _remove(doc: Any, path: str, op: str) -> tuple[Any, Any]:
    parent, last = _parent(doc, path, op)
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return doc, parent.pop(int(last))
    raise _missing(op, path)
