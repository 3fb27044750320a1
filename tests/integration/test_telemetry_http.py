"""gpuwatch's own metrics over real HTTP: served on loopback, and pushed to a real
Pushgateway (Debian's ``prometheus-pushgateway``) started on a free port."""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gpuwatch.model.cost import CostGroup, CostReport
from gpuwatch.model.result import CycleResult, SourceInfo
from gpuwatch.telemetry.metrics import SelfMetrics
from gpuwatch.telemetry.push import PushError, cluster_grouping_key, push
from gpuwatch.telemetry.serve import TelemetryServer, freshness, serve
from tests.builders import AT, finding, run_gpuwatch
from tests.integration.prometheus_server import free_port, stop_process, wait_ready

pytestmark = pytest.mark.integration

PUSHGATEWAY_HINT = (
    "Debian's prometheus-pushgateway package is needed for these tests: "
    "`apt-get install -y prometheus-pushgateway` (make test does this when run as root)"
)
OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def result(idle_findings: int = 2, ok: bool = True) -> CycleResult:
    findings = tuple(finding(i, rule="gpu_idle") for i in range(idle_findings))
    ml = CostGroup("team", "ml-research", "USD", 24.0, Decimal(240), Decimal("72.00"), 4.0, 0.7)
    return CycleResult(
        at=AT,
        cluster_name="prod-eu",
        source=SourceInfo("prometheus", "kubernetes", 8, 8, 1, 4),
        findings=findings,
        cost=CostReport(window_s=6 * 3600, lines=(), totals=(), groups={"team": (ml,)}),
        errors=() if ok else ("metrics (prometheus, unreachable): refused",),
        duration_s=2.0,
    )


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET, error statuses included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample called ``name`` in a text exposition, by its label set."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


# /metrics and /healthz --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> SelfMetrics:
    return SelfMetrics(CollectorRegistry(), clock=clock)


@pytest.fixture
def server(metrics: SelfMetrics, clock: Clock) -> Iterator[TelemetryServer]:
    health = freshness(lambda: metrics.last_success_s, max_age_s=900, clock=clock)
    with serve(metrics.registry, "127.0.0.1", 0, health=health) as running:
        yield running


def test_metrics_endpoint_serves_the_registry_as_prometheus_text(server, metrics):
    metrics.observe(result())

    status, headers, body = get(f"{server.url}/metrics")

    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert samples(text, "gpuwatch_cycles_total")[frozenset({("outcome", "ok")})] == 1
    assert samples(text, "gpuwatch_findings") == {
        frozenset({("rule", "gpu_idle"), ("severity", "warning")}): 2
    }
    assert samples(text, "gpuwatch_idle_cost_per_hour") == {
        frozenset({("team", "ml-research"), ("currency", "USD")}): 12.0
    }


def test_metrics_endpoint_honours_an_openmetrics_accept_header(server, metrics):
    metrics.observe(result())

    status, headers, body = get(f"{server.url}/metrics", {"Accept": OPENMETRICS_ACCEPT})

    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert b"# TYPE gpuwatch_cycle_duration_seconds histogram" in body


def test_metrics_endpoint_compresses_when_asked(server, metrics):
    status, headers, body = get(f"{server.url}/metrics", {"Accept-Encoding": "gzip"})

    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert b"gpuwatch_cycles_total" in gzip.decompress(body)


def test_healthz_is_ok_while_cycles_succeed_and_503_once_stale(server, metrics, clock):
    status, _, body = get(f"{server.url}/healthz")
    assert (status, body) == (200, b"ok: no successful cycle yet (0 s since start)\n")

    metrics.observe(result())
    clock.now += 600
    status, _, body = get(f"{server.url}/healthz")
    assert status == 200
    assert body.startswith(b"ok: last successful cycle finished 600 s ago")

    metrics.observe(result(ok=False))  # an errored cycle is no success
    clock.now += 400
    status, _, body = get(f"{server.url}/healthz")
    assert status == 503
    assert body == (b"unhealthy: last successful cycle finished 1000 s ago, over the 900 s limit\n")

    # /metrics is still served: a failing gpuwatch must stay observable.
    assert get(f"{server.url}/metrics")[0] == 200


def test_healthz_fails_when_no_cycle_ever_succeeds(server, clock):
    clock.now += 901

    status, _, body = get(f"{server.url}/healthz")

    assert status == 503
    assert b"no successful cycle in the 901 s since start" in body


def test_healthz_is_503_when_the_health_check_itself_raises():
    def broken() -> tuple[bool, str]:
        raise RuntimeError("state file unreadable")

    with serve(CollectorRegistry(), "127.0.0.1", 0, health=broken) as running:
        status, _, body = get(f"{running.url}/healthz")

    assert status == 503
    assert body == b"unhealthy: health check raised RuntimeError: state file unreadable\n"


def test_unknown_path_is_404(server):
    assert get(f"{server.url}/")[0] == 404


def test_close_releases_the_port():
    running = serve(CollectorRegistry(), "127.0.0.1", 0, health=lambda: (True, ""))
    port = running.port
    assert port > 0
    assert get(f"{running.url}/healthz")[:3:2] == (200, b"ok\n")

    running.close()
    running.close()  # idempotent

    with pytest.raises(OSError):
        get(f"http://127.0.0.1:{port}/healthz")
    serve(CollectorRegistry(), "127.0.0.1", port, health=lambda: (True, "")).close()


# Pushgateway ------------------------------------------------------------------------


