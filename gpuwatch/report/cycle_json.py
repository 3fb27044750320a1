"""Write a cycle's result as one JSON document, named by its evaluation instant.

The document is redacted as a whole (``gpuwatch.util.redact``): whatever a source's
error or a note quoted, no secret reaches the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpuwatch.model.result import CycleResult
from gpuwatch.util.atomic import write_atomic
from gpuwatch.util.redact import redact


def cycle_json_path(result: CycleResult, out_dir: Path) -> Path:
    return out_dir / f"cycle-{result.at.strftime('%Y%m%dT%H%M%SZ')}.json"


def write_cycle_json(result: CycleResult, out_dir: Path) -> Path:
    """Write ``cycle-<at>.json`` and ``cycle-latest.json`` into ``out_dir``; return the first."""
    text = redact(json.dumps(result.to_dict(), indent=2, ensure_ascii=False)) + "\n"
    path = cycle_json_path(result, out_dir)
    write_atomic(path, text)
    write_atomic(out_dir / "cycle-latest.json", text)
    return path
