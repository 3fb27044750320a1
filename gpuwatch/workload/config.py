"""The training job's settings and its command line, kept free of torch.

The flags follow the reference PyTorchJob (``deploy/workload/pytorchjob.yaml``) (``--resume=auto``,
``--checkpoint-interval=300``) so its manifests run unchanged. Parsing lives apart from
the training loop so that ``--help`` and bad flags answer without importing torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs; units are in the names or the docstrings."""

    output: Path
    """Where checkpoints, their manifests and ``checkpoint_latest.pt`` go (shared RWX)."""
    resume: str = "auto"
    """``auto`` (newest good checkpoint in ``output``, else start fresh), ``none``, or a
    path (a checkpoint file, its manifest, ``checkpoint_latest.pt`` or a folder)."""
    steps: int = 1000
    """Optimizer steps in the whole run (resumed runs count from the checkpoint)."""
    seed: int = 0
    """Seeds the model's initialisation, the synthetic data and every RNG."""
    checkpoint_interval_s: float = 300.0
    """Seconds between periodic checkpoints; 0 turns them off. Periodic checkpoints
    are the real safety net: a checkpoint on SIGTERM is best effort."""
    checkpoint_every_steps: int = 0
    """Also checkpoint every N optimizer steps; 0 turns it off."""
    keep: int = 3
    """Good checkpoints kept; older ones are deleted. More than one, so that a torn or
    corrupt newest checkpoint has a predecessor to fall back to."""
    async_checkpoint: bool = False
    """Copy the state off the training path and write it in a background thread."""
    preemption_deadline_s: float = 30.0
    """Seconds from SIGTERM to the checkpoint on disk that the run must meet: 30 on
    GCP, 120 on AWS, about 300 on Alibaba Cloud (the spot notice). Missing it is logged
    as a warning; the pod's terminationGracePeriodSeconds must be longer."""
    vocab_size: int = 256
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    seq_len: int = 64
    """Tokens per sample (the model's context)."""
    dropout: float = 0.1
    """Dropout draws from the RNG every step, which is why resuming restores every RNG."""
    batch_size: int = 16
    """Samples per micro-batch on each rank."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (gradient accumulation)."""
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    amp: str = "auto"
    """``bf16``, ``fp16`` (with a gradient scaler), ``off``, or ``auto``: bf16 on a CUDA
    GPU that supports it, otherwise off."""
    workers: int = 0
    """DataLoader worker processes per rank."""
    dataset_size: int = 100_000
    """Synthetic samples in one epoch (all ranks together)."""
    device: str = "auto"
    """``auto`` (the rank's CUDA GPU when there is one), ``cpu`` or ``cuda``."""
    deterministic: bool = False
    """``torch.use_deterministic_algorithms``: needed for bit-exact resume on a GPU."""
    metrics_port: int | None = None
    """Prometheus endpoint on rank 0; 0 picks a free port (logged); None serves none."""
    metrics_host: str = "0.0.0.0"
    log_every: int = 10
    """Log step, loss and samples/s every N optimizer steps."""
    log_level: str = "INFO"

    def as_dict(self) -> dict[str, Any]:
        """Plain values only, for the checkpoint (loadable with ``weights_only=True``)."""
        values = asdict(self)
        values["output"] = str(self.output)
        return values


