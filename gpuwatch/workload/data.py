"""Synthetic token data generated from the seed, and a data position that resumes exactly.

No download, no files: sample ``i`` is a pure function of ``(seed, i)``, a walk over the
vocabulary whose step sizes follow a fixed skewed distribution, so the loss falls as
the model learns it. Because a sample depends on nothing but its index, DataLoader
workers can generate samples in any order and the run stays reproducible.

Each epoch visits every sample once in an order drawn from ``(seed, epoch)``; rank
``r`` of ``w`` takes every ``w``-th index, as ``DistributedSampler`` does. The position
in the stream (epoch, micro-batch within it) goes into every checkpoint, and a resumed
run starts its DataLoader at that micro-batch: no sample is repeated or skipped.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

# The walk's step sizes and their probabilities: enough structure to learn.
_STEPS = np.array([1, 2, 3, 5, 8])
_STEP_P = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
# Distinguishes the epoch-order stream from the per-sample streams of the same seed.
_ORDER_STREAM = 0x5EED


class SyntheticTokens(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``size`` samples of ``seq_len`` input tokens and their next-token targets."""

    def __init__(self, seed: int, size: int, seq_len: int, vocab_size: int) -> None:
        self.seed = seed
        self.size = size
        self.seq_len = seq_len
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        start = rng.integers(self.vocab_size)
        steps = rng.choice(_STEPS, size=self.seq_len, p=_STEP_P)
        walk = (start + np.concatenate(([0], np.cumsum(steps)))) % self.vocab_size
        tokens = torch.from_numpy(walk.astype(np.int64))
        return tokens[:-1], tokens[1:]


@dataclass(frozen=True)
class DataPosition:
    """The next micro-batch to train on: its epoch and its index within the epoch."""

    epoch: int = 0
    batch_in_epoch: int = 0


class EpochBatches(Sampler[list[int]]):
    """One rank's micro-batches of one epoch, from ``start_batch`` on (drop_last)."""

    def __init__(
        self,
        *,
        seed: int,
        size: int,
        batch_size: int,
        rank: int,
        world_size: int,
        epoch: int,
        start_batch: int = 0,
    ) -> None:
        self.batch_size = batch_size
        self.start_batch = start_batch
        order = np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(size)
        per_rank = size // world_size
        self.indices = order[rank::world_size][:per_rank]
        self.batches = per_rank // batch_size

    def __len__(self) -> int:
        return max(0, self.batches - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start_batch, self.batches):
            yield self.indices[b * self.batch_size : (b + 1) * self.batch_size].tolist()


def _worker_init(_worker_id: int) -> None:
    # A signal sent to the whole process group (a shell's Ctrl-C, `kill -- -PGID`) must
    # not kill the workers mid-batch: the main process handles it at a step boundary
    # and shuts its DataLoader down itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class MicroBatchStream:
    """Endless micro-batches for one rank, tracking the position to checkpoint."""

    def __init__(
        self,
        dataset: SyntheticTokens,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        workers: int,
        pin_memory: bool,
        start: DataPosition,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.workers = workers
        self.pin_memory = pin_memory
        self.position = start
        self._iter: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"--dataset-size {dataset.size} gives rank {rank} of {world_size} no full "
                f"micro-batch of {batch_size}"
            )

    @property
    def batches_per_epoch(self) -> int:
        return (self.dataset.size // self.world_size) // self.batch_size

    def _loader(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = EpochBatches(
            seed=self.dataset.seed,
            size=self.dataset.size,
            batch_size=self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            epoch=self.position.epoch,
            start_batch=self.position.batch_in_epoch,
        )
        # Its own generator: a DataLoader otherwise draws its workers' base seed from
        # the global torch RNG, so a resumed run (which opens a loader mid-epoch) would
        # see different dropout masks than an uninterrupted one.
        generator = torch.Generator().manual_seed(
            self.dataset.seed * 1_000_003 + self.position.epoch
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            worker_init_fn=_worker_init if self.workers else None,
            generator=generator,
        )
        return iter(loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch at ``position``; advances it, rolling over to the next epoch."""
        if self.position.batch_in_epoch >= self.batches_per_epoch:
            self.position = DataPosition(self.position.epoch + 1, 0)
            self._iter = None
        if self._iter is None:
            self._iter = self._loader()
        batch = next(self._iter)
        self.position = DataPosition(self.position.epoch, self.position.batch_in_epoch + 1)
        return batch

    def close(self) -> None:
        """Stop the DataLoader's workers (if any)."""
        self._iter = None
