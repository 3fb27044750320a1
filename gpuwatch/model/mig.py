"""MIG profiles as NVIDIA's hardware defines them: how many instances of a profile one
GPU holds, and how many compute slices a profile takes.

A node advertises MIG instances, not GPUs (``nvidia.com/mig-3g.40gb: 16``, or
``nvidia.com/gpu: 16`` under the single strategy); the number of cards behind them
follows from these facts. Profile names repeat across models with different meanings
(``1g.10gb`` is a seventh of an A100-80GB but a quarter of an A100-40GB), so a lookup
takes the model where it is known. Source: NVIDIA's MIG user guide, "Supported MIG
profiles".
"""

from __future__ import annotations

import re

COMPUTE_SLICES_PER_GPU = 7
"""Compute slices (GPCs) of a MIG-capable GPU: 7 on the A100, H100, H200 and B200."""
_COMPUTE_SLICES_OF_FAMILY = {"a30": 4}

# Model family -> profile -> instances of that profile one GPU holds.
INSTANCES_PER_GPU: dict[str, dict[str, int]] = {
    "a100-40gb": {
        "1g.5gb": 7, "1g.5gb+me": 1, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1,
        "7g.40gb": 1,
    },
    "80gb": {  # A100-80GB, H100 80GB (SXM and PCIe), H800
        "1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1,
        "7g.80gb": 1,
    },
    "h100-94gb": {  # H100 NVL and H100 94GB
        "1g.12gb": 7, "1g.12gb+me": 1, "1g.24gb": 4, "2g.24gb": 3, "3g.47gb": 2, "4g.47gb": 1,
        "7g.94gb": 1,
    },
    "h200": {
        "1g.18gb": 7, "1g.18gb+me": 1, "1g.35gb": 4, "2g.35gb": 3, "3g.71gb": 2, "4g.71gb": 1,
        "7g.141gb": 1,
    },
    "b200": {
        "1g.23gb": 7, "1g.23gb+me": 1, "1g.45gb": 4, "2g.45gb": 3, "3g.90gb": 2, "4g.90gb": 1,
        "7g.180gb": 1,
    },
    "a30": {"1g.6gb": 4, "1g.6gb+me": 1, "2g.12gb": 2, "2g.12gb+me": 1, "4g.24gb": 1},
}  # fmt: skip
_FAMILY_OF_MODEL = (
    (("a100", "40gb"), "a100-40gb"),
    (("a30",), "a30"),
    (("h200",), "h200"),
    (("b200",), "b200"),
    (("nvl",), "h100-94gb"),
    (("94gb",), "h100-94gb"),
    (("a100",), "80gb"),
    (("h100",), "80gb"),
    (("h800",), "80gb"),
)
# Where a profile name means different things, the family to assume without a model:
# the 80GB class is by far the most deployed.
_DEFAULT_FAMILY = "80gb"
_COMPUTE_SLICES = re.compile(r"^(?P<slices>\d+)g\.", re.IGNORECASE)


def compute_slices(profile: str) -> int | None:
    """``3g.40gb`` -> 3: the compute slices a MIG profile takes; None when unreadable."""
    match = _COMPUTE_SLICES.match(profile)
    return int(match["slices"]) if match else None


def family_of(model: str | None) -> str | None:
    """The MIG family of a GPU model name (any spelling: ``NVIDIA-A100-SXM4-40GB``,
    ``NVIDIA H100 NVL``); None when the model is unknown or not MIG-capable."""
    words = re.split(r"[\s_\-]+", (model or "").lower())
    text = " ".join(words)
    for needles, family in _FAMILY_OF_MODEL:
        if all(needle in text for needle in needles):
            return family
    return None


def instances_per_gpu(profile: str, model: str | None = None) -> int | None:
    """How many instances of ``profile`` one GPU of ``model`` holds; None when the
    profile is unknown (the caller then falls back to its compute slices)."""
    family = family_of(model)
    if family is not None and profile in INSTANCES_PER_GPU[family]:
        return INSTANCES_PER_GPU[family][profile]
    counts = {f: table[profile] for f, table in INSTANCES_PER_GPU.items() if profile in table}
    if not counts:
        return None
    return counts.get(_DEFAULT_FAMILY, next(iter(counts.values())))


def family_of_profiles(profiles: list[str] | tuple[str, ...]) -> str | None:
    """The one family whose table holds every profile (``1g.6gb`` is an A30's alone);
    None when several or none do."""
    families = [f for f, table in INSTANCES_PER_GPU.items() if all(p in table for p in profiles)]
    return families[0] if len(families) == 1 else None


def compute_slices_per_gpu(model: str | None, profiles: tuple[str, ...] = ()) -> int:
    """Compute slices of one GPU of ``model`` (4 on the A30, else 7), the model read from
    the profiles where its name is unknown."""
    family = family_of(model) or family_of_profiles(profiles)
    return _COMPUTE_SLICES_OF_FAMILY.get(family or "", COMPUTE_SLICES_PER_GPU)
