"""Benchmark: one cycle of a simulated fleet, its analysis apart from its source.

Three measurements, each in its own process so that peak RSS is its own:

(a) gather: the cycle's reads from the simulator (window statistics, the week of hourly
    history the savings look back over, the cluster): wall time, peak RSS, and how many
    sample times the simulator generated against the distinct ones among them (1.0: each
    sample generated once in the cycle);
(b) analysis: the gathered inputs loaded from a pickle (window statistics and cluster
    in hand), then ``analyse`` (attribution, rules, cost, savings, plans) -> result:
    wall time, peak RSS, and the RSS before it started;
(c) the whole cycle (``run_cycle``: gather, analyse, effects recorded) as ``gpuwatch
    once`` runs it, and optionally ``gpuwatch demo`` (the cycle and the simulated week's
    report) as a command, its peak RSS the kernel's accounting of that process (``wait4``);
    with ``--demo-limit-gib 4``, run in a memory cgroup of that limit, as a pod's
    ``limits.memory`` runs it (root on Linux: ``MemoryCgroup``).

Targets at 10,000 GPUs: analysis within 3 s and 1 GiB; the demo within a 4 GiB pod. Run:

    .venv/bin/python bench/cycle.py --gpus 10000 [--demo | --demo-limit-gib 4]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peak_memory import peak_rss_mib
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.pipeline import Components
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.util.memory import use_system_allocator
from tests.builders import RecordingGenerator, simulated_components

GIB = 1024.0


def rss_now_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def components(gpus: int) -> tuple[SimulatedCluster, Components]:
    cluster = SimulatedCluster(SimulatorSettings(gpus=gpus), end=SHOWCASE_AT)
    return cluster, simulated_components(cluster)


def run_gather(gpus: int, out: Path) -> dict:
    from gpuwatch.pipeline import gather

    cluster, parts = components(gpus)
    generated = RecordingGenerator.record(cluster)
    settings = Settings()
    started = time.perf_counter()
    gathered = gather(parts, settings, SHOWCASE_AT)
    wall_s = time.perf_counter() - started
    times = generated.times()
    with open(out, "wb") as handle:
        pickle.dump(gathered, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return {
        "wall_s": wall_s,
        "peak_rss_mib": peak_rss_mib(),
        "generated_per_distinct": round(times.size / max(np.unique(times).size, 1), 3),
        "generate_calls": len(generated.calls),
    }


def run_analysis(gpus: int, path: Path) -> dict:
    from gpuwatch.pipeline import analyse

    _, parts = components(gpus)
    settings = Settings()
    with open(path, "rb") as handle:
        gathered = pickle.load(handle)
    before = rss_now_mib()
    started = time.perf_counter()
    analysis = analyse(gathered, parts.rules, parts.price_book, settings)
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": before,
        "findings": len(analysis.findings),
        "savings": len(analysis.savings.savings),
    }


def run_cycle_side(gpus: int) -> dict:
    from gpuwatch.pipeline import run_cycle

    _, parts = components(gpus)
    started = time.perf_counter()
    result = run_cycle(parts, Settings(), SHOWCASE_AT)
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
        "findings": len(result.findings),
    }


def child(*args: str) -> dict:
    command = [sys.executable, __file__, *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{args[:2]} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def demo(gpus: int, limit_gib: float | None = None) -> dict:
    """``gpuwatch demo --gpus N`` as a user runs it; its peak RSS from the kernel. With
    ``limit_gib``, in a memory cgroup limited to that, as a pod's ``limits.memory`` runs
    it: the cgroup's own peak (page cache included) and whether the limit was met."""
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="gpuwatch-bench-demo-"))
        group = stack.enter_context(MemoryCgroup(limit_gib)) if limit_gib else None
        started = time.perf_counter()
        with (Path(tmp) / "stderr").open("w+") as stderr:
            demo_process = subprocess.Popen(
                [sys.executable, "-m", "gpuwatch", "demo", "--gpus", str(gpus)],
                cwd=tmp,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                # The bench runs no threads of its own: joining the cgroup before exec
                # is safe here.
                preexec_fn=group.join if group else None,  # noqa: PLW1509
            )
            # The demo's own resource usage: RUSAGE_CHILDREN would be the largest of every
            # child so far (the gather's, had the demo needed less).
            status, usage = _wait4(demo_process, timeout_s=3600)
            demo_process.returncode = os.waitstatus_to_exitcode(status)
            stderr.seek(0)
            errors = stderr.read()[-3000:]
        wall_s = time.perf_counter() - started
        limited = group.figures() if group else {}
    code = demo_process.returncode
    if code != 0:
        killed = " (killed: -9 is the kernel's OOM killer where a limit was set)"
        raise SystemExit(
            f"demo failed, exit status {code}{killed if code < 0 else ''}; "
            f"{limited or 'no memory limit'}\n{errors}"
        )
    return {"wall_s": wall_s, "peak_rss_mib": usage.ru_maxrss / 1024, **limited}


