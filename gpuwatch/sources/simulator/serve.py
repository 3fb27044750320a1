"""``gpuwatch simulate serve``: the simulated cluster as a live dcgm-exporter endpoint.

Serves ``/metrics`` in the exporter's text format at wall-clock time, so that a real
Prometheus can scrape the simulator exactly as it scrapes dcgm-exporter in a cluster.
The server can bound itself (a request count, a duration) for use in tests.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.model.metrics import SeriesBlock
from gpuwatch.sources.simulator.cluster import SimulatedCluster
from gpuwatch.sources.simulator.exposition import render_text

log = logging.getLogger(__name__)


class ExporterServer:
    """A dcgm-exporter look-alike over the simulator; ``start()`` returns the bound port."""

    def __init__(
        self,
        settings: SimulatorSettings,
        host: str = "127.0.0.1",
        port: int = 0,
        exported_labels: bool = False,
        max_requests: int | None = None,
    ) -> None:
        self.cluster = SimulatedCluster(settings, end=datetime.now(UTC))
        self.exported_labels = exported_labels
        self.max_requests = max_requests
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def render(self, now_s: float) -> str:
        """The exposition at ``now_s``: each GPU's newest simulated sample."""
        step = self.cluster.step_s
        times = np.array([int(now_s // step) * step], dtype=np.int64)
        history_start = int(self.cluster.history_start.timestamp())
        values = self.cluster.generator.generate(times, history_start)
        block = SeriesBlock(self.cluster.devices, times, values)
        return render_text(block, self.cluster.layout.gpus, self.exported_labels)

    def start(self) -> int:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.port

    def serve(self, duration_s: float | None = None) -> None:
        """Serve in the foreground until interrupted, the duration or the request bound."""
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while self._thread is not None and self._thread.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
        finally:
            self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.requests += 1
                    over = outer.max_requests is not None and outer.requests > outer.max_requests
                if over:
                    self.send_error(503, "request bound reached")
                    threading.Thread(target=outer._server.shutdown, daemon=True).start()
                    return
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = outer.render(time.time()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        return Handler
