"""State in a ConfigMap, against the emulated API server with the real client: what a
CronJob remembers between runs, and how two writers never overwrite each other."""

from __future__ import annotations

import base64
import gzip
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from gpuwatch.kube.api import RetryPolicy
from gpuwatch.kube.client import api_for
from gpuwatch.model.errors import StateError
from gpuwatch.model.state import CycleState
from gpuwatch.state import configmap
from gpuwatch.state.configmap import (
    INLINE_MAX_BYTES,
    LABELS,
    STATE_GZ_KEY,
    STATE_KEY,
    STORED_MAX_BYTES,
    ConfigMapState,
)
from tests.integration.kube_emulator import free_port

pytestmark = pytest.mark.integration

NS, NAME = "gpuwatch", "gpuwatch-state"
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def state_of(findings: int, *, seed: int = 0, noise: bool = False) -> CycleState:
    """``findings`` entries; with ``noise`` their keys are random hex (hardly compressible)."""
    rng = random.Random(seed)
    keys = (
        [f"{rng.getrandbits(256):064x}" for _ in range(findings)]
        if noise
        else [f"gpu-idle/node-{i // 8:05d}/gpu{i % 8}" for i in range(findings)]
    )
    since = {key: T0 - timedelta(minutes=5 * (i % 500)) for i, key in enumerate(keys)}
    return CycleState(findings_since=since, last_cycle_at=T0)


def store(emulator, *, sleeps=None, name=NAME, now=lambda: T0) -> ConfigMapState:
    api = emulator.kube_api(
        RetryPolicy(retries=4, backoff_max_s=10.0),
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        now=now,
    )
    return ConfigMapState(api, NS, name)


def stored(emulator, name=NAME):
    return emulator.get("v1", "ConfigMap", name, NS)


def test_round_trip_across_a_process_restart(kube_emulator):
    state = state_of(3)
    first = store(kube_emulator)
    assert first.load().to_dict() == CycleState().to_dict()  # nothing saved yet: 404
    first.save(state)

    config_map = stored(kube_emulator)
    assert json.loads(config_map["data"][STATE_KEY]) == state.to_dict()
    assert "binaryData" not in config_map
    assert config_map["metadata"]["labels"] == LABELS

    # The next CronJob run: a new process, a new object.
    restarted = store(kube_emulator)
    assert restarted.load().to_dict() == state.to_dict()
    later = CycleState({"gpu-idle/node-9/gpu0": T0}, T0 + timedelta(minutes=5))
    restarted.save(later)  # replaces with the version it read: no conflict
    assert store(kube_emulator).load().to_dict() == later.to_dict()
    assert [r.verb for r in kube_emulator.writes()] == ["create", "update"]


def test_saves_in_a_row_by_one_instance(kube_emulator):
    daemon = store(kube_emulator)
    daemon.load()
    for minutes in (5, 10, 15):
        daemon.save(CycleState({}, T0 + timedelta(minutes=minutes)))
    assert store(kube_emulator).load().last_cycle_at == T0 + timedelta(minutes=15)


def test_large_state_is_gzipped_into_binary_data_and_back(kube_emulator):
    large = state_of(12_000)
    assert len(json.dumps(large.to_dict())) > INLINE_MAX_BYTES
    writer = store(kube_emulator)
    writer.load()
    writer.save(large)

    config_map = stored(kube_emulator)
    assert "data" not in config_map or STATE_KEY not in config_map["data"]
    packed = base64.b64decode(config_map["binaryData"][STATE_GZ_KEY])
    assert len(packed) < INLINE_MAX_BYTES
    assert json.loads(gzip.decompress(packed)) == large.to_dict()
    assert store(kube_emulator).load().to_dict() == large.to_dict()

    # Shrinking back below the threshold moves it to data and drops the binary key.
    reader = store(kube_emulator)
    reader.load()
    reader.save(state_of(2))
    config_map = stored(kube_emulator)
    assert STATE_KEY in config_map["data"] and not config_map.get("binaryData")
    assert store(kube_emulator).load().to_dict() == state_of(2).to_dict()


def test_a_state_too_big_for_a_configmap_is_refused_and_the_old_one_kept(kube_emulator):
    writer = store(kube_emulator)
    writer.load()
    writer.save(state_of(3))
    before = stored(kube_emulator)

    huge = state_of(40_000, noise=True)
    with pytest.raises(StateError) as caught:
        writer.save(huge)
    message = str(caught.value)
    assert f"configmap {NS}/{NAME}: state not saved" in message
    assert "MiB of JSON" in message and "gzipped" in message
    assert "a ConfigMap holds at most 1.0 MiB and gpuwatch writes at most 922 KiB" in message
    assert "largest parts: findings_since" in message
    assert "left as it was" in message
    assert stored(kube_emulator) == before
    assert [r.verb for r in kube_emulator.writes()] == ["create"]  # nothing sent
    assert STORED_MAX_BYTES < 1024 * 1024


