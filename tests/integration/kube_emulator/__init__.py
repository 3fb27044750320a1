"""An emulated Kubernetes API server on loopback, driven by the real ``kubernetes`` client.

No API server binary can be installed here, and patching the client's methods would
test nothing of how gpuwatch talks to a cluster. This serves HTTP on 127.0.0.1 (an
ephemeral port) and answers the way kube-apiserver does for what gpuwatch reads and
writes: status codes, ``Status`` bodies with ``reason``/``message``/``code``/``details``,
and resourceVersion semantics.

What it serves
--------------
- get and list for core/v1, named groups and custom resources once "installed"
  (``install(*KUBEFLOW_RESOURCES)``, ``KARPENTER_RESOURCES``, ``CLUSTER_API_RESOURCES``);
  built-in list items without ``kind``/``apiVersion``, custom resources with them;
  ``labelSelector`` and ``fieldSelector`` (only the fields the real server indexes);
- pagination: ``limit``, an opaque ``continue`` token, ``remainingItemCount``, a list
  consistent across pages, and 410 Expired once the token's revision is compacted;
- create (201; 409 AlreadyExists; ``generateName``; 422 for a bad or missing name),
  update (PUT) and patch: strategic merge patch for built-in kinds (what the client
  sends for a dict body), JSON merge patch, JSON patch (what it sends for a list body);
  a stale ``metadata.resourceVersion`` answers 409 Conflict; custom resources and Leases
  refuse an update without one (422), as their registries do;
- every write takes the next value of one global resourceVersion counter; writes to the
  main resource leave ``.status`` alone, ``/status`` writes only it, and
  ``metadata.generation`` counts spec changes;
- delete with preconditions, propagation policy and ``dryRun=All``; finalizers and
  (optionally) pod grace periods keep an object with a ``deletionTimestamp``; owners'
  dependents are garbage-collected (Jobs orphan theirs by default, with the real
  server's Warning header);
- the Eviction subresource under PodDisruptionBudgets (201 Success; 429 "Cannot evict pod
  as it would violate the pod's disruption budget." with a DisruptionBudget cause; 500
  for two budgets; 404 for a missing pod);
- the scale subresource (autoscaling/v1 Scale) for apps/v1 Deployments, ReplicaSets and
  StatefulSets and for CRDs that declare one (Cluster API MachineDeployments/MachineSets);
- the validation a migration can trip on: a pod's spec is immutable but for images and
  added tolerations; a Job's pod template is immutable except its scheduling directives
  while the Job is suspended and not started (the emulated Job controller clears
  ``status.startTime`` and deletes the Job's pods on suspension, sets it on resume);
- errors as ``Status`` objects: 404 for resources not installed or objects absent, 401
  for a wrong bearer token, 403 for a verb RBAC would refuse (``deny``,
  ``grant_only``).

For tests
---------
- ``kube_emulator`` fixture: started, built-in kinds, fails the test if it exhausted
  its request budget or deadline (5,000 requests, 30 s; it then stops by itself);
- ``api_client()``: a real ``ApiClient`` whose transport does not retry by status;
- state: ``add``/``add_all`` (as found in the cluster), ``get``, ``objects``, ``mutate``
  (a controller's write), ``remove``, ``finish_terminations`` (the kubelet), ``path``;
- behaviour: ``deny``, ``grant_only`` (exactly these RBAC grants, nothing else),
  ``fail_next(path or glob, status, times, retry_after_s, method=, message=,
  after_effect=)``, ``fail_scale``, ``refuse_evictions``, ``after_request`` (a hook run
  on every answer);
- records: ``requests`` (method, path, verb, body, content_type, resource fields and
  the status answered), ``requests_where(**fields)``, ``writes()``, ``deletes(plural)``,
  ``events_for(name)``.

What it deliberately does not emulate
-------------------------------------
watch and deletecollection (405), server-side apply (415), OpenAPI schema validation
and defaulting beyond what is listed above, admission webhooks, the kube-scheduler and
the kubelet (pods stay as written: tests set ``status.phase``), controllers other than
the Job, disruption and garbage-collection ones above (no Deployment rolls out, no
operator creates PyTorchJob pods, Cluster API does not delete Machines), the
``disruptedPods`` bookkeeping of PDBs, field managers, and consistency of a paginated
list for objects updated (rather than created) while it is read.
"""

from __future__ import annotations

from tests.integration.kube_emulator.answers import Answer, status_answer
from tests.integration.kube_emulator.disruption import TOO_MANY_REQUESTS_MESSAGE
from tests.integration.kube_emulator.fixtures import free_port, kube_emulator, wait_until
from tests.integration.kube_emulator.resources import (
    BUILTIN_RESOURCES,
    CLUSTER_API_RESOURCES,
    KARPENTER_RESOURCES,
    KUBEFLOW_RESOURCES,
    ResourceType,
    ScalePaths,
)
from tests.integration.kube_emulator.server import Fault, KubeEmulator, Request

__all__ = [
    "BUILTIN_RESOURCES",
    "CLUSTER_API_RESOURCES",
    "KARPENTER_RESOURCES",
    "KUBEFLOW_RESOURCES",
    "TOO_MANY_REQUESTS_MESSAGE",
    "Answer",
    "Fault",
    "KubeEmulator",
    "Request",
    "ResourceType",
    "ScalePaths",
    "free_port",
    "kube_emulator",
    "status_answer",
    "wait_until",
]
