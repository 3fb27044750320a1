"""The one place where concrete adapters are built from settings.

Nothing else constructs a source, a notifier or a state store; tests build
``Components`` directly with in-process implementations.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Protocol, TextIO

from prometheus_client import CollectorRegistry

from gpuwatch.actuators.drain import DrainOptions
from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules import load_rules
from gpuwatch.config.sections.approval import approval_policy
from gpuwatch.config.settings import Settings
from gpuwatch.kube.api import KubeApi, RetryPolicy
from gpuwatch.kube.client import Credentials, connect
from gpuwatch.kube.lease import Lease
from gpuwatch.model.approvals import ApprovalPolicy
from gpuwatch.model.errors import ConfigError, StateError
from gpuwatch.model.findings import DataQualityNote, Role
from gpuwatch.model.result import CycleResult
from gpuwatch.notify.base import Delivery, Notifier
from gpuwatch.notify.console import ConsoleNotifier, RecordingNotifier
from gpuwatch.notify.interactions import ClickHandler, Inbox
from gpuwatch.notify.slack import SlackNotifier, WebhookNotifier
from gpuwatch.notify.slack_approvals import SlackApprovals
from gpuwatch.notify.slack_listeners import InteractionsEndpoint, SocketModeListener
from gpuwatch.pipeline import Components
from gpuwatch.report.data import ReportData
from gpuwatch.report.spend import DatasetSpend
from gpuwatch.sources.base import ClusterSource, MetricsSource
from gpuwatch.sources.kubernetes import ClusterReadOptions, KubernetesClusterSource
from gpuwatch.sources.opencost import OpenCostPrices
from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
from gpuwatch.sources.prometheus.client import Connection
from gpuwatch.sources.samples_file import SampleFile, SampleFileMetricsSource
from gpuwatch.sources.silences import ConfigMapSilences
from gpuwatch.sources.simulator import (
    SimulatedCluster,
    SimulatorClusterSource,
    SimulatorMetricsSource,
)
from gpuwatch.sources.snapshot_file import SnapshotFileClusterSource
from gpuwatch.sources.training import TrainingCheckpoints
from gpuwatch.state.base import MemoryState, StateStore
from gpuwatch.state.configmap import ConfigMapState
from gpuwatch.state.json_file import JsonFileState
from gpuwatch.telemetry.metrics import SelfMetrics
from gpuwatch.telemetry.push import PushError, cluster_grouping_key, push


def build_metrics_source(
    settings: Settings, env: Mapping[str, str], simulated: Callable[[], SimulatedCluster]
) -> MetricsSource:
    """The configured metrics source; ``simulated`` builds the simulator when it is the one."""
    if settings.metrics.source == "prometheus":
        client = PrometheusClient(Connection.from_settings(settings.prometheus, env))
        return PrometheusMetricsSource(client, settings.prometheus)
    if settings.metrics.source == "samples-file":
        return SampleFileMetricsSource(SampleFile(str(settings.metrics.samples_path)))
    return SimulatorMetricsSource(simulated())


def build_components(
    settings: Settings,
    at: datetime,
    console: TextIO,
    env: Mapping[str, str] | None = None,
    inbox: Inbox | None = None,
) -> Components:
    """Adapters for one cycle evaluated at ``at``; ``console`` receives printed messages;
    ``inbox``: the clicks a daemon's listeners queued.

    Secrets (tokens, passwords) are read here, on every cycle, so rotation needs no restart.
    """
    env = os.environ if env is None else env
    rules = load_rules(settings.rules.paths, needs=required_roles(settings))
    # Built once, and only when a simulator source is configured.
    simulated = cache(lambda: SimulatedCluster(settings.simulator, end=at))
    notifier = build_notifier(settings, env, console)
    cluster: ClusterSource
    actuator = None
    silences = None
    source = settings.cluster_source
    api = cache(lambda: kube_api(settings))
    if source == "kubernetes":
        cluster = KubernetesClusterSource(
            api(),
            ClusterReadOptions(
                page_size=settings.kubernetes.page_size,
                gpu_aliases=dict(settings.cluster.gpu_resource_aliases),
            ),
        )
        if settings.notify.silences_configmap:
            silences = ConfigMapSilences(api(), settings.notify.silences_configmap)
        if not settings.dry_run:
            actions = settings.actions
            actuator = KubernetesActuator(
                api(),
                DrainOptions(eviction_deadline_s=actions.eviction_deadline_s),
                lease=build_lease(
                    settings, actions.lease, lease_holder(env), actions.lease_duration_s
                ),
            )
    elif source == "snapshot":
        cluster = SnapshotFileClusterSource(
            settings.cluster.snapshot_path or "-",
            gpu_aliases=dict(settings.cluster.gpu_resource_aliases),
        )
    else:
        cluster = SimulatorClusterSource(simulated())
    metrics = build_metrics_source(settings, env, simulated)
    node_prices = None
    checkpoints = None
    if isinstance(metrics, PrometheusMetricsSource):
        checkpoints = TrainingCheckpoints(metrics.client)
        if settings.cost.opencost:
            node_prices = OpenCostPrices(metrics.client, settings.cost.opencost_currency)
    state = build_state(settings, api)
    closers = [metrics.client.close] if isinstance(metrics, PrometheusMetricsSource) else []
    if api.cache_info().currsize:  # a Kubernetes API was built: its connection pool
        closers.append(api().close)
    return Components(
        closers=tuple(closers),
        metrics=metrics,
        cluster=cluster,
        rules=rules,
        state=state,
        notifier=notifier,
        price_book=load_price_book(settings.cost.price_book),
        node_prices=node_prices,
        actuator=actuator,
        checkpoints=checkpoints,
        recorded=DatasetSpend(settings.report, settings.cluster.name)
        if settings.budgets.monthly
        else None,
        silences=silences,
        approvals=_approvals(settings, env, inbox),
    )


def _approvals(
    settings: Settings, env: Mapping[str, str], inbox: Inbox | None
) -> SlackApprovals | None:
    """Slack's answers, where there is a bot token to read them with."""
    slack = settings.notify.slack
    token = _secret(slack.token_file, slack.token_env, env, "notify.slack.token")
    return SlackApprovals(token, slack, inbox) if token else None


