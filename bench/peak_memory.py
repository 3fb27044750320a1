"""A bench side's peak memory, as its own process reached it.

Each bench runs its sides in child processes so that each peak is its own. Linux keeps
``ru_maxrss`` across fork and exec, though: a side started while the bench itself holds
a large amount of memory (the samples it just generated, an S3 server and its objects)
would report the bench's peak instead. ``VmHWM`` is the high-water mark of the process'
own memory image, which exec starts afresh.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """This process' peak resident memory in MiB (``ru_maxrss`` where ``/proc`` is not)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
