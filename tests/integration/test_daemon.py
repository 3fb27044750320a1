"""``gpuwatch run`` as a real process: cycles on a 1-second interval against the
simulator, ``/healthz`` and ``/metrics`` over HTTP, a config reload, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwatch.config.settings import Settings
from gpuwatch.daemon import Daemon
from tests.integration.prometheus_server import free_port

pytestmark = pytest.mark.integration


def config(port: int, extra: str = "") -> str:
    return (
        "daemon:\n  interval: 1s\n  report_cron: null\n"
        f"self_metrics:\n  address: 127.0.0.1\n  port: {port}\n"
        "output:\n  dir: out\nnotify:\n  console: false\n" + extra
    )


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    port = free_port()
    (tmp_path / "gpuwatch.yaml").write_text(config(port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUWATCH_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gpuwatch", "--config", "gpuwatch.yaml", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, f"http://127.0.0.1:{port}", tmp_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_cycles_run_on_schedule_serve_metrics_and_stop_on_sigterm(daemon):
    process, url, root = daemon
    wait_for(lambda: metric(get(f"{url}/metrics")[1], 'gpuwatch_cycles_total{outcome="ok"}') >= 3)
    status, body = get(f"{url}/healthz")
    assert status == 200 and body.startswith("ok")
    text = get(f"{url}/metrics")[1]
    assert metric(text, 'gpuwatch_findings{rule="gpu-idle",severity="warning"}') > 0
    assert len(list((root / "out").glob("cycle-2*.json"))) >= 2
    assert (root / "out" / "state.json").is_file()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    with pytest.raises(OSError):
        get(f"{url}/healthz")


def test_a_changed_config_is_reloaded_and_a_broken_one_is_not(daemon):
    process, url, root = daemon
    wait_for(lambda: metric(get(f"{url}/metrics")[1], 'gpuwatch_cycles_total{outcome="ok"}') >= 1)
    path = root / "gpuwatch.yaml"
    port = int(url.rsplit(":", 1)[1])
    # Rules switched off: the next cycles find nothing for gpu-idle.
    disabled = root / "no-rules.yaml"
    disabled.write_text("version: 1\nrules: []\n")
    path.write_text(config(port, f"rules:\n  paths: [{disabled}]\n"))
    wait_for(lambda: metric(get(f"{url}/metrics")[1], "gpuwatch_findings{") == 0)
    # A broken file is refused; the daemon keeps going on the last good settings.
    path.write_text(config(port, "notify:\n  channel: 12\n  nonsense: true\n"))
    before = metric(get(f"{url}/metrics")[1], 'gpuwatch_cycles_total{outcome="ok"}')
    wait_for(
        lambda: metric(get(f"{url}/metrics")[1], 'gpuwatch_cycles_total{outcome="ok"}') > before + 1
    )
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "does not load; keeping the old settings" in process.stderr.read()


def test_healthz_fails_once_no_cycle_succeeds_for_the_configured_intervals(tmp_path: Path):
    port = free_port()
    dead = free_port()
    (tmp_path / "gpuwatch.yaml").write_text(
        config(port, f"metrics:\n  source: prometheus\nprometheus:\n  url: http://127.0.0.1:{dead}\n"
               "  timeout_s: 1\ncluster:\n  source: simulator\n"
               "daemon:\n  interval: 1s\n  report_cron: null\n  unhealthy_after: 2\n")
        .replace("daemon:\n  interval: 1s\n  report_cron: null\nself", "self", 1)
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUWATCH_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gpuwatch", "--config", "gpuwatch.yaml", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(f"{url}/healthz")[0] == 503)
        text = get(f"{url}/metrics")[1]
        assert metric(text, 'gpuwatch_cycles_total{outcome="error"}') >= 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_one_replica_runs_the_jobs_and_another_takes_over_when_it_stops(tmp_path, kube_emulator):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": kube_emulator.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "u"}}],
                "current-context": "emu",
            }
        )
    )
    settings = Settings.model_validate(
        {
            "metrics": {"source": "prometheus"},
            "prometheus": {"url": "http://127.0.0.1:9"},  # no cycle runs here
            "cluster": {"source": "kubernetes"},
            "kubernetes": {"kubeconfig": str(kubeconfig)},
            "daemon": {"lease": "gpuwatch/gpuwatch-daemon"},
        }
    )
    first = Daemon(lambda: settings, sys.stdout)
    second = Daemon(lambda: settings, sys.stdout)
    assert first._leader() and first._leader()  # it holds, and renews
    assert not second._leader()  # stands by
    first.stop()  # releases the Lease on the way out
    assert second._leader()
    second.stop()