def test_two_instances_the_second_writer_is_refused(kube_emulator):
    store(kube_emulator).save(state_of(1))
    a, b = store(kube_emulator), store(kube_emulator)
    a.load()
    b.load()
    mine = CycleState({"a": T0}, T0)
    a.save(mine)
    with pytest.raises(StateError, match="changed by another writer since it was read"):
        b.save(CycleState({"b": T0}, T0))
    assert store(kube_emulator).load().to_dict() == mine.to_dict()
    assert kube_emulator.requests_where(verb="update", status=409)


def test_two_instances_racing_to_create(kube_emulator):
    a, b = store(kube_emulator), store(kube_emulator)
    a.load()
    b.load()  # both saw no ConfigMap
    a.save(CycleState({"a": T0}, T0))
    with pytest.raises(StateError, match="created by another writer since it was read"):
        b.save(CycleState({"b": T0}, T0))
    assert set(store(kube_emulator).load().findings_since) == {"a"}


def test_never_overwrites_state_it_has_not_read(kube_emulator):
    store(kube_emulator).save(state_of(1))
    with pytest.raises(StateError, match="this instance has not read it"):
        store(kube_emulator).save(CycleState())  # load() never called
    assert store(kube_emulator).load().to_dict() == state_of(1).to_dict()


def test_deleted_since_read_is_created_again(kube_emulator):
    store(kube_emulator).save(state_of(1))
    writer = store(kube_emulator)
    writer.load()
    kube_emulator.remove("v1", "ConfigMap", NAME, NS)  # kubectl delete configmap
    writer.save(state_of(2))
    assert store(kube_emulator).load().to_dict() == state_of(2).to_dict()


def test_a_configmap_deployed_empty_is_used_and_its_metadata_kept(kube_emulator):
    kube_emulator.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": NAME,
                "namespace": NS,
                "labels": {"team": "infra"},
                "annotations": {"owner": "gpu-infra"},
            },
        }
    )
    writer = store(kube_emulator)
    assert writer.load().to_dict() == CycleState().to_dict()
    writer.save(state_of(1))
    meta = stored(kube_emulator)["metadata"]
    assert meta["labels"] == {"team": "infra", **LABELS}
    assert meta["annotations"] == {"owner": "gpu-infra"}
    assert [r.verb for r in kube_emulator.writes()] == ["update"]  # no create needed


@pytest.mark.parametrize(
    ("verb", "method"), [("get", "load"), ("update", "save"), ("create", "save")]
)
def test_rbac_refusal_names_the_rule(kube_emulator, verb, method):
    if verb == "update":
        store(kube_emulator).save(state_of(1))
    kube_emulator.deny(verb, "configmaps", namespace=NS)
    writer = store(kube_emulator)
    if method == "save":
        writer.load()
    with pytest.raises(StateError) as caught:
        writer.load() if method == "load" else writer.save(state_of(2))
    message = str(caught.value)
    assert f"{verb} configmap {NS}/{NAME}: 403 Forbidden" in message
    assert f"RBAC does not allow verb {verb} on configmaps" in message
    assert f"a Role in namespace {NS}" in message
    assert f'apiGroups [""], resources [configmaps], verbs [{verb}]' in message
    assert "cannot" in message  # the server's own words follow


def test_throttling_is_retried_honouring_retry_after(kube_emulator):
    writer_sleeps: list[float] = []
    store(kube_emulator).save(state_of(1))
    path = kube_emulator.path("v1", "ConfigMap", NAME, NS)
    kube_emulator.fail_next(path, 429, times=2, retry_after_s=3, method="GET")
    kube_emulator.fail_next(path, 503, times=1, method="PUT")
    writer = store(kube_emulator, sleeps=writer_sleeps)
    assert writer.load().to_dict() == state_of(1).to_dict()
    writer.save(state_of(2))
    assert writer_sleeps[:2] == [3.0, 3.0]  # Retry-After, as the server asked
    assert len(writer_sleeps) == 3 and 0 < writer_sleeps[2] <= 10.0
    assert store(kube_emulator).load().to_dict() == state_of(2).to_dict()


def test_retry_after_is_capped_and_retries_end(kube_emulator):
    sleeps: list[float] = []
    path = kube_emulator.path("v1", "ConfigMap", NAME, NS)
    kube_emulator.fail_next(path, 429, times=10, retry_after_s=3600, method="GET")
    with pytest.raises(StateError, match=r"kept failing \(5 attempts\): 429"):
        store(kube_emulator, sleeps=sleeps).load()
    assert sleeps == [10.0] * 4


