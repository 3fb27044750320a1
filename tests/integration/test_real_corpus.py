"""The whole pipeline over real exporter outputs and real node objects, through a real
Prometheus.

Every exporter output in ``tests/fixtures/real/`` (transcribed from public issues and
NVIDIA's documentation, each with its source) is replayed into Prometheus as 30 minutes
of constant samples every 30 s; every node object file is joined with a minimal
exporter output for its GPUs. Then a cycle's gather and analyse phases run as they do
in a cluster, and what they conclude is checked against ``cases.yaml``: what a careful
reader of each source concludes (which devices exist, which node, which pods hold them,
which pool and capacity type, how many physical GPUs), written down before any code
read it. Money is checked as a finance reader would: each physical card is paid for
once per hour, MIG instances included.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gpuwatch.analysis.pools import capacity_type_of, gpu_model_of, physical_gpu_count, pool_of
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.config.settings import AttributionSettings, Settings
from gpuwatch.kube.objects import node_from_kube
from gpuwatch.model.cluster import ClusterState, Node, OwnerRef, Pod
from gpuwatch.notify.console import RecordingNotifier
from gpuwatch.pipeline import Analysis, Components, analyse, gather
from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
from gpuwatch.sources.prometheus.client import Connection
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.state.base import MemoryState
from tests.integration.prometheus_server import PrometheusServer, backfill

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "real"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
AT = SHOWCASE_AT
STEP_S = 30
HISTORY_S = 1800

# What reading each case needs besides its output: the node the GPUs are on, named by
# the output's host label where that is a host name, else (where the source gives only
# the exporter pod's name) a node of our choosing running that exporter pod; and the
# settings of the deployment that emitted it.
SETUP: dict[str, dict[str, Any]] = {
    "openshift-l40s-one-pod-two-gpus": {"node": "l40s.example.com"},
    "mig-a30-1g6gb-host": {"node": "yg-data-k8s-gpu-a30-node-test-test0003.mt"},
    "mig-h100-1g10gb-pods": {"node": "gsrh100-074"},
    "mixed-node-a30-mig-rtx2000-exporter-pod-hostname": {
        "node": "k3s-gpu-0",
        "exporter_pod": "dcgm-exporter-wwwjh",
    },
    "hostname-exporter-pod-titanv": {"node": "gpu34-tianv", "exporter_pod": "dcgm-exporter-lcxpl"},
    "gpu-operator-t4-exporter-pod-hostname": {
        "node": "t4-worker-0",
        "exporter_pod": "nvidia-dcgm-exporter-ml2wh",
    },
    "old-namespace-mig-a100-pod-name-labels": {
        "node": None,
        # The exporter's old naming: lower-case metrics, a lower-case ``uuid`` label.
        "settings": {
            "metrics": {
                "gr_engine_active": "dcgm_fi_prof_gr_engine_active",
                "gpu_util": "dcgm_fi_dev_gpu_util",
                "fb_used": "dcgm_fi_dev_fb_used",
                "fb_free": "dcgm_fi_dev_fb_free",
            },
            "labels": {"uuid": "uuid"},
        },
    },
    "old-no-modelname-no-hostname": {"node": None},
    "mig-a30-2g12gb-exporter-pod-hostname": {
        "node": "a30-worker-0",
        "exporter_pod": "dcgm-exporter-sn5rp",
    },
    "nonmig-h100-pods-one-pod-two-gpus": {"node": "af13-2de458d9968c"},
    "servicemonitor-exported-pod-pods-sharing-gpu": {
        "node": "worker1",
        # Its own metric names in the shared Prometheus: its exported_* labels make
        # ``auto`` read every series' pods from exported_*, which the other cases lack.
        "settings": {
            "metrics": {"gpu_util": "sm_DCGM_FI_DEV_GPU_UTIL", "fb_used": "sm_DCGM_FI_DEV_FB_USED"}
        },
    },
}
# Where gpuwatch knowingly concludes otherwise than a case's reader, and why.
DIVERGENCES = {
    (
        "nodes/mig-mixed-gpu-resource-beside-mig-resources.json",
        "physical_gpus",
    ): "the node advertises nvidia.com/gpu 2 beside its MIG devices (a device plugin bug, "
    "the issue says): gpuwatch counts what the node advertises, 2 + 2 cards, and the "
    "data-gap rule then reports the 2 GPUs no metric ever shows",
}


# ---------------------------------------------------------------- the replayed history


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text -> family -> [(labels, value)]."""
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name].append((dict(sample.labels), float(sample.value)))
    return found


