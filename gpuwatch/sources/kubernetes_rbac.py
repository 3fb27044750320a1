"""The Kubernetes API permissions the cluster source needs (``cluster.source: kubernetes``).

``gpuwatch.sources.kubernetes.KubernetesClusterSource`` only reads, and only with
cluster-wide paginated ``list`` calls; it never ``get``s, ``watch``es or writes. Each
rule below names the calls that need it:

- ``nodes``: ``CoreV1Api.list_node`` (pools, capacity type, GPU capacity, taints);
- ``pods``: ``CoreV1Api.list_pod_for_all_namespaces`` (who holds which GPU, Pending
  GPU pods);
- ``namespaces``: ``CoreV1Api.list_namespace`` (team labels on namespaces);
- ``apps`` ``replicasets``, ``deployments``, ``statefulsets``: their
  ``list_*_for_all_namespaces`` (owners of pods, resolved up to the Deployment);
- ``batch`` ``jobs``, ``cronjobs``: their ``list_*_for_all_namespaces`` (likewise);
- ``kubeflow.org`` ``pytorchjobs``, ``notebooks``: ``CustomObjectsApi.list_cluster_
  custom_object`` (``KUBEFLOW_RESOURCES``; a 404 where the CRD is not installed means
  none, and the grant is harmless there).

``deploy/base`` grants exactly these in the ClusterRole ``gpuwatch-read``;
``tests/deploy/test_kustomize.py`` keeps the two equal, and checks that the source
lists nothing this does not grant. The state and silences ConfigMaps and the Lease
declare their own rules beside their code (``gpuwatch.state.configmap``,
``gpuwatch.sources.silences``, ``gpuwatch.kube.lease``); the actions' rules, per
mechanism, and what a configuration needs in all are ``gpuwatch.actuators.rbac``.
"""

from __future__ import annotations

from typing import Any

RBAC_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["nodes", "pods", "namespaces"], "verbs": ["list"]},
    {
        "apiGroups": ["apps"],
        "resources": ["replicasets", "deployments", "statefulsets"],
        "verbs": ["list"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs", "notebooks"], "verbs": ["list"]},
)
