"""One cycle end to end on in-process components: the scenario, state, failures."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from gpuwatch.actuators.recorder import RecordingActuator
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.model.actions import ActionStatus
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.errors import SourceUnreachable, StateError
from gpuwatch.model.metrics import WindowRequest, WindowStats
from gpuwatch.model.state import STATE_VERSION, AlertGroupState, CycleState
from gpuwatch.notify.console import RecordingNotifier
from gpuwatch.pipeline import Components, analyse, gather, run_cycle
from gpuwatch.pipeline.effect import effect
from gpuwatch.sources.simulator import (
    SimulatedCluster,
    SimulatorClusterSource,
    SimulatorMetricsSource,
)
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.state.base import MemoryState
from gpuwatch.state.json_file import JsonFileState

SETTINGS = Settings()


def _components(at: datetime = SHOWCASE_AT, state=None, metrics=None, **sim) -> Components:
    cluster = SimulatedCluster(SimulatorSettings(**sim), end=at)
    return Components(
        metrics=metrics or SimulatorMetricsSource(cluster),
        cluster=SimulatorClusterSource(cluster),
        rules=load_rules(),
        state=state or MemoryState(),
        notifier=RecordingNotifier(),
        price_book=load_price_book(),
    )


@pytest.fixture(scope="module")
def showcase():
    return run_cycle(_components(), SETTINGS, SHOWCASE_AT)


def _by_rule(result) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for f in result.findings:
        found.setdefault(f.rule, set()).add(f.workload or f"{f.node} (unallocated)")
    return found


def test_showcase_fires_every_rule_from_the_workload_the_readme_names(showcase):
    found = _by_rule(showcase)
    assert found["gpu-near-oom"] == {"PyTorchJob/vision/detector-train"}
    assert found["gpu-idle"] == {
        "CronJob/vision/nightly-eval",
        "Notebook/research/alice",
        "Notebook/research/bob",
        "Deployment/serving/rerank",
    }
    assert found["gpu-xid"] == {"Deployment/serving/rerank"}
    assert found["gpu-overheat"] == {"Deployment/serving/asr"}
    assert found["gpu-oom-forecast"] == {"PyTorchJob/vision/segmenter-finetune"}
    assert {w.split(" ")[0] for w in found["gpu-unallocated"]} == {
        "train-a100-3",
        "infer-a10-1",
        "infer-t4-1",
    }
    assert "PyTorchJob/research/hparam-sweep" in found["data-gap"]
    assert "Deployment/serving/rerank" in found["data-gap"]
    assert showcase.ok


def test_no_gpu_is_both_idle_and_unallocated(showcase):
    idle = {f.gpu_uuid for f in showcase.findings if f.rule == "gpu-idle"}
    unallocated = {f.gpu_uuid for f in showcase.findings if f.rule == "gpu-unallocated"}
    assert idle and unallocated and not idle & unallocated


def test_gpus_with_too_little_data_are_not_judged_idle(showcase):
    sweep = [f for f in showcase.findings if f.workload == "PyTorchJob/research/hparam-sweep"]
    assert {f.rule for f in sweep} == {"data-gap"}
    not_judged = [n for n in showcase.data_quality if n.kind == "not_judged"]
    assert any(n.node == "spot-a100-1" and "gpu-idle" in n.message for n in not_judged)


def test_training_and_inference_that_work_are_quiet(showcase):
    quiet = {
        "PyTorchJob/llm/llm-pretrain",
        "PyTorchJob/llm/sft-spot",
        "Deployment/serving/llm-chat",
    }
    assert not quiet & {f.workload for f in showcase.findings}


def test_result_json_has_the_published_fields(showcase):
    data = json.loads(json.dumps(showcase.to_dict()))
    assert data["at"] == "2026-11-24T02:00:00Z"
    for key in ("findings", "savings", "actions", "data_quality"):
        assert isinstance(data[key], list)
    required = {
        "rule",
        "severity",
        "gpu_uuid",
        "node",
        "pool",
        "namespace",
        "pod",
        "workload",
        "value",
        "threshold",
        "window_s",
        "since",
        "message",
    }
    for finding in data["findings"]:
        assert required <= finding.keys()
    unallocated = next(f for f in data["findings"] if f["rule"] == "gpu-unallocated")
    assert unallocated["workload"] is None and unallocated["pod"] is None


def test_pending_gpu_pods_are_reported(showcase):
    (pending,) = showcase.pending_gpu_pods
    assert (pending.workload, pending.gpus_requested) == ("PyTorchJob/research/big-sweep", 8.0)
    assert showcase.to_dict()["pending_gpu_pods"][0]["pod"] == "big-sweep-worker-0"


def test_one_message_per_rule_and_pool(showcase):
    keys = [n.group_key for n in showcase.notifications]
    assert len(keys) == len(set(keys))
    idle_key = "#gpu-alerts|rule=gpu-idle,pool=gpu-training"
    assert idle_key in keys
    idle = next(n for n in showcase.notifications if n.group_key == idle_key)
    # 4 A100s at the example price book's 32.00 CNY per GPU-hour.
    assert idle.title == (
        "4 idle A100-SXM4-80GBs in gpu-training across 2 teams, 128.00 CNY/hour wasted "
        "at example prices"
    )
    assert idle.kind == "new" and idle.status == "composed"


def test_since_persists_across_cycles_and_resets_when_resolved():
    state = MemoryState()
    first = run_cycle(_components(state=state), SETTINGS, SHOWCASE_AT)
    later_at = SHOWCASE_AT + timedelta(minutes=5)
    second = run_cycle(_components(later_at, state=state), SETTINGS, later_at)
    first_since = {f.key: f.since for f in first.findings}
    carried = [f for f in second.findings if f.key in first_since]
    assert carried
    # A finding that keeps firing keeps its earliest start; windowed evidence that
    # reaches further back (a longer gap) may move it earlier, never later.
    assert all(f.since <= first_since[f.key] for f in carried)
    idle = [f for f in carried if f.rule == "gpu-idle"]
    assert idle and all(f.since == first_since[f.key] for f in idle)
    # Findings that resolved are forgotten: the state holds only what fires now.
    assert set(state.load().findings_since) == {f.key for f in second.findings}


class _DownMetrics:
    name = "down"

    def window_stats(self, request: WindowRequest) -> WindowStats:
        raise SourceUnreachable("http://127.0.0.1:9/api/v1/query: connection refused")


def test_source_failure_is_recorded_and_state_untouched():
    kept = CycleState(findings_since={"gpu-idle|n|GPU-1|0": SHOWCASE_AT - timedelta(hours=1)})
    state = MemoryState(kept)
    result = run_cycle(_components(state=state, metrics=_DownMetrics()), SETTINGS, SHOWCASE_AT)
    assert not result.ok
    assert "unreachable" in result.errors[0] and "connection refused" in result.errors[0]
    assert result.findings == () and result.notifications == ()
    assert state.load().findings_since == kept.findings_since


def test_corrupt_state_file_is_moved_aside_not_lost(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "findings_since": {"k": "yesterday"')
    result = run_cycle(_components(state=JsonFileState(path)), SETTINGS, SHOWCASE_AT)
    assert result.ok
    assert any(n.kind == "state" and "moved to" in n.message for n in result.data_quality)
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and "yesterday" in aside[0].read_text()
    assert json.loads(path.read_text())["version"] == STATE_VERSION


def test_empty_cluster_runs_clean():
    # One node of CPU only: nothing to judge, nothing to say.
    result = run_cycle(_components(gpus=1, days=0.01), SETTINGS, SHOWCASE_AT)
    assert result.ok


ACTIONS = Settings.model_validate(
    {"dry_run": False, "actions": {"pools": {"gpu-training": {}, "gpu-inference": {}}}}
)


def test_dry_run_plans_and_writes_nothing():
    actuator = RecordingActuator()
    dry = Settings.model_validate({"actions": {"pools": {"gpu-training": {}}}})
    result = run_cycle(replace(_components(), actuator=actuator), dry, SHOWCASE_AT)
    (action,) = [a for a in result.actions if a.status is ActionStatus.PLANNED]
    assert action.target == "Node/train-a100-3" and action.dry_run
    assert actuator.applied == []


def _live(actuator, clock=SHOWCASE_AT) -> Components:
    """The showcase with an actuator, read at ``clock`` by the wall clock."""
    return replace(_components(), actuator=actuator, clock=lambda: clock)


def test_writes_go_through_the_actuator_when_allowed():
    actuator = RecordingActuator()
    result = run_cycle(_live(actuator), ACTIONS, SHOWCASE_AT)
    done = [a for a in result.actions if a.status is ActionStatus.DONE]
    assert [a.target for a in done] == ["Node/train-a100-3"]
    assert done[0].details["evict"] == ["research/alice-0", "research/bob-0"]
    assert actuator.released == 1  # the Lease is handed back when the writes end


def test_no_write_on_data_from_the_past():
    """``once --at <10 days ago> --no-dry-run``: the plan is shown, refused, not written."""
    actuator = RecordingActuator()
    later = SHOWCASE_AT + timedelta(days=10)
    result = run_cycle(_live(actuator, later), ACTIONS, SHOWCASE_AT)
    assert result.actions and not [a for a in result.actions if a.status is ActionStatus.DONE]
    refused = [a for a in result.actions if a.target == "Node/train-a100-3"]
    assert refused[0].status is ActionStatus.REFUSED and "stale data" in refused[0].reason
    assert "10d ago" in refused[0].reason
    assert [a for a in actuator.applied if a.status is ActionStatus.PLANNED] == []


def test_the_write_deadline_stops_what_has_not_started():
    actuator = RecordingActuator()
    late = Settings.model_validate(
        {**ACTIONS.model_dump(by_alias=True), "actions": {
            **ACTIONS.actions.model_dump(by_alias=True), "deadline": 1, "eviction_deadline": 1,
        }}
    )  # fmt: skip
    started = time.monotonic() - 5  # the cycle began 5 s ago: the 1 s deadline is past
    gathered = gather(_live(actuator), late, SHOWCASE_AT)
    analysis = analyse(gathered, load_rules(), load_price_book(), late)
    result = effect(gathered, analysis, _live(actuator), late, started)
    (action,) = [a for a in result.actions if a.target == "Node/train-a100-3"]
    assert action.status is ActionStatus.REFUSED and "deadline" in action.reason


@pytest.mark.parametrize(
    ("actuator", "reason"),
    [
        (RecordingActuator(kill_switch=False), "kill switch"),
        (RecordingActuator(holds_lease=False), "holds the actions lease"),
    ],
)
def test_kill_switch_and_lease_stop_writes(actuator, reason):
    result = run_cycle(_live(actuator), ACTIONS, SHOWCASE_AT)
    assert result.actions and not [a for a in result.actions if a.status is ActionStatus.DONE]
    assert any(reason in a.reason for a in result.actions)


def test_no_dry_run_without_a_cluster_to_act_on_says_so():
    result = run_cycle(_components(), ACTIONS, SHOWCASE_AT)
    assert all(a.dry_run for a in result.actions)
    assert any(
        n.kind == "actions" and "nothing was written" in n.message for n in result.data_quality
    )


def test_actions_are_reported_as_one_message():
    dry = Settings.model_validate({"actions": {"pools": {"gpu-training": {}}}})
    result = run_cycle(_components(), dry, SHOWCASE_AT)
    (message,) = [n for n in result.notifications if n.kind == "actions"]
    assert message.title.startswith("gpuwatch actions (dry run): 1 planned")
    assert "Node/train-a100-3" in message.text and "PyTorchJob/llm/llm-pretrain" in message.text


class _UnreachableState:
    """A state store that is there but cannot be read (an API server refusing, say)."""

    name = "unreachable"

    def __init__(self) -> None:
        self.saved: list[CycleState] = []

    def load(self) -> CycleState:
        raise StateError("configmap gpuwatch/gpuwatch-state: 403 Forbidden")

    def save(self, state: CycleState) -> None:
        self.saved.append(state)


def test_a_state_that_cannot_be_read_sends_nothing_rather_than_everything_again():
    store = _UnreachableState()
    result = run_cycle(_components(state=store), SETTINGS, SHOWCASE_AT)
    assert result.ok and result.findings
    assert result.notifications == () and store.saved == []
    assert any("the state could not be read" in n.message for n in result.data_quality)


# ---------------------------------------------------------------- the three phases


def test_analysis_is_a_pure_function_of_what_was_gathered():
    components = _components()
    gathered = gather(components, SETTINGS, SHOWCASE_AT)
    first = analyse(gathered, components.rules, components.price_book, SETTINGS)
    second = analyse(gathered, components.rules, components.price_book, SETTINGS)
    assert first == second
    assert first.findings and first.cost is not None and first.savings.savings
    # run_cycle is the three phases in order: the same findings, cost and savings.
    result = run_cycle(_components(), SETTINGS, SHOWCASE_AT)
    assert result.findings == first.findings
    assert result.savings == first.savings.savings and result.cost == first.cost


def test_nothing_is_judged_without_both_halves():
    gathered = gather(_components(metrics=_DownMetrics()), SETTINGS, SHOWCASE_AT)
    assert not gathered.complete and gathered.history is None
    analysis = analyse(gathered, load_rules(), load_price_book(), SETTINGS)
    assert analysis.errors and analysis.findings == () and analysis.actions == ()


class _Untouchable:
    """An adapter the read-only phases must never call."""

    name = "untouchable"
    updates_in_place = True
    delivered_status = "sent"
    can_attach = False
    posts_to_chat = True

    def __getattr__(self, attribute: str):
        raise AssertionError(f"the read-only phases called {attribute}")


def test_the_read_only_phases_touch_no_state_messages_or_writes():
    """The weekly report's savings come from gather() and analyse() alone."""
    touchy = replace(
        _components(), state=_Untouchable(), notifier=_Untouchable(), actuator=_Untouchable()
    )
    gathered = gather(touchy, ACTIONS, SHOWCASE_AT, for_effects=False)
    analysis = analyse(gathered, touchy.rules, touchy.price_book, ACTIONS)
    assert analysis.savings.savings
    expected = run_cycle(_components(), ACTIONS, SHOWCASE_AT).savings
    assert analysis.savings.savings == expected


