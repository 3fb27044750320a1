"""Two ranks over gloo: interrupted, resumed, and still bit-identical.

The interrupted runs stop the way they stop in a cluster: SIGTERM to the torchrun
wrapper (which forwards it to every worker, as the kubelet's SIGTERM reaches torchrun
in a PyTorchJob pod), or SIGTERM to one rank only (which the ranks must agree on).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.workload.conftest import (
    TINY,
    Zygote,
    assert_same_state,
    checkpoint_at,
    free_port,
    run_ranks,
    start_python,
)

pytestmark = pytest.mark.workload

STEPS = 30


def _argv(output: Path, steps: int = STEPS) -> list[str]:
    return [*TINY, f"--output={output}", f"--steps={steps}", "--seed=3"]


def _latest_step(output: Path) -> int:
    return int((output / "checkpoint_latest.pt").readlink().name.split("_")[2].split(".")[0])


@pytest.fixture(scope="module")
def reference(zygote: Zygote, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("ddp-reference")
    ranks = run_ranks(zygote, _argv(out / "ckpt"), out)
    assert [r.wait() for r in ranks] == [0, 0], ranks[0].text() + ranks[1].text()
    return checkpoint_at(out / "ckpt", STEPS)


def test_sigterm_to_one_rank_stops_both_at_the_same_step(
    zygote: Zygote, reference: dict, tmp_path: Path
) -> None:
    out = tmp_path / "ckpt"
    ranks = run_ranks(zygote, _argv(out), tmp_path, name="first")
    ranks[1].wait_for_step(8)
    ranks[1].kill(signal.SIGTERM)
    assert [r.wait() for r in ranks] == [143, 143], ranks[0].text() + ranks[1].text()
    stopped = _latest_step(out)
    assert 8 <= stopped < STEPS
    assert f"SIGTERM reached another rank: checkpoint of step {stopped} on disk" in ranks[0].text()
    state = checkpoint_at(out, stopped)
    assert state["world_size"] == 2
    assert len(state["rng"]) == 2
    assert not all(
        (a == b).all()
        for a, b in zip(state["rng"][0]["torch"], state["rng"][1]["torch"], strict=True)
    ), "the ranks should draw dropout from different streams"

    resumed = run_ranks(zygote, _argv(out), tmp_path, name="second")
    assert [r.wait() for r in resumed] == [0, 0], resumed[0].text() + resumed[1].text()
    for rank in resumed:
        assert f"checkpoint_step_{stopped:09d}.pt: step {stopped}" in rank.text()
    assert_same_state(checkpoint_at(out, STEPS), reference)


def test_torchrun_sigterm_exits_143_and_resumes_bit_identical(
    zygote: Zygote, reference: dict, tmp_path: Path
) -> None:
    out = tmp_path / "ckpt"
    launcher = start_python(
        [
            "-m",
            "gpuwatch.workload.launch",
            "--nnodes=1",
            "--nproc-per-node=2",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{free_port()}",
            "--module",
            "gpuwatch.workload.train",
            *_argv(out),
        ],
        tmp_path / "torchrun.log",
        env={"OMP_NUM_THREADS": "1"},
    )
    launcher.wait_for(r"rank1 INFO \S+: step 4 loss", timeout=60)
    launcher.kill(signal.SIGTERM)
    assert launcher.wait() == 143, launcher.text()
    stopped = _latest_step(out)
    assert 4 <= stopped < STEPS
    assert "exiting 143" in launcher.text()

    resumed = run_ranks(zygote, _argv(out), tmp_path, name="resumed")
    assert [r.wait() for r in resumed] == [0, 0], resumed[0].text() + resumed[1].text()
    assert_same_state(checkpoint_at(out, STEPS), reference)
