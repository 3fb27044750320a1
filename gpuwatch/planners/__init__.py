"""Planners: what gpuwatch would do to the cluster, decided under safety guards.

Pure functions of a cycle's analysis (findings, savings, the cluster as read, settings):
each candidate becomes an ``Action``, planned or refused with the guard that said no.
Nothing here writes; ``gpuwatch.actuators`` carries planned actions out.
"""
