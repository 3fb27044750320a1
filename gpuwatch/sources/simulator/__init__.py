"""The embedded simulated GPU cluster: deterministic, seeded, laptop-sized or fleet-sized.

It stands in for both DCGM-exporter-via-Prometheus and the Kubernetes API, producing
exactly the domain objects the real sources produce, so that every layer above runs
unchanged on a laptop. See ``layout.py`` for the scenario and which workload triggers
which rule.
"""

from gpuwatch.sources.simulator.cluster import SimulatedCluster
from gpuwatch.sources.simulator.source import SimulatorClusterSource, SimulatorMetricsSource

__all__ = ["SimulatedCluster", "SimulatorClusterSource", "SimulatorMetricsSource"]
