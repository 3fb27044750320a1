"""Field names shared by several domain types, and their JSON rendering.

Findings, cost lines, holders and pending pods all say where a GPU is and who holds it
with the same published names; listing them once keeps the JSON documents consistent.
"""

from __future__ import annotations

from typing import Any

HOLDER = ("namespace", "pod", "workload", "team")
"""Who holds a GPU."""
PLACEMENT = ("node", "pool", "model", "capacity_type", *HOLDER)
"""Where a GPU is, what it is, and who holds it."""


def fields_of(obj: object, *names: str) -> dict[str, Any]:
    """``{name: obj.name}`` for each name, in order (the JSON key order)."""
    return {name: getattr(obj, name) for name in names}
