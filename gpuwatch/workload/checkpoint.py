"""Checkpoints that are atomic, verifiable, pruned, and written in the background if asked.

``torch.save`` straight to the final path is not atomic: a process killed mid-write (a
spot reclaim, an OOM kill) leaves a truncated file under the name a restart will load.
Here every file goes to a temporary name in the same folder, is fsynced, renamed with
``os.replace`` and the folder fsynced, so a name only ever holds a complete file.

Each checkpoint is two files: ``checkpoint_step_000000120.pt`` (loadable with plain
``torch.load(..., weights_only=True)``) and its manifest ``checkpoint_step_000000120.json``
with the SHA-256 and size, written after the ``.pt`` is durable. A ``.pt`` without a
manifest is a torn write; one whose bytes do not match the manifest is corrupt. Either
is skipped by ``--resume auto``, which says so and falls back to the previous one.
``checkpoint_latest.pt`` is a symbolic link to the newest good checkpoint, so the
usual ``torch.load('/output/checkpoint_latest.pt')`` keeps working.

With ``async_write`` the state is first copied (GPU tensors into pinned host memory)
and a background thread serialises, hashes and writes the copy: training stalls only
for the copy. One write is in flight at a time; the next checkpoint waits for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SCHEMA = "gpuwatch.workload.checkpoint/v1"
LATEST = "checkpoint_latest.pt"
_NAME = re.compile(r"^checkpoint_step_(\d+)\.pt$")
_TEMP = re.compile(r"^\.checkpoint_.*\.tmp$")


class CheckpointError(Exception):
    """A checkpoint cannot be used (torn, corrupt, missing) or cannot be written."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint whose manifest was read (and, after ``verify``, whose bytes match)."""

    path: Path
    step: int
    sha256: str
    size_bytes: int
    saved_at_unix: float
    """When the state was captured (what a restart would go back to), unix seconds."""
    manifest: dict[str, Any]


def checkpoint_name(step: int) -> str:
    return f"checkpoint_step_{step:09d}.pt"


def manifest_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_and_hash(path: Path) -> tuple[str, int]:
    """Flush ``path`` to disk and hash what it holds (read back from the page cache)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_atomic(path: Path, produce: Callable[[Path], object]) -> tuple[str, int]:
    """Have ``produce`` write a temporary file, then make it ``path`` durably.

    ``torch.save`` gets a path, not a Python file object: with a path its C++ writer
    does the I/O, while a Python ``write`` callback per record would hold the GIL and
    stall a training thread running beside an asynchronous checkpoint several-fold.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        produce(tmp)
        sha256, size = _fsync_and_hash(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return sha256, size


def write_checkpoint(
    output: Path, state: dict[str, Any], *, step: int, meta: dict[str, Any], keep: int
) -> CheckpointInfo:
    """Write ``state`` as the checkpoint of ``step``, its manifest, the latest link; prune."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / checkpoint_name(step)
    started = time.monotonic()
    sha256, size = _write_atomic(path, lambda tmp: torch.save(state, tmp))
    manifest = {
        "schema": SCHEMA,
        "file": path.name,
        "step": step,
        "sha256": sha256,
        "size_bytes": size,
        "write_s": round(time.monotonic() - started, 6),
        **meta,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True).encode()
    _write_atomic(manifest_path(path), lambda tmp: tmp.write_bytes(text))
    _point_latest(output, path.name)
    prune(output, keep)
    return CheckpointInfo(path, step, sha256, size, float(meta["saved_at_unix"]), manifest)


def _point_latest(output: Path, name: str) -> None:
    link = output / LATEST
    tmp = output / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(name, tmp)
        os.replace(tmp, link)
        _fsync_dir(output)
    except OSError as exc:
        # Some network filesystems refuse links; --resume auto does not need it.
        tmp.unlink(missing_ok=True)
        log.warning("could not point %s at %s: %s", link, name, exc)


def scan(output: Path) -> list[Path]:
    """Every checkpoint file in ``output``, newest step first (good or not)."""
    if not output.is_dir():
        return []
    found = [
        (int(m.group(1)), entry)
        for entry in output.iterdir()
        if (m := _NAME.match(entry.name)) and entry.is_file()
    ]
    return [path for _, path in sorted(found, key=lambda item: item[0], reverse=True)]


def read_manifest(path: Path) -> CheckpointInfo:
    """The manifest of checkpoint ``path``, without checking the bytes."""
    where = manifest_path(path)
    try:
        manifest = json.loads(where.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{path.name} has no manifest: its write was torn (the process died before it finished)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{where.name} is unreadable: {exc}") from exc
    if manifest.get("schema") != SCHEMA or manifest.get("file") != path.name:
        raise CheckpointError(f"{where.name} is not a manifest of {path.name}")
    return CheckpointInfo(
        path=path,
        step=int(manifest["step"]),
        sha256=str(manifest["sha256"]),
        size_bytes=int(manifest["size_bytes"]),
        saved_at_unix=float(manifest["saved_at_unix"]),
        manifest=manifest,
    )


def verify(path: Path) -> CheckpointInfo:
    """Read the manifest of ``path`` and check the file's size and SHA-256 against it."""
    info = read_manifest(path)
    try:
        size = path.stat().st_size
        if size != info.size_bytes:
            raise CheckpointError(
                f"{path.name} is truncated or torn: {size} bytes, the manifest says "
                f"{info.size_bytes}"
            )
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"{path.name} is unreadable: {exc}") from exc
    if digest.hexdigest() != info.sha256:
        raise CheckpointError(f"{path.name} is corrupt: its SHA-256 does not match the manifest")
    return info