def _wait4(process: subprocess.Popen, timeout_s: float) -> tuple[int, resource.struct_rusage]:
    """Wait for ``process`` (killed after ``timeout_s``): its wait status and its own
    resource usage."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.monotonic() > deadline:
            process.kill()
            deadline = float("inf")  # and reap it
        time.sleep(0.2)


class MemoryCgroup:
    """A memory cgroup of its own, limited to ``limit_gib`` without swap, for the demo's
    process (``join`` runs in the child before it starts): the kernel's controller, as
    the kubelet sets a pod's ``limits.memory``. cgroup v2 (``memory.max``, ``memory.peak``,
    ``memory.events``) or v1 (``memory.limit_in_bytes``, ``memory.max_usage_in_bytes``,
    ``memory.failcnt``); it needs root. Measured with v1; the v2 files follow the
    kernel's documentation (Documentation/admin-guide/cgroup-v2.rst)."""

    V2 = Path("/sys/fs/cgroup")
    V1 = Path("/sys/fs/cgroup/memory")

    def __init__(self, limit_gib: float) -> None:
        self.limit = int(limit_gib * 2**30)
        name = f"gpuwatch-bench-{os.getpid()}"
        controllers = self.V2 / "cgroup.controllers"
        self.v2 = controllers.exists() and "memory" in controllers.read_text().split()
        self.path = (self.V2 if self.v2 else self.V1) / name

    def __enter__(self) -> MemoryCgroup:
        try:
            self.path.mkdir()
            if self.v2:
                (self.path / "memory.max").write_text(str(self.limit))
                (self.path / "memory.swap.max").write_text("0")
            else:
                (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
        except OSError as exc:
            self.__exit__()
            raise SystemExit(
                f"--demo-limit-gib needs a memory cgroup it may create ({self.path}: {exc}); "
                "run the bench as root on Linux with the memory controller"
            ) from exc
        return self

    def __exit__(self, *_: object) -> None:
        if self.path.exists():
            self.path.rmdir()

    def join(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def figures(self) -> dict:
        if self.v2:
            peak = int((self.path / "memory.peak").read_text())
            events = dict(
                line.split() for line in (self.path / "memory.events").read_text().splitlines()
            )
            hits = int(events.get("max", 0)) + int(events.get("oom_kill", 0))
        else:
            peak = int((self.path / "memory.max_usage_in_bytes").read_text())
            hits = int((self.path / "memory.failcnt").read_text())
        return {
            "limit_mib": round(self.limit / 2**20),
            "cgroup_peak_mib": round(peak / 2**20),
            "limit_reached": hits,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=10000)
    parser.add_argument("--demo", action="store_true", help="Also run `gpuwatch demo`.")
    parser.add_argument(
        "--demo-limit-gib",
        type=float,
        help="Run the demo in a memory cgroup limited to this many GiB (root, Linux).",
    )
    parser.add_argument("--side", choices=("gather", "analysis", "cycle"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        use_system_allocator()  # Arrow's allocator, as the command line chooses it
    if args.side == "gather":
        print(json.dumps(run_gather(args.gpus, args.path)))
        return
    if args.side == "analysis":
        print(json.dumps(run_analysis(args.gpus, args.path)))
        return
    if args.side == "cycle":
        print(json.dumps(run_cycle_side(args.gpus)))
        return

    gpus = str(args.gpus)
    with tempfile.TemporaryDirectory(prefix="gpuwatch-bench-cycle-") as tmp:
        path = Path(tmp) / "gathered.pickle"
        gathered = child("--side", "gather", "--gpus", gpus, "--path", str(path))
        analysis = child("--side", "analysis", "--gpus", gpus, "--path", str(path))
    cycle = child("--side", "cycle", "--gpus", gpus)
    print(f"{args.gpus} GPUs, one cycle at {SHOWCASE_AT:%Y-%m-%dT%H:%MZ}")
    print(
        f"gather    {gathered['wall_s']:6.2f} s  {gathered['peak_rss_mib']:6.0f} MiB  "
        f"samples generated per distinct sample {gathered['generated_per_distinct']}"
    )
    print(
        f"analysis  {analysis['wall_s']:6.2f} s  {analysis['peak_rss_mib']:6.0f} MiB  "
        f"({analysis['rss_before_mib']:.0f} MiB before; target 3 s, {GIB:.0f} MiB)"
    )
    print(f"cycle     {cycle['wall_s']:6.2f} s  {cycle['peak_rss_mib']:6.0f} MiB")
    result = {
        "bench": "cycle",
        "gpus": args.gpus,
        "gather_s": round(gathered["wall_s"], 2),
        "gather_peak_rss_mib": round(gathered["peak_rss_mib"]),
        "generated_per_distinct": gathered["generated_per_distinct"],
        "analysis_s": round(analysis["wall_s"], 2),
        "analysis_peak_rss_mib": round(analysis["peak_rss_mib"]),
        "analysis_within_target": analysis["wall_s"] <= 3.0 and analysis["peak_rss_mib"] <= GIB,
        "cycle_s": round(cycle["wall_s"], 2),
        "cycle_peak_rss_mib": round(cycle["peak_rss_mib"]),
        "demo_s": None,
        "demo_peak_rss_mib": None,
    }
    if args.demo or args.demo_limit_gib:
        shown = demo(args.gpus, args.demo_limit_gib)
        print(f"demo      {shown['wall_s']:6.2f} s  {shown['peak_rss_mib']:6.0f} MiB  (4 GiB pod)")
        result.update(
            demo_s=round(shown["wall_s"], 1), demo_peak_rss_mib=round(shown["peak_rss_mib"])
        )
        if args.demo_limit_gib:
            print(
                f"          in a cgroup limited to {shown['limit_mib']:.0f} MiB: its peak "
                f"{shown['cgroup_peak_mib']:.0f} MiB (page cache included), the limit "
                f"reached {shown['limit_reached']} times"
            )
            result.update(
                demo_limit_mib=round(shown["limit_mib"]),
                demo_cgroup_peak_mib=round(shown["cgroup_peak_mib"]),
                demo_limit_reached=shown["limit_reached"],
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
