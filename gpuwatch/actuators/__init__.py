"""Actuators: the effects of planned actions on a cluster, and nothing else.

``base.Actuator`` is the interface; ``kubernetes.KubernetesActuator`` writes through the
Kubernetes API (cordon and drain, cluster-api and Karpenter node removal, spot
migration, events); ``recorder.RecordingActuator`` records and changes nothing.
"""
