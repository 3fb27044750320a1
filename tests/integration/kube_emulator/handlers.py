"""The API verbs: what the emulator answers to each routed request.

``ApiHandlers.serve`` takes a routed request and answers it from the store, as the
registry of that resource would: reads and lists, create, update and the three patch
formats (of the object, its ``/status`` or its ``/scale``), delete, and eviction.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any

from tests.integration.kube_emulator.answers import (
    Answer,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
    not_found_resource,
    not_implemented,
    object_answer,
    reason_for,
    status_answer,
    success_answer,
)
from tests.integration.kube_emulator.disruption import (
    TOO_MANY_REQUESTS_MESSAGE,
    Verdict,
    decide,
    selects,
)
from tests.integration.kube_emulator.objects import (
    keep_system_fields,
    precondition_failure,
    scale_of,
    spec_of,
)
from tests.integration.kube_emulator.patching import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_patch,
)
from tests.integration.kube_emulator.records import EvictionRefusal, Request
from tests.integration.kube_emulator.resources import JOBS, PDBS, PODS, ResourceType
from tests.integration.kube_emulator.routing import Route, decode_continue, encode_continue
from tests.integration.kube_emulator.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from tests.integration.kube_emulator.store import Store, Stored, copy_json, set_path
from tests.integration.kube_emulator.validation import (
    validate_name,
    validate_replicas,
    validate_update,
)

JOB_DELETE_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; set '
    "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to "
    'suppress this warning"'
)
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # generateName's, no vowels


class ApiHandlers:
    def __init__(self, store: Store, user: str) -> None:
        self.store = store
        self.user = user
        """Who RBAC refusals (403) name as the caller."""
        self.denied: set[tuple[str, str, str | None]] = set()
        """(verb, "group/resource[/subresource]", namespace or None) refused with 403."""
        self.granted: set[tuple[str, str, str | None]] | None = None
        """When set, only these are allowed (same shape; None: a ClusterRole's grant)."""
        self.refusals: list[EvictionRefusal] = []

    def serve(self, route: Route, request: Request) -> Answer:
        resource = f"{route.plural}/{route.subresource}" if route.subresource else route.plural
        with self.store.lock:
            if self._refused(route.verb, route.group, resource, route.namespace):
                return self._forbidden(route)
            rtype = self.store.type_at(route.group, route.version, route.plural)
        if rtype is None or (route.namespace is not None and not rtype.namespaced):
            return not_found_resource()
        verb, sub = route.verb, route.subresource
        if verb in ("watch", "deletecollection"):
            return not_implemented(f"{verb} on {rtype.qualified}")
        if verb == "list":
            return self._list(rtype, route.namespace, request.query)
        if route.name is None:
            if verb != "create" or (rtype.namespaced and route.namespace is None):
                return status_answer(
                    405, "MethodNotAllowed", f"{request.method} is not allowed here"
                )
            return self._create(rtype, route, request)
        handlers: dict[tuple[str | None, str], Callable[[ResourceType, Route, Request], Answer]]
        handlers = {
            (None, "get"): self._get,
            (None, "update"): self._update,
            (None, "patch"): self._patch,
            (None, "delete"): self._delete,
        }
        if rtype == PODS:
            handlers[("eviction", "create")] = self._evict
        if rtype.status_subresource:
            handlers |= {
                ("status", "get"): self._get,
                ("status", "update"): self._update,
                ("status", "patch"): self._patch,
            }
        if rtype.scale is not None:
            handlers |= {
                ("scale", "get"): self._get_scale,
                ("scale", "update"): self._update,
                ("scale", "patch"): self._patch,
            }
        handler = handlers.get((sub, verb))
        if handler is None:
            if any(s == sub for s, _ in handlers):
                return status_answer(
                    405, "MethodNotAllowed", f"{request.method} is not allowed on {resource}"
                )
            return not_found_resource()
        return handler(rtype, route, request)

    def _refused(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        resource = f"{group}/{resource}"

        def within(scopes: set[tuple[str, str, str | None]]) -> bool:
            # A cluster-scope entry covers the verb in every namespace too, as a
            # ClusterRole bound cluster-wide does; a namespaced one covers its namespace.
            return (verb, resource, None) in scopes or (
                namespace is not None and (verb, resource, namespace) in scopes
            )

        return within(self.denied) or (self.granted is not None and not within(self.granted))

    def _forbidden(self, route: Route) -> Answer:
        group, plural = route.group, route.plural
        qualified = f"{plural}.{group}" if group else plural
        scope = (
            f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
        )
        resource = f"{plural}/{route.subresource}" if route.subresource else plural
        message = (
            f'{qualified} is forbidden: User "{self.user}" cannot {route.verb} resource '
            f'"{resource}" in API group "{group}" {scope}'
        )
        return status_answer(403, "Forbidden", message, {"group": group, "kind": plural})

    # -- reads -------------------------------------------------------------------------------
    def _get(self, rtype: ResourceType, route: Route, request: Request) -> Answer:
        assert route.name is not None
        with self.store.lock:
            obj = self.store.get(rtype, route.namespace, route.name)
            if obj is None:
                return not_found(rtype, route.name)
            return object_answer(obj)

    def _get_scale(self, rtype: ResourceType, route: Route, request: Request) -> Answer:
        assert route.name is not None
        with self.store.lock:
            obj = self.store.get(rtype, route.namespace, route.name)
            if obj is None:
                return not_found(rtype, route.name)
            return object_answer(scale_of(rtype, obj))

    def _list(self, rtype: ResourceType, namespace: str | None, query: Mapping[str, str]) -> Answer:
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            return bad_request(f"invalid limit {query['limit']!r}")
        try:
            labels = (
                parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else None
            )
            fields = (
                parse_field_selector(query["fieldSelector"], rtype.group, rtype.plural)
                if query.get("fieldSelector")
                else None
            )
        except SelectorError as error:
            return bad_request(str(error))
        token = query.get("continue") or ""
        with self.store.lock:
            if token:
                decoded = decode_continue(token)
                if decoded is None:
                    return bad_request("continue key is not valid")
                list_rv, after = decoded
                if list_rv < self.store.compacted_rv:
                    return status_answer(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue "
                        "parameter.",
                    )
            else:
                list_rv, after = self.store.rv, None
            chosen: list[Stored] = []
            remaining = 0
            last_key: tuple[str, str] | None = None
            for key, stored in self.store.stored_in_order(rtype):
                if (namespace is not None and key[0] != namespace) or (
                    after is not None and key <= after
                ):
                    continue
                if stored.created_rv > list_rv:
                    continue  # created after the list began: not in this consistent list
                if labels is not None and not labels(stored.obj["metadata"].get("labels") or {}):
                    continue
                if fields is not None and not fields(stored.obj):
                    continue
                if limit and len(chosen) >= limit:
                    remaining += 1
                    continue
                chosen.append(stored)
                last_key = key
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if remaining and last_key is not None:
            meta["continue"] = encode_continue(list_rv, last_key)
            if labels is None and fields is None:  # unknown with a selector, as the real one
                meta["remainingItemCount"] = remaining
        head = json.dumps(
            {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta}
        ).encode()
        body = head[:-1] + b',"items":[' + b",".join(s.item_body for s in chosen) + b"]}"
        return Answer(200, body)

    # -- writes ------------------------------------------------------------------------------
    def _create(self, rtype: ResourceType, route: Route, request: Request) -> Answer:
        obj = request.body
        if not isinstance(obj, dict):
            return bad_request("the body of a create must be a JSON object")
        obj = copy_json(obj)
        for field, expected in (("apiVersion", rtype.api_version), ("kind", rtype.kind)):
            if obj.get(field) not in (None, expected):
                return bad_request(
                    f"the {field} in the data ({obj[field]}) does not match the expected "
                    f"{field} ({expected})"
                )
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", route.namespace):
                return bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = route.namespace
        if not meta.get("name"):
            if not meta.get("generateName"):
                return invalid(
                    rtype,
                    "",
                    [
                        (
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            suffix = "".join(random.choices(_NAME_SUFFIX_ALPHABET, k=5))
            meta["name"] = meta["generateName"] + suffix
        if meta.get("resourceVersion"):
            return status_answer(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        causes = validate_name(meta["name"])
        if causes:
            return invalid(rtype, meta["name"], causes)
        for system_field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            meta.pop(system_field, None)
        meta["generation"] = 1
        if rtype == PODS:
            obj["status"] = {"phase": "Pending"}  # the kubelet reports from here on
        elif rtype.status_subresource:
            obj.pop("status", None)
        with self.store.lock:
            if self.store.get(rtype, route.namespace, meta["name"]) is not None:
                return already_exists(rtype, meta["name"])
            if _dry_run(request):
                return object_answer(obj, 201)
            stored = self.store.put(rtype, obj, create=True)
            answer = object_answer(stored, 201)
            if rtype == JOBS:
                self.store.run_job_controller(stored)
            return answer

    def _update(self, rtype: ResourceType, route: Route, request: Request) -> Answer:
        if not isinstance(request.body, dict):
            return bad_request("the body of an update must be a JSON object")
        return self._write(rtype, route, request, lambda current: copy_json(request.body), True)

    def _patch(self, rtype: ResourceType, route: Route, request: Request) -> Answer:
        content_type = request.content_type
        accepted = [JSON_PATCH, MERGE_PATCH] + ([STRATEGIC_MERGE_PATCH] if rtype.builtin else [])
        if content_type == APPLY_PATCH:
            return status_answer(
                415, "UnsupportedMediaType", "the emulator does not implement server-side apply"
            )
        if content_type not in accepted:
            return status_answer(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join([*accepted, APPLY_PATCH])}",
            )
        if request.body is None:
            return bad_request("the patch is empty")
        return self._write(
            rtype,
            route,
            request,
            lambda current: apply_patch(content_type, current, request.body),
            False,
        )

    def _write(
        self,
        rtype: ResourceType,
        route: Route,
        request: Request,
        make: Callable[[dict[str, Any]], dict[str, Any]],
        is_put: bool,
    ) -> Answer:
        """Update or patch the object, its status, or its scale: ``make`` turns what the
        client addresses (the object, or its Scale) into what it wants it to be."""
        assert route.name is not None
        name, scale = route.name, route.subresource == "scale"
        with self.store.lock:
            old = self.store.get(rtype, route.namespace, name)
            if old is None:
                return not_found(rtype, name)
            addressed = scale_of(rtype, old) if scale else old
            try:
                wanted = make(copy_json(addressed))
            except PatchError as error:
                return status_answer(error.status, reason_for(error.status), str(error))
            meta = wanted.setdefault("metadata", {})
            if not isinstance(meta, dict):
                return bad_request("metadata must be an object")
            if meta.get("name") not in (None, "", name):
                return bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the "
                    f"URL ({name})"
                )
            if rtype.namespaced and meta.get("namespace") not in (None, "", route.namespace):
                return bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            old_meta = old["metadata"]
            rv = meta.get("resourceVersion") or ""
            # A Scale without a resourceVersion writes unconditionally, for every kind.
            if not rv and is_put and not scale and not rtype.allows_unconditional_update:
                return invalid(
                    rtype,
                    name,
                    [
                        (
                            "metadata.resourceVersion",
                            "FieldValueInvalid",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
            if rv and rv != old_meta["resourceVersion"]:
                return conflict(rtype, name)
            if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
                return conflict(
                    rtype,
                    name,
                    f"Precondition failed: UID in precondition: {meta['uid']}, UID in object "
                    f"meta: {old_meta.get('uid')}",
                )
            if scale:
                replicas = (wanted.get("spec") or {}).get("replicas")
                causes = validate_replicas(replicas)
                if causes:
                    return invalid(rtype, name, causes, kind="Scale.autoscaling")
                new = copy_json(old)
                assert rtype.scale is not None
                set_path(new, rtype.scale.spec_replicas, replicas)
            elif route.subresource == "status":
                new = copy_json(old)
                new["status"] = wanted.get("status")
            else:
                new = wanted
                new["metadata"] = {**meta, "name": name}
                if rtype.namespaced:
                    new["metadata"]["namespace"] = route.namespace
                if rtype.status_subresource:
                    new["status"] = old.get("status")
            keep_system_fields(old_meta, new["metadata"])
            if new.get("status") is None:
                new.pop("status", None)
            causes = validate_update(rtype, old, new)
            if causes:
                return invalid(rtype, name, causes)
            if spec_of(rtype, new) != spec_of(rtype, old):
                new["metadata"]["generation"] = int(old_meta.get("generation") or 1) + 1
            if _dry_run(request):
                new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
                return object_answer(scale_of(rtype, new) if scale else new)
            stored = self.store.put(rtype, new)
            answer = object_answer(scale_of(rtype, stored) if scale else stored)
            if rtype == JOBS:
                self.store.run_job_controller(stored)
            return answer

    def _delete(self, rtype: ResourceType, route: Route, request: Request) -> Answer:
        assert route.name is not None
        options = request.body if isinstance(request.body, dict) else {}
        query = request.query
        grace = options.get("gracePeriodSeconds")
        if query.get("gracePeriodSeconds"):
            grace = int(query["gracePeriodSeconds"])
        policy = options.get("propagationPolicy") or query.get("propagationPolicy")
        if options.get("orphanDependents") is not None and policy is None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Orphan", "Background", "Foreground"):
            return invalid(
                rtype,
                route.name,
                [("propagationPolicy", "FieldValueNotSupported", f'Unsupported value: "{policy}"')],
            )
        with self.store.lock:
            obj = self.store.get(rtype, route.namespace, route.name)
            if obj is None:
                return not_found(rtype, route.name)
            refused = precondition_failure(rtype, obj, options.get("preconditions") or {})
            if refused is not None:
                return refused
            if _dry_run(request) or options.get("dryRun") == ["All"]:
                return object_answer(obj)
            removed, current = self.store.delete(rtype, obj, grace_s=grace, policy=policy)
        headers = {"Warning": JOB_DELETE_WARNING} if rtype == JOBS and policy is None else {}
        if not removed or rtype == PODS:  # pods' registry returns the deleted object
            answer = object_answer(current)
        else:
            meta = current["metadata"]
            answer = success_answer(
                200,
                {
                    "name": meta["name"],
                    "group": rtype.group,
                    "kind": rtype.plural,
                    "uid": meta.get("uid"),
                },
            )
        answer.headers.update(headers)
        return answer

    def _evict(self, rtype: ResourceType, route: Route, request: Request) -> Answer:
        """``POST pods/{name}/eviction``: a delete that disruption budgets may refuse."""
        assert route.name is not None
        name, eviction = route.name, request.body
        if not isinstance(eviction, dict):
            return bad_request("the body of an eviction must be a JSON object")
        if eviction.get("kind") not in (None, "Eviction"):
            return bad_request(f"expected an Eviction, got {eviction.get('kind')}")
        if (eviction.get("metadata") or {}).get("name") not in (None, "", name):
            return bad_request("name in URL does not match name in Eviction object")
        options = eviction.get("deleteOptions") or {}
        with self.store.lock:
            pod = self.store.get(PODS, route.namespace, name)
            if pod is None:
                return not_found(PODS, name)
            refused = precondition_failure(PODS, pod, options.get("preconditions") or {})
            if refused is not None:
                return refused
            budgets = [b for b in self.store.objects(PDBS, route.namespace) if selects(b, pod)]
            verdict = decide(pod, budgets)
            refusal = next((r for r in self.refusals if r.matches(pod)), None)
            if refusal is not None:
                refusal.remaining -= 1
                verdict = Verdict(False, 429, TOO_MANY_REQUESTS_MESSAGE, _scripted_cause(budgets))
            if not verdict.allowed:
                if verdict.status == 429:
                    return status_answer(
                        429,
                        "TooManyRequests",
                        verdict.message,
                        {"causes": [{"reason": "DisruptionBudget", "message": verdict.cause}]},
                    )
                return status_answer(verdict.status, reason_for(verdict.status), verdict.message)
            if not _dry_run(request):
                self.store.delete(PODS, pod, grace_s=options.get("gracePeriodSeconds"))
        return success_answer(201)


def _dry_run(request: Request) -> bool:
    return request.query.get("dryRun") == "All"


def _scripted_cause(budgets: list[Mapping[str, Any]]) -> str:
    if not budgets:
        return "The disruption budget is still being processed by the server."
    status = budgets[0].get("status") or {}
    return (
        f"The disruption budget {budgets[0]['metadata']['name']} needs "
        f"{status.get('desiredHealthy', 0)} healthy pods and has "
        f"{status.get('currentHealthy', 0)} currently"
    )
