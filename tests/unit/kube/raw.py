"""Raw Kubernetes JSON for the tests: a container and a well-formed pod, as the API serves them."""

from __future__ import annotations

from typing import Any


def raw_container(
    requests: dict[str, str] | None = None, limits: dict[str, str] | None = None
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": "c", "resources": resources}


def raw_pod(**overrides: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train-worker-0",
            "namespace": "llm",
            "uid": "0f6a3c1e-1111-2222-3333-444455556666",
            "labels": {"training.kubeflow.org/job-name": "train"},
            "annotations": {"gpuwatch.io/checkpoint": "true"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "gc-parent", "uid": "x"},
                {
                    "apiVersion": "kubeflow.org/v1",
                    "kind": "PyTorchJob",
                    "name": "train",
                    "uid": "y",
                    "controller": True,
                    "blockOwnerDeletion": True,
                },
            ],
        },
        "spec": {
            "nodeName": "gpu-1",
            "containers": [raw_container({"cpu": "8"}, {"nvidia.com/gpu": "8"})],
        },
        "status": {"phase": "Running", "startTime": "2026-11-23T01:00:00Z"},
    }
    for key, value in overrides.items():
        pod[key] = {**pod[key], **value}
    return pod
