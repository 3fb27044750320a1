"""Starting training processes, waiting on their logs, and comparing checkpoints.

Every run is a real process that gets real signals: forked by the zygote (see
``zygote.py``) where only the training matters, or a fresh interpreter where the entry
point itself is under test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# A model small enough that a step takes milliseconds on one CPU core.
TINY = [
    "--vocab-size=64",
    "--d-model=32",
    "--layers=1",
    "--heads=2",
    "--seq-len=16",
    "--batch-size=8",
    "--dataset-size=2000",
    "--warmup-steps=5",
    "--log-every=1",
    "--checkpoint-interval=0",
]
STEP_LINE = re.compile(r" step (\d+) loss ")


class Proc:
    """A training process: its pid, its log, and a way to wait for its exit code."""

    def __init__(self, pid: int, log: Path, waiter: Any) -> None:
        self.pid = pid
        self.log = log
        self._waiter = waiter

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait(self, timeout: float = 60) -> int:
        code: int = self._waiter(timeout)
        return code

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Poll the log until ``pattern`` matches (fails the test on timeout)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = regex.search(self.text())
            if found:
                return found
            time.sleep(0.002)
        raise AssertionError(f"no {pattern!r} in {self.log} after {timeout} s:\n{self.text()}")

    def wait_for_step(self, step: int, timeout: float = 30) -> None:
        self.wait_for(rf" step {step} loss ", timeout)

    def kill(self, signum: int) -> None:
        os.kill(self.pid, signum)


class Zygote:
    """Client side of ``zygote.py``."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.workload.zygote"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._pids: list[int] = []
        self._exits: dict[int, int] = {}
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        assert "ready" in ready, ready
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._cond:
                if "pid" in message:
                    self._pids.append(message["pid"])
                else:
                    self._exits[message["exited"]] = message["code"]
                self._cond.notify_all()

    def spawn(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None, threads: int = 0
    ) -> Proc:
        request: dict[str, Any] = {"argv": argv, "log": str(log), "env": env or {}}
        if threads:
            request["threads"] = threads
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pids), timeout=10)
                pid = self._pids.pop(0)

        def waiter(timeout: float) -> int:
            with self._cond:
                if not self._cond.wait_for(lambda: pid in self._exits, timeout=timeout):
                    raise AssertionError(f"run {pid} still going after {timeout} s:\n{log}")
                return self._exits[pid]

        return Proc(pid, log, waiter)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


def start_python(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """A fresh interpreter running ``python ARGS``, its output in ``log``."""
    handle = open(log, "ab")  # noqa: SIM115 - the process writes it until it exits
    popen = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )

    def waiter(timeout: float) -> int:
        try:
            return popen.wait(timeout=timeout)
        finally:
            handle.close()

    return Proc(popen.pid, log, waiter)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_ranks(
    zygote: Zygote, argv: list[str], logs: Path, world: int = 2, name: str = "run"
) -> list[Proc]:
    """``world`` ranks forked by the zygote, joined over gloo on 127.0.0.1."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(zygote.spawn(argv, logs / f"{name}-rank{rank}.log", env=env, threads=1))
    return procs


def checkpoint_at(output: Path, step: int) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(
        output / f"checkpoint_step_{step:09d}.pt", map_location="cpu", weights_only=True
    )
    return state


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bit-identical model, optimizer, scheduler, scaler, RNGs and data position."""
    for key in ("step", "epoch", "batch_in_epoch", "samples_seen", "loss", "world_size"):
        assert a[key] == b[key], key
    _assert_same(a["model"], b["model"], "model")
    _assert_same(a["optimizer"], b["optimizer"], "optimizer")
    _assert_same(a["scheduler"], b["scheduler"], "scheduler")
    _assert_same(a["scaler"], b["scaler"], "scaler")
    _assert_same(a["rng"], b["rng"], "rng")


def _assert_same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def sigterm_at(proc: Proc, step: int) -> None:
    """SIGTERM once the run has logged ``step`` (it lands a step or two later)."""
    proc.wait_for_step(step)
    proc.kill(signal.SIGTERM)
