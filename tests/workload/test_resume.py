"""Interrupted and resumed runs end with the same bits as one that never stopped.

Each interrupted run is a real process that gets a real SIGTERM (or SIGKILL) while it
trains; it must checkpoint at the next step boundary and exit 143, and a run started
with ``--resume auto`` must carry on from there as if nothing had happened.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.workload.conftest import (
    TINY,
    Zygote,
    assert_same_state,
    checkpoint_at,
    sigterm_at,
)

pytestmark = pytest.mark.workload

STEPS = 80


def _argv(output: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return [*TINY, f"--output={output}", f"--steps={steps}", "--seed=7", *extra]


def _manifest(output: Path, step: int) -> dict:
    manifest: dict = json.loads((output / f"checkpoint_step_{step:09d}.json").read_text())
    return manifest


def _latest_step(output: Path) -> int:
    return int((output / "checkpoint_latest.pt").readlink().name.split("_")[2].split(".")[0])


@pytest.fixture(scope="module")
def reference(zygote: Zygote, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run's final state."""
    out = tmp_path_factory.mktemp("reference")
    run = zygote.spawn(_argv(out / "ckpt"), out / "run.log")
    assert run.wait() == 0, run.text()
    return checkpoint_at(out / "ckpt", STEPS)


@pytest.mark.parametrize("k", [3, 25, 40])
def test_sigterm_at_step_k_then_resume_is_bit_identical(
    zygote: Zygote, reference: dict, tmp_path: Path, k: int
) -> None:
    out = tmp_path / "ckpt"
    first = zygote.spawn(_argv(out), tmp_path / "first.log")
    sigterm_at(first, k)
    assert first.wait() == 143, first.text()
    stopped = _latest_step(out)
    assert k <= stopped < STEPS
    assert "SIGTERM" in _manifest(out, stopped)["reason"]
    assert "after the signal (deadline 30 s: met)" in first.text()

    second = zygote.spawn(_argv(out), tmp_path / "second.log")
    assert second.wait() == 0, second.text()
    assert f"resumed from {out / f'checkpoint_step_{stopped:09d}.pt'}: step {stopped}" in (
        second.text()
    )
    assert_same_state(checkpoint_at(out, STEPS), reference)


def test_twice_in_one_run_async_with_a_corrupt_newest_checkpoint(
    zygote: Zygote, reference: dict, tmp_path: Path
) -> None:
    # Periodic asynchronous checkpoints, which must not disturb the run either.
    out = tmp_path / "ckpt"
    # DataLoader worker processes as well: samples depend only on their index.
    extra = ("--async-checkpoint", "--checkpoint-every-steps=10", "--keep=3", "--workers=2")
    first = zygote.spawn(_argv(out, *extra), tmp_path / "first.log")
    sigterm_at(first, 12)
    assert first.wait() == 143, first.text()
    stopped_first = _latest_step(out)

    second = zygote.spawn(_argv(out, *extra), tmp_path / "second.log")
    sigterm_at(second, 33)
    assert second.wait() == 143, second.text()
    stopped_second = _latest_step(out)
    assert stopped_first < stopped_second < STEPS
    assert f"resumed from {out / f'checkpoint_step_{stopped_first:09d}.pt'}" in second.text()

    # Bit rot in the newest checkpoint: resume falls back to the periodic one before it.
    newest = out / f"checkpoint_step_{stopped_second:09d}.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    previous = (stopped_second - 1) // 10 * 10

    third = zygote.spawn(_argv(out, *extra), tmp_path / "third.log")
    assert third.wait() == 0, third.text()
    log = third.text()
    assert f"{newest.name} is corrupt: its SHA-256 does not match the manifest" in log
    assert f"falling back to checkpoint_step_{previous:09d}.pt (step {previous})" in log
    assert_same_state(checkpoint_at(out, STEPS), reference)
    # The last --keep checkpoints stay; the corrupt one was overwritten on the way.
    kept = sorted(p.name for p in out.glob("checkpoint_step_*.pt"))
    assert kept == [f"checkpoint_step_{s:09d}.pt" for s in (60, 70, 80)]


def test_kill_9_while_writing_resumes_from_the_previous_checkpoint(
    zygote: Zygote, tmp_path: Path
) -> None:
    # A large embedding so that writing a checkpoint takes long enough to be caught.
    out = tmp_path / "ckpt"
    big = [a for a in TINY if not a.startswith(("--vocab-size", "--d-model"))]
    argv = [*big, "--vocab-size=60000", "--d-model=64", f"--output={out}", "--steps=100000"]
    run = zygote.spawn(argv, tmp_path / "first.log")
    run.wait_for_step(2)
    run.kill(signal.SIGUSR1)
    run.wait_for(r"checkpoint_step_(\d+)\.pt durable")

    caught = None
    for _attempt in range(10):
        before = _latest_step(out)
        run.kill(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while caught is None and time.monotonic() < deadline:
            temporaries = list(out.glob(".checkpoint_step_*.pt.*.tmp"))
            if temporaries:
                run.kill(signal.SIGSTOP)  # freeze it mid-write, then look again
                if temporaries[0].exists():
                    caught = temporaries[0]
                    break
                run.kill(signal.SIGCONT)
            if _latest_step(out) != before:
                break  # missed: that write finished; try the next one
        if caught is not None:
            break
    assert caught is not None, "never caught a checkpoint being written"
    previous = _latest_step(out)
    run.kill(signal.SIGKILL)
    run.kill(signal.SIGCONT)
    assert run.wait() == -signal.SIGKILL
    assert caught.exists()
    being_written = caught.name.split(".")[1]
    assert being_written != f"checkpoint_step_{previous:09d}"
    assert not (out / f"{being_written}.json").exists()

    resumed = zygote.spawn([*argv[:-1], f"--steps={previous + 2}"], tmp_path / "second.log")
    assert resumed.wait() == 0, resumed.text()
    log = resumed.text()
    assert f"removing {caught.name}: a checkpoint write that did not finish" in log
    assert f"resumed from {out / f'checkpoint_step_{previous:09d}.pt'}: step {previous}" in log
    assert not caught.exists()
