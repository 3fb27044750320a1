"""No secret leaves gpuwatch: a canary in every secret setting at once, every command that
reads the settings run as a user runs it, and none of the canaries anywhere it wrote.

The secret settings come from the schema's marker (``gpuwatch.config.secrets``), so a
new secret setting is covered without changing this test. Every source and sink points
at a loopback server that refuses everything with 401 and, to make leaks likely, echoes
in its error body the path, the query and every header it was sent (a proxy that quotes
the request is not unheard of). Logging runs at DEBUG, so that urllib3, slack_sdk and
APScheduler say all they say. What is searched: standard output and standard error (the
log included), and every file under the working folder (the cycle JSON, the state, the
report's Parquet tables and HTML, the exported rules, the history file).
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import click
import pyarrow.parquet as pq
import pytest
import yaml

from gpuwatch.cli import cli
from gpuwatch.config.load import load_settings
from gpuwatch.config.secrets import SDK_SECRET_ENV, SecretSetting, secret_settings
from tests.builders import run_gpuwatch
from tests.integration.loopback import LoopbackHTTPServer, Serving
from tests.integration.prometheus_server import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO / "tests" / "fixtures" / "kubectl_snapshot.json"
PREFIX = "Zq7canary"
"""Every canary starts with this; it appears in no output of gpuwatch otherwise."""
USER = "canaryuser"
"""The user name in every URL's user info, so that basic-auth headers can be searched."""
WEEK = "2026-W48"

# Commands that read no settings, and why they are not run here.
READ_NO_SETTINGS = {
    "config docs": "prints the settings reference; reads no settings",
    "rules validate": "checks rule files only",
    "simulate serve": "serves the simulator's metrics from its own flags",
    "simulate export": "writes simulated series from its own flags",
    "simulate snapshot": "writes a simulated cluster from its own flags",
    "train": "the reference training job (torch); reads no gpuwatch settings",
}


CREDENTIAL_HEADERS = {"authorization", "x-canary", "x-scope-orgid"}


class _Refuse(BaseHTTPRequestHandler):
    """401 to everything, echoing what it was sent: the credentials first (error
    messages keep the start of a body), then the path and the rest of the headers."""

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        headers = dict(self.headers)
        first = {k: headers.pop(k) for k in list(headers) if k.lower() in CREDENTIAL_HEADERS}
        echoed = f"refused {first} at {self.path} with {headers} and {body[:500]}"
        payload = json.dumps({"status": "error", "errorType": "auth", "error": echoed})
        data = payload.encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def refusing() -> Iterator[str]:
    server = LoopbackHTTPServer(("127.0.0.1", 0), _Refuse)
    serving = Serving(server, "refusing-echo", deadline_s=600)
    yield f"127.0.0.1:{server.server_address[1]}"
    serving.stop()


@dataclass
class Secrets:
    """Where the canaries were put: the settings file, the environment, and the forms
    in which each could leak."""

    config: Path
    env: dict[str, str]
    canaries: list[str]
    encoded: list[str]
    planted: dict[str, str]
    """Setting (dotted) -> its canary."""

    def leaks(self, text: str) -> list[str]:
        found = [c for c in self.canaries if c in text]
        found += [e for e in self.encoded if e in text]
        if PREFIX in text and not found:
            found.append(PREFIX)
        return found


def canary(setting: SecretSetting) -> str:
    return f"{PREFIX}{secrets.token_hex(6)}{setting.dotted.replace('.', '')[-12:]}"


def plant(
    folder: Path, refusing: str, *, plain: frozenset[str] = frozenset(), simulated: bool = False
) -> Secrets:
    """A settings file and environment with a canary in every secret setting but those
    ``plain`` names: a URL among them has no password, a file or variable is not set."""
    folder.mkdir()
    tree: dict[str, Any] = {
        "prometheus": {"username": USER, "timeout_s": 5},
        "cluster": {"snapshot_path": str(SNAPSHOT)},
        "daemon": {"interval": "1h", "report_cron": None},
        "self_metrics": {"address": "127.0.0.1", "port": free_port()},
        "notify": {"silences_configmap": None, "slack": {"connection_retries": 0}},
    }
    env = {"GPUWATCH_CONFIG": str(folder / "gpuwatch.yaml")}
    if simulated:
        env |= {"GPUWATCH_METRICS__SOURCE": "simulator", "GPUWATCH_CLUSTER__SOURCE": "auto"}
    else:
        env |= {"GPUWATCH_METRICS__SOURCE": "prometheus", "GPUWATCH_CLUSTER__SOURCE": "snapshot"}
    canaries: list[str] = []
    planted: dict[str, str] = {}
    for setting in secret_settings():
        if setting.dotted in plain:
            if setting.kind == "url":
                put(tree, setting, url_with(setting, refusing, None))
            elif setting.kind == "env":
                put(tree, setting, "CANARY_NO_SUCH_VARIABLE")
            continue
        secret = canary(setting)
        canaries.append(secret)
        planted[setting.dotted] = secret
        webhook = f"http://{refusing}/services/T0CANARY/B0CANARY/{secret}"
        held = webhook if setting.webhook else secret
        if setting.kind == "url":
            value: Any = url_with(setting, refusing, secret)
        elif setting.kind == "value":
            value = {"X-Canary": secret} if setting.dotted.endswith("headers") else secret
        elif setting.kind == "file":
            path = folder / f"{setting.dotted}.secret"
            path.write_text(held + "\n", encoding="utf-8")
            value = str(path)
        else:
            variable = "CANARY_" + setting.dotted.upper().replace(".", "_")
            env[variable] = held
            value = variable
        put(tree, setting, value)
    for name in SDK_SECRET_ENV:
        env[name] = f"{PREFIX}{secrets.token_hex(8)}"
        canaries.append(env[name])
    (folder / "gpuwatch.yaml").write_text(yaml.safe_dump(tree), encoding="utf-8")
    encoded = [base64.b64encode(f"{USER}:{c}".encode()).decode() for c in canaries]
    return Secrets(folder / "gpuwatch.yaml", env, canaries, encoded, planted)


