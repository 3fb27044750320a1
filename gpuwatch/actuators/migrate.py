"""Checkpoint-and-migrate of training jobs to spot capacity, and the follow-up that
confirms the move or undoes it.

A PyTorchJob's pod templates get the spot pool's node selector and tolerations, then
its pods are evicted through the Eviction API: each gets SIGTERM, the reference job
checkpoints and exits 143, and the operator recreates the pod from the new template on
spot, where it resumes from the checkpoint. A batch/v1 Job is suspended (its controller
stops the pods the same way), its template patched (Kubernetes allows scheduling fields
to change while a Job is suspended), then resumed.

Every step is recorded on the job before the next: the key, the scheduling before and
after the move, when it started, the training steps, and the phase (``suspended``,
``rescheduled``, ``moved``). A run that stops half way (a crash, the write deadline, a
lost Lease) is resumed by the next cycle's follow-up from the recorded phase, never
repeated. The follow-up then confirms the move (with the training job's step metric:
training passed the checkpoint it resumed from; without it: every pod ran on spot for
``settle``) and only then forgets the on-demand scheduling; pods still not running on
spot after ``spot_deadline``, or no progress past the checkpoint, move the job back.
Pods protected from eviction are never evicted. A record a tenant made unreadable is
left alone, and said so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gpuwatch.actuators.base import FollowUp
from gpuwatch.actuators.drain import Evictions
from gpuwatch.actuators.events import Outcomes
from gpuwatch.actuators.guard import WriteGuard
from gpuwatch.kube.api import Json, KubeApi
from gpuwatch.kube.errors import KubeError, KubeNotFound
from gpuwatch.kube.resources import JOBS, NODES, PODS, PYTORCHJOBS, Resource
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.durations import parse_instant
from gpuwatch.model.tenant import (
    MIGRATION_FROM,
    MIGRATION_KEY,
    MIGRATION_PHASE,
    MIGRATION_STARTED,
    MIGRATION_STEPS,
    MIGRATION_TO,
    eviction_protection,
)

JOB_NAME_LABEL = "training.kubeflow.org/job-name"
BATCH_JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
_RESOURCE = {"PyTorchJob": PYTORCHJOBS, "Job": JOBS}
_RECORD = (MIGRATION_KEY, MIGRATION_FROM, MIGRATION_TO, MIGRATION_STARTED, MIGRATION_PHASE)
_CLEARED: dict[str, str | None] = {f.key: None for f in (*_RECORD, MIGRATION_STEPS)}
Scheduling = dict[str, dict[str, Any]]
"""Role -> ``{"nodeSelector": ..., "tolerations": ...}`` of its pod template."""


class SpotMigration:
    """The ``migrate_to_spot`` action and its follow-up."""

    def __init__(self, api: KubeApi, evictions: Evictions, outcomes: Outcomes) -> None:
        self.api = api
        self.evictions = evictions
        self.outcomes = outcomes

    def run(self, action: Action, guard: WriteGuard | None = None) -> Action:
        guard = guard or WriteGuard(self.api.monotonic)
        try:
            return self._migrate(action, guard)
        except KubeError as exc:
            return self.outcomes.finish(
                action,
                ActionStatus.FAILED,
                f"{exc}; the job keeps its recorded phase and the next cycle resumes it",
            )

    def _migrate(self, action: Action, guard: WriteGuard) -> Action:
        finish = self.outcomes.finish
        kind, namespace, name = action.target.split("/")
        resource = _RESOURCE.get(kind)
        if resource is None:
            return finish(action, ActionStatus.FAILED, f"migrating a {kind} is not supported")
        job = self.api.get(resource, name, namespace)
        recorded = MIGRATION_KEY.get(_annotations(job))
        if recorded is not None and recorded != action.key:
            return finish(action, ActionStatus.REFUSED, f"already being moved ({recorded})")
        protected = self._protected(kind, namespace, name)
        if protected:
            return finish(action, ActionStatus.REFUSED, protected)
        refusal = guard.refusal()
        if refusal:
            return finish(action, ActionStatus.REFUSED, refusal)
        started = self.api.monotonic()
        if recorded is None:
            templates = _templates(kind, job)
            before = {role: _scheduling_of(t) for role, t in templates.items()}
            wanted = action.details.get("tolerations", [])
            after = {
                role: {
                    "nodeSelector": action.details.get("node_selector", {}),
                    "tolerations": (t.get("tolerations") or [])
                    + [w for w in wanted if w not in (t.get("tolerations") or [])],
                }
                for role, t in templates.items()
            }
            record = {
                MIGRATION_KEY.key: action.key,
                MIGRATION_FROM.key: json.dumps(before, sort_keys=True),
                MIGRATION_TO.key: json.dumps(after, sort_keys=True),
                MIGRATION_STARTED.key: self.api.now().isoformat(),
                MIGRATION_STEPS.key: json.dumps(
                    {k: action.details.get(k) for k in ("step_at_signal", "checkpoint_step")}
                ),
            }
            job = self._begin(kind, namespace, name, after, record)
        return self._carry_on(action, kind, job, guard, started)

    def _begin(
        self, kind: str, namespace: str, name: str, after: Scheduling, record: dict[str, str]
    ) -> Json:
        """The first write, which records the whole move: a PyTorchJob's templates are
        pointed at spot with it; a Job is suspended with it (its template may change
        only while it is suspended)."""
        if kind == "PyTorchJob":
            return self._patch(
                kind, namespace, name, {**record, MIGRATION_PHASE.key: "rescheduled"}, after
            )
        body = {
            "metadata": {"annotations": {**record, MIGRATION_PHASE.key: "suspended"}},
            "spec": {"suspend": True},
        }
        return self.api.patch(JOBS, name, body, namespace)

    def _carry_on(
        self, action: Action, kind: str, job: Json, guard: WriteGuard, started: float
    ) -> Action:
        """The steps after the recorded phase, each recorded as it completes."""
        finish = self.outcomes.finish
        meta = job["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        annotations = _annotations(job)
        phase = MIGRATION_PHASE.get(annotations)
        after = MIGRATION_TO.get(annotations)
        if phase is None or after is None:
            return finish(
                action, ActionStatus.FAILED, f"unreadable migration record: {_problems(job)}"
            )
        evicted: list[str] = []
        if phase == "suspended":  # a batch Job: patch the template, then resume it
            self._patch(kind, namespace, name, {MIGRATION_PHASE.key: "rescheduled"}, after)
            phase = "rescheduled"
        if phase == "rescheduled":
            if kind == "Job":
                body = {
                    "metadata": {"annotations": {MIGRATION_PHASE.key: "moved"}},
                    "spec": {"suspend": False},
                }
                self.api.patch(JOBS, name, body, namespace)
            else:
                evicted, failure = self._evict_off_target(namespace, name, after, guard)
                if failure:
                    return finish(
                        action,
                        ActionStatus.FAILED,
                        f"{failure}; the job stays pointed at spot and the next cycle carries on",
                        {"evicted": evicted},
                    )
                self._patch(kind, namespace, name, {MIGRATION_PHASE.key: "moved"}, None)
        return finish(
            action,
            ActionStatus.DONE,
            f"templates point at {action.pool or 'spot'}; {len(evicted)} pods evicted to "
            "checkpoint and move; confirmed or moved back in the next cycles",
            {"evicted": evicted, "signal_s": round(self.api.monotonic() - started, 3)},
        )

    def _evict_off_target(
        self, namespace: str, name: str, after: Scheduling, guard: WriteGuard
    ) -> tuple[list[str], str]:
        """Evict the PyTorchJob's pods not yet on the target pool: those evicted, and why
        the rest were not (empty when all were)."""
        selector = next(iter(after.values()), {}).get("nodeSelector") or {}
        deadline = guard.cap(self.evictions.deadline())
        evicted: list[str] = []
        for pod in self._pods("PyTorchJob", namespace, name):
            pod_name = pod["metadata"]["name"]
            if self._on_target(pod, selector):
                continue
            protection = eviction_protection(_annotations(pod))
            refusal = f"pod {pod_name}: {protection}" if protection else guard.refusal()
            if refusal:
                return evicted, f"stopped before evicting {pod_name}: {refusal}"
            if not self.evictions.evict(namespace, pod_name, deadline):
                return evicted, f"a disruption budget kept refusing to evict {pod_name}"
            evicted.append(f"{namespace}/{pod_name}")
        return evicted, ""

    # -- the follow-up -------------------------------------------------------------------
    def follow_up(self, request: FollowUp, guard: WriteGuard | None = None) -> list[Action]:
        """Resume, confirm or undo the migrations recorded on jobs. Never raises for the
        cluster's answers: a failure is one FAILED action, and the next cycle retries."""
        guard = guard or WriteGuard(self.api.monotonic)
        try:
            jobs = self._migrating()
        except KubeError as exc:
            return [_follow_up("cluster", "follow-up", ActionStatus.FAILED, f"{exc}; retried")]
        outcomes = []
        for kind, job in jobs:
            target = f"{kind}/{job['metadata']['namespace']}/{job['metadata']['name']}"
            key = MIGRATION_KEY.get(_annotations(job)) or "follow-up"
            problems = _problems(job)
            if problems:
                outcome = _follow_up(
                    target, key, ActionStatus.FAILED,
                    f"unreadable migration record, left as it is: {problems}",
                )  # fmt: skip
            elif request.refusal:
                outcome = _follow_up(target, key, ActionStatus.REFUSED, request.refusal)
            else:
                try:
                    outcome = self._follow_one(kind, job, request, guard)
                except KubeError as exc:
                    outcome = _follow_up(target, key, ActionStatus.FAILED, f"{exc}; retried")
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _follow_one(
        self,
        kind: str,
        job: Json,
        request: FollowUp,
        guard: WriteGuard,
    ) -> Action | None:
        settings, progress = request.settings, request.progress
        meta = job["metadata"]
        annotations = _annotations(job)
        key = MIGRATION_KEY.get(annotations) or ""
        namespace, name = meta["namespace"], meta["name"]
        target = f"{kind}/{namespace}/{name}"
        if MIGRATION_PHASE.get(annotations) != "moved":
            resume = Action("migrate_to_spot", target, ActionStatus.PLANNED, "", key, False)
            refusal = guard.refusal()
            if refusal:
                return self.outcomes.finish(resume, ActionStatus.REFUSED, refusal)
            return self._carry_on(resume, kind, job, guard, self.api.monotonic())
        started: datetime = MIGRATION_STARTED.get(annotations)  # type: ignore[assignment]
        elapsed = (self.api.now() - started).total_seconds()
        after = MIGRATION_TO.get(annotations) or {}
        selector = next(iter(after.values()), {}).get("nodeSelector") or {}
        pods = self._pods(kind, namespace, name)
        running = [p for p in pods if _running(p) and self._on_target(p, selector)]
        steps = MIGRATION_STEPS.get(annotations) or {}
        saved, at_signal = steps.get("checkpoint_step"), steps.get("step_at_signal")
        now_step = progress.get(target, (None, None))[0]
        measured = saved is not None and now_step is not None
        all_running = bool(pods) and len(running) == len(pods)
        settled_s = min((self._running_for(p) for p in running), default=0.0)
        confirmed = all_running and (
            now_step > saved if measured else settled_s >= settings.settle_s  # type: ignore[operator]
        )
        if confirmed:
            if guard.refusal():
                return None  # confirming can wait a cycle
            self._patch(kind, namespace, name, _CLEARED, None)
            done = Action("migrate_to_spot_confirmed", target, ActionStatus.DONE, "", key, False)
            how = (
                f"training passed step {saved}"
                if measured
                else f"every pod ran on spot for {settled_s:.0f} s"
            )
            return self.outcomes.finish(
                done,
                ActionStatus.DONE,
                f"all {len(pods)} pods run on the spot pool and {how}, {elapsed:.0f} s after "
                "the move; the on-demand scheduling is forgotten",
                {
                    "running_after_s": round(elapsed, 3),
                    "checkpoint_step": saved,
                    "steps_lost": None if saved is None or at_signal is None else at_signal - saved,
                    "step_now": now_step,
                },
            )
        stuck = measured and all_running and elapsed > settings.spot_deadline_s + settings.settle_s
        if (all_running or elapsed <= settings.spot_deadline_s) and not stuck:
            return None
        why = (
            f"no training progress past step {saved} on spot"
            if stuck
            else f"spot capacity did not come within {settings.spot_deadline_s:g} s"
        )
        return self._move_back(kind, job, pods, why, guard)

    def _move_back(
        self,
        kind: str,
        job: Json,
        pods: list[Json],
        why: str,
        guard: WriteGuard,
    ) -> Action | None:
        meta = job["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        annotations = _annotations(job)
        target = f"{kind}/{namespace}/{name}"
        if guard.refusal():
            return None
        before = MIGRATION_FROM.get(annotations) or {}
        self._patch(kind, namespace, name, _CLEARED, before)
        moved_back = []
        if kind == "PyTorchJob":
            deadline = guard.cap(self.evictions.deadline())
            for pod in pods:
                pod_name = pod["metadata"]["name"]
                if eviction_protection(_annotations(pod)):
                    continue  # left where it is; the templates move it back when it ends
                if self.evictions.evict(namespace, pod_name, deadline):
                    moved_back.append(pod_name)
        key = MIGRATION_KEY.get(annotations) or ""
        back = Action("migrate_to_spot_fallback", target, ActionStatus.DONE, "", key, False)
        return self.outcomes.finish(
            back,
            ActionStatus.DONE,
            f"{why}: templates restored, {len(moved_back)} pods moved back to on-demand",
            {"moved_back": moved_back},
        )

    # -- reading and writing jobs --------------------------------------------------------
    def _migrating(self) -> list[tuple[str, Json]]:
        found: list[tuple[str, Json]] = []
        for kind, resource in _RESOURCE.items():
            try:
                found += [(kind, job) for job in self.api.list_items(resource)]
            except KubeNotFound:
                if not resource.custom:  # else: the Kubeflow training operator is absent
                    raise
        return [(k, job) for k, job in found if MIGRATION_KEY.key in _annotations(job)]

    def _pods(self, kind: str, namespace: str, name: str) -> list[Json]:
        label = JOB_NAME_LABEL if kind == "PyTorchJob" else BATCH_JOB_NAME_LABEL
        return list(
            self.api.list_items(PODS, namespace=namespace, label_selector=f"{label}={name}")
        )

    def _protected(self, kind: str, namespace: str, name: str) -> str:
        """Why the job's pods may not be evicted now (empty when they may)."""
        for pod in self._pods(kind, namespace, name):
            protection = eviction_protection(_annotations(pod))
            if protection:
                return f"pod {pod['metadata']['name']}: {protection}"
        return ""

    def _patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        scheduling: Scheduling | None,
    ) -> Json:
        """Set the templates' scheduling (None: leave it) and the migration record."""
        patch: dict[str, Any] = {"metadata": {"annotations": dict(annotations)}}
        if scheduling is not None and kind == "PyTorchJob":
            patch["spec"] = {
                "pytorchReplicaSpecs": {
                    role: {"template": {"spec": spec}} for role, spec in scheduling.items()
                }
            }
        elif scheduling is not None:
            patch["spec"] = {"template": {"spec": scheduling.get("Job", {})}}
        resource: Resource = _RESOURCE[kind]
        return self.api.patch(resource, name, patch, namespace)

    def _on_target(self, pod: Json, selector: Mapping[str, str]) -> bool:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name or not selector:
            return False
        labels = (self.api.get(NODES, node_name).get("metadata") or {}).get("labels") or {}
        return all(labels.get(k) == v for k, v in selector.items())

    def _running_for(self, pod: Json) -> float:
        """Seconds every container of the pod has been running (0 when unknown)."""
        since = _running_since(pod)
        return 0.0 if since is None else max((self.api.now() - since).total_seconds(), 0.0)


