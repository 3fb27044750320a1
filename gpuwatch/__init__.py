"""gpuwatch: GPU cost and utilization daemon for Kubernetes clusters that run AI work.

The package is layered (see ``pyproject.toml``'s import-linter contracts):
``cli`` -> ``wiring`` -> ``pipeline`` -> ``sources | analysis | notify | state`` ->
``config`` -> ``model``. Nothing below ``pipeline`` imports anything above it.
"""

from __future__ import annotations

__version__ = "0.1.0"
