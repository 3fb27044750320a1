"""The emulator's state: objects by resource, one global resourceVersion counter, and the
few controllers whose reactions a test of gpuwatch's writes depends on.

Every change (an API write, a test's direct ``add``/``mutate``, a controller's reaction)
goes through ``put`` or ``_remove`` and takes the next resourceVersion, as etcd's
revision does. Controllers run synchronously, as separate writes after the one that
triggered them (so a client holding the answer of its own write can still meet a 409,
as it can against a real cluster):

- deletion: an object with finalizers, or a scheduled pod when graceful pod deletion is
  on, is marked with ``deletionTimestamp`` and stays until its finalizers are removed
  (or, for such a pod, until ``finish_terminations()`` plays the kubelet);
- garbage collection: removing an owner removes its dependents (``Background`` and
  ``Foreground`` alike) or strips their ownerReference (``Orphan``, the default for
  batch/v1 Jobs);
- disruption: PodDisruptionBudget status is recomputed after every change in its
  namespace (see ``disruption.py``);
- jobs: a suspended Job loses its pods and ``status.startTime``; a running one gets
  ``status.startTime`` (which is what makes its pod template's scheduling fields
  mutable only while it is suspended).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.kube_emulator.disruption import budget_status, controller_ref
from tests.integration.kube_emulator.resources import JOBS, PDBS, PODS, ResourceType

Key = tuple[str, str]
"""(namespace or "", name)"""


def now_iso(offset_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_path(obj: Mapping[str, Any], path: str) -> Any:
    """``.spec.replicas`` -> obj["spec"]["replicas"] (None where absent)."""
    node: Any = obj
    for part in path.strip(".").split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def copy_json(obj: Any) -> Any:
    """A deep copy that also proves the object is plain JSON."""
    return json.loads(json.dumps(obj))


@dataclass
class Stored:
    obj: dict[str, Any]
    created_rv: int
    item_body: bytes
    """The object as a list item: without kind/apiVersion for built-in resources."""


class Store:
    def __init__(self, *, graceful_pod_deletion: bool = False) -> None:
        self.lock = threading.RLock()
        self.graceful_pod_deletion = graceful_pod_deletion
        self.rv = 1000
        self.compacted_rv = 0
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        self._objects: dict[tuple[str, str, str], dict[Key, Stored]] = {}
        self._sorted: dict[tuple[str, str, str], list[Key]] = {}
        self._policies: dict[str, str] = {}
        """Propagation policy of deletions still waiting on finalizers, by uid."""
        self._settling = False

    # -- types -------------------------------------------------------------------------------
    def install(self, rtype: ResourceType) -> None:
        with self.lock:
            self._types[rtype.key()] = rtype
            self._by_kind[(rtype.api_version, rtype.kind)] = rtype
            self._objects.setdefault(rtype.key(), {})

    def type_at(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def type_for(self, api_version: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((api_version, kind))

    def type_of(self, obj: Mapping[str, Any]) -> ResourceType:
        rtype = self.type_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        if rtype is None:
            raise KeyError(f"no resource installed for {obj.get('apiVersion')} {obj.get('kind')}")
        return rtype

    # -- reads -------------------------------------------------------------------------------
    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object itself: callers copy before changing it."""
        with self.lock:
            stored = self._objects[rtype.key()].get((namespace or "", name))
            return stored.obj if stored is not None else None

    def stored_in_order(self, rtype: ResourceType) -> Iterator[tuple[Key, Stored]]:
        """(key, stored) sorted by namespace and name, as etcd keys sort; hold the lock."""
        store = self._objects[rtype.key()]
        keys = self._sorted.get(rtype.key())
        if keys is None:
            keys = self._sorted[rtype.key()] = sorted(store)
        for key in keys:
            yield key, store[key]

    def objects(self, rtype: ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                s.obj
                for key, s in self.stored_in_order(rtype)
                if namespace is None or key[0] == namespace
            ]

    def created_rv(self, rtype: ResourceType, obj: Mapping[str, Any]) -> int:
        meta = obj["metadata"]
        with self.lock:
            return self._objects[rtype.key()][(meta.get("namespace", ""), meta["name"])].created_rv

    # -- writes ------------------------------------------------------------------------------
    def put(
        self, rtype: ResourceType, obj: dict[str, Any], *, create: bool = False
    ) -> dict[str, Any]:
        """Store ``obj`` (the store owns it from now on) under the next resourceVersion.

        An object being deleted whose last finalizer is gone is removed instead.
        """
        with self.lock:
            obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
            meta = obj.setdefault("metadata", {})
            if rtype.namespaced:
                meta.setdefault("namespace", "default")
            else:
                meta.pop("namespace", None)
            key = (meta.get("namespace", ""), meta["name"])
            objects = self._objects[rtype.key()]
            if not create and self._deletion_done(rtype, obj):
                if key in objects:
                    self._remove(rtype, key)
                return obj
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_iso())
            old = objects.get(key)
            item = (
                obj
                if not rtype.builtin
                else {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
            )
            objects[key] = Stored(
                obj,
                old.created_rv if old is not None and not create else self.rv,
                json.dumps(item, separators=(",", ":")).encode(),
            )
            if old is None:
                self._sorted.pop(rtype.key(), None)
            self._settle(meta.get("namespace"))
            return obj

    def delete(
        self,
        rtype: ResourceType,
        obj: Mapping[str, Any],
        *,
        grace_s: int | None = None,
        policy: str | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Delete as the API server does: (removed now?, the object as it now is)."""
        with self.lock:
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                return False, dict(obj)
            policy = policy or ("Orphan" if rtype == JOBS else "Background")
            if rtype == PODS:
                spec = obj.get("spec") or {}
                grace = (
                    grace_s
                    if grace_s is not None
                    else spec.get("terminationGracePeriodSeconds", 30)
                )
                phase = (obj.get("status") or {}).get("phase")
                kubelet_owned = spec.get("nodeName") and phase not in ("Succeeded", "Failed")
                if not (self.graceful_pod_deletion and kubelet_owned):
                    grace = 0
            else:
                grace = 0
            if grace or meta.get("finalizers"):
                marked = copy_json(obj)
                marked["metadata"]["deletionTimestamp"] = now_iso(grace)
                marked["metadata"]["deletionGracePeriodSeconds"] = grace
                self._policies[meta["uid"]] = policy
                return False, self.put(rtype, marked)
            key = (meta.get("namespace", ""), meta["name"])
            self._remove(rtype, key, policy)
            return True, dict(obj)

    def finish_terminations(self) -> int:
        """Play the kubelet: pods waiting out their grace period are gone now."""
        with self.lock:
            waiting = [
                copy_json(p)
                for p in self.objects(PODS)
                if p["metadata"].get("deletionTimestamp")
                and p["metadata"].get("deletionGracePeriodSeconds")
            ]
            for pod in waiting:
                pod["metadata"]["deletionGracePeriodSeconds"] = 0
                self.put(PODS, pod)
            return len(waiting)

    def _deletion_done(self, rtype: ResourceType, obj: Mapping[str, Any]) -> bool:
        meta = obj["metadata"]
        return bool(
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not (rtype == PODS and meta.get("deletionGracePeriodSeconds"))
        )

    def _remove(self, rtype: ResourceType, key: Key, policy: str | None = None) -> None:
        stored = self._objects[rtype.key()].pop(key, None)
        if stored is None:
            return
        self._sorted.pop(rtype.key(), None)
        self.rv += 1  # a deletion is a revision too
        uid = stored.obj["metadata"].get("uid")
        policy = policy or self._policies.pop(uid, None) or "Background"
        if uid:
            self._collect_dependents(uid, policy)
        self._settle(key[0] or None)

    def _collect_dependents(self, owner_uid: str, policy: str) -> None:
        for rtype in list(self._types.values()):
            for dependent in [
                o
                for o in self.objects(rtype)
                if any(
                    r.get("uid") == owner_uid for r in o["metadata"].get("ownerReferences") or []
                )
            ]:
                if policy == "Orphan":
                    orphan = copy_json(dependent)
                    orphan["metadata"]["ownerReferences"] = [
                        r
                        for r in orphan["metadata"]["ownerReferences"]
                        if r.get("uid") != owner_uid
                    ]
                    self.put(rtype, orphan)
                else:
                    self.delete(rtype, dependent)

    # -- controllers -------------------------------------------------------------------------
    def _settle(self, namespace: str | None) -> None:
        """Recompute the status of the PodDisruptionBudgets of ``namespace``."""
        if self._settling or namespace is None or PDBS.key() not in self._types:
            return
        budgets = self.objects(PDBS, namespace)
        if not budgets:
            return
        self._settling = True
        try:
            pods = self.objects(PODS, namespace)
            for pdb in budgets:
                status = budget_status(pdb, pods, self._replicas_of)
                if pdb.get("status") != status:
                    updated = copy_json(pdb)
                    updated["status"] = status
                    self.put(PDBS, updated)
        finally:
            self._settling = False

    def _replicas_of(self, ref: Mapping[str, Any], namespace: str) -> int | None:
        rtype = self.type_for(ref.get("apiVersion", ""), ref.get("kind", ""))
        if rtype is None or rtype.scale is None:
            return None
        owner = self.get(rtype, namespace, ref.get("name", ""))
        if owner is None:
            return None
        replicas = get_path(owner, rtype.scale.spec_replicas)
        return 1 if replicas is None else int(replicas)

    def run_job_controller(self, job: Mapping[str, Any]) -> None:
        """What the Job controller does about suspension, once a Job was written."""
        with self.lock:
            meta = job["metadata"]
            current = self.get(JOBS, meta["namespace"], meta["name"])
            if current is None:
                return
            status = current.get("status") or {}
            suspended = (current.get("spec") or {}).get("suspend") is True
            finished = any(
                c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            if suspended and (status.get("startTime") or status.get("active")):
                for pod in self.objects(PODS, meta["namespace"]):
                    ref = controller_ref(pod)
                    if ref is not None and ref.get("uid") == current["metadata"]["uid"]:
                        self.delete(PODS, pod, policy="Background")
                updated = copy_json(current)
                updated.setdefault("status", {}).pop("startTime", None)
                updated["status"]["active"] = 0
                self.put(JOBS, updated)
            elif not suspended and not status.get("startTime") and not finished:
                updated = copy_json(current)
                updated.setdefault("status", {})["startTime"] = now_iso()
                self.put(JOBS, updated)
