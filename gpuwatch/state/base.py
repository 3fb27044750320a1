"""The state seam."""

from __future__ import annotations

from typing import Protocol

from gpuwatch.model.state import CycleState


class StateStore(Protocol):
    name: str

    def load(self) -> CycleState:
        """The saved state; an empty one when nothing was saved yet."""
        ...

    def save(self, state: CycleState) -> None: ...


class MemoryState:
    """In-process state, for tests and one-off runs."""

    name = "memory"

    def __init__(self, state: CycleState | None = None) -> None:
        self._state = state or CycleState()

    def load(self) -> CycleState:
        return self._state.copy()

    def save(self, state: CycleState) -> None:
        self._state = state.copy()