def test_groups_told_through_another_notifier_survive_the_save():
    """A Slack group is parked, not dropped, while the cycle runs with another notifier
    (the token missing, say), and is there again when Slack is back."""
    slack_group = AlertGroupState(
        key="#gpu-alerts|rule=gpu-idle,pool=gpu-training",
        channel="#gpu-alerts",
        title="4 idle A100s",
        started_at=SHOWCASE_AT - timedelta(hours=1),
        notifier="slack",
        channel_id="C1",
        ts="1700000000.000100",
        posted_at=SHOWCASE_AT - timedelta(hours=1),
    )
    state = MemoryState(CycleState(alerts={slack_group.key: slack_group}))
    run_cycle(_components(state=state), SETTINGS, SHOWCASE_AT)
    parked = state.load().parked
    assert [g.ts for g in parked.values()] == [slack_group.ts]


class _EmptyCluster:
    """A cluster source that answers, but with nothing in it (another cluster's
    kubeconfig, or credentials that may not list nodes)."""

    name = "empty"

    def snapshot(self, at: datetime) -> ClusterState:
        return ClusterState(at)


def test_a_cluster_without_nodes_beside_metrics_with_gpus_is_a_source_error():
    result = run_cycle(replace(_components(), cluster=_EmptyCluster()), SETTINGS, SHOWCASE_AT)
    (error,) = result.errors
    assert error.startswith("cluster (empty, empty): it has no nodes while the metrics show 64")
    assert result.findings == () and not result.ok
