"""The Prometheus endpoint over real HTTP, and the ``gpuwatch train`` entry point."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gpuwatch.workload.metrics import TrainMetrics, serve
from tests.workload.conftest import REPO, TINY, start_python

pytestmark = pytest.mark.workload


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_endpoint_serves_the_last_checkpoint_from_a_fresh_registry() -> None:
    registry = CollectorRegistry()
    metrics = TrainMetrics(registry)
    metrics.checkpoint_written(
        step=120, saved_at_unix=1_790_000_000.25, duration_s=0.75, size_bytes=4096
    )
    assert registry.get_sample_value("gpuwatch_train_last_checkpoint_step") == 120
    server = serve(registry, "127.0.0.1", 0)
    try:
        samples = _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert samples["gpuwatch_train_last_checkpoint_timestamp_seconds"] == 1_790_000_000.25
    assert samples["gpuwatch_train_checkpoint_duration_seconds"] == 0.75
    assert samples["gpuwatch_train_checkpoints_total"] == 1


def test_gpuwatch_train_serves_metrics_while_training_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    argv = [
        *TINY,
        f"--output={out}",
        "--steps=1000000",
        "--checkpoint-every-steps=5",
        "--keep=1000000",
        "--metrics-port=0",
        "--metrics-host=127.0.0.1",
    ]
    run = start_python(["-m", "gpuwatch", "train", *argv], tmp_path / "run.log")
    try:
        port = int(run.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", 60).group(1))
        run.wait_for(r"checkpoint_step_000000010\.pt durable")
        samples = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        run.kill(signal.SIGTERM)
    assert run.wait() == 143, run.text()
    step = int(samples["gpuwatch_train_last_checkpoint_step"])
    assert step >= 10 and step % 5 == 0
    manifest = json.loads((out / f"checkpoint_step_{step:09d}.json").read_text())
    assert samples["gpuwatch_train_last_checkpoint_timestamp_seconds"] == manifest["saved_at_unix"]
    assert samples["gpuwatch_train_step"] >= step
    assert samples["gpuwatch_train_samples_per_second"] > 0
    assert samples["gpuwatch_train_checkpoint_duration_seconds"] > 0
    assert 0 < samples["gpuwatch_train_loss"] < 10


def test_the_daemon_command_line_loads_no_torch() -> None:
    probe = (
        "import sys\n"
        "from gpuwatch.cli import main\n"
        "sys.argv = ['gpuwatch', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.argv = ['gpuwatch', 'train', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "train" in run.stdout
    assert "--checkpoint-interval SECONDS" in run.stdout
    assert "torch loaded: False" in run.stdout


def test_bad_flags_exit_2_before_torch_loads() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gpuwatch.workload.train", "--d-model=30", "--heads=4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "--d-model must be a multiple of --heads" in run.stderr
