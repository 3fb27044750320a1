"""The one Kubernetes layer: requests, errors, the Lease, and the objects' shapes and semantics."""
