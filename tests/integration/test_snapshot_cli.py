"""A cluster read from a `kubectl get -o json` file, with real metrics from Prometheus: the
command line as a user runs it, from a file and from standard input; and cycles that
leave no connection open."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuwatch.config.settings import Settings
from gpuwatch.jobs import cycle_job
from tests.builders import run_gpuwatch
from tests.integration.conftest import HISTORY

pytestmark = pytest.mark.integration


def test_snapshot_file_and_stdin_with_prometheus_give_the_demo_findings(
    tmp_path, history_prometheus
):
    server, _ = history_prometheus
    snap = run_gpuwatch(
        "simulate", "snapshot", "--gpus", str(HISTORY.gpus), "--out", "snap.json", cwd=tmp_path
    )
    assert snap.returncode == 0, snap.stderr
    args = ("--at", "2026-11-24T02:00:00Z", "--output", "json", "--prometheus-url", server.url)
    # The backfilled history has a sample a minute, as a 60 s scrape interval would.
    env = {"GPUWATCH_PROMETHEUS__SCRAPE_INTERVAL_S": str(HISTORY.step_s)}
    from_file = run_gpuwatch(
        "once", "--cluster-snapshot", "snap.json", *args, "--out", "a", cwd=tmp_path, env=env
    )
    from_stdin = subprocess.run(
        [sys.executable, "-m", "gpuwatch", "once", "--cluster-snapshot", "-", *args,
         "--out", "b"],
        input=(tmp_path / "snap.json").read_text(), cwd=tmp_path, capture_output=True,
        text=True, timeout=120, check=False, env={**os.environ, **env},
    )  # fmt: skip
    demo = run_gpuwatch("demo", "--at", "2026-11-24T02:00:00Z", "--output", "json", cwd=tmp_path)
    for run in (from_file, from_stdin, demo):
        assert run.returncode == 0, run.stderr
    results = [json.loads(r.stdout) for r in (from_file, from_stdin, demo)]
    assert [r["source"]["cluster"] for r in results] == ["snapshot-file"] * 2 + ["simulator"]
    assert [r["source"]["metrics"] for r in results] == ["prometheus"] * 2 + ["simulator"]

    def key(finding):
        return (finding["rule"], finding["gpu_uuid"], finding["workload"])

    # The demo's own budgets (a default of the demo, judged on its month of history) are
    # not given to `once`: every GPU finding is the same.
    demo_findings = [f for f in results[2]["findings"] if f["role"] != "budget"]
    assert len(demo_findings) == len(results[2]["findings"]) - 1
    expected = sorted(map(key, demo_findings))
    assert sorted(map(key, results[0]["findings"])) == expected
    assert sorted(map(key, results[1]["findings"])) == expected


def _open_connections(url: str) -> int:
    """Connections the server has accepted and not yet closed, this scrape's included."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {"accepted": 0.0, "closed": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for kind in counts:
                if sample.name == f"net_conntrack_listener_conn_{kind}_total":
                    counts[kind] += sample.value
    return int(counts["accepted"] - counts["closed"])


def test_cycles_leave_no_connection_open(tmp_path, history_prometheus):
    """A daemon builds its adapters anew every cycle; their connections close with the
    cycle, or a long-running daemon exhausts the server's connection limit."""
    server, _ = history_prometheus
    snap = run_gpuwatch("simulate", "snapshot", "--gpus", "8", "--out", "snap.json", cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr
    settings = Settings.model_validate(
        {
            "metrics": {"source": "prometheus"},
            "prometheus": {"url": server.url, "scrape_interval_s": HISTORY.step_s},
            "cluster": {"source": "snapshot", "snapshot_path": str(tmp_path / "snap.json")},
            "output": {"dir": str(tmp_path / "out")},
        }
    )
    before = _open_connections(server.url)
    for minutes in range(3):
        at = datetime(2026, 11, 24, 2, minutes, tzinfo=UTC)
        run = cycle_job(settings, at, io.StringIO(), push=False)
        assert run.result.errors == (), run.result.errors
    assert _open_connections(server.url) <= before
