"""Benchmark: how long `make demo` takes on a fresh machine, against installing with pip.

A copy of the working tree (the files git tracks, as they are now) in a temporary
folder, no pip or uv cache (``PIP_NO_CACHE_DIR``, ``UV_NO_CACHE``), packages downloaded
from the index as on a machine that never installed them; side by side in one run:

(a) pip: a fresh virtualenv and ``pip install --constraint requirements/constraints.txt
    -e .`` (what the Makefile did before uv, less the test tools and torch);
(b) ``make demo``: a fresh virtualenv, uv from pip, gpuwatch and its dependencies by
    uv under the same constraints.

Each is timed in two parts, the set-up and then the demo itself (its first run, which
also compiles the modules it imports). Run:

    .venv/bin/python bench/setup_demo.py          # about a minute and a half

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRESH = {**os.environ, "PIP_NO_CACHE_DIR": "1", "UV_NO_CACHE": "1"}


def copy_tree(target: Path) -> None:
    """The files git tracks, as the working tree has them (committed or not)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    run = subprocess.run(command, cwd=cwd, env=FRESH, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return time.perf_counter() - started


def with_pip(tree: Path) -> dict[str, float]:
    python = shutil.which("python3") or sys.executable  # as the Makefile's PYTHON
    setup = timed([python, "-m", "venv", ".venv"], tree)
    setup += timed(
        [
            ".venv/bin/python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--constraint",
            "requirements/constraints.txt",
            "-e",
            ".",
        ],
        tree,
    )
    demo = timed([".venv/bin/gpuwatch", "demo"], tree)
    return {"setup_s": setup, "demo_s": demo}


def with_make(tree: Path) -> dict[str, float]:
    setup = timed(["make", ".venv/.installed-demo"], tree)
    demo = timed(["make", "demo"], tree)
    return {"setup_s": setup, "demo_s": demo}


def main() -> None:
    results = {}
    for name, side in (("pip", with_pip), ("make demo", with_make)):
        with tempfile.TemporaryDirectory(prefix="gpuwatch-fresh-") as tmp:
            tree = Path(tmp)
            copy_tree(tree)
            results[name] = side(tree)
        total = sum(results[name].values())
        print(
            f"{name:10s} set-up {results[name]['setup_s']:5.1f} s  demo "
            f"{results[name]['demo_s']:5.1f} s  total {total:5.1f} s"
        )
    pip, make = (sum(results[name].values()) for name in ("pip", "make demo"))
    setup_ratio = results["pip"]["setup_s"] / results["make demo"]["setup_s"]
    print(f"make demo: {pip / make:.1f}x faster in all, set-up {setup_ratio:.1f}x")
    print(
        json.dumps(
            {
                "bench": "setup_demo",
                "wall_s": round(make, 1),
                "setup_s": round(results["make demo"]["setup_s"], 1),
                "demo_s": round(results["make demo"]["demo_s"], 1),
                "baseline_s": round(pip, 1),
                "baseline_setup_s": round(results["pip"]["setup_s"], 1),
                "speedup": round(pip / make, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
