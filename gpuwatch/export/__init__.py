"""gpuwatch's rules in other systems' formats, for teams that alert through those systems.

An export is not a source: it reads no metrics and no cluster, it translates the rules
and settings into a document another system evaluates (``gpuwatch rules export``).
``prometheus_rule`` writes the Prometheus Operator's ``PrometheusRule``, from the alerting
rules ``alerting_rules`` builds with the Prometheus source's own PromQL
(``gpuwatch.promql``).
"""
