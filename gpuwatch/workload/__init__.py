"""The reference PyTorch training job: exact checkpoint/resume, preemption-safe, observable.

This is the job the reference PyTorchJob (``deploy/workload/``) runs. It exists for two reasons: it
drives real GPU load for gpuwatch to watch, and its checkpoint contract (atomic,
verified, resumed bit-exactly, written on SIGTERM within the cloud's notice) is what
makes moving a training job to spot capacity safe.

The package imports nothing else of gpuwatch, and nothing of the daemon imports it
(``gpuwatch train`` loads it lazily): the daemon's image never needs torch. Importing
this package itself loads no torch either; ``config`` and ``train`` parse flags first,
and only ``loop`` and what it uses import torch.

Run it with ``python -m gpuwatch.workload.train`` (or ``gpuwatch train``), or under
``python -m gpuwatch.workload.launch`` (torchrun with Kubeflow-friendly exit codes).
"""

from __future__ import annotations
