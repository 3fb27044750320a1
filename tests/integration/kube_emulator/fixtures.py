"""The ``kube_emulator`` pytest fixture and small helpers for tests that use it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.kube_emulator.server import KubeEmulator


@pytest.fixture
def kube_emulator() -> Iterator[KubeEmulator]:
    """A started emulator with the built-in resources (no CRDs), stopped afterwards.

    Fails the test if the emulator had to stop itself (a client looping on requests).
    """
    emulator = KubeEmulator(deadline_s=30.0)
    with emulator:
        yield emulator
    assert not emulator.exhausted, "the emulator's request budget or deadline ran out"


def free_port() -> int:
    """A loopback port nothing listens on (for unreachable-server tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
