"""Arrow's allocator as the command line chooses it (``gpuwatch.util.memory``): the C
library's, unless ``ARROW_DEFAULT_MEMORY_POOL`` names one. Each case runs in a process
of its own, as the pool is the process'."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpuwatch.util.memory import POOL_ENV

PROBE = (
    "import pyarrow as pa\n"
    "from gpuwatch.util.memory import use_system_allocator\n"
    "before = pa.default_memory_pool().backend_name\n"
    "after = use_system_allocator()\n"
    "assert after == pa.default_memory_pool().backend_name\n"
    "assert pa.array(range(1000)).sum().as_py() == 499500\n"
    "print(before, after)\n"
)


def backends(pool: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != POOL_ENV}
    if pool is not None:
        env[POOL_ENV] = pool
    run = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return run.stdout.split()


def test_unset_the_c_librarys_allocator_replaces_pyarrows_default():
    assert backends(None)[1] == "system"


@pytest.mark.parametrize("pool", ["jemalloc", "mimalloc"])
def test_a_pool_the_user_names_is_kept(pool):
    assert backends(pool) == [pool, pool]


def test_an_empty_setting_is_unset():
    assert backends("")[1] == "system"


def test_the_command_line_chooses_it_before_any_command_runs():
    env = {k: v for k, v in os.environ.items() if k != POOL_ENV}
    run = subprocess.run(
        [sys.executable, "-m", "gpuwatch", "--log-level", "DEBUG", "config", "docs"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Arrow's buffers come from the system allocator" in run.stderr