def test_a_write_whose_answer_was_lost_is_not_mistaken_for_a_conflict(kube_emulator):
    store(kube_emulator).save(state_of(1))
    writer = store(kube_emulator)
    writer.load()
    path = kube_emulator.path("v1", "ConfigMap", NAME, NS)
    # The update is applied, but its answer is a 500: the retry then meets 409.
    kube_emulator.fail_next(path, 500, method="PUT", after_effect=True)
    writer.save(state_of(2))
    assert store(kube_emulator).load().to_dict() == state_of(2).to_dict()
    assert [r.status for r in kube_emulator.requests_where(verb="update")] == [500, 409]


@pytest.mark.parametrize(
    ("data", "binary", "reason"),
    [
        ({STATE_KEY: "{not json"}, {}, "data[state.json]: not JSON"),
        ({STATE_KEY: "[1, 2]"}, {}, "expected a JSON object, got list"),
        ({STATE_KEY: '{"version": 99}'}, {}, "data[state.json]: version: expected"),
        ({}, {STATE_GZ_KEY: base64.b64encode(b"not gzip").decode()}, "not gzip data"),
        (
            {},
            {STATE_GZ_KEY: base64.b64encode(gzip.compress(b'{"version": 1}')[:-12]).decode()},
            "truncated gzip data",
        ),
        (
            {STATE_KEY: "{}"},
            {STATE_GZ_KEY: base64.b64encode(gzip.compress(b"{}")).decode()},
            "both data[state.json] and binaryData[state.json.gz] are set",
        ),
    ],
)
def test_unreadable_state_is_copied_aside_then_replaced(kube_emulator, data, binary, reason):
    corrupt = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME}}
    if data:
        corrupt["data"] = data
    if binary:
        corrupt["binaryData"] = binary
    kube_emulator.add({**corrupt, "metadata": {"name": NAME, "namespace": NS}})
    writer = store(kube_emulator)
    with pytest.raises(StateError) as caught:
        writer.load()
    aside = f"{NAME}-corrupt-20261124-020000"
    message = str(caught.value)
    assert f"configmap {NS}/{NAME}: unreadable state (" in message
    assert reason in message
    assert f"copied to configmap {NS}/{aside}, starting afresh" in message

    copy = stored(kube_emulator, aside)
    assert copy.get("data", {}) == data and copy.get("binaryData", {}) == binary
    assert copy["metadata"]["annotations"]["gpuwatch.io/copied-from"] == f"{NS}/{NAME}"
    assert reason in copy["metadata"]["annotations"]["gpuwatch.io/unreadable-because"]

    # The pipeline starts afresh and saves: the original is replaced, the copy stays.
    writer.save(state_of(1))
    assert store(kube_emulator).load().to_dict() == state_of(1).to_dict()
    assert stored(kube_emulator, aside) == copy


def test_unreadable_state_that_cannot_be_copied_is_never_overwritten(kube_emulator):
    kube_emulator.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NS},
            "data": {STATE_KEY: "{truncated"},
        }
    )
    before = stored(kube_emulator)
    kube_emulator.deny("create", "configmaps", namespace=NS)
    writer = store(kube_emulator)
    with pytest.raises(StateError, match="could not be copied aside") as caught:
        writer.load()
    assert "403 Forbidden" in str(caught.value)
    assert f"kubectl -n {NS} delete configmap {NAME}" in str(caught.value)
    with pytest.raises(StateError, match="not overwriting unreadable state"):
        writer.save(state_of(1))
    assert stored(kube_emulator) == before


def test_an_unreachable_api_server_is_a_state_error():
    sleeps: list[float] = []
    api = api_for(f"http://127.0.0.1:{free_port()}", RetryPolicy(retries=1), sleep=sleeps.append)
    state = ConfigMapState(api, NS, NAME)
    with pytest.raises(StateError, match=r"cannot reach the Kubernetes API at http://127\.0\.0\.1"):
        state.load()
    assert len(sleeps) == 1


def test_a_gzip_bomb_is_unreadable_not_inflated(kube_emulator, monkeypatch):
    monkeypatch.setattr(configmap, "JSON_MAX_BYTES", 1024 * 1024)
    bomb = gzip.compress(b" " * (2 * 1024 * 1024))  # 2 KiB inflating to 2 MiB
    kube_emulator.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NS},
            "binaryData": {STATE_GZ_KEY: base64.b64encode(bomb).decode()},
        }
    )
    with pytest.raises(StateError, match=r"binaryData\[state.json.gz\]: inflates to more than"):
        store(kube_emulator).load()


def test_json_too_large_to_read_back_is_not_written(kube_emulator, monkeypatch):
    monkeypatch.setattr(configmap, "JSON_MAX_BYTES", INLINE_MAX_BYTES + 1)
    writer = store(kube_emulator)
    writer.load()
    with pytest.raises(StateError, match="gpuwatch reads back at most 256 KiB of JSON"):
        writer.save(state_of(12_000))
    assert not kube_emulator.writes()
