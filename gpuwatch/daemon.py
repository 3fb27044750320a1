"""``gpuwatch run``: one long-lived process that schedules the cycle and the weekly report.

The alternative to the two CronJobs, for clusters that prefer a Deployment. APScheduler
3.x runs the cycle on an interval and the report on a cron, each with
``max_instances=1`` (a slow cycle is never started twice), missed runs coalesced into
one, and a misfire grace time. The process serves its own metrics on ``/metrics`` and
``/healthz`` (unhealthy once no cycle has succeeded for ``daemon.unhealthy_after``
intervals). With several replicas, a coordination.k8s.io Lease lets one run cycles; the
others wait, ready to take over. The config file is re-read when it changes (a mounted
ConfigMap is updated in place); a new file that does not load is logged and the old
settings stay. SIGTERM stops scheduling, lets the job in flight finish, and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from gpuwatch.config.settings import Settings
from gpuwatch.jobs import cycle_job, make_report, write_result
from gpuwatch.model.errors import GpuwatchError
from gpuwatch.model.result import CycleResult, SourceInfo
from gpuwatch.notify.interactions import Inbox
from gpuwatch.report.data import ReportPeriod
from gpuwatch.telemetry.metrics import SelfMetrics
from gpuwatch.telemetry.serve import TelemetryServer, freshness, serve
from gpuwatch.util.redact import redact
from gpuwatch.wiring import Listener, build_lease, build_listeners

log = logging.getLogger(__name__)
CYCLE_JOB, REPORT_JOB = "cycle", "report"


class _Lock(Protocol):
    """The Lease between replicas, as the daemon uses it."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class Daemon:
    """The scheduler, the metrics endpoint and the jobs, with their settings."""

    def __init__(
        self,
        load: Callable[[], Settings],
        console: TextIO,
        config_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``load`` reads the settings (file, environment, flags); it is called again
        when ``config_file`` changes."""
        self._load = load
        self._console = console
        self._config_file = config_file
        self._config_stamp = _stamp(config_file)
        self._clock = clock
        self.settings = load()
        self.registry = CollectorRegistry()
        self.metrics = SelfMetrics(self.registry, clock=clock)
        self.cycles = 0
        self.last_result: CycleResult | None = None
        self._stopping = threading.Event()
        self._lease: _Lock | None = None
        self._lease_lock = threading.Lock()
        """The cycle and the report run on two threads; one Lease holder between them."""
        self._server: TelemetryServer | None = None
        self.inbox = Inbox()
        """Clicks from Slack (Approve, Reject, Snooze), queued for the next cycle."""
        self._listeners: list[Listener] = []
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=2)},
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": self.settings.daemon.misfire_grace_s,
            },
        )

    @property
    def port(self) -> int:
        assert self._server is not None, "the daemon is not started"
        return self._server.port

    def start(self) -> None:
        """Serve the metrics and start scheduling; the first cycle runs at once."""
        d = self.settings.daemon
        max_age = d.interval_s * d.unhealthy_after
        started = self._clock()

        def last_success() -> float | None:
            # Until the first cycle, the start counts: a fresh process is not unhealthy.
            return self.metrics.last_success_s or started

        self._server = serve(
            self.registry,
            self.settings.self_metrics.address,
            self.settings.self_metrics.port,
            health=freshness(last_success, max_age, clock=self._clock),
        )
        self._schedule()
        self._scheduler.start()
        self._listen()
        log.info("gpuwatch daemon: a cycle every %s s, metrics on port %s", d.interval_s, self.port)

    def _schedule(self) -> None:
        d = self.settings.daemon
        self._scheduler.add_job(
            self.cycle,
            IntervalTrigger(seconds=d.interval_s, timezone=UTC),
            id=CYCLE_JOB,
            next_run_time=datetime.now(UTC),
            replace_existing=True,
            misfire_grace_time=d.misfire_grace_s,
        )
        if d.report_cron:
            self._scheduler.add_job(
                self.report,
                CronTrigger.from_crontab(d.report_cron, timezone=d.report_timezone),
                id=REPORT_JOB,
                replace_existing=True,
                misfire_grace_time=max(d.misfire_grace_s, 3600),
            )
        elif self._scheduler.get_job(REPORT_JOB):
            self._scheduler.remove_job(REPORT_JOB)

    def _listen(self) -> None:
        """Start hearing Slack's clicks, where the settings give a way in. A listener
        that cannot start is logged: the cycles go on, and people can still decide with
        reactions."""
        try:
            listeners = build_listeners(lambda: self.settings, self.inbox, self.wake)
        except GpuwatchError as exc:
            log.error("Slack interactivity not started: %s", exc)
            return
        for listener in listeners:
            try:
                listener.start()
            except Exception as exc:  # a listener that cannot start must not stop the daemon
                log.error("Slack interactivity not started: %s", redact(str(exc)))
                continue
            self._listeners.append(listener)
        self.inbox.listening = bool(self._listeners)

    def wake(self) -> None:
        """Run the next cycle now (an approval was given): it still plans afresh."""
        if self._scheduler.running and not self._stopping.is_set():
            self._scheduler.modify_job(CYCLE_JOB, next_run_time=datetime.now(UTC))

    def run_until_signalled(self) -> None:
        """Start, then block until SIGTERM or SIGINT; then stop cleanly."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        self.start()
        self._stopping.wait()
        self.stop()

    def stop(self) -> None:
        """Stop scheduling and wait for the job in flight (its state is saved by the
        cycle itself); release the Lease so that another replica takes over at once."""
        self._stopping.set()
        for listener in self._listeners:
            listener.close()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        if self._lease is not None:
            self._lease.release()  # logs, never raises: the Lease then expires on its own
        if self._server is not None:
            self._server.close()
        log.info("gpuwatch daemon stopped after %d cycles", self.cycles)

    # -- jobs ----------------------------------------------------------------------------
    def cycle(self) -> None:
        """One cycle; never raises (a failure is logged and counted)."""
        if self._stopping.is_set():
            return
        self._reload_if_changed()
        at = datetime.now(UTC).replace(microsecond=0)
        try:
            if not self._leader():
                log.info("another replica holds the lease; standing by")
                return
            run = cycle_job(self.settings, at, self._console, push=False, inbox=self.inbox)
            result, error = run.result, run.write_error
        except (GpuwatchError, OSError) as exc:
            log.error("cycle failed: %s", exc)
            result, error = self._failed(at, str(exc))
        except Exception as exc:  # a bug must not stop the schedule; it is logged in full
            log.exception("cycle failed")
            result, error = self._failed(at, f"{type(exc).__name__}: {exc}")
        self.metrics.observe(result)
        self.last_result = result
        self.cycles += 1
        if error is not None:  # the cycle itself happened: it stays counted
            log.error("%s", error)

    def _failed(self, at: datetime, error: str) -> tuple[CycleResult, str | None]:
        """A cycle that could not run, as a result: counted and written like any."""
        result = CycleResult(
            at=at,
            cluster_name=self.settings.cluster.name,
            source=SourceInfo("-", "-", 0, 0, 0, 0),
            errors=(redact(error),),
            dry_run=self.settings.dry_run,
        )
        return result, write_result(result, self.settings.output.dir)[1]

    def report(self) -> None:
        """The last full week's report; never raises."""
        if self._stopping.is_set():
            return
        try:
            if not self._leader():
                return
            period = ReportPeriod.last_full_week(datetime.now(UTC))
            written = make_report(self.settings, period, self._console)
        except (GpuwatchError, OSError) as exc:
            log.error("weekly report failed: %s", exc)
            return
        except Exception:
            log.exception("weekly report failed")
            return
        log.info("%s", written.summary)

    # -- lease and reload ----------------------------------------------------------------
    def _leader(self) -> bool:
        """True when this replica may run jobs: no election configured or possible,
        or it holds (or just took) the Lease."""
        lease = self.settings.daemon.lease
        if not lease or self.settings.cluster_source != "kubernetes":
            return True
        with self._lease_lock:
            return self._lease_for(lease).acquire()

    def _lease_for(self, lease: str) -> _Lock:
        if self._lease is None:
            self._lease = build_lease(
                self.settings,
                lease,
                # Unique per process start: a restarted pod is a new holder.
                holder=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                duration_s=max(self.settings.daemon.interval_s * 3, 60),
            )
        return self._lease

    def _reload_if_changed(self) -> None:
        stamp = _stamp(self._config_file)
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        try:
            fresh = self._load()
        except GpuwatchError as exc:
            log.error("%s changed but does not load; keeping the old settings: %s",
                      self._config_file, exc)  # fmt: skip
            return
        interval_changed = fresh.daemon != self.settings.daemon
        self.settings = fresh
        log.info("reloaded %s", self._config_file)
        if interval_changed and self._scheduler.running:
            self._schedule()


def _stamp(path: Path | None) -> tuple[float, int] | None:
    """What tells a changed file: its modification time and size (a ConfigMap update
    swaps a symlink, which changes both)."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)
