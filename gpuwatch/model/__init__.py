"""Pure domain types and frames: no I/O, no client library imports.

Everything that crosses a seam (metrics, cluster, state, notifications) is one of these
types. Field names carry their unit (``_s``, ``_mib``, ``_ratio`` in 0..1, ``_c``, ``_w``).
"""