class Pushgateway:
    def __init__(self, root: Path) -> None:
        binary = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
        if not Path(binary).exists():
            pytest.fail(PUSHGATEWAY_HINT, pytrace=False)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "pushgateway.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--persistence.file={root / 'pushgateway.data'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        try:
            wait_ready(self.process, f"{self.url}/-/ready", timeout_s, "pushgateway")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {self.log.read_text()[-2000:]}") from exc

    def stop(self) -> None:
        stop_process(self.process, timeout_s=10)

    def scrape(self) -> str:
        status, _, body = get(f"{self.url}/metrics")
        assert status == 200
        return body.decode()


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory) -> Iterator[Pushgateway]:
    gateway = Pushgateway(tmp_path_factory.mktemp("pushgateway"))
    gateway.wait_ready()
    yield gateway
    gateway.stop()


def pushed(registry_result: CycleResult) -> CollectorRegistry:
    registry = CollectorRegistry()
    SelfMetrics(registry).observe(registry_result)
    return registry


def gateway_values(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples called ``name`` carrying ``labels`` (the gateway adds its
    own, ``instance=""`` among them)."""
    return [value for key, value in samples(text, name).items() if set(labels.items()) <= set(key)]


def test_push_lands_in_the_gateway_under_job_and_cluster(pushgateway):
    push(pushed(result(2)), pushgateway.url, "gpuwatch", cluster_grouping_key("prod-eu"))
    push(pushed(result(5)), pushgateway.url, "gpuwatch", cluster_grouping_key("prod-us"))

    text = pushgateway.scrape()

    idle = {"job": "gpuwatch", "rule": "gpu_idle", "severity": "warning"}
    # Two clusters on one gateway: neither overwrites the other.
    assert gateway_values(text, "gpuwatch_findings", **idle, cluster="prod-eu") == [2]
    assert gateway_values(text, "gpuwatch_findings", **idle, cluster="prod-us") == [5]
    assert gateway_values(
        text, "gpuwatch_cycles_total", job="gpuwatch", cluster="prod-eu", outcome="ok"
    ) == [1]
    assert gateway_values(
        text, "gpuwatch_idle_cost_per_hour", cluster="prod-eu", team="ml-research"
    ) == [12.0]
    assert (
        len(gateway_values(text, "gpuwatch_last_success_timestamp_seconds", cluster="prod-eu")) == 1
    )

    # A second push of the same cluster replaces its group, and only its group.
    push(pushed(result(1)), pushgateway.url, "gpuwatch", cluster_grouping_key("prod-eu"))
    text = pushgateway.scrape()
    assert gateway_values(text, "gpuwatch_findings", **idle, cluster="prod-eu") == [1]
    assert gateway_values(text, "gpuwatch_findings", **idle, cluster="prod-us") == [5]


def test_push_sends_credentials_in_the_url_as_basic_auth(pushgateway):
    url = pushgateway.url.replace("http://", "http://gpuwatch:s3cret@")

    push(pushed(result(3)), url, "gpuwatch-auth", cluster_grouping_key("prod-eu"))

    assert gateway_values(pushgateway.scrape(), "gpuwatch_findings", job="gpuwatch-auth") == [3]


def test_push_to_a_dead_port_raises_a_clear_error_without_credentials():
    port = free_port()

    with pytest.raises(PushError) as caught:
        push(
            pushed(result()),
            f"http://gpuwatch:s3cret@127.0.0.1:{port}",
            "gpuwatch",
            cluster_grouping_key("prod-eu"),
            timeout_s=5,
        )

    error = caught.value
    assert error.status is None
    assert error.url == f"http://127.0.0.1:{port}"
    assert str(error).startswith(
        f"push of job 'gpuwatch' to Pushgateway http://127.0.0.1:{port} failed: cannot connect"
    )
    assert "Connection refused" in str(error)
    assert "s3cret" not in str(error)


class _Refusing(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"pushgateway is read-only\n"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_push_refused_by_the_gateway_carries_the_status_and_its_reason():
    refusing = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=refusing.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with pytest.raises(PushError) as caught:
            push(
                pushed(result()),
                f"http://127.0.0.1:{refusing.server_port}",
                "gpuwatch",
                {"instance": "prod-eu"},
            )
    finally:
        refusing.shutdown()
        refusing.server_close()
        thread.join(5)

    assert caught.value.status == 503
    assert str(caught.value).endswith("failed: HTTP 503: pushgateway is read-only")


def test_push_without_a_cluster_in_the_grouping_key_is_refused_before_sending():
    with pytest.raises(ValueError, match="names no cluster"):
        push(CollectorRegistry(), "http://127.0.0.1:1", "gpuwatch", {"zone": "eu"})


def test_http_client_sees_one_answer_per_keepalive_request(server):
    # HTTP/1.1 with Content-Length: two requests on one connection both get answers.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for path in ("/healthz", "/metrics"):
            connection.request("GET", path)
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
    finally:
        connection.close()


def test_a_cronjob_run_pushes_its_metrics_and_a_failed_push_is_only_a_note(pushgateway, tmp_path):
    env = {"GPUWATCH_SELF_METRICS__PUSHGATEWAY_URL": pushgateway.url}
    run = run_gpuwatch("demo", "--output", "json", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    by_rule = json.loads(run.stdout)["summary"]["by_rule"]
    text = pushgateway.scrape()
    for rule, count in by_rule.items():
        assert gateway_values(text, "gpuwatch_findings", cluster="simulated", rule=rule) == [count]

    dead = {"GPUWATCH_SELF_METRICS__PUSHGATEWAY_URL": f"http://127.0.0.1:{free_port()}"}
    run = run_gpuwatch("demo", "--output", "json", cwd=tmp_path, env=dead)
    assert run.returncode == 0, run.stderr
    notes = [n for n in json.loads(run.stdout)["data_quality"] if n["kind"] == "self_metrics"]
    assert len(notes) == 1 and "Pushgateway" in notes[0]["message"]
