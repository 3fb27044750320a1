"""A cluster gpuwatch may act on only with a person's approval, for the approval tests.

The simulated cluster's objects are served by the emulated API server (the cluster
source reads them, the actuator writes to them, the kill switch is a ConfigMap there);
its metrics come from the simulator at the same instants; Slack is the Web API test
server, with the real slack-sdk clients on both sides of gpuwatch (the notifier, the
approvals' reads, and the Socket Mode listener). Each cycle is the real ``run_cycle``
with the state in a JSON file, so that one cycle's requests are the next one's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gpuwatch.actuators.drain import DrainOptions
from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules import load_rules
from gpuwatch.config.sections.approval import approval_policy
from gpuwatch.config.settings import Settings, SimulatorSettings, SlackSettings
from gpuwatch.kube.lease import Lease
from gpuwatch.model.result import CycleResult
from gpuwatch.notify.interactions import ClickHandler, Inbox
from gpuwatch.notify.slack import SlackNotifier
from gpuwatch.notify.slack_approvals import SlackApprovals
from gpuwatch.pipeline import Components, run_cycle
from gpuwatch.sources.kubernetes import KubernetesClusterSource
from gpuwatch.sources.simulator import SimulatedCluster, SimulatorMetricsSource
from gpuwatch.sources.simulator.exposition import kubectl_json
from gpuwatch.state.json_file import JsonFileState
from tests.builders import FakeClock
from tests.integration.kube_emulator import KubeEmulator
from tests.integration.kube_emulator.resources import KUBEFLOW_RESOURCES
from tests.integration.slack_server import TOKEN, SlackServer

ALICE, BOB, EVE = "U0ALICE", "U0BOB", "U0EVE"
"""Alice approves by name, Bob through the on-call user group, Eve may not."""
ONCALL = "S0ONCALL"
NODE = "train-a100-3"
"""The node the simulated cluster's gpu-training pool can do without at its showcase."""
KEY = f"scale_down_node:{NODE}"
CHANNEL = "#gpu-alerts"


def settings(snooze_owners: dict[str, list[str]] | None = None, **approval: Any) -> Settings:
    return Settings.model_validate(
        {
            "dry_run": False,
            "actions": {
                "approval": approval,
                "pools": {
                    "gpu-training": {
                        "approval": "slack",
                        "approvers": [ALICE, ONCALL],
                        "cooldown": 0,
                    }
                },
            },
            "notify": {
                "channel": CHANNEL,
                "silences_configmap": None,
                "slack": {"interactivity": {"snooze_owners": snooze_owners or {}}},
            },
        }
    )


@dataclass
class ApprovalWorld:
    emulator: KubeEmulator
    slack: SlackServer
    settings: Settings
    clock: FakeClock
    state_file: Path
    inbox: Inbox = field(default_factory=Inbox)
    results: list[CycleResult] = field(default_factory=list)

    @classmethod
    def build(
        cls, emulator: KubeEmulator, slack: SlackServer, tmp: Path, at: datetime, **approval: Any
    ) -> ApprovalWorld:
        simulated = SimulatedCluster(SimulatorSettings(), end=at + timedelta(hours=3))
        objects = json.loads(kubectl_json(simulated.state()))["items"]
        switch = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gpuwatch-actions", "namespace": "gpuwatch"},
            "data": {"enabled": "true"},
        }
        # Training jobs and notebooks are custom resources: the emulator serves them once
        # their definitions are installed.
        emulator.install(*KUBEFLOW_RESOURCES)
        emulator.add_all([*objects, switch])
        slack.interactive.usergroups[ONCALL] = [BOB]
        world = cls(emulator, slack, settings(**approval), FakeClock(at), tmp / "state.json")
        world._simulated = simulated  # type: ignore[attr-defined]
        return world

    @property
    def slack_settings(self) -> SlackSettings:
        return SlackSettings(base_url=self.slack.base_url, min_interval_s=0)

    def cycle(self, after_s: float = 0) -> CycleResult:
        """One cycle, ``after_s`` seconds after the last one (the data moves along)."""
        self.clock.now += timedelta(seconds=after_s)
        api = self.emulator.kube_api(**self.clock.kube())
        lease = Lease(api, "gpuwatch", "gpuwatch-actions", "gpuwatch-cycle-0", 120)
        components = Components(
            metrics=SimulatorMetricsSource(self._simulated),  # type: ignore[attr-defined]
            cluster=KubernetesClusterSource(api),
            rules=load_rules(),
            state=JsonFileState(self.state_file),
            notifier=SlackNotifier(TOKEN, self.slack_settings, sleep=lambda s: None),
            price_book=load_price_book(),
            actuator=KubernetesActuator(api, DrainOptions(eviction_deadline_s=30), lease=lease),
            approvals=SlackApprovals(TOKEN, self.slack_settings, self.inbox),
            clock=self.clock.wall,
        )
        result = run_cycle(components, self.settings, self.clock.now)
        self.results.append(result)
        return result

    def handler(self) -> ClickHandler:
        """What the daemon's listeners hand clicks to."""
        replies = SlackApprovals(TOKEN, self.slack_settings)
        actions = self.settings.actions
        return ClickHandler(
            self.inbox,
            policy=lambda: approval_policy(actions.approval, actions.pools, CHANNEL, True),
            members=replies.members,
            answer=replies.answer,
        )

    # -- what happened ------------------------------------------------------------------
    def node(self) -> dict[str, Any]:
        found = self.emulator.get("v1", "Node", NODE)
        assert found is not None
        return found

    def node_writes(self) -> list[Any]:
        return [r for r in self.emulator.writes() if r.name == NODE or r.subresource == "eviction"]

    def request_message(self) -> Any:
        """The approval request's message in Slack (a reply in an alert's thread)."""
        channel = self.slack.channel_id(CHANNEL)
        found = [
            m
            for m in self.slack._messages  # the server's record of every message
            if m.channel == channel and "scale_down_node:" in m.text and NODE in m.text
        ]
        assert found, "no approval request was posted"
        return found[0]

    def thread(self) -> list[str]:
        request = self.request_message()
        return [
            m.text
            for m in self.slack._messages
            if m.thread_ts == request.thread_ts and m.ts > request.ts
        ]
