"""The training loop: resume, train, checkpoint at step boundaries, stop on SIGTERM.

Everything that decides whether a resumed run continues *exactly* meets here. A step is
``grad_accum`` micro-batches and one optimizer step; checkpoints are only taken between
steps, and hold the model, optimizer, LR scheduler, AMP scaler, step, data position,
loss and the RNG states of every rank. On a CPU a run interrupted and resumed any number
of times ends with the same bits as one that never stopped; on a GPU that also needs
``--deterministic`` (cuBLAS and attention kernels otherwise reduce in varying order).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from prometheus_client import CollectorRegistry
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gpuwatch.workload import checkpoint, distributed, rng
from gpuwatch.workload.config import TrainConfig
from gpuwatch.workload.data import DataPosition, MicroBatchStream, SyntheticTokens
from gpuwatch.workload.metrics import TrainMetrics, serve
from gpuwatch.workload.model import build_model, parameter_count
from gpuwatch.workload.signals import EXIT_PREEMPTED, PreemptionSignals

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1

# Settings that change which samples or RNG draws a step sees: resuming with other
# values works, but the run is then no longer identical to an uninterrupted one.
_EXACTNESS_KEYS = ("seed", "batch_size", "grad_accum", "dataset_size", "dropout", "amp")


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` becomes bf16 on a CUDA GPU that has it, otherwise off."""
    if amp != "auto":
        return amp
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "off"


