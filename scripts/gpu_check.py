"""Checks of the training job that need a GPU: bf16 autocast, NCCL, CUDA RNG, exact resume.

Not part of CI (no GPU there). Run it on a machine with one or more NVIDIA GPUs and
the train extra installed:

    python scripts/gpu_check.py            # about a minute on one GPU
    python scripts/gpu_check.py --allow-cpu  # the same checks' plumbing on a CPU (gloo)

1. CUDA RNG: ``gpuwatch.workload.rng`` captures and restores every device's generator
   (draws after a restore repeat the draws after the capture).
2. Exact resume on the GPU: bf16 autocast, ``--deterministic``; a run stopped by SIGTERM
   and resumed ends with the same bits as one that never stopped (on a GPU that needs
   deterministic kernels, hence the flag; without it the script reports the difference).
3. NCCL under torchrun (``gpuwatch.workload.launch``) on up to two GPUs: SIGTERM to the
   launcher, exit 143, resume from the checkpoint rank 0 wrote.
4. Asynchronous checkpoint from GPU memory: training stall of the pinned-memory copy
   against the synchronous write.

The last line is one JSON object: ``{"gpu_check": {...}, "ok": true|false}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gpuwatch.workload import checkpoint, rng
from gpuwatch.workload.config import TrainConfig
from gpuwatch.workload.model import build_model

MODEL = ["--d-model=256", "--layers=4", "--heads=8", "--seq-len=128", "--vocab-size=4096"]


def _start(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - the child writes it until it exits
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def _wait_for(log: Path, pattern: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and re.search(pattern, log.read_text()):
            return
        time.sleep(0.01)
    raise TimeoutError(f"no {pattern!r} in {log}")


def _final(output: Path, steps: int) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(
        output / f"checkpoint_step_{steps:09d}.pt", map_location="cpu", weights_only=True
    )
    return state


def _max_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference over model parameters and optimizer moments."""
    worst = 0.0
    for key in a["model"]:
        worst = max(worst, (a["model"][key].float() - b["model"][key].float()).abs().max().item())
    for index, moments in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            other = b["optimizer"]["state"][index][name]
            worst = max(worst, (moments[name] - other).abs().max().item())
    return worst


def check_cuda_rng() -> dict[str, Any]:
    torch.cuda.manual_seed_all(1234)
    saved = rng.capture()
    first = [torch.rand(8, device=f"cuda:{d}") for d in range(torch.cuda.device_count())]
    rng.restore(saved)
    again = [torch.rand(8, device=f"cuda:{d}") for d in range(torch.cuda.device_count())]
    same = all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    return {"ok": same, "devices": len(saved["cuda"])}


def check_resume(work: Path, device_flags: list[str], steps: int = 60) -> dict[str, Any]:
    common = [*MODEL, *device_flags, f"--steps={steps}", "--seed=11", "--log-every=1"]
    common += ["--checkpoint-interval=0", "--batch-size=16", "--workers=2"]
    module = ["-m", "gpuwatch.workload.train"]
    ref = _start([*module, *common, f"--output={work / 'ref'}"], work / "ref.log")
    ref_code = ref.wait()
    first = _start([*module, *common, f"--output={work / 'run'}"], work / "first.log")
    _wait_for(work / "first.log", r" step 20 loss ")
    first.send_signal(signal.SIGTERM)
    first_code = first.wait()
    second = _start([*module, *common, f"--output={work / 'run'}"], work / "second.log")
    second_code = second.wait()
    codes = [ref_code, first_code, second_code]
    if codes != [0, 143, 0]:
        return {"ok": False, "exit_codes": codes, "logs": str(work)}
    difference = _max_difference(_final(work / "ref", steps), _final(work / "run", steps))
    took = re.search(r"on disk ([\d.]+) s after the signal", (work / "first.log").read_text())
    return {
        "ok": difference == 0.0,
        "max_abs_difference": difference,
        "sigterm_to_disk_s": float(took.group(1)) if took else None,
    }


def check_launcher(
    work: Path, nproc: int, device_flags: list[str], steps: int = 40
) -> dict[str, Any]:
    args = [
        "-m",
        "gpuwatch.workload.launch",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--module",
        "gpuwatch.workload.train",
        *MODEL,
        *device_flags,
        f"--steps={steps}",
        "--log-every=1",
        "--checkpoint-interval=0",
        f"--output={work / 'ddp'}",
    ]
    first = _start(args, work / "ddp-first.log")
    _wait_for(work / "ddp-first.log", r"rank0 INFO \S+: step 10 loss ")
    first.send_signal(signal.SIGTERM)
    first_code = first.wait()
    second_code = _start(args, work / "ddp-second.log").wait()
    text = (work / "ddp-first.log").read_text()
    backend = re.search(r"joined \((\w+) on", text)
    return {
        "ok": [first_code, second_code] == [143, 0],
        "exit_codes": [first_code, second_code],
        "backend": backend.group(1) if backend else None,
        "ranks": nproc,
    }


def check_async_stall(work: Path, device: str) -> dict[str, Any]:
    config = TrainConfig(output=work, d_model=1024, layers=8, heads=16, vocab_size=32000)
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters())
    inputs = torch.randint(0, config.vocab_size, (2, 64), device=device)
    model(inputs, inputs).backward()
    optimizer.step()
    state = {
        "schema": checkpoint.SCHEMA,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    meta = {"saved_at_unix": time.time()}
    sync = checkpoint.Checkpointer(
        work / "sync", keep=1, async_write=False, on_written=lambda i, d: None
    )
    background = checkpoint.Checkpointer(
        work / "async", keep=1, async_write=True, on_written=lambda i, d: None
    )
    sync_stall = sync.save(state, step=1, meta=meta)
    stalls = []
    for step in range(3):  # the first copy allocates its pinned buffers
        stalls.append(background.save(state, step=step, meta=meta))
        background.wait()
    return {
        "ok": True,
        "sync_stall_s": round(sync_stall, 4),
        "async_stall_s": round(min(stalls[1:]), 4),
        "async_first_stall_s": round(stalls[0], 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run the plumbing on a CPU")
    parser.add_argument("--keep", type=Path, help="keep logs and checkpoints here")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("no CUDA device: run this on a GPU machine (or --allow-cpu)", file=sys.stderr)
        return 2
    if cuda:
        device_flags = ["--device=cuda", "--amp=bf16", "--deterministic"]
    else:
        device_flags = ["--device=cpu", "--amp=bf16"]
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        work = Path(tmp)
        if cuda:
            results["cuda_rng"] = check_cuda_rng()
        results["resume"] = check_resume(work, device_flags)
        nproc = min(2, torch.cuda.device_count()) if cuda else 2
        results["launcher"] = check_launcher(work, nproc, device_flags)
        results["async_checkpoint"] = check_async_stall(work, "cuda" if cuda else "cpu")
    ok = all(v.get("ok", True) for v in results.values() if isinstance(v, dict))
    print(json.dumps({"gpu_check": results, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
