"""Checkpoint-and-migrate of training jobs to spot capacity, and the follow-up that
confirms the move or undoes it.

A PyTorchJob's pod templates get the spot pool's node selector and tolerations (the
former scheduling kept in an annotation), then its pods are evicted through the Eviction
API: each gets SIGTERM, the reference job checkpoints and exits 143, and the operator
recreates the pod from the new template on spot, where it resumes from the checkpoint.
A batch/v1 Job is suspended (its controller stops the pods the same way), its template
patched (Kubernetes allows scheduling fields to change while a Job is suspended), then
resumed. Each later cycle follows up: every pod running on the spot pool confirms the
move; pods still not running there after the deadline move the job back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gpuwatch.actuators.drain import Evictions
from gpuwatch.actuators.events import Outcomes
from gpuwatch.kube.api import Json, KubeApi
from gpuwatch.kube.errors import KubeError, KubeNotFound
from gpuwatch.kube.resources import JOBS, NODES, PODS, PYTORCHJOBS, Resource
from gpuwatch.model.actions import Action, ActionStatus

MIGRATION_KEY_ANNOTATION = "gpuwatch.io/migration-key"
MIGRATION_FROM_ANNOTATION = "gpuwatch.io/migration-from"
MIGRATION_STARTED_ANNOTATION = "gpuwatch.io/migration-started"
MIGRATION_STEPS_ANNOTATION = "gpuwatch.io/migration-steps"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
BATCH_JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
_RESOURCE = {"PyTorchJob": PYTORCHJOBS, "Job": JOBS}
_CLEARED: dict[str, str | None] = {
    MIGRATION_STEPS_ANNOTATION: None,
    MIGRATION_KEY_ANNOTATION: None,
    MIGRATION_FROM_ANNOTATION: None,
    MIGRATION_STARTED_ANNOTATION: None,
}


class SpotMigration:
    """The ``migrate_to_spot`` action and its follow-up."""

    def __init__(self, api: KubeApi, evictions: Evictions, outcomes: Outcomes) -> None:
        self.api = api
        self.evictions = evictions
        self.outcomes = outcomes

    def run(self, action: Action) -> Action:
        try:
            return self._migrate(action)
        except KubeError as exc:
            return self.outcomes.finish(action, ActionStatus.FAILED, str(exc))

    def _migrate(self, action: Action) -> Action:
        finish = self.outcomes.finish
        kind, namespace, name = action.target.split("/")
        resource = _RESOURCE.get(kind)
        if resource is None:
            return finish(action, ActionStatus.FAILED, f"migrating a {kind} is not supported")
        job = self.api.get(resource, name, namespace)
        started = self.api.monotonic()
        templates = _templates(kind, job)
        if _annotations(job).get(MIGRATION_KEY_ANNOTATION) != action.key:
            original = {
                role: {"nodeSelector": t.get("nodeSelector"), "tolerations": t.get("tolerations")}
                for role, t in templates.items()
            }
            wanted = action.details.get("tolerations", [])
            moved = {
                role: {
                    "nodeSelector": action.details.get("node_selector", {}),
                    "tolerations": (t.get("tolerations") or [])
                    + [w for w in wanted if w not in (t.get("tolerations") or [])],
                }
                for role, t in templates.items()
            }
            annotations = {
                MIGRATION_KEY_ANNOTATION: action.key,
                MIGRATION_FROM_ANNOTATION: json.dumps(original, sort_keys=True),
                MIGRATION_STARTED_ANNOTATION: self.api.now().isoformat(),
                MIGRATION_STEPS_ANNOTATION: json.dumps(
                    {k: action.details.get(k) for k in ("step_at_signal", "checkpoint_step")}
                ),
            }
            self._reschedule(kind, namespace, name, moved, annotations)
        evicted: list[str] = []
        if kind == "PyTorchJob":  # a suspended Job's controller has stopped its pods already
            selector = action.details.get("node_selector", {})
            deadline = self.evictions.deadline()
            for pod in self._pods(kind, namespace, name):
                pod_name = pod["metadata"]["name"]
                if self._on_target(pod, selector):
                    continue
                if not self.evictions.evict(namespace, pod_name, deadline):
                    return finish(
                        action,
                        ActionStatus.FAILED,
                        f"a disruption budget kept refusing to evict {pod_name}; the "
                        "job stays pointed at spot and the next cycle carries on",
                        {"evicted": evicted},
                    )
                evicted.append(f"{namespace}/{pod_name}")
        return finish(
            action,
            ActionStatus.DONE,
            f"templates point at {action.pool}; {len(evicted)} pods evicted to checkpoint and "
            "move; confirmed or moved back in the next cycles",
            {"evicted": evicted, "signal_s": round(self.api.monotonic() - started, 3)},
        )

    def follow_up(
        self, deadline_s: float, progress: Mapping[str, tuple[int, int]] | None = None
    ) -> list[Action]:
        """Confirm migrations whose pods all run on the target pool; move back those whose
        pods are still not running there after ``deadline_s``. Never raises for the
        cluster's answers: a failure is one FAILED action, and the next cycle retries."""
        try:
            return [
                outcome
                for kind, job in self._migrating()
                if (outcome := self._follow_one(kind, job, deadline_s, progress or {})) is not None
            ]
        except KubeError as exc:
            return [
                Action(
                    "migrate_to_spot_follow_up",
                    "cluster",
                    ActionStatus.FAILED,
                    f"{exc}; retried next cycle",
                    "follow-up",
                    False,
                )
            ]

    def _follow_one(
        self,
        kind: str,
        job: Json,
        deadline_s: float,
        progress: Mapping[str, tuple[int, int]],
    ) -> Action | None:
        meta = job["metadata"]
        annotations = _annotations(job)
        key = annotations[MIGRATION_KEY_ANNOTATION]
        namespace, name = meta["namespace"], meta["name"]
        started = datetime.fromisoformat(annotations[MIGRATION_STARTED_ANNOTATION])
        elapsed = (self.api.now() - started).total_seconds()
        pods = self._pods(kind, namespace, name)
        selector = next(iter(_templates(kind, job).values()), {}).get("nodeSelector") or {}
        running = [
            p
            for p in pods
            if (p.get("status") or {}).get("phase") == "Running" and self._on_target(p, selector)
        ]
        target = f"{kind}/{namespace}/{name}"
        steps = json.loads(annotations.get(MIGRATION_STEPS_ANNOTATION) or "{}")
        saved, at_signal = steps.get("checkpoint_step"), steps.get("step_at_signal")
        now_step = progress.get(target, (None, None))[0]
        # With the job's metrics, the move is confirmed only once training has passed
        # the checkpoint it resumed from; without them, pods running on spot suffice.
        past_checkpoint = saved is None or now_step is None or now_step > saved
        if pods and len(running) == len(pods) and past_checkpoint:
            self._reschedule(kind, namespace, name, None, _CLEARED)
            done = Action("migrate_to_spot_confirmed", target, ActionStatus.DONE, "", key, False)
            return self.outcomes.finish(
                done,
                ActionStatus.DONE,
                f"all {len(pods)} pods run on the spot pool, {elapsed:.0f} s after the move",
                {
                    "running_after_s": round(elapsed, 3),
                    "checkpoint_step": saved,
                    "steps_lost": None if saved is None or at_signal is None else at_signal - saved,
                    "step_now": now_step,
                },
            )
        if elapsed <= deadline_s:
            return None
        original = json.loads(annotations.get(MIGRATION_FROM_ANNOTATION) or "{}")
        self._reschedule(kind, namespace, name, original, _CLEARED)
        moved_back = []
        if kind == "PyTorchJob":
            deadline = self.evictions.deadline()
            for pod in pods:
                pod_name = pod["metadata"]["name"]
                if pod not in running and self.evictions.evict(namespace, pod_name, deadline):
                    moved_back.append(pod_name)
        back = Action("migrate_to_spot_fallback", target, ActionStatus.DONE, "", key, False)
        return self.outcomes.finish(
            back,
            ActionStatus.DONE,
            f"spot capacity did not come within {deadline_s:g} s: templates "
            f"restored, {len(moved_back)} pods moved back to on-demand",
            {"waited_s": round(elapsed, 3)},
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
        return [(k, job) for k, job in found if _annotations(job).get(MIGRATION_KEY_ANNOTATION)]

    def _pods(self, kind: str, namespace: str, name: str) -> list[Json]:
        label = JOB_NAME_LABEL if kind == "PyTorchJob" else BATCH_JOB_NAME_LABEL
        return list(
            self.api.list_items(PODS, namespace=namespace, label_selector=f"{label}={name}")
        )

    def _reschedule(
        self,
        kind: str,
        namespace: str,
        name: str,
        scheduling: dict[str, dict[str, Any]] | None,
        annotations: dict[str, str | None],
    ) -> None:
        """Set the templates' scheduling (None: leave it) and the migration annotations."""
        meta = {"metadata": {"annotations": annotations}}
        resource: Resource = _RESOURCE[kind]
        if kind == "PyTorchJob":
            patch: dict[str, Any] = dict(meta)
            if scheduling is not None:
                patch["spec"] = {
                    "pytorchReplicaSpecs": {
                        role: {"template": {"spec": spec}} for role, spec in scheduling.items()
                    }
                }
            self.api.patch(resource, name, patch, namespace)
            return
        if scheduling is None:
            self.api.patch(resource, name, meta, namespace)
            return
        # A Job's template may change only while it is suspended; suspending stops its
        # pods (SIGTERM: the job checkpoints), resuming starts them from the new template.
        self.api.patch(resource, name, {**meta, "spec": {"suspend": True}}, namespace)
        self.api.patch(
            resource, name, {"spec": {"template": {"spec": scheduling["Job"]}}}, namespace
        )
        self.api.patch(resource, name, {"spec": {"suspend": False}}, namespace)

    def _on_target(self, pod: Json, selector: Mapping[str, str]) -> bool:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name or not selector:
            return False
        labels = (self.api.get(NODES, node_name).get("metadata") or {}).get("labels") or {}
        return all(labels.get(k) == v for k, v in selector.items())


def _annotations(obj: Json) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _templates(kind: str, job: Json) -> dict[str, dict[str, Any]]:
    """Role -> pod template spec: one per replica type, or ``Job`` for a batch Job."""
    if kind == "PyTorchJob":
        return {
            role: spec["template"].get("spec", {})
            for role, spec in job["spec"]["pytorchReplicaSpecs"].items()
        }
    return {"Job": job["spec"]["template"].get("spec", {})}
