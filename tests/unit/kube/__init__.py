"""gpuwatch.kube: the Kubernetes objects' shapes and semantics."""