def _query_result_families(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A Prometheus console listing (label sets without values) as the families a real
    exporter sends with those label sets; the values (50 %, 1000 MiB) are assumed."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text.replace("}", "} 0")):
        for sample in family.samples:
            labels = dict(sample.labels)
            found["sm_DCGM_FI_DEV_GPU_UTIL"].append((labels, 50.0))
            found["sm_DCGM_FI_DEV_FB_USED"].append((labels, 1000.0))
    return found


def _openmetrics(families: dict[str, list[tuple[dict[str, str], float]]]) -> str:
    lines = []
    times = range(int(AT.timestamp()) - HISTORY_S + STEP_S, int(AT.timestamp()) + 1, STEP_S)
    for name, series in sorted(families.items()):
        lines.append(f"# TYPE {name} gauge")
        for labels, value in series:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.extend(f"{name}{{{text}}} {value} {t}" for t in times)
    return "\n".join(lines)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _exporter_pod(path: Path, node: str) -> str:
    """The name of the exporter pod on ``node`` in the cluster of a node file: files
    share node names (three are one OpenShift worker), so each file's GPUs name their
    own exporter pod as ``Hostname``, as many deployments do, and are placed through it."""
    return f"nvidia-dcgm-exporter-{zlib.crc32(f'{path.name}/{node}'.encode()):08x}"