def build_parser(prog: str = "python -m gpuwatch.workload.train") -> argparse.ArgumentParser:
    """The command line of ``python -m gpuwatch.workload.train`` and ``gpuwatch train``."""
    d = TrainConfig(output=Path("train-output"))
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "The reference PyTorch training job: a small transformer language model on "
            "synthetic data, with exact checkpoint/resume and SIGTERM handling. Runs on "
            "a CPU, a GPU, or many workers under torchrun or a PyTorchJob."
        ),
        epilog=(
            "Signals: SIGTERM checkpoints at the next step boundary and exits 143 (so "
            "Kubeflow's restartPolicy: ExitCode retries); SIGUSR1 checkpoints and goes on."
        ),
    )
    run = p.add_argument_group("run and checkpoints")
    run.add_argument("--output", type=Path, default=d.output, help="checkpoint folder")
    run.add_argument("--resume", default=d.resume, help="auto | none | PATH (default: auto)")
    run.add_argument("--steps", type=int, default=d.steps, help="optimizer steps in all")
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument(
        "--checkpoint-interval",
        dest="checkpoint_interval_s",
        type=float,
        default=d.checkpoint_interval_s,
        metavar="SECONDS",
        help="seconds between periodic checkpoints; 0: none (default: 300)",
    )
    run.add_argument(
        "--checkpoint-every-steps",
        type=int,
        default=d.checkpoint_every_steps,
        metavar="N",
        help="also checkpoint every N steps; 0: off",
    )
    run.add_argument("--keep", type=int, default=d.keep, help="good checkpoints kept")
    run.add_argument(
        "--async-checkpoint",
        action="store_true",
        help="copy the state, write it in the background (training stalls only to copy)",
    )
    run.add_argument(
        "--preemption-deadline",
        dest="preemption_deadline_s",
        type=float,
        default=d.preemption_deadline_s,
        metavar="SECONDS",
        help="SIGTERM to checkpoint on disk must fit: 30 GCP, 120 AWS, 300 Alibaba",
    )
    model = p.add_argument_group("model and data")
    model.add_argument("--vocab-size", type=int, default=d.vocab_size)
    model.add_argument("--d-model", type=int, default=d.d_model)
    model.add_argument("--layers", type=int, default=d.layers)
    model.add_argument("--heads", type=int, default=d.heads)
    model.add_argument("--seq-len", type=int, default=d.seq_len)
    model.add_argument("--dropout", type=float, default=d.dropout)
    model.add_argument("--dataset-size", type=int, default=d.dataset_size)
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="per rank")
    opt.add_argument("--grad-accum", type=int, default=d.grad_accum, metavar="N")
    opt.add_argument("--lr", type=float, default=d.lr)
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay)
    opt.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    opt.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm)
    opt.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=d.amp)
    opt.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers")
    opt.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    opt.add_argument("--deterministic", action="store_true")
    obs = p.add_argument_group("observability")
    obs.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus port on rank 0; 0: any"
    )
    obs.add_argument("--metrics-host", default=d.metrics_host)
    obs.add_argument("--log-every", type=int, default=d.log_every, metavar="N")
    obs.add_argument("--log-level", default=d.log_level)
    return p


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> TrainConfig:
    """Parse and check flags; exits 2 with argparse's message on bad ones."""
    parser = build_parser() if prog is None else build_parser(prog)
    ns = parser.parse_args(argv)
    config = TrainConfig(**vars(ns))
    problems = validate(config)
    if problems:
        parser.error("; ".join(problems))
    return config


def validate(config: TrainConfig) -> list[str]:
    """What is wrong with ``config`` before any rank starts (empty when nothing)."""
    problems = []
    positive = {
        "--steps": config.steps,
        "--keep": config.keep,
        "--batch-size": config.batch_size,
        "--grad-accum": config.grad_accum,
        "--vocab-size": config.vocab_size,
        "--d-model": config.d_model,
        "--layers": config.layers,
        "--heads": config.heads,
        "--seq-len": config.seq_len,
        "--dataset-size": config.dataset_size,
        "--log-every": config.log_every,
    }
    problems += [f"{flag} must be at least 1" for flag, value in positive.items() if value < 1]
    if config.heads >= 1 and config.d_model % config.heads:
        problems.append("--d-model must be a multiple of --heads")
    if config.checkpoint_interval_s < 0 or config.checkpoint_every_steps < 0:
        problems.append("checkpoint intervals must be 0 (off) or positive")
    if config.workers < 0:
        problems.append("--workers must not be negative")
    if not 0 <= config.dropout < 1:
        problems.append("--dropout must be in [0, 1)")
    return problems
