"""Label and field selectors: the ``labelSelector``/``fieldSelector`` list parameters and
the ``LabelSelector`` objects PodDisruptionBudgets carry.

Field selectors are refused for fields the real server does not index (400), so that a
test cannot pass on a selector a real cluster would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Matcher = Callable[[Mapping[str, Any]], bool]

_KEY = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_SET_TERM = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS_TERM = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")

# Fields each resource can be selected on, beyond metadata.name and metadata.namespace
# (the pod, node, event and job field label conversions registered by kube-apiserver).
FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    ("", "nodes"): frozenset({"spec.unschedulable"}),
    ("", "events"): frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    ("batch", "jobs"): frozenset({"status.successful"}),
}
# Field labels that name another field than their own path.
FIELD_ALIASES = {"source": "source.component"}


class SelectorError(ValueError):
    pass


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b`` is two terms)."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str) -> Matcher:
    """A matcher of label maps for a selector string (``pool=gpu,tier in (a,b),!spot``)."""
    checks: list[Matcher] = []
    for term in _split_terms(text):
        if m := _SET_TERM.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := _EQ_TERM.match(term):
            key, op, value = m.groups()
            if op == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := _EXISTS_TERM.match(term):
            negate, key = m.group(1) == "!", m.group(2)
            checks.append(lambda labels, k=key, n=negate: (k in labels) != n)
        else:
            raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
    return lambda labels: all(check(labels) for check in checks)


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Does a ``LabelSelector`` object select ``labels``? (policy/v1 semantics: an empty
    selector selects everything, a missing one nothing.)"""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and present and labels.get(key) in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as the string a Scale's ``status.selector`` carries."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key = expr.get("operator"), expr.get("key")
        if op in ("In", "NotIn"):
            terms.append(f"{key} {op.lower()} ({','.join(sorted(expr.get('values') or []))})")
        else:
            terms.append(key if op == "Exists" else f"!{key}")
    return ",".join(terms)


def parse_field_selector(text: str, group: str, plural: str) -> Matcher:
    """A matcher of whole objects for a field selector (``spec.nodeName=n1,status.phase!=X``)."""
    supported = {"metadata.name", "metadata.namespace"} | FIELD_LABELS.get((group, plural), set())
    checks: list[Matcher] = []
    for term in _split_terms(text):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if m is None:
            raise SelectorError(f"invalid selector: {term.strip()!r}; can't understand it")
        field, op, value = m.groups()
        if field not in supported:
            raise SelectorError(f'field label not supported: "{field}"')
        path = FIELD_ALIASES.get(field, field)
        if op == "!=":
            checks.append(lambda obj, f=path, v=value: field_value(obj, f) != v)
        else:
            checks.append(lambda obj, f=path, v=value: field_value(obj, f) == v)
    return lambda obj: all(check(obj) for check in checks)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """A field as field selectors compare it: a string, "" when absent."""
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)