def _follow_up(target: str, key: str, status: ActionStatus, reason: str) -> Action:
    return Action("migrate_to_spot_follow_up", target, status, reason, key, False)


def _problems(job: Json) -> str:
    """What is unreadable in the job's migration record; empty when all of it reads."""
    annotations = _annotations(job)
    found = [p for f in (*_RECORD, MIGRATION_STEPS) if (p := f.problem(annotations))]
    found += [f"{f.on} {f.key} is missing" for f in _RECORD if f.key not in annotations]
    return "; ".join(found)


def _running(pod: Json) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def _running_since(pod: Json) -> datetime | None:
    """When the last of the pod's containers started running (the pod's start time
    where the containers do not say)."""
    status = pod.get("status") or {}
    starts = [
        ((c.get("state") or {}).get("running") or {}).get("startedAt")
        for c in status.get("containerStatuses") or []
    ]
    texts = [t for t in starts if isinstance(t, str)] or [status.get("startTime")]
    try:
        return max(parse_instant(t) for t in texts if isinstance(t, str))
    except ValueError:
        return None


def _annotations(obj: Json) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _scheduling_of(template_spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "nodeSelector": template_spec.get("nodeSelector"),
        "tolerations": template_spec.get("tolerations"),
    }


def _templates(kind: str, job: Json) -> dict[str, dict[str, Any]]:
    """Role -> pod template spec: one per replica type, or ``Job`` for a batch Job."""
    if kind == "PyTorchJob":
        return {
            role: spec["template"].get("spec", {})
            for role, spec in job["spec"]["pytorchReplicaSpecs"].items()
        }
    return {"Job": job["spec"]["template"].get("spec", {})}
