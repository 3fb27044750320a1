"""The checkpoint files themselves: atomic names, manifests, fallback, pruning, copies."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from gpuwatch.workload import checkpoint
from gpuwatch.workload.checkpoint import CheckpointError

pytestmark = pytest.mark.workload


def _state(step: int) -> dict:
    return {"schema": checkpoint.SCHEMA, "step": step, "w": torch.full((64,), float(step))}


def _write(out: Path, step: int, keep: int = 10) -> checkpoint.CheckpointInfo:
    meta = {"saved_at_unix": 1_000.0 + step}
    return checkpoint.write_checkpoint(out, _state(step), step=step, meta=meta, keep=keep)


def test_a_checkpoint_is_a_file_a_manifest_and_the_latest_link(tmp_path: Path) -> None:
    info = _write(tmp_path, 5)
    assert info.path == tmp_path / "checkpoint_step_000000005.pt"
    manifest = json.loads((tmp_path / "checkpoint_step_000000005.json").read_text())
    assert manifest["sha256"] == info.sha256
    assert manifest["size_bytes"] == info.path.stat().st_size
    latest = tmp_path / "checkpoint_latest.pt"
    assert os.readlink(latest) == info.path.name
    # The usual way of loading keeps working.
    assert torch.load(latest, weights_only=True)["step"] == 5
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip", "is corrupt: its SHA-256 does not match the manifest"),
        ("truncate", "is truncated or torn"),
        ("no-manifest", "has no manifest: its write was torn"),
        ("bad-manifest", "checkpoint_step_000000030.json is unreadable"),
    ],
)
def test_auto_falls_back_past_a_damaged_newest_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, message: str
) -> None:
    for step in (10, 20, 30):
        _write(tmp_path, step)
    newest = tmp_path / "checkpoint_step_000000030.pt"
    if damage == "flip":
        data = bytearray(newest.read_bytes())
        data[100] ^= 0x01
        newest.write_bytes(bytes(data))
    elif damage == "truncate":
        newest.write_bytes(newest.read_bytes()[:-10])
    elif damage == "no-manifest":
        checkpoint.manifest_path(newest).unlink()
    else:
        checkpoint.manifest_path(newest).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        info = checkpoint.resolve("auto", tmp_path)
    assert info is not None and info.step == 20
    assert message in caplog.text
    assert "falling back to checkpoint_step_000000020.pt (step 20)" in caplog.text
    assert checkpoint.load(info)["step"] == 20


def test_resume_specs(tmp_path: Path) -> None:
    assert checkpoint.resolve("auto", tmp_path / "empty") is None
    assert checkpoint.resolve(str(tmp_path / "checkpoint_latest.pt"), tmp_path) is None
    _write(tmp_path, 1)
    _write(tmp_path, 2)
    assert checkpoint.resolve("none", tmp_path) is None
    assert checkpoint.resolve(str(tmp_path), Path("elsewhere")).step == 2  # type: ignore[union-attr]
    latest = str(tmp_path / "checkpoint_latest.pt")
    assert checkpoint.resolve(latest, Path("elsewhere")).step == 2  # type: ignore[union-attr]
    older = str(tmp_path / "checkpoint_step_000000001.json")
    assert checkpoint.resolve(older, Path("elsewhere")).step == 1  # type: ignore[union-attr]
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.resolve(str(tmp_path / "checkpoint_step_000000009.pt"), tmp_path)


def test_no_checkpoint_that_verifies_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    info = _write(tmp_path, 3)
    info.path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints"):
        checkpoint.resolve("auto", tmp_path)


def test_keep_prunes_older_checkpoints_and_torn_leftovers(tmp_path: Path) -> None:
    (tmp_path / "checkpoint_step_000000001.pt").write_bytes(b"torn")
    for step in (2, 4, 6, 8):
        _write(tmp_path, step, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "checkpoint_latest.pt",
        "checkpoint_step_000000006.json",
        "checkpoint_step_000000006.pt",
        "checkpoint_step_000000008.json",
        "checkpoint_step_000000008.pt",
    ]


def test_temporaries_of_unfinished_writes_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint_step_000000004.pt.123.tmp").write_bytes(b"half")
    (tmp_path / ".checkpoint_latest.pt.123.tmp").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("kept")
    removed = checkpoint.remove_temporaries(tmp_path)
    assert len(removed) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_snapshot_is_a_copy_that_keeps_shared_tensors_shared() -> None:
    weight = torch.randn(4, 4)
    state = {"model": {"embed": weight, "head": weight.detach()}, "opt": [weight * 2], "n": 3}
    copy = checkpoint.snapshot(state)
    weight.add_(1.0)
    assert not torch.equal(copy["model"]["embed"], weight)
    assert copy["model"]["embed"] is copy["model"]["head"]
    assert copy["n"] == 3


def test_async_writes_report_durable_checkpoints_and_failures(tmp_path: Path) -> None:
    written: list[tuple[int, float]] = []
    writer = checkpoint.Checkpointer(
        tmp_path, keep=5, async_write=True, on_written=lambda i, d: written.append((i.step, d))
    )
    live = _state(1)
    writer.save(live, step=1, meta={"saved_at_unix": 1.0})
    live["w"].add_(100.0)  # training goes on: the checkpoint must hold the old values
    assert writer.wait().step == 1  # type: ignore[union-attr]
    assert torch.equal(
        checkpoint.load(checkpoint.verify(tmp_path / checkpoint.checkpoint_name(1)))["w"],
        torch.full((64,), 1.0),
    )
    assert [s for s, _ in written] == [1]

    failing = checkpoint.Checkpointer(
        tmp_path / "file-not-folder", keep=1, async_write=True, on_written=lambda i, d: None
    )
    (tmp_path / "file-not-folder").write_text("in the way")
    failing.save(_state(2), step=2, meta={"saved_at_unix": 2.0})
    with pytest.raises(CheckpointError, match="checkpoint write failed"):
        failing.wait()
