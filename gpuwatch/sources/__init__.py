"""Adapters to the outside world (metrics, cluster state) behind small protocols.

Only the adapter module of a system imports its client library; what leaves a source is
a domain type from ``gpuwatch.model``.
"""
