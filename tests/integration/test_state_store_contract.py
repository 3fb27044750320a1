"""The ``StateStore`` contract, run against every implementation: a JSON file, memory,
and a ConfigMap (the real Kubernetes client against the emulated API server).

A cycle relies on these and on nothing else of a store: nothing saved reads as an empty
state; what was saved reads back whole, every field of it; what a load returns is the
cycle's own to change; the last save wins. The assertions use the protocol alone
(``load``, ``save``, ``name``), and "a restart" is a new store object on the same
storage (memory has no other storage than its object, so it is the same one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gpuwatch.model.approvals import ApprovalRequest, RequestStatus, Snooze
from gpuwatch.model.state import AlertGroupState, CycleState, PendingMessage
from gpuwatch.state.base import MemoryState, StateStore
from gpuwatch.state.configmap import ConfigMapState
from gpuwatch.state.json_file import JsonFileState
from tests.builders import AT

pytestmark = pytest.mark.integration

Open = Callable[[], StateStore]
"""A store on the fixture's storage, as a new process would build it."""

MIN = timedelta(minutes=1)
TOLD = AlertGroupState(
    key="#gpu-alerts|rule=gpu-idle,pool=gpu-training",
    channel="#gpu-alerts",
    title="4 idle A100-SXM4-80GBs in gpu-training",
    started_at=AT - 90 * MIN,
    severity="critical",
    notifier="slack",
    channel_id="C0001",
    ts="1795486800.000100",
    posted_at=AT - 85 * MIN,
    notified_at=AT - 10 * MIN,
    fingerprint="0123456789abcdef",
    findings=4,
    digest=True,
    resolved_at=AT - 5 * MIN,
    resolution="silenced",
    failed_since=AT - 5 * MIN,
    last_error="Slack chat.postMessage: internal_error (HTTP 500)",
)


REQUEST = ApprovalRequest(
    key="scale_down_node:train-a100-3",
    kind="scale_down_node",
    target="Node/train-a100-3",
    pool="gpu-training",
    channel="#gpu-alerts",
    requested_at=AT - 30 * MIN,
    status=RequestStatus.REJECTED,
    what="Scale down Node/train-a100-3 in gpu-training (cordon-drain): 6 of 8 unallocated",
    saving="107,520.00 CNY net per 30 days (107,520.00 gross)",
    dry_run=False,
    channel_id="C0001",
    ts="1795486800.000200",
    thread_ts="1795486800.000100",
    decided_by="U0ALICE",
    decided_at=AT - 20 * MIN,
    until=AT + 23 * 60 * MIN,
    reason="rejected in Slack",
    told="rejected",
    ignored=["U0EVE"],
    failed_since=AT - 2 * MIN,
    last_error="Slack chat.update: internal_error (HTTP 500)",
)
SNOOZE = Snooze(
    group_key=TOLD.key,
    match={"rule": "gpu-idle", "pool": "gpu-training"},
    user="U0ALICE",
    at=AT - 10 * MIN,
    until=AT + 50 * MIN,
)


def rich_state() -> CycleState:
    """A state in which every field, and every field of its parts, differs from its
    default: a store that drops or mangles one is caught."""
    parked = replace(TOLD, key="#team-b|rule=gpu-near-oom,pool=gpu-inference", channel="#team-b")
    return CycleState(
        findings_since={
            "gpu-idle/node-a/gpu0": AT - 90 * MIN,
            "gpu-near-oom/node-b/gpu3": AT - 20 * MIN,
        },
        last_cycle_at=AT - 5 * MIN,
        alerts={TOLD.key: replace(TOLD)},
        outbox=[
            PendingMessage(
                key=f"actions@{(AT - 5 * MIN).isoformat()}",
                channel="#gpu-alerts",
                title="1 action planned (dry run)",
                text="Would drain Node/train-a100-3: idle for 2h",
                blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*drain*"}}],
                created_at=AT - 5 * MIN,
                attempts=2,
                last_error="the webhook answered HTTP 500: internal_error",
            )
        ],
        reported_actions={"scale_down_node/train-a100-3|planned": AT - 5 * MIN},
        parked={f"slack|{parked.key}": parked},
        approvals={REQUEST.key: replace(REQUEST, ignored=list(REQUEST.ignored))},
        snoozes=[SNOOZE],
    )


@pytest.fixture(params=["json-file", "memory", "configmap"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Open:
    if request.param == "json-file":
        return lambda: JsonFileState(tmp_path / "state.json")
    if request.param == "memory":
        store = MemoryState()
        return lambda: store
    emulator = request.getfixturevalue("kube_emulator")
    return lambda: ConfigMapState(emulator.kube_api(), "gpuwatch", "gpuwatch-state")


def at_default(value: Any, default: Any) -> list[str]:
    """The dataclass fields of ``value`` equal to those of ``default``."""
    return [f.name for f in fields(value) if getattr(value, f.name) == getattr(default, f.name)]


def test_the_rich_state_leaves_no_field_at_its_default() -> None:
    state = rich_state()
    assert at_default(state, CycleState()) == []
    bare = AlertGroupState(TOLD.key, TOLD.channel, TOLD.title, TOLD.started_at)
    assert at_default(state.alerts[TOLD.key], bare) == ["key", "channel", "title", "started_at"]
    pending = state.outbox[0]
    assert at_default(pending, PendingMessage("", "", "", "", [], AT)) == []
    bare_request = ApprovalRequest(REQUEST.key, REQUEST.kind, REQUEST.target, None, "", AT)
    assert at_default(state.approvals[REQUEST.key], bare_request) == ["key", "kind", "target"]


def test_a_store_has_a_name(open_store: Open) -> None:
    assert isinstance(open_store().name, str) and open_store().name


def test_a_fresh_store_loads_an_empty_state(open_store: Open) -> None:
    assert open_store().load() == CycleState()


def test_what_was_saved_loads_back_whole_across_a_restart(open_store: Open) -> None:
    store = open_store()
    store.load()
    store.save(rich_state())

    assert store.load() == rich_state()
    assert open_store().load() == rich_state()


def test_a_loaded_state_is_a_copy(open_store: Open) -> None:
    store = open_store()
    store.load()
    saved = rich_state()
    store.save(saved)

    # The cycle changes what it loaded, and what it saved, without saving again...
    loaded = store.load()
    loaded.alerts[TOLD.key].ts = None
    loaded.outbox[0].attempts += 1
    loaded.outbox[0].blocks.clear()
    loaded.findings_since.clear()
    loaded.parked.clear()
    saved.reported_actions.clear()
    saved.alerts[TOLD.key].title = "changed"

    # ...and the store still holds what was saved.
    assert store.load() == rich_state()


def test_saving_twice_keeps_the_last(open_store: Open) -> None:
    store = open_store()
    store.load()
    store.save(rich_state())
    later = CycleState(findings_since={"gpu-idle/node-c/gpu1": AT}, last_cycle_at=AT)
    store.save(later)

    assert store.load() == later
    assert open_store().load() == later