def newest_good(output: Path) -> CheckpointInfo | None:
    """The newest checkpoint in ``output`` that verifies, logging each one skipped.

    None when there is no checkpoint at all; ``CheckpointError`` when there are some
    but none verifies (starting over silently would throw the run's progress away).
    """
    candidates = scan(output)
    skipped: list[str] = []
    for path in candidates:
        try:
            info = verify(path)
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
            skipped.append(path.name)
            continue
        if skipped:
            log.warning(
                "falling back to %s (step %d): newer %s unusable",
                path.name,
                info.step,
                ", ".join(skipped),
            )
        return info
    if candidates:
        raise CheckpointError(f"none of the {len(candidates)} checkpoints in {output} verifies")
    return None


def resolve(spec: str, output: Path) -> CheckpointInfo | None:
    """The checkpoint ``--resume SPEC`` names, verified; None to start fresh."""
    if spec == "none":
        return None
    if spec == "auto":
        return newest_good(output)
    path = Path(spec)
    if path.is_dir():
        return newest_good(path)
    if path.name == LATEST:
        # The usual --resume=/output/checkpoint_latest.pt: what it means is
        # "the newest good checkpoint there", including on the first run, before any.
        return newest_good(path.parent)
    if path.suffix == ".json":
        path = path.with_suffix(".pt")
    if not path.exists():
        raise CheckpointError(f"--resume {spec}: no such checkpoint")
    return verify(path)


def load(info: CheckpointInfo) -> dict[str, Any]:
    """The state of a verified checkpoint, tensors on the CPU."""
    state: dict[str, Any] = torch.load(info.path, map_location="cpu", weights_only=True)
    if state.get("schema") != SCHEMA:
        raise CheckpointError(f"{info.path.name} is not a {SCHEMA} checkpoint")
    return state