def put(tree: dict[str, Any], setting: SecretSetting, value: Any) -> None:
    node = tree
    for key in setting.path[:-1]:
        node = node.setdefault(key, {})
    node[setting.path[-1]] = value


def url_with(setting: SecretSetting, refusing: str, secret: str | None) -> str:
    """A URL of the kind the setting takes, with the canary as its password."""
    userinfo = f"{USER}:{secret}@" if secret else ""
    if setting.dotted == "report.location":
        return f"s3://{userinfo}canary-bucket/reports"
    path = "/api/" if setting.dotted.endswith("base_url") else "/"
    return f"http://{userinfo}{refusing}{path}"


@dataclass(frozen=True)
class Run:
    command: str
    args: tuple[str, ...] = ()
    simulated: bool = False
    """Metrics and cluster from the simulator (a cycle with findings and messages)."""
    plain: frozenset[str] = frozenset()
    """Settings left without a canary, so that the run takes a path the canaries close."""


WEBHOOK = frozenset({"notify.slack.token_file", "notify.slack.token_env"})
"""Without a bot token, messages go to the webhook."""
SLACK_API = frozenset({"notify.slack.base_url"})
"""urllib cannot connect to a URL with user info: without it, the token reaches Slack's
Web API (the refusing server)."""


RUNS = [
    Run("once"),
    Run("once", ("--output", "json")),
    Run("savings"),
    Run("demo", simulated=True),
    Run("demo", simulated=True, plain=WEBHOOK),
    Run("demo", simulated=True, plain=SLACK_API),
    Run("once", ("--output", "json"), simulated=True, plain=WEBHOOK),
    Run("once", ("--output", "json"), simulated=True, plain=SLACK_API),
    Run(
        "history",
        (
            "--from",
            "2026-11-23T00:00:00Z",
            "--to",
            "2026-11-24T00:00:00Z",
            "--out",
            "history.parquet",
        ),
    ),
    Run("report", ("--week", WEEK)),
    Run("report", ("--week", WEEK, "--out", "reports"), simulated=True),
    Run("report", ("--week", WEEK, "--out", "reports"), simulated=True, plain=SLACK_API),
    Run("report", ("--fleet",)),
    Run("report", ("--fleet", "--out", "reports")),
    Run("rules export", ("--format", "prometheus-rule", "--out", "rules.yaml")),
    Run("config show"),
    Run("run"),
]


def commands(group: click.Group = cli, prefix: str = "") -> Iterator[str]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}"


def test_every_command_is_run_or_reads_no_settings():
    every = set(commands())
    assert every == {run.command for run in RUNS} | set(READ_NO_SETTINGS)
    for name in READ_NO_SETTINGS:
        command: Any = cli
        for part in name.split():
            command = command.commands[part]
        assert "load_settings" not in inspect.getsource(command.callback), name


def test_the_canaries_fill_every_secret_setting(tmp_path, refusing):
    planted = plant(tmp_path / "in", refusing)
    settings = load_settings(planted.config, planted.env)
    assert len(planted.planted) == len(secret_settings()) >= 10
    for setting in secret_settings():
        value = setting.value(settings)
        if setting.kind == "file":
            value = Path(value).read_text()
        elif setting.kind == "env":
            value = planted.env[value]
        assert planted.planted[setting.dotted] in str(value), setting.dotted


def run_id(run: Run) -> str:
    name = "-".join([run.command.replace(" ", "-"), *run.args[:2]]).replace("--", "")
    variant = {WEBHOOK: "-webhook", SLACK_API: "-slack-api"}.get(run.plain, "")
    return name + ("-simulated" if run.simulated else "") + variant


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS, ids=run_id)
def test_no_secret_leaves_any_command(tmp_path, refusing, run):
    planted = plant(tmp_path / "in", refusing, plain=run.plain, simulated=run.simulated)
    work = tmp_path / "work"
    work.mkdir()
    args = ["--log-level", "DEBUG", *run.command.split(), *run.args]
    if run.command == "run":
        stdout, stderr = run_daemon(args, work, planted.env)
    else:
        done = run_gpuwatch(*args, cwd=work, env=planted.env, timeout=240)
        stdout, stderr = done.stdout, done.stderr
        assert done.returncode in (0, 1, 2), stderr
    leaks = {"stdout": planted.leaks(stdout), "stderr": planted.leaks(stderr)}
    written = list(files(work))
    for path in written:
        leaks[str(path.relative_to(work))] = planted.leaks(readable(path))
    assert not {where: found for where, found in leaks.items() if found}, (stdout, stderr)


def run_daemon(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, str]:
    """``gpuwatch run`` until its first cycle is written, then SIGTERM."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("GPUWATCH_")} | env
    process = subprocess.Popen(
        [sys.executable, "-m", "gpuwatch", *args],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    latest = cwd / "gpuwatch-out" / "cycle-latest.json"
    while not latest.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert latest.exists(), stderr
    return stdout, stderr


def files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path


def readable(path: Path) -> str:
    """A file's text; a Parquet file's rows (its bytes are compressed)."""
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), default=str)
    return path.read_bytes().decode("utf-8", "replace")
