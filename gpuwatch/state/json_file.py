"""State in a local JSON file, written atomically.

Written atomically (see ``gpuwatch.util.atomic``) and redacted (``gpuwatch.util.redact``:
an undelivered message's error may quote what it was sent to). A file that cannot be
parsed is moved aside, never overwritten, so that nothing in it is lost.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from gpuwatch.model.errors import StateError
from gpuwatch.model.state import CycleState
from gpuwatch.util.atomic import write_atomic
from gpuwatch.util.redact import redact


class JsonFileState:
    name = "json-file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> CycleState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return CycleState()
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read state: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return CycleState.from_dict(data)
        except ValueError as exc:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            self.path.replace(aside)
            raise StateError(
                f"{self.path}: unreadable state ({exc}); moved to {aside}, starting afresh",
                set_aside=True,
            ) from exc

    def save(self, state: CycleState) -> None:
        write_atomic(self.path, redact(json.dumps(state.to_dict(), indent=2)) + "\n")