def prune(output: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints with a manifest, and older torn ones."""
    good = [path for path in scan(output) if manifest_path(path).exists()]
    removed: list[Path] = []
    if not good:
        return removed
    kept = good[:keep]
    oldest_kept = int(_NAME.match(kept[-1].name).group(1))  # type: ignore[union-attr]
    for path in scan(output):
        step = int(_NAME.match(path.name).group(1))  # type: ignore[union-attr]
        if path in kept or step > oldest_kept:
            continue
        # The manifest goes first: a crash in between leaves a torn .pt, never a
        # manifest that names a missing file.
        manifest_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("pruned %s", ", ".join(p.name for p in removed))
    return removed


def remove_temporaries(output: Path) -> list[Path]:
    """Delete temporary files of writes that never finished (call before writing)."""
    if not output.is_dir():
        return []
    stale = [entry for entry in output.iterdir() if _TEMP.match(entry.name)]
    for entry in stale:
        log.warning("removing %s: a checkpoint write that did not finish", entry.name)
        entry.unlink(missing_ok=True)
    return stale


Staging = dict[tuple[Any, ...], torch.Tensor]


def snapshot(state: Any, staging: Staging | None = None) -> Any:
    """A copy of ``state`` that training can no longer change: tensors copied to the CPU.

    Tensors that share memory (a tied embedding and head) stay shared in the copy. With
    ``staging`` (the buffers of the previous copy, by position in the state), a tensor
    of the same shape and type is copied into its old buffer instead of a new one: fresh
    memory costs a page fault per 4 KiB, which makes the first copy several times slower.
    ``staging`` is updated to the buffers of this copy.
    """
    buffers: Staging = {} if staging is None else staging
    fresh: Staging = {}
    shared: dict[tuple[Any, ...], torch.Tensor] = {}
    copied = _copy(state, (), buffers, fresh, shared)
    buffers.clear()
    buffers.update(fresh)
    return copied


def _copy(
    node: Any,
    where: tuple[Any, ...],
    buffers: Staging,
    fresh: Staging,
    shared: dict[tuple[Any, ...], torch.Tensor],
) -> Any:
    if isinstance(node, torch.Tensor):
        key = (
            node.device,
            node.dtype,
            node.untyped_storage().data_ptr(),
            node.storage_offset(),
            tuple(node.shape),
            node.stride(),
        )
        if key not in shared:
            old = buffers.get(where)
            if old is not None and old.shape == node.shape and old.dtype == node.dtype:
                target = old
            else:
                # Pinned host memory lets the copy from a GPU run without a bounce buffer.
                target = torch.empty(
                    node.shape, dtype=node.dtype, pin_memory=node.device.type == "cuda"
                )
            shared[key] = target.copy_(node.detach(), non_blocking=node.device.type == "cuda")
        fresh[where] = shared[key]
        return shared[key]
    if isinstance(node, dict):
        return type(node)(
            (k, _copy(v, (*where, k), buffers, fresh, shared)) for k, v in node.items()
        )
    if isinstance(node, list | tuple):
        items = [_copy(v, (*where, i), buffers, fresh, shared) for i, v in enumerate(node)]
        return items if isinstance(node, list) else tuple(items)
    return node


WrittenCallback = Callable[[CheckpointInfo, float], None]


class Checkpointer:
    """Writes checkpoints for rank 0, in the calling thread or one background thread.

    ``on_written(info, duration_s)`` runs once a checkpoint is durable (in the writer
    thread when asynchronous); ``duration_s`` runs from the state's capture to the
    latest link pointing at it.
    """

    def __init__(
        self, output: Path, *, keep: int, async_write: bool, on_written: WrittenCallback
    ) -> None:
        self.output = output
        self.keep = keep
        self.async_write = async_write
        self.on_written = on_written
        self.last: CheckpointInfo | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._staging: Staging = {}

    def save(self, state: dict[str, Any], *, step: int, meta: dict[str, Any]) -> float:
        """Checkpoint ``state`` as ``step``; returns the seconds training was stalled."""
        started = time.monotonic()
        self.wait()
        if not self.async_write:
            self._write(state, step, meta, started)
            return time.monotonic() - started
        copied = snapshot(state, self._staging)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._thread = threading.Thread(
            target=self._write_catching,
            args=(copied, step, meta, started),
            name=f"checkpoint-{step}",
            daemon=False,
        )
        self._thread.start()
        return time.monotonic() - started

    def wait(self) -> CheckpointInfo | None:
        """Block until the write in flight (if any) is durable; re-raise its failure."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(f"checkpoint write failed: {error}") from error
        return self.last

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _write_catching(
        self, state: dict[str, Any], step: int, meta: dict[str, Any], started: float
    ) -> None:
        try:
            self._write(state, step, meta, started)
        except BaseException as exc:  # handed to the training thread by wait()
            self._error = exc

    def _write(
        self, state: dict[str, Any], step: int, meta: dict[str, Any], started: float
    ) -> None:
        info = write_checkpoint(self.output, state, step=step, meta=meta, keep=self.keep)
        self.last = info
        self.on_written(info, time.monotonic() - started)
