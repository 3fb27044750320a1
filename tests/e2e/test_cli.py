"""The command line as a user runs it: a real process, real files, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import SHIPPED_RULES, run_gpuwatch

REPO = Path(__file__).resolve().parents[2]
ALL_RULES = SHIPPED_RULES


gpuwatch = run_gpuwatch


def test_demo_prints_findings_messages_and_writes_json(tmp_path):
    run = gpuwatch("demo", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "would post to Slack #gpu-alerts" in run.stdout
    assert "findings" in run.stdout
    assert "Cycle result written to gpuwatch-demo/cycle-20261124T020000Z.json" in run.stdout
    data = json.loads((tmp_path / "gpuwatch-demo" / "cycle-20261124T020000Z.json").read_text())
    assert {f["rule"] for f in data["findings"]} == ALL_RULES
    assert json.loads((tmp_path / "gpuwatch-demo" / "cycle-latest.json").read_text()) == data
    # The demo keeps no state: a second run shows the same messages.
    assert not (tmp_path / "gpuwatch-demo" / "state.json").exists()
    again = gpuwatch("demo", cwd=tmp_path)
    assert again.stdout.count("would post to Slack") == run.stdout.count("would post to Slack")


def test_json_output_is_pure_json_on_stdout(tmp_path):
    run = gpuwatch("demo", "--output", "json", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["schema"] == "gpuwatch.cycle/v1"
    assert "would post to Slack" in run.stderr


def test_once_scales_and_honours_at(tmp_path):
    run = gpuwatch(
        "once", "--gpus", "256", "--days", "1", "--at", "2026-11-24T14:00:00Z",
        "--output", "json", "--out", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["at"] == "2026-11-24T14:00:00Z"
    assert data["source"]["gpus_in_cluster"] == 256
    # At 14:00 the notebooks are busy: no idle notebook.
    assert not [f for f in data["findings"] if (f["workload"] or "").startswith("Notebook/")
                and f["rule"] == "gpu-idle"]  # fmt: skip


def test_config_file_and_environment(tmp_path):
    config = tmp_path / "gpuwatch.yaml"
    config.write_text("cluster:\n  name: prod-hz\nnotify:\n  channel: '#gpu-prod'\n")
    run = gpuwatch(
        "--config", str(config), "demo", "--out", str(tmp_path / "o"), cwd=tmp_path,
        env={"GPUWATCH_SIMULATOR__GPUS": "128"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "cluster prod-hz" in run.stdout and "#gpu-prod" in run.stdout
    data = json.loads((tmp_path / "o" / "cycle-latest.json").read_text())
    assert data["source"]["gpus_in_cluster"] == 128


def test_a_real_cluster_is_never_joined_with_simulated_metrics(tmp_path):
    """A snapshot of real objects with the simulator's made-up GPUs would report findings
    on nodes that do not exist: refused before anything is read, saying what to pass."""
    snap = gpuwatch("simulate", "snapshot", "--out", str(tmp_path / "snap.json"), cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr
    run = gpuwatch("once", "--cluster-snapshot", str(tmp_path / "snap.json"), cwd=tmp_path)
    assert run.returncode == 2
    assert "never joined with simulated metrics" in run.stderr
    assert "--prometheus-url" in run.stderr
    assert not (tmp_path / "gpuwatch-out").exists()


def test_writes_with_a_past_instant_are_refused_at_the_start(tmp_path):
    run = gpuwatch(
        "once", "--no-dry-run", "--at", "2026-11-24T02:00:00Z", "--out", str(tmp_path / "o"),
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2
    assert "refusing to write" in run.stderr and "actions.max_data_age" in run.stderr
    assert not (tmp_path / "o").exists()  # nothing read, nothing written
    # The same instant in a dry run is analysed as usual.
    dry = gpuwatch("once", "--at", "2026-11-24T02:00:00Z", "--out", str(tmp_path / "d"),
                   cwd=tmp_path)  # fmt: skip
    assert dry.returncode == 0, dry.stderr


def test_real_metrics_are_never_joined_with_simulated_pods(tmp_path):
    # With Prometheus metrics, the default cluster source is the Kubernetes API: here
    # there is none, and gpuwatch says how to point it at one instead of guessing.
    run = gpuwatch(
        "once", "--prometheus-url", "http://127.0.0.1:9", cwd=tmp_path,
        env={"KUBECONFIG": str(tmp_path / "missing-kubeconfig")},
    )  # fmt: skip
    assert run.returncode == 2
    assert "kubeconfig" in run.stderr.lower()


def test_bad_setting_exits_2_naming_the_variable(tmp_path):
    run = gpuwatch("demo", cwd=tmp_path, env={"GPUWATCH_OUTPUT__FORMAT": "xml"})
    assert run.returncode == 2
    assert "environment GPUWATCH_OUTPUT__FORMAT: output.format" in run.stderr
    assert "Traceback" not in run.stderr


def test_bad_config_file_exits_2_naming_file_and_line(tmp_path):
    config = tmp_path / "gpuwatch.yaml"
    config.write_text("simulator:\n  gpus: 8\n  gpus_total: 9\n")
    run = gpuwatch("--config", str(config), "demo", cwd=tmp_path)
    assert run.returncode == 2
    assert f"{config}:3: simulator.gpus_total: unknown setting" in run.stderr


def test_rules_validate(tmp_path):
    ok = gpuwatch("rules", "validate", cwd=tmp_path)
    assert ok.returncode == 0 and "8 rules OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - id: x\n    kind: threshold\n    window: 5m\n")
    run = gpuwatch("rules", "validate", str(bad), cwd=tmp_path)
    assert run.returncode == 2
    assert f"{bad}:3: rule x: signal: Field required" in run.stderr


def test_bad_rules_stop_a_cycle_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: [{id: x, kind: nope, window: 5m}]\n")
    run = gpuwatch("demo", "--rules", str(bad), cwd=tmp_path)
    assert run.returncode == 2 and "unknown kind 'nope'" in run.stderr


def test_config_show_and_docs(tmp_path):
    show = gpuwatch("config", "show", cwd=tmp_path)
    assert show.returncode == 0 and json.loads(show.stdout)["simulator"]["gpus"] == 64
    docs = gpuwatch("config", "docs", cwd=tmp_path)
    assert docs.stdout == (REPO / "docs" / "settings.md").read_text()


@pytest.mark.slow
def test_installed_wheel_finds_shipped_rules_from_another_directory(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(dist), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("gpuwatch-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert (target / "gpuwatch" / "_shipped" / "rules" / "gpu.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c",
         "import gpuwatch; from gpuwatch.config.resources import shipped_dir; "
         "print(gpuwatch.__file__); print(shipped_dir('rules'))"],
        cwd=elsewhere, env={**os.environ, **env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert all(line.startswith(str(target)) for line in where.stdout.split())
    run = gpuwatch("demo", cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "gpuwatch-demo" / "cycle-latest.json").is_file()


def test_savings_command_shows_the_plan_with_every_lever(tmp_path):
    run = gpuwatch("savings", "--at", "2026-11-24T02:00:00Z", "--output", "json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    kinds = [s["kind"] for s in data["savings"]]
    # The demo's levers, each shown (blocked ones with their reason) in the plan's order.
    assert {"spot", "sharing", "quantization", "release", "remove_nodes", "reserved"} <= set(kinds)
    assert [s["order"] for s in data["savings"]] == sorted(s["order"] for s in data["savings"])
    (total,) = data["savings_total"]
    assert round(sum(s["net_monthly"] for s in data["savings"]), 2) == total["net_monthly"]
    for item in data["savings"]:
        assert item["currency"] == "CNY" and item["inputs"] and item["formula"] and item["action"]
        assert item["net_monthly"] <= item["gross_monthly"]
        if item["blocked"]:
            assert item["net_monthly"] == 0 and item["unblock"]
    assert any("no checkpoints" in e["reason"] for e in data["savings_excluded"])
    table = gpuwatch("savings", "--at", "2026-11-24T02:00:00Z", cwd=tmp_path)
    assert "Savings per 30 days: the plan, lever by lever (EXAMPLE prices" in table.stdout
    assert "How to read these figures" in table.stdout and "reclaimed capacity" in table.stdout
    assert "would post to Slack" not in table.stdout


def test_demo_prints_cost_and_savings(tmp_path):
    run = gpuwatch("demo", cwd=tmp_path)
    assert "Cost of the last 1 h (example prices): 1,271.20 CNY (64 GPU-hours)" in run.stdout
    assert "Net " in run.stdout and "per 30 days in cash" in run.stdout