class Listener(Protocol):
    def start(self) -> None: ...

    def close(self) -> None: ...


def build_listeners(
    settings: Callable[[], Settings],
    inbox: Inbox,
    woken: Callable[[], None],
    env: Mapping[str, str] | None = None,
) -> list[Listener]:
    """The daemon's ways of hearing clicks: Socket Mode when an app-level token is
    found, the HTTP endpoint when ``http_port`` is set (its signing secret then
    required). Both need the bot token, to check user groups and answer privately;
    without it there is nobody to answer and no listener. Not started yet."""
    env = os.environ if env is None else env
    first = settings()
    slack, ways = first.notify.slack, first.notify.slack.interactivity
    token = _secret(slack.token_file, slack.token_env, env, "notify.slack.token")
    if not token:
        return []
    replies = SlackApprovals(token, slack)
    handler = ClickHandler(
        inbox,
        policy=lambda: _policy(settings()),
        members=replies.members,
        answer=replies.answer,
        woken=woken,
    )
    listeners: list[Listener] = []
    app = _secret(
        ways.app_token_file, ways.app_token_env, env, "notify.slack.interactivity.app_token"
    )
    if app:
        listeners.append(SocketModeListener(app, slack, handler))
    if ways.http_port is not None:
        secret = _secret(
            ways.signing_secret_file,
            ways.signing_secret_env,
            env,
            "notify.slack.interactivity.signing_secret",
        )
        if not secret:
            raise ConfigError(
                "notify.slack.interactivity.http_port is set, but no signing secret was found "
                f"(${ways.signing_secret_env} or signing_secret_file): requests could not be "
                "verified"
            )
        listeners.append(InteractionsEndpoint(secret, handler, ways.http_address, ways.http_port))
    return listeners


def _policy(settings: Settings) -> ApprovalPolicy:
    """The approval policy a click is checked against (clicks are answered: a daemon)."""
    a = settings.actions
    return approval_policy(a.approval, a.pools, settings.notify.channel, interactive=True)


def required_roles(settings: Settings) -> dict[Role, str]:
    """Roles that some enabled rule must have, given what the settings turn on."""
    if not settings.actions.pools:
        return {}
    planner = "the scale-down planner (actions.pools is set)"
    return {Role.UNALLOCATED: planner, Role.DATA_GAP: planner}


def kube_api(settings: Settings) -> KubeApi:
    """The configured Kubernetes API (in-cluster or kubeconfig credentials, the cluster
    source's retry policy); no request is sent yet."""
    k = settings.kubernetes
    credentials = Credentials(
        in_cluster=k.in_cluster,
        kubeconfig=str(k.kubeconfig) if k.kubeconfig else None,
        context=k.context,
    )
    return connect(
        credentials, RetryPolicy(retries=k.retries, request_timeout_s=k.request_timeout_s)
    )


