"""Where Arrow's buffers come from: the C library's allocator, chosen once per process.

pyarrow's wheels default to a bundled mimalloc that hands freed pages back to the kernel
within milliseconds. A report allocates and frees column-sized buffers thousands of
times, so each one is faulted in again, page by page: on a 10,000-GPU week that was 3 to
5 s of system time, a third of the report. glibc's malloc keeps recently freed blocks for
the next allocation of that size, which turned those seconds into 1 to 1.5 s at ~10 %
more peak memory (``docs/performance.md``, "Arrow's allocator").

Arrow's own ``ARROW_DEFAULT_MEMORY_POOL`` (``system``, ``jemalloc``, ``mimalloc``) still
decides where a user sets it.
"""

from __future__ import annotations

import os

import pyarrow as pa

POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def use_system_allocator() -> str:
    """Make the C library's allocator Arrow's default pool for the rest of the process,
    unless ``ARROW_DEFAULT_MEMORY_POOL`` names one; return the pool's backend in use.
    Buffers allocated before keep the pool they came from."""
    if not os.environ.get(POOL_ENV):
        pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name
