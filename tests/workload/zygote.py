"""A process that imports torch once, then forks real training processes on request.

Every training process of these tests is a real process that receives real signals,
but starting a fresh interpreter costs about four seconds here (torch, and the
``torch._dynamo`` that ``torch.optim`` pulls in) against well under one second of
training. The zygote pays that once: it imports everything, runs no torch operation
(an OpenMP thread pool does not survive ``fork``), and forks a child per request that
runs ``gpuwatch.workload.train.main(argv)`` exactly as ``python -m`` would. The tests
that check the entry points themselves (``python -m gpuwatch.workload.train`` and the
torchrun wrapper) start real interpreters instead.

Protocol, one JSON object per line: the test writes ``{"argv": [...], "env": {...},
"log": PATH}`` on stdin and reads ``{"pid": N}`` back, then ``{"exited": N, "code": C}``
when that child ends (C negative: killed by signal -C).
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys

import torch
import torch._dynamo  # imported here so that no child pays for it

from gpuwatch.workload import loop  # noqa: F401
from gpuwatch.workload.train import main


def _child(request: dict) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ.update(request.get("env", {}))
    if "threads" in request:
        torch.set_num_threads(request["threads"])
    code = 1
    try:
        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve() -> None:
    children: set[int] = set()
    pending = b""
    _say({"ready": os.getpid()})
    while True:
        readable, _, _ = select.select([0], [], [], 0.01)
        if readable:
            data = os.read(0, 1 << 16)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children.add(pid)
                _say({"pid": pid})
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                _say({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    serve()
