"""Benchmark: reading a large cluster through the Kubernetes API, paged vs typed.

An emulated API server (``tests/integration/kube_emulator/``) holds ``--nodes`` nodes
and ``--pods`` pods shaped like real ``kubectl get -o json`` objects (status,
managedFields and all, copied from the test fixture). Two readers run side by side in
one run, each in its own child process so that each one's peak RSS is its own:

- gpuwatch: ``KubernetesClusterSource.snapshot`` (pages of 500 read with
  ``_preload_content=False``, parsed and translated page by page, owner kinds too);
- typed: what a user would otherwise write, ``CoreV1Api.list_node()`` and
  ``list_pod_for_all_namespaces()`` without ``limit``, deserialised into ``V1Pod`` models.

Wall time is the best of ``--repeats`` reads; peak RSS (``getrusage``) is over the whole
child, reported with the RSS the child had after its imports (its baseline). Prints
one JSON object as its last line. Run: ``.venv/bin/python bench/kube_read.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the emulator lives with the tests

from kubernetes import client as k8s

from gpuwatch.kube.client import api_for
from gpuwatch.sources.kubernetes import ClusterReadOptions, KubernetesClusterSource
from tests.integration.kube_emulator import KubeEmulator

FIXTURE = REPO / "tests" / "fixtures" / "kubectl_snapshot.json"


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _objects(nodes: int, pods: int) -> list[dict[str, Any]]:
    """``nodes`` nodes and ``pods`` pods cloned from the fixture's realistic ones."""
    items = json.loads(FIXTURE.read_text())["items"]
    node_templates = [i for i in items if i["kind"] == "Node"]
    pod_templates = [i for i in items if i["kind"] == "Pod" and i["spec"].get("nodeName")]
    out: list[dict[str, Any]] = []
    for n in range(nodes):
        node = copy.deepcopy(node_templates[n % len(node_templates)])
        name = f"gpu-node-{n:05d}"
        node["metadata"]["name"] = name
        node["metadata"]["uid"] = f"00000000-0000-4000-8000-{n:012d}"
        node["metadata"]["labels"]["kubernetes.io/hostname"] = name
        out.append(node)
    for p in range(pods):
        pod = copy.deepcopy(pod_templates[p % len(pod_templates)])
        pod["metadata"]["name"] = f"{pod['metadata']['name']}-{p:06d}"
        pod["metadata"]["namespace"] = f"team-{p % 40:02d}"
        pod["metadata"]["uid"] = f"00000000-0000-4000-9000-{p:012d}"
        pod["spec"]["nodeName"] = f"gpu-node-{p % max(nodes, 1):05d}"
        out.append(pod)
    return out


def child(mode: str, url: str, repeats: int) -> dict[str, Any]:
    """One reader, in this process; returns its figures."""
    baseline = _max_rss_mib()
    best = float("inf")
    counts: tuple[int, int] = (0, 0)
    for _ in range(repeats):
        start = time.perf_counter()
        if mode == "gpuwatch":
            source = KubernetesClusterSource(api_for(url), ClusterReadOptions(page_size=500))
            state = source.snapshot(datetime.now(UTC))
            counts = (len(state.nodes), len(state.pods))
            del state
            source.close()
            best = min(best, time.perf_counter() - start)
            continue
        else:
            api = k8s.ApiClient(k8s.Configuration(host=url))
            core = k8s.CoreV1Api(api)
            nodes = core.list_node()
            pods = core.list_pod_for_all_namespaces()
            counts = (len(nodes.items), len(pods.items))
            del nodes, pods
            api.close()  # type: ignore[no-untyped-call]
        best = min(best, time.perf_counter() - start)
    return {
        "mode": mode,
        "wall_s": best,
        "peak_rss_mib": _max_rss_mib(),
        "baseline_rss_mib": baseline,
        "nodes": counts[0],
        "pods": counts[1],
    }


class _Reader:
    """A reader child process, started before the emulator fills this process's memory.

    Linux keeps ``ru_maxrss`` across fork and exec: a child forked once this process
    holds the emulated cluster would report this process's peak, not its own. So both
    children start first and wait on stdin for the server's URL.
    """

    def __init__(self, mode: str, repeats: int) -> None:
        self.mode = mode
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", mode, "--repeats", str(repeats)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, url: str) -> dict[str, Any]:
        out, err = self.process.communicate(url + "\n", timeout=600)
        if self.process.returncode != 0:
            raise SystemExit(f"{self.mode} reader failed:\n{err}")
        return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=("gpuwatch", "typed"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url = sys.stdin.readline().strip()
        print(json.dumps(child(args.child, url, args.repeats)))
        return

    started = time.perf_counter()
    readers = {mode: _Reader(mode, args.repeats) for mode in ("gpuwatch", "typed")}
    objects = _objects(args.nodes, args.pods)
    with KubeEmulator(max_requests=100_000, deadline_s=900.0) as emulator:
        emulator.add_all(objects)
        size_mb = sum(len(json.dumps(o)) for o in objects) / 1e6
        del objects
        print(f"cluster: {args.nodes} nodes, {args.pods} pods, {size_mb:.0f} MB of JSON")
        ours = readers["gpuwatch"].run(emulator.url)
        requests_ours = len(emulator.requests)
        theirs = readers["typed"].run(emulator.url)
    for figures in (ours, theirs):
        assert (figures["nodes"], figures["pods"]) == (args.nodes, args.pods), figures

    def line(name: str, f: dict[str, Any]) -> str:
        growth = f["peak_rss_mib"] - f["baseline_rss_mib"]
        return (
            f"  {name:<9} {f['wall_s']:7.2f} s   peak RSS {f['peak_rss_mib']:7.0f} MiB "
            f"(+{growth:.0f} MiB over its {f['baseline_rss_mib']:.0f} MiB baseline)"
        )

    print(f"gpuwatch ({requests_ours // args.repeats} requests per read) vs typed (2 requests):")
    print(line("gpuwatch", ours))
    print(line("typed", theirs))
    time_ratio = theirs["wall_s"] / ours["wall_s"]
    rss_ratio = theirs["peak_rss_mib"] / ours["peak_rss_mib"]
    growth_ratio = (theirs["peak_rss_mib"] - theirs["baseline_rss_mib"]) / max(
        ours["peak_rss_mib"] - ours["baseline_rss_mib"], 1.0
    )
    print(
        f"typed/gpuwatch: {time_ratio:.1f}x the time, {rss_ratio:.1f}x the peak RSS, "
        f"{growth_ratio:.1f}x the RSS growth"
    )
    print(
        json.dumps(
            {
                "bench": "kube_read",
                "nodes": args.nodes,
                "pods": args.pods,
                "json_mb": round(size_mb, 1),
                "gpuwatch_s": round(ours["wall_s"], 3),
                "typed_s": round(theirs["wall_s"], 3),
                "gpuwatch_peak_rss_mib": round(ours["peak_rss_mib"], 1),
                "typed_peak_rss_mib": round(theirs["peak_rss_mib"], 1),
                "gpuwatch_baseline_rss_mib": round(ours["baseline_rss_mib"], 1),
                "typed_baseline_rss_mib": round(theirs["baseline_rss_mib"], 1),
                "time_ratio": round(time_ratio, 2),
                "peak_rss_ratio": round(rss_ratio, 2),
                "rss_growth_ratio": round(growth_ratio, 2),
                "total_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
