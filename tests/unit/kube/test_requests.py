"""A pod's effective requests as the scheduler sums them; renamed GPU resources folded."""

from __future__ import annotations

from gpuwatch.kube.objects.requests import container_requests, effective_requests
from gpuwatch.model.cluster import CGPU_MEMORY_RESOURCE, WHOLE_GPU_RESOURCE, gpu_request_kind
from tests.unit.kube.raw import raw_container

# --- effective requests ---------------------------------------------------------------------


def test_containers_sum_and_limits_stand_for_omitted_requests():
    spec = {
        "containers": [
            raw_container({"cpu": "2", "memory": "4Gi"}, {"nvidia.com/gpu": "2", "cpu": "4"}),
            raw_container({"cpu": "500m"}),
            raw_container(None, {"memory": "1Gi"}),
            {"name": "bare"},
        ]
    }
    assert effective_requests(spec) == {
        "cpu": 2.5,
        "memory": 5 * 2.0**30,
        WHOLE_GPU_RESOURCE: 2.0,
    }


def test_a_request_wins_over_its_limit():
    assert container_requests(raw_container({"cpu": "1"}, {"cpu": "8"}), "c") == {"cpu": 1.0}


def test_init_containers_count_at_their_peak_not_their_sum():
    spec = {
        "initContainers": [
            raw_container({"cpu": "4", "memory": "1Gi"}),
            raw_container({"cpu": "1", "memory": "8Gi"}),
        ],
        "containers": [raw_container({"cpu": "2", "memory": "2Gi"}, {"nvidia.com/gpu": "1"})],
    }
    # cpu: max(2, 4); memory: max(2Gi, 8Gi); the GPU only from the app container.
    assert effective_requests(spec) == {"cpu": 4.0, "memory": 8 * 2.0**30, WHOLE_GPU_RESOURCE: 1}


def test_sidecars_run_beside_the_app_and_the_later_init_containers():
    spec = {
        "initContainers": [
            raw_container({"cpu": "1"}),  # alone: 1
            {**raw_container({"cpu": "500m"}), "restartPolicy": "Always"},  # sidecar
            raw_container({"cpu": "3"}),  # beside the sidecar: 3.5
        ],
        "containers": [raw_container({"cpu": "2"})],  # beside the sidecar: 2.5
    }
    assert effective_requests(spec) == {"cpu": 3.5}
    spec["containers"] = [raw_container({"cpu": "4"})]
    assert effective_requests(spec) == {"cpu": 4.5}


def test_overhead_is_added_on_top():
    spec = {
        "containers": [raw_container({"cpu": "1", "memory": "1Gi"})],
        "initContainers": [raw_container({"cpu": "2"})],
        "overhead": {"cpu": "250m", "memory": "120Mi"},
    }
    assert effective_requests(spec) == {"cpu": 2.25, "memory": 2.0**30 + 120 * 2.0**20}


def test_pod_level_resources_replace_the_containers_sum():
    spec = {
        "resources": {"requests": {"cpu": "3"}},
        "containers": [raw_container({"cpu": "1"}, {"nvidia.com/gpu": "1"})],
    }
    assert effective_requests(spec) == {"cpu": 3.0, WHOLE_GPU_RESOURCE: 1.0}


def test_every_gpu_resource_kind_is_recognised():
    def kind(limits: dict[str, str]) -> str | None:
        return gpu_request_kind(effective_requests({"containers": [raw_container(None, limits)]}))

    assert kind({"nvidia.com/gpu": "1"}) == "whole"
    assert kind({"aliyun.com/gpu-mem": "8"}) == "cgpu"
    assert kind({"nvidia.com/mig-1g.10gb": "1"}) == "mig"
    assert kind({"nvidia.com/mig-3g.40gb": "2"}) == "mig"
    assert kind({"nvidia.com/gpu.shared": "1"}) == "whole"
    assert kind({"cpu": "1"}) is None


def test_renamed_time_slicing_resources_fold_into_the_gpu_they_rename():
    spec = {"containers": [raw_container(None, {"nvidia.com/gpu.shared": "2"})]}
    assert effective_requests(spec) == {WHOLE_GPU_RESOURCE: 2.0}
    # A cluster that renames differently says so; the default alias then stays as it is.
    custom = {"example.com/vgpu": WHOLE_GPU_RESOURCE}
    spec = {
        "containers": [raw_container(None, {"example.com/vgpu": "1", "nvidia.com/gpu.shared": "1"})]
    }
    assert effective_requests(spec, gpu_aliases=custom) == {
        WHOLE_GPU_RESOURCE: 1.0,
        "nvidia.com/gpu.shared": 1.0,
    }


def test_cgpu_memory_is_counted_in_gib_as_advertised():
    spec = {"containers": [raw_container(None, {CGPU_MEMORY_RESOURCE: "8"})]}
    assert effective_requests(spec) == {CGPU_MEMORY_RESOURCE: 8.0}
