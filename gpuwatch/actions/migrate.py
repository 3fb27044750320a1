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

A mixin of ``KubernetesActuator``: it uses the actuator's clients, evictions and events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from gpuwatch.model.actions import Action, ActionStatus

MIGRATION_KEY_ANNOTATION = "gpuwatch.io/migration-key"
MIGRATION_FROM_ANNOTATION = "gpuwatch.io/migration-from"
MIGRATION_STARTED_ANNOTATION = "gpuwatch.io/migration-started"
MIGRATION_STEPS_ANNOTATION = "gpuwatch.io/migration-steps"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
BATCH_JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
KUBEFLOW = ("kubeflow.org", "v1")


class SpotMigration:
    """Needs ``core``, ``custom``, ``batch``, ``api_client``, ``_evict``, ``_finish``,
    ``_monotonic`` and ``_now`` from the class it is mixed into."""

    def _migrate(self, action: Action) -> Action:
        kind, namespace, name = action.target.split("/")
        if kind not in ("PyTorchJob", "Job"):
            return self._finish(action, ActionStatus.FAILED, f"migrating a {kind} is not supported")
        job = self._read_job(kind, namespace, name)
        started = self._monotonic()
        templates = _templates(kind, job)
        if (job["metadata"].get("annotations") or {}).get(MIGRATION_KEY_ANNOTATION) != action.key:
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
                MIGRATION_STARTED_ANNOTATION: self._now().isoformat(),
                MIGRATION_STEPS_ANNOTATION: json.dumps(
                    {k: action.details.get(k) for k in ("step_at_signal", "checkpoint_step")}
                ),
            }
            self._reschedule(kind, namespace, name, moved, annotations)
        evicted: list[str] = []
        if kind == "PyTorchJob":  # a suspended Job's controller has stopped its pods already
            selector = action.details.get("node_selector", {})
            for pod in self._pods(kind, namespace, name):
                if self._on_target(pod, selector):
                    continue
                if not self._evict(namespace, pod.metadata.name, started):
                    return self._finish(
                        action,
                        ActionStatus.FAILED,
                        f"a disruption budget kept refusing to evict {pod.metadata.name}; the "
                        "job stays pointed at spot and the next cycle carries on",
                        {"evicted": evicted},
                    )
                evicted.append(f"{namespace}/{pod.metadata.name}")
        return self._finish(
            action,
            ActionStatus.DONE,
            f"templates point at {action.pool}; {len(evicted)} pods evicted to checkpoint and "
            "move; confirmed or moved back in the next cycles",
            {"evicted": evicted, "signal_s": round(self._monotonic() - started, 3)},
        )

    def follow_up(
        self, deadline_s: float, progress: Mapping[str, tuple[int, int]] | None = None
    ) -> list[Action]:
        """Confirm migrations whose pods all run on the target pool; move back those whose
        pods are still not running there after ``deadline_s``. Never raises for the
        cluster's answers: a failure is one FAILED action, and the next cycle retries."""
        try:
            return self._follow_up(deadline_s, progress or {})
        except ApiException as exc:
            return [
                Action(
                    "migrate_to_spot_follow_up",
                    "cluster",
                    ActionStatus.FAILED,
                    f"HTTP {exc.status}: {exc.reason}; retried next cycle",
                    "follow-up",
                    False,
                )
            ]

    def _follow_up(
        self, deadline_s: float, progress: Mapping[str, tuple[int, int]]
    ) -> list[Action]:
        results: list[Action] = []
        for kind, job in self._migrating():
            meta = job["metadata"]
            annotations = meta.get("annotations") or {}
            key = annotations[MIGRATION_KEY_ANNOTATION]
            namespace, name = meta["namespace"], meta["name"]
            started = datetime.fromisoformat(annotations[MIGRATION_STARTED_ANNOTATION])
            elapsed = (self._now() - started).total_seconds()
            pods = self._pods(kind, namespace, name)
            selector = next(iter(_templates(kind, job).values()), {}).get("nodeSelector") or {}
            running = [
                p
                for p in pods
                if p.status and p.status.phase == "Running" and self._on_target(p, selector)
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
                done = Action(
                    "migrate_to_spot_confirmed", target, ActionStatus.DONE, "", key, False
                )
                results.append(
                    self._finish(
                        done,
                        ActionStatus.DONE,
                        f"all {len(pods)} pods run on the spot pool, {elapsed:.0f} s after "
                        "the move",
                        {
                            "running_after_s": round(elapsed, 3),
                            "checkpoint_step": saved,
                            "steps_lost": None
                            if saved is None or at_signal is None
                            else at_signal - saved,
                            "step_now": now_step,
                        },
                    )
                )
            elif elapsed > deadline_s:
                original = json.loads(annotations.get(MIGRATION_FROM_ANNOTATION) or "{}")
                self._reschedule(kind, namespace, name, original, _CLEARED)
                moved_back = []
                if kind == "PyTorchJob":
                    for pod in pods:
                        if pod not in running and self._evict(
                            namespace, pod.metadata.name, self._monotonic()
                        ):
                            moved_back.append(pod.metadata.name)
                back = Action("migrate_to_spot_fallback", target, ActionStatus.DONE, "", key, False)
                results.append(
                    self._finish(
                        back,
                        ActionStatus.DONE,
                        f"spot capacity did not come within {deadline_s:g} s: templates "
                        f"restored, {len(moved_back)} pods moved back to on-demand",
                        {"waited_s": round(elapsed, 3)},
                    )
                )
        return results

    # -- the two kinds -------------------------------------------------------------------
    def _read_job(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        if kind == "PyTorchJob":
            return self.custom.get_namespaced_custom_object(
                *KUBEFLOW, namespace, "pytorchjobs", name
            )
        job = self.batch.read_namespaced_job(name, namespace)
        return self.api_client.sanitize_for_serialization(job)

    def _migrating(self) -> list[tuple[str, dict[str, Any]]]:
        try:
            pytorchjobs = self.custom.list_cluster_custom_object(*KUBEFLOW, "pytorchjobs")["items"]
        except ApiException as exc:
            if exc.status != 404:  # 404: the Kubeflow training operator is not installed
                raise
            pytorchjobs = []
        found = [("PyTorchJob", job) for job in pytorchjobs]
        jobs = self.batch.list_job_for_all_namespaces().items
        found += [("Job", self.api_client.sanitize_for_serialization(job)) for job in jobs]
        return [
            (kind, job)
            for kind, job in found
            if (job["metadata"].get("annotations") or {}).get(MIGRATION_KEY_ANNOTATION)
        ]

    def _pods(self, kind: str, namespace: str, name: str) -> list[Any]:
        label = JOB_NAME_LABEL if kind == "PyTorchJob" else BATCH_JOB_NAME_LABEL
        return list(
            self.core.list_namespaced_pod(namespace, label_selector=f"{label}={name}").items
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
        if kind == "PyTorchJob":
            patch: dict[str, Any] = dict(meta)
            if scheduling is not None:
                patch["spec"] = {
                    "pytorchReplicaSpecs": {
                        role: {"template": {"spec": spec}} for role, spec in scheduling.items()
                    }
                }
            self.custom.patch_namespaced_custom_object(
                *KUBEFLOW, namespace, "pytorchjobs", name, patch
            )
            return
        if scheduling is None:
            self.batch.patch_namespaced_job(name, namespace, meta)
            return
        # A Job's template may change only while it is suspended; suspending stops its
        # pods (SIGTERM: the job checkpoints), resuming starts them from the new template.
        self.batch.patch_namespaced_job(name, namespace, {**meta, "spec": {"suspend": True}})
        self.batch.patch_namespaced_job(
            name, namespace, {"spec": {"template": {"spec": scheduling["Job"]}}}
        )
        self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": False}})

    def _on_target(self, pod: Any, selector: dict[str, str]) -> bool:
        node_name = pod.spec.node_name if pod.spec else None
        if not node_name or not selector:
            return False
        labels = self.core.read_node(node_name).metadata.labels or {}
        return all(labels.get(k) == v for k, v in selector.items())


_CLEARED: dict[str, str | None] = {
    MIGRATION_STEPS_ANNOTATION: None,
    MIGRATION_KEY_ANNOTATION: None,
    MIGRATION_FROM_ANNOTATION: None,
    MIGRATION_STARTED_ANNOTATION: None,
}


def _templates(kind: str, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Role -> pod template spec: one per replica type, or ``Job`` for a batch Job."""
    if kind == "PyTorchJob":
        return {
            role: spec["template"].get("spec", {})
            for role, spec in job["spec"]["pytorchReplicaSpecs"].items()
        }
    return {"Job": job["spec"]["template"].get("spec", {})}
