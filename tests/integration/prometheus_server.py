"""A real Prometheus (Debian's package) on loopback, started and stopped by the tests.

History is loaded with ``promtool tsdb create-blocks-from openmetrics`` from the
simulator's own export, so that a Prometheus answer can be compared with the
simulator's answer for the same samples.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.exposition import write_openmetrics

INSTALL_HINT = (
    "Debian's prometheus package is needed for these tests: "
    "`apt-get install -y prometheus` (make test does this when run as root)"
)


def binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return prometheus, promtool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def export_history(
    path: Path, settings: SimulatorSettings, end, exported: bool = False
) -> SimulatedCluster:
    """Write the simulator's history ending at ``end`` as OpenMetrics; return the cluster."""
    cluster = SimulatedCluster(settings, end=end)
    with path.open("w", encoding="utf-8") as handle:
        write_openmetrics(
            handle, [cluster.samples(cluster.history_start, end)], cluster.layout.gpus, exported
        )
    return cluster


def backfill(openmetrics: Path, data_dir: Path) -> None:
    _, promtool = binaries()
    run = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {run.stderr[-2000:]}")


@dataclass
class PrometheusServer:
    """One Prometheus process; ``scrape_targets`` are host:port strings scraped at 1 s."""

    data_dir: Path
    scrape_targets: list[str] = field(default_factory=list)
    scrape_interval: str = "1s"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> PrometheusServer:
        prometheus, _ = binaries()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir.parent / f"{self.data_dir.name}-prometheus.yml"
        targets = ", ".join(f'"{t}"' for t in self.scrape_targets)
        config.write_text(
            f"global:\n  scrape_interval: {self.scrape_interval}\n"
            "scrape_configs:\n"
            + (
                f"  - job_name: dcgm\n    static_configs:\n      - targets: [{targets}]\n"
                if self.scrape_targets
                else "  []\n"
            )
        )
        self.port = free_port()
        log = (self.data_dir.parent / f"{self.data_dir.name}-prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=100y",
                "--web.max-connections=64",
                "--query.timeout=30s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_ready(self.process, f"{self.url}/-/ready", timeout_s, "prometheus")
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def wait_ready(
    process: subprocess.Popen[bytes], ready_url: str, timeout_s: float, name: str
) -> None:
    """Wait until ``ready_url`` answers 200; stop the process and raise when it exits or
    the time runs out, so that a server that cannot start fails its tests at once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    stop_process(process)
    raise RuntimeError(f"{name} not ready within {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    """Terminate, then kill when it does not exit within ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