def lr_schedule(config: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to a tenth of ``lr`` at the last step."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """One process's part of a run. ``run()`` returns the process's exit code."""

    def __init__(
        self,
        config: TrainConfig,
        ranks: distributed.Ranks,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.ranks = ranks
        self.device = ranks.device
        self.amp = resolve_amp(config.amp, self.device)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = TrainMetrics(self.registry)
        self.signals = PreemptionSignals()
        self.step = 0
        self.samples_seen = 0
        self.loss = math.nan
        self.position = DataPosition()
        self.checkpointer: checkpoint.Checkpointer | None = None
        self.server: Any = None

    # -- setup --------------------------------------------------------------------

    def _build(self) -> None:
        config = self.config
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        rng.seed_all(config.seed)  # the same initial weights on every rank
        self.model: nn.Module = build_model(config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_schedule(config))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        log.info(
            "model: %d parameters, d_model %d, %d layers; amp %s on %s",
            parameter_count(self.model),
            config.d_model,
            config.layers,
            self.amp,
            self.device,
        )

    def _resume(self) -> bool:
        """Load the checkpoint ``--resume`` names on every rank; False if it cannot."""
        chosen: str | None = None
        problem: str | None = None
        if self.ranks.is_writer:
            checkpoint.remove_temporaries(self.config.output)
            try:
                info = checkpoint.resolve(self.config.resume, self.config.output)
            except checkpoint.CheckpointError as exc:
                problem = str(exc)
            else:
                chosen = None if info is None else str(info.path)
                if info is not None:
                    self._publish_loaded(info)
        # Every rank loads the checkpoint rank 0 chose, never one it found by itself.
        chosen, problem = distributed.broadcast_from_writer(self.ranks, (chosen, problem))
        if problem is not None:
            log.error("cannot resume: %s", problem)
            return False
        if chosen is None:
            log.info("starting from scratch (--resume %s)", self.config.resume)
            # Each rank its own RNG stream (dropout masks differ across ranks).
            rng.seed_all(self.config.seed + self.ranks.rank)
            return True
        state = torch.load(chosen, map_location="cpu", weights_only=True)
        self._load_state(state, chosen)
        return True

    def _publish_loaded(self, info: checkpoint.CheckpointInfo) -> None:
        self.metrics.last_checkpoint_timestamp.set(info.saved_at_unix)
        self.metrics.last_checkpoint_step.set(info.step)

    def _load_state(self, state: dict[str, Any], where: str) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.loss = float(state["loss"])
        self.position = DataPosition(int(state["epoch"]), int(state["batch_in_epoch"]))
        saved = state["config"]
        changed = [k for k in _EXACTNESS_KEYS if saved.get(k) != getattr(self.config, k)]
        if state["world_size"] != self.ranks.world_size:
            changed.append("world size")
        if changed:
            log.warning(
                "resuming with a different %s than the checkpoint: the run goes on, but "
                "is no longer identical to one that never stopped",
                ", ".join(changed),
            )
        rng_states = state["rng"]
        if len(rng_states) == self.ranks.world_size:
            rng.restore(rng_states[self.ranks.rank])
        else:
            rng.seed_all(self.config.seed + self.ranks.rank + 7919 * self.step)
        self.metrics.step.set(self.step)
        log.info(
            "resumed from %s: step %d, epoch %d, micro-batch %d, loss %.4f",
            where,
            self.step,
            self.position.epoch,
            self.position.batch_in_epoch,
            self.loss,
        )

    # -- checkpoints ----------------------------------------------------------------

    def _state(self, rng_states: list[Any]) -> dict[str, Any]:
        model = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
        return {
            "schema": checkpoint.SCHEMA,
            "step": self.step,
            "epoch": self.position.epoch,
            "batch_in_epoch": self.position.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "loss": self.loss,
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states,
            "world_size": self.ranks.world_size,
            "config": self.config.as_dict(),
        }

    def _checkpoint(self, reason: str) -> None:
        """Collective: every rank gives its RNG states, rank 0 writes (or starts to)."""
        rng_states = distributed.gather_to_writer(self.ranks, rng.capture())
        if self.checkpointer is None:
            return
        saved_at = time.time()
        state = self._state(rng_states)
        meta = {
            "epoch": self.position.epoch,
            "batch_in_epoch": self.position.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "loss": self.loss,
            "world_size": self.ranks.world_size,
            "saved_at_unix": saved_at,
            "reason": reason,
        }
        stall = self.checkpointer.save(state, step=self.step, meta=meta)
        self.metrics.checkpoint_stall.set(stall)
        log.info("checkpoint of step %d (%s): training stalled %.3f s", self.step, reason, stall)

    def _on_written(self, info: checkpoint.CheckpointInfo, duration_s: float) -> None:
        self.metrics.checkpoint_written(
            step=info.step,
            saved_at_unix=info.saved_at_unix,
            duration_s=duration_s,
            size_bytes=info.size_bytes,
        )
        log.info(
            "checkpoint %s durable: %.1f MB in %.3f s",
            info.path.name,
            info.size_bytes / 1e6,
            duration_s,
        )

    # -- the loop -------------------------------------------------------------------

    def _train_step(self, stream: MicroBatchStream) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; the local mean loss."""
        config = self.config
        total = torch.zeros((), device=self.device)
        autocast = torch.autocast(
            device_type=self.device.type,
            dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16,
            enabled=self.amp != "off",
        )
        for micro in range(config.grad_accum):
            inputs, targets = stream.next()
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            # Only the last micro-batch all-reduces gradients across ranks.
            sync = (
                self.model.no_sync()
                if isinstance(self.model, DistributedDataParallel) and micro < config.grad_accum - 1
                else contextlib.nullcontext()
            )
            with sync:
                with autocast:
                    loss = self.model(inputs, targets)
                self.scaler.scale(loss / config.grad_accum).backward()
            total += loss.detach().float()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(total.item()) / config.grad_accum

    def run(self) -> int:
        config = self.config
        self._build()
        if not self._resume():
            return EXIT_FAILED
        if self.step >= config.steps:
            log.info("already at step %d of %d: nothing to do", self.step, config.steps)
            return EXIT_OK
        if self.ranks.is_writer:
            self.checkpointer = checkpoint.Checkpointer(
                config.output,
                keep=config.keep,
                async_write=config.async_checkpoint,
                on_written=self._on_written,
            )
            if config.metrics_port is not None:
                self.server = serve(self.registry, config.metrics_host, config.metrics_port)
        if self.ranks.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=device_ids)
        stream = MicroBatchStream(
            SyntheticTokens(config.seed, config.dataset_size, config.seq_len, config.vocab_size),
            batch_size=config.batch_size,
            rank=self.ranks.rank,
            world_size=self.ranks.world_size,
            workers=config.workers,
            pin_memory=self.device.type == "cuda",
            start=self.position,
        )
        self.signals.install()
        try:
            return self._loop(stream)
        finally:
            self.signals.uninstall()
            stream.close()
            if self.checkpointer is not None:
                self.checkpointer.wait()

    def _loop(self, stream: MicroBatchStream) -> int:
        config = self.config
        global_batch = config.batch_size * config.grad_accum * self.ranks.world_size
        last_checkpoint = time.monotonic()
        window_start, window_samples = time.monotonic(), 0
        while self.step < config.steps:
            local_loss = self._train_step(stream)
            self.step += 1
            self.samples_seen += global_batch
            window_samples += global_batch
            self.position = stream.position
            # The step boundary: every rank says what it has seen, all act on the sum.
            now = time.monotonic()
            interval_due = (
                self.ranks.is_writer
                and config.checkpoint_interval_s > 0
                and now - last_checkpoint >= config.checkpoint_interval_s
            )
            terminate, requested, due, loss_sum = distributed.agree(
                self.ranks,
                [
                    float(self.signals.terminate_requested),
                    float(self.signals.checkpoint_at is not None),
                    float(interval_due),
                    local_loss,
                ],
            )
            self.loss = loss_sum / self.ranks.world_size
            self.metrics.step.set(self.step)
            self.metrics.loss.set(self.loss)
            if self.step % config.log_every == 0 or self.step == config.steps:
                elapsed = max(time.monotonic() - window_start, 1e-9)
                self.metrics.samples_per_second.set(window_samples / elapsed)
                log.info(
                    "step %d loss %.4f samples/s %.1f lr %.3g",
                    self.step,
                    self.loss,
                    window_samples / elapsed,
                    self.scheduler.get_last_lr()[0],
                )
                window_start, window_samples = time.monotonic(), 0
            final = self.step == config.steps
            reasons = [
                name
                for name, hit in (
                    ("final", final),
                    ("SIGTERM", terminate > 0),
                    ("SIGUSR1", requested > 0),
                    ("interval", due > 0),
                    (
                        "every-steps",
                        config.checkpoint_every_steps > 0
                        and self.step % config.checkpoint_every_steps == 0,
                    ),
                )
                if hit
            ]
            if not reasons:
                continue
            usr1_at = self.signals.take_checkpoint_request() if requested > 0 else None
            self._checkpoint("+".join(reasons))
            last_checkpoint = time.monotonic()
            if usr1_at is not None:
                log.info("SIGUSR1: checkpoint of step %d taken", self.step)
            if final:
                break
            if terminate > 0:
                return self._stop_preempted()
        self._finish()
        log.info("done: %d steps, loss %.4f", self.step, self.loss)
        return EXIT_OK

    def _finish(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.wait()
        # Rank 0 writes; under torchrun a rank that exits early gets its peers killed.
        distributed.barrier(self.ranks)

    def _stop_preempted(self) -> int:
        self._finish()
        signal_at = self.signals.terminate_at
        if self.ranks.is_writer and signal_at is None:
            log.info("SIGTERM reached another rank: checkpoint of step %d on disk", self.step)
        elif self.ranks.is_writer and signal_at is not None:
            took = time.monotonic() - signal_at
            self.metrics.preemption_seconds.set(took)
            deadline = self.config.preemption_deadline_s
            log.log(
                logging.INFO if took <= deadline else logging.WARNING,
                "SIGTERM: checkpoint of step %d on disk %.3f s after the signal "
                "(deadline %.0f s: %s); exiting %d",
                self.step,
                took,
                deadline,
                "met" if took <= deadline else "MISSED",
                EXIT_PREEMPTED,
            )
        return EXIT_PREEMPTED


def run(config: TrainConfig, registry: CollectorRegistry | None = None) -> int:
    """Run the job described by ``config`` in this process; returns its exit code."""
    if config.deterministic:
        # cuBLAS needs this before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    ranks = distributed.setup(config.device)
    try:
        return Trainer(config, ranks, registry).run()
    except checkpoint.CheckpointError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    finally:
        distributed.teardown(ranks)