def _node_file_gpus(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A minimal exporter output for the GPUs of a node file: per physical GPU whole,
    or per MIG instance the node advertises, as dcgm-exporter labels them."""
    families: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for item in _items(path):
        node = node_from_kube(item)
        cards = _expected_node(path, node.name).get("physical_gpus") or 0
        for i, (profile, instance) in enumerate(_devices_of(node, cards)):
            card = f"{path.name}/{node.name}/{instance[0]}".encode()
            labels = {
                "gpu": str(i if profile is None else instance[0]),
                "UUID": f"GPU-{zlib.crc32(card):08x}",
                "Hostname": _exporter_pod(path, node.name),
                "modelName": "NVIDIA H100 80GB HBM3" if profile else "NVIDIA L4",
            }
            if profile is not None:
                labels |= {"GPU_I_PROFILE": profile, "GPU_I_ID": str(instance[1])}
                families["DCGM_FI_PROF_GR_ENGINE_ACTIVE"].append((labels, 0.5))
            else:
                families["DCGM_FI_DEV_GPU_UTIL"].append((labels, 50.0))
            families["DCGM_FI_DEV_FB_USED"].append((labels, 1000.0))
    return families


def _devices_of(node: Node, cards: int) -> list[tuple[str | None, tuple[int, int]]]:
    """(MIG profile or None, (card, instance)) of every device the node advertises."""
    instances = [
        (name.removeprefix("nvidia.com/mig-"), int(qty))
        for name, qty in sorted(node.capacity.items())
        if name.startswith("nvidia.com/mig-") and qty > 0
    ]
    if not instances:
        return [(None, (i, 0)) for i in range(cards)]
    devices = []
    for n, (profile, count) in enumerate(instances):
        devices.extend((profile, (k % max(cards, 1), 100 * n + k)) for k in range(count))
    return devices


def _items(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["items"])


def _expected_node(path: Path, name: str) -> dict[str, Any]:
    entry = next(e for e in CASES["nodes"] if e["file"] == path.relative_to(CORPUS).as_posix())
    return dict(entry["expect"][name])


@pytest.fixture(scope="module")
def corpus_prometheus(tmp_path_factory):
    """One Prometheus holding every case: UUIDs differ, and each case reads its own."""
    families: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    sources = [_families((CORPUS / case["exporter"]).read_text()) for case in CASES["cases"]]
    sources += [_query_result_families(CORPUS / q["file"]) for q in CASES["query_results"]]
    sources += [_node_file_gpus(CORPUS / entry["file"]) for entry in CASES["nodes"]]
    for source in sources:
        for name, series in source.items():
            families[name].extend(series)
    root = tmp_path_factory.mktemp("prom-corpus")
    (root / "corpus.om").write_text(_openmetrics(families) + "\n# EOF\n")
    backfill(root / "corpus.om", root / "data")
    server = PrometheusServer(root / "data").start()
    yield server
    server.stop()


# ---------------------------------------------------------------- one cycle's analysis


@dataclass(frozen=True)
class StaticCluster:
    """A cluster source holding a fixed state."""

    state: ClusterState
    name: str = "static"

    def snapshot(self, at: Any) -> ClusterState:
        return self.state


def _analyse(server: PrometheusServer, cluster: ClusterState, overrides: dict) -> Analysis:
    settings = Settings.model_validate(
        {
            "metrics": {"source": "prometheus"},
            "prometheus": {"url": server.url, "scrape_interval_s": STEP_S, **overrides},
            "cluster": {"source": "snapshot", "snapshot_path": "-"},
        }
    )
    client = PrometheusClient(Connection.from_settings(settings.prometheus, {}))
    components = Components(
        closers=(client.close,),
        metrics=PrometheusMetricsSource(client, settings.prometheus),
        cluster=StaticCluster(cluster),
        rules=load_rules(),
        state=MemoryState(),
        notifier=RecordingNotifier(),
        price_book=load_price_book(),
    )
    with components:
        gathered = gather(components, settings, AT, for_effects=False)
    assert gathered.complete, gathered.errors
    return analyse(gathered, components.rules, components.price_book, settings)


def _holders(expect: Any) -> list[dict[str, str]]:
    if expect is None:
        return []
    return list(expect) if isinstance(expect, list) else [expect]


def _case_cluster(case: dict[str, Any], setup: dict[str, Any]) -> ClusterState:
    """The node the case's GPUs are on, its exporter pod, and the pods holding them,
    with the GPU requests the holders' devices imply."""
    node_name = setup["node"]
    if node_name is None:
        # The output names no node: the cluster has nodes, none of them the GPUs'.
        return ClusterState(AT, (Node("cpu-0", {"kubernetes.io/hostname": "cpu-0"}),))
    devices = case["expect"]["devices"]
    whole = sum(1 for d in devices if d["mig_instance"] is None)
    mig: dict[str, float] = defaultdict(float)
    for d in devices:
        if d["mig_instance"] is not None:
            mig[f"nvidia.com/mig-{d['mig_profile']}"] += 1
    capacity = {"nvidia.com/gpu": float(whole), **mig}
    node = Node(node_name, {"kubernetes.io/hostname": node_name}, capacity=capacity)
    requests: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for d in devices:
        for holder in _holders(d["holder"]):
            resource = (
                "nvidia.com/gpu"
                if d["mig_instance"] is None
                else f"nvidia.com/mig-{d['mig_profile']}"
            )
            requests[(holder["namespace"], holder["pod"])][resource] += 1
    pods = [
        Pod(ns, name, node_name, "Running", dict(req), owner=OwnerRef("ReplicaSet", name))
        for (ns, name), req in requests.items()
    ]
    if setup.get("exporter_pod"):
        pods.append(
            Pod(
                "gpu-operator",
                setup["exporter_pod"],
                node_name,
                "Running",
                {},
                owner=OwnerRef("DaemonSet", "nvidia-dcgm-exporter"),
            )
        )
    return ClusterState(AT, (node,), tuple(pods))


EXPORTER_CASES = [*CASES["cases"], *CASES["query_results"]]


@pytest.mark.parametrize("case", EXPORTER_CASES, ids=[c["name"] for c in EXPORTER_CASES])
def test_a_real_exporter_output(corpus_prometheus, case):
    setup = SETUP[case["name"]]
    cluster = _case_cluster(case, setup)
    analysis = _analyse(corpus_prometheus, cluster, setup.get("settings", {}))
    expect = case["expect"]
    uuids = {d["uuid"] for d in expect["devices"]}
    mine = [c for c in analysis.contexts if c.device and c.device.uuid in uuids]

    # Inventory: every GPU and MIG instance the output shows, and nothing else (a MIG
    # GPU is its instances: no parent device beside them).
    found = {(c.device.uuid, _id(c.device.mig_instance_id)) for c in mine}
    assert found == {(d["uuid"], d["mig_instance"]) for d in expect["devices"]}
    assert len({c.device.uuid for c in mine}) == expect["physical_gpus"]
    by_key = {(c.device.uuid, _id(c.device.mig_instance_id)): c for c in mine}
    for d in expect["devices"]:
        ctx = by_key[(d["uuid"], d["mig_instance"])]
        assert ctx.device.mig_profile == d["mig_profile"], d
        assert ctx.model == d["model"], d
        # Placement: on the node, whichever label names it.
        if setup["node"] is not None:
            assert ctx.node_name == setup["node"], d
            assert ctx.node is not None
        # Attribution: the pods holding it, and nothing when none does.
        held = sorted((h.namespace, h.pod) for h in ctx.holders)
        assert held == sorted((h["namespace"], h["pod"]) for h in _holders(d["holder"])), d
        if len(_holders(d["holder"])) > 1:
            assert ctx.attribution == "approximate"
            assert sum(h.share for h in ctx.holders) == pytest.approx(1.0)
    if setup["node"] is None:
        unknown = [n for n in analysis.notes if n.kind == "unknown_node" and n.gpu_uuid in uuids]
        assert unknown, "a GPU on no known node is said to be one"
    else:
        _each_card_is_paid_once(analysis, uuids)


def _id(value: int | None) -> str | None:
    return None if value is None else str(value)


def _each_card_is_paid_once(analysis: Analysis, uuids: set[str]) -> None:
    """A finance reader's check: in the cost window each physical card is paid for
    exactly once (window hours x its price), however it is split into MIG instances."""
    assert analysis.cost is not None
    hours_by_card: dict[str, float] = defaultdict(float)
    cost_by_card: dict[str, Decimal] = defaultdict(Decimal)
    for line in analysis.cost.lines:
        if line.gpu_uuid in uuids:
            hours_by_card[line.gpu_uuid] += line.gpu_hours
            if line.cost is not None:
                cost_by_card[line.gpu_uuid] += line.cost
    window_h = analysis.cost.window_s / 3600
    assert set(hours_by_card) == uuids
    for uuid, hours in hours_by_card.items():
        assert hours == pytest.approx(window_h), uuid
    book = load_price_book()
    for ctx in analysis.contexts:
        if ctx.device is None or ctx.device.uuid not in uuids:
            continue
        price, _ = book.price(ctx.model, ctx.capacity_type)
        if price is not None:
            expected = price.per_gpu_hour * Decimal(str(window_h))
            assert cost_by_card[ctx.device.uuid] == pytest.approx(expected, abs=Decimal("0.05"))


@pytest.mark.parametrize(
    "entry", CASES["nodes"], ids=[Path(e["file"]).stem for e in CASES["nodes"]]
)
def test_a_real_node(corpus_prometheus, entry):
    path = CORPUS / entry["file"]
    nodes = {node.name: node for node in (node_from_kube(item) for item in _items(path))}
    exporters = tuple(
        Pod("gpu-operator", _exporter_pod(path, name), name, "Running", {},
            owner=OwnerRef("DaemonSet", "nvidia-dcgm-exporter"))
        for name in nodes
    )  # fmt: skip
    cluster = ClusterState(AT, tuple(nodes.values()), exporters)
    analysis = _analyse(corpus_prometheus, cluster, {})
    attribution = AttributionSettings()
    for name, expect in entry["expect"].items():
        node = nodes[name]
        # What attribution reads from the node, pools and capacity types of every
        # platform among them; then the same in the analysis of its GPUs.
        assert (
            pool_of(node, attribution.pool_label, attribution.pool_label_fallbacks)
            == (expect["pool"])
        ), name
        assert capacity_type_of(node) == expect["capacity_type"], name
        if expect["gpu_model"] is not None:
            # The card's model: what GPU feature discovery appends for the single MIG
            # strategy (-MIG-<profile>) names the instances, not the card.
            card = re.sub(r"-MIG-\d+g\.\w+$", "", expect["gpu_model"])
            assert gpu_model_of(node) == card, name
        on_node = [c for c in analysis.contexts if c.node_name == name]
        for context in on_node:
            assert (context.pool, context.capacity_type) == (
                expect["pool"],
                expect["capacity_type"],
            ), name
        diverges = (entry["file"], "physical_gpus") in DIVERGENCES
        if expect["physical_gpus"] is not None and not diverges:
            assert physical_gpu_count(node) == expect["physical_gpus"], name
            cards = {c.device.uuid if c.device else id(c) for c in on_node}
            assert len(cards) == expect["physical_gpus"], name


def test_every_case_is_set_up():
    assert set(SETUP) == {c["name"] for c in EXPORTER_CASES}
