"""How long training stalls for a checkpoint: plain torch.save, gpuwatch sync, gpuwatch async.

One run, one model, one state, measured side by side:

- ``torch.save`` straight to the path, as the usual recipe does (no fsync, not
  atomic: the page cache absorbs the write, so this is the cheapest possible stall);
- the job's synchronous checkpoint (temporary file, SHA-256, fsync, ``os.replace``,
  directory fsync, manifest, latest link);
- the job's asynchronous checkpoint (``--async-checkpoint``): training stalls only for
  the copy of the state; the write above runs in a background thread. Its duration is
  reported too, and so is the speed of training steps taken while it runs.

The state is the one the job writes: a model sized by the flags, AdamW after a few
steps (so its moments exist), scheduler, scaler and RNG states.

    .venv/bin/python bench/checkpoint.py [--d-model 512 --layers 8 --vocab-size 32000]

The last line is one JSON object: ``{"bench": "checkpoint", ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gpuwatch.workload import checkpoint, rng
from gpuwatch.workload.config import TrainConfig
from gpuwatch.workload.model import build_model, parameter_count


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, vocab: int) -> None:
    inputs = torch.randint(0, vocab, (2, 64))
    model(inputs, inputs).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()

    config = TrainConfig(
        output=Path("unused"),
        d_model=args.d_model,
        layers=args.layers,
        heads=8,
        vocab_size=args.vocab_size,
        seq_len=64,
    )
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for _ in range(2):
        _train_step(model, optimizer, args.vocab_size)
    state: dict[str, Any] = {
        "schema": checkpoint.SCHEMA,
        "step": 2,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": {},
        "rng": [rng.capture()],
    }
    meta = {"saved_at_unix": time.time()}

    # Training speed with nothing in the background, for the async comparison.
    started = time.perf_counter()
    idle_steps = 3
    for _ in range(idle_steps):
        _train_step(model, optimizer, args.vocab_size)
    idle_step_s = (time.perf_counter() - started) / idle_steps

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        plain, sync, async_stall, async_total, busy_step_s = [], [], [], [], []
        # One writer of each kind for the whole run, as in the job: the async one keeps
        # its staging buffers from one checkpoint to the next.
        sync_writer = checkpoint.Checkpointer(
            folder / "sync", keep=1, async_write=False, on_written=lambda i, d: None
        )
        async_writer = checkpoint.Checkpointer(
            folder / "async",
            keep=1,
            async_write=True,
            on_written=lambda info, d: async_total.append(d),
        )
        for i in range(args.repeats):
            started = time.perf_counter()
            torch.save(state, folder / f"plain_{i}.pt")
            plain.append(time.perf_counter() - started)
            (folder / f"plain_{i}.pt").unlink()

            sync.append(sync_writer.save(state, step=i, meta=meta))

            async_stall.append(async_writer.save(state, step=i, meta=meta))
            steps, started = 0, time.perf_counter()
            while async_writer.busy:
                _train_step(model, optimizer, args.vocab_size)
                steps += 1
            if steps:
                busy_step_s.append((time.perf_counter() - started) / steps)
            async_writer.wait()
        size = next((folder / "sync").glob("*.pt")).stat().st_size

    def med(values: list[float]) -> float:
        return statistics.median(values)

    # The first asynchronous copy allocates its staging buffers; later ones reuse them.
    first_async_stall = async_stall[0]
    if len(async_stall) > 1:
        async_stall = async_stall[1:]

    rows = [
        ("torch.save to the path (the usual recipe)", med(plain), med(plain)),
        ("gpuwatch sync (atomic, fsync, sha256)", med(sync), med(sync)),
        ("gpuwatch async (--async-checkpoint)", med(async_stall), med(async_total)),
    ]
    print(f"model {parameter_count(model):,} parameters; checkpoint {size / 1e6:,.0f} MB")
    print(f"{'path (median of --repeats)':<42} {'stall':>9} {'until durable':>14}")
    for name, stall, total in rows:
        print(f"{name:<42} {stall:>8.3f}s {total:>13.3f}s")
    ratio = med(plain) / med(async_stall)
    print(
        f"async stalls {ratio:.1f}x less than torch.save and {med(sync) / med(async_stall):.1f}x "
        f"less than the sync path; a training step takes {idle_step_s:.3f} s idle, "
        + (f"{med(busy_step_s):.3f} s while the write runs" if busy_step_s else "no step fit")
        + f"; the first async copy (allocating its buffers) stalled {first_async_stall:.3f} s"
    )
    print(
        json.dumps(
            {
                "bench": "checkpoint",
                "parameters": parameter_count(model),
                "checkpoint_bytes": size,
                "repeats": args.repeats,
                "torch_save_stall_s": round(med(plain), 4),
                "sync_stall_s": round(med(sync), 4),
                "async_stall_s": round(med(async_stall), 4),
                "async_first_stall_s": round(first_async_stall, 4),
                "async_until_durable_s": round(med(async_total), 4),
                "ratio_torch_save_over_async_stall": round(ratio, 2),
                "ratio_sync_over_async_stall": round(med(sync) / med(async_stall), 2),
                "step_s_idle": round(idle_step_s, 4),
                "step_s_during_async_write": round(med(busy_step_s), 4) if busy_step_s else None,
            }
        )
    )


if __name__ == "__main__":
    main()