def lease_holder(env: Mapping[str, str]) -> str:
    """Who holds a Lease: the pod's name (``POD_NAME``, from the downward API), unique
    among the runs of a CronJob and the replicas of a Deployment, and what ``kubectl``
    shows; the host and process elsewhere."""
    return env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def build_lease(settings: Settings, reference: str, holder: str, duration_s: int = 600) -> Lease:
    """The Lease ``namespace/name`` held as ``holder``."""
    namespace, _, name = reference.partition("/")
    return Lease(kube_api(settings), namespace, name, holder, duration_s)


def build_state(settings: Settings, api: Callable[[], KubeApi]) -> StateStore:
    backend = settings.state.backend
    if backend == "memory":
        return MemoryState()
    if backend == "configmap":
        namespace, _, name = settings.state.configmap.partition("/")
        k = settings.kubernetes
        # A cycle should not wait minutes to save its state: fewer, shorter retries
        # than the cluster source's (a state not saved is retried next cycle).
        policy = RetryPolicy(
            retries=k.retries, backoff_max_s=10.0, request_timeout_s=k.request_timeout_s
        )
        return ConfigMapState(api().with_policy(policy), namespace, name)
    return JsonFileState(settings.state_path)


def build_notifier(settings: Settings, env: Mapping[str, str], console: TextIO) -> Notifier:
    """Slack with a bot token when one is found, else an incoming webhook when one is
    configured, else the console (or nothing). Secrets are read here, every cycle."""
    slack = settings.notify.slack
    token = _secret(slack.token_file, slack.token_env, env, "notify.slack.token")
    if token:
        return SlackNotifier(token, slack)
    webhook = _secret(
        slack.webhook_url_file, slack.webhook_url_env, env, "notify.slack.webhook_url"
    )
    if webhook:
        return WebhookNotifier(webhook, slack)
    return ConsoleNotifier(console) if settings.notify.console else RecordingNotifier()


def _secret(
    path: Path | None, variable: str | None, env: Mapping[str, str], setting: str
) -> str | None:
    """A secret from a file (a mounted Secret; wins) or an environment variable. A
    configured file that cannot be read is a configuration error, never a silent
    fallback to the console."""
    if path is not None:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{setting}_file: cannot read {path}: {exc.strerror or exc}") from exc
        if not value:
            raise ConfigError(f"{setting}_file: {path} is empty")
        return value
    if variable:
        return env.get(variable, "").strip() or None
    return None


def push_self_metrics(
    settings: Settings, components: Components, result: CycleResult
) -> CycleResult:
    """CronJob mode: push the cycle's self-metrics to the Pushgateway, when one is
    configured. A failed push is a note on the result, never a failed cycle."""
    url = settings.self_metrics.pushgateway_url
    if not url:
        return result
    last_success = None
    if not result.ok:
        # Each run is a new process: the last success comes from the state.
        try:
            last = components.state.load().last_cycle_at
        except StateError:
            last = None
        last_success = last.timestamp() if last is not None else None
    metrics = SelfMetrics(CollectorRegistry(), last_success_s=last_success)
    metrics.observe(result)
    try:
        push(
            metrics.registry,
            url,
            settings.self_metrics.job,
            cluster_grouping_key(settings.cluster.name),
        )
    except PushError as exc:
        note = DataQualityNote(kind="self_metrics", message=str(exc))
        return replace(result, data_quality=(*result.data_quality, note))
    return result


def sample_interval_s(settings: Settings) -> float:
    """Seconds between two samples of one GPU in the configured metrics source."""
    if settings.metrics.source == "prometheus":
        return settings.prometheus.scrape_interval_s
    if settings.metrics.source == "samples-file":
        return float(SampleFile(str(settings.metrics.samples_path)).step_s)
    return float(settings.simulator.step_s)


def publish_report(
    settings: Settings, summary: str, html: str, data: ReportData, notifier: Notifier
) -> list[str]:
    """Post the report's summary through the run's notifier when it posts to a chat (the
    command prints the summary itself), with the HTML attached in its thread where the
    notifier can attach files; return what happened, in words. Never raises: the report
    is written whatever Slack says."""
    if not notifier.posts_to_chat:
        return []
    channel = settings.report.slack_channel or settings.notify.channel
    posted = notifier.send(Delivery("post", channel, summary))
    if not posted.ok:
        return [f"report summary not posted to Slack {channel}: {posted.error}"]
    if not notifier.can_attach:
        return ["report summary posted to Slack (webhook; it cannot attach the HTML)"]
    filename = f"gpuwatch-{data.cluster}-{data.period.label}.html"
    title = f"GPU report {data.cluster} {data.period.label}"
    attached = notifier.attach(posted, filename, html.encode("utf-8"), title)
    if not attached.ok:
        return [f"report summary posted to Slack {channel}; HTML not attached: {attached.error}"]
    return [f"report summary and {filename} posted to Slack {channel}"]
