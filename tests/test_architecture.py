"""The layering of ARCHITECTURE.md and the lint rules hold, checked on every run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_import_contracts_hold():
    run = subprocess.run(
        [str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_lint_and_format():
    for args in (["check"], ["format", "--check"]):
        run = subprocess.run(
            [str(BIN / "ruff"), *args, "gpuwatch", "tests", "bench", "scripts"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_analysis_and_model_import_no_client_library():
    # Belt and braces for the import-linter contract: read the source itself.
    forbidden = ("kubernetes", "prometheus_api_client", "slack_sdk", "requests")
    for folder in ("analysis", "model"):
        for path in (REPO / "gpuwatch" / folder).rglob("*.py"):
            for line in path.read_text().splitlines():
                stripped = line.strip()
                if stripped.startswith(("import ", "from ")):
                    module = stripped.split()[1]
                    assert not module.startswith(forbidden), f"{path}: {stripped}"
