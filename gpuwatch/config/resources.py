"""Where the shipped defaults (``rules/``) are, in a checkout and in an installed wheel.

Users edit the copies at the top of the repository; the wheel carries them under
``gpuwatch/_shipped/`` so that ``pip install gpuwatch`` then ``gpuwatch demo`` works from
any directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def shipped_dir(name: str) -> Path:
    """The shipped folder ``name`` (``rules``): the wheel's copy, else the checkout's."""
    installed = _PACKAGE_DIR / "_shipped" / name
    if installed.is_dir():
        return installed
    checkout = _PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"shipped '{name}' folder not found in {installed} or {checkout}; reinstall gpuwatch"
    )
