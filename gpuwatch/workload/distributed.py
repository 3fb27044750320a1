"""One process or many: process-group setup and the few collectives the loop needs.

The job reads the environment torchrun and Kubeflow's PyTorchJob set (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and picks NCCL on
GPUs and gloo on CPUs. Without those variables it is a single process outside any
group and every collective here is a no-op, so the same loop runs on a laptop.

The collectives are the protocol that keeps ranks in step: at each step boundary they
``agree`` on whether to checkpoint or stop (a signal may reach one rank only), rank 0
``gather``s every rank's RNG states into the checkpoint, and on resume rank 0
``broadcast``s which checkpoint all ranks load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# A checkpoint of a large model onto network storage can take minutes while the other
# ranks wait in a collective; NCCL's default of 10 minutes is too tight for that.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    in_group: bool = False
    """Joined a process group (any size: one GPU under torchrun still runs NCCL)."""

    @property
    def distributed(self) -> bool:
        return self.in_group

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes checkpoints and serves metrics."""
        return self.rank == 0


def setup(device: str) -> Ranks:
    """Pick the device and, under a launcher, join the process group."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda, but torch sees no CUDA device")
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    # Under a launcher (torchrun, a PyTorchJob) even a single rank joins a group, so the
    # same collectives and DDP run whatever the size.
    launched = "WORLD_SIZE" in os.environ
    if launched and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        log.info("rank %d of %d joined (%s on %s)", rank, world_size, backend, chosen)
    return Ranks(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=chosen,
        in_group=launched and dist.is_initialized(),
    )


def teardown(ranks: Ranks) -> None:
    """Leave the process group (a clean exit lets the other ranks finish theirs)."""
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


def agree(ranks: Ranks, values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (identity on one process)."""
    if not ranks.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(ranks))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def gather_to_writer(ranks: Ranks, obj: Any) -> list[Any]:
    """Every rank's ``obj`` on rank 0, in rank order; an empty list on the others."""
    if not ranks.distributed:
        return [obj]
    gathered: list[Any] | None = [None] * ranks.world_size if ranks.is_writer else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered or []


def broadcast_from_writer(ranks: Ranks, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ranks.distributed:
        return obj
    box = [obj if ranks.is_writer else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def _collective_device(ranks: Ranks) -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    return ranks.device if ranks.device.type == "cuda" else torch.device("cpu")
