"""The settings sections, one module per part of gpuwatch they configure.

- ``base``: the strict model every section derives from, shared types and validators;
- ``sources``: the simulator, Prometheus and DCGM names, the cluster and Kubernetes API,
  attribution to pools and teams;
- ``analysis``: rules, pricing and savings;
- ``actions``: what gpuwatch may do to a cluster, and when;
- ``notify``: routes, silences, Slack and alert timing;
- ``runtime``: output, state, self-metrics, the weekly report and the daemon.

``gpuwatch.config.settings`` assembles them into ``Settings`` and re-exports every model.
"""
