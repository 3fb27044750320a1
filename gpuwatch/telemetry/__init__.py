"""gpuwatch's own metrics: what each cycle found, cost and did, for Prometheus."""
