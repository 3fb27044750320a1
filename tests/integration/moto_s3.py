"""A real S3 endpoint on loopback (moto's server), for the report store's tests.

pyarrow talks to it over HTTP exactly as it would to AWS, MinIO or Alibaba OSS, through
``report.s3_endpoint_url``: nothing in the code under test is patched. Credentials are
fake and live in the environment only for the test that asks for them (``s3_env``).

moto accepts any credentials until told otherwise; ``MotoS3.enforce_auth`` makes it check
them (against its IAM, which knows none), for the "wrong credentials" case.

Import the fixtures by their function names (``moto_s3_fixture``, ``s3_env_fixture``):
the fixtures are named ``moto_s3`` and ``s3_env``, and a test parameter with the name of
an imported function would shadow it.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from gpuwatch.config.settings import ReportSettings

REGION = "us-east-1"
ACCESS_KEY = "AKIAGPUWATCHTESTONLY"
SECRET_KEY = "gpuwatch-test-secret-not-a-real-one"


@dataclass
class MotoS3:
    """A started moto server: its endpoint, and helpers to prepare buckets."""

    server: ThreadedMotoServer
    endpoint_url: str
    _names: Iterator[int] = field(default_factory=lambda: count(1), repr=False)

    def client(self) -> Any:
        """A boto3 S3 client for preparing and inspecting buckets (not the code under
        test, which goes through pyarrow)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, prefix: str = "reports") -> str:
        """A new, empty bucket with a name no other test of the module uses."""
        name = f"{prefix}-{next(self._names)}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, location: str) -> ReportSettings:
        """Report settings that send ``location`` (``s3://...``) to this server."""
        return ReportSettings(
            location=location, s3_endpoint_url=self.endpoint_url, s3_region=REGION
        )

    @contextmanager
    def enforce_auth(self) -> Iterator[None]:
        """Within the block, moto refuses credentials its IAM does not know (all)."""
        self._reset_auth("0")
        try:
            yield
        finally:
            self._reset_auth("inf")

    def _reset_auth(self, initial_no_auth_requests: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=initial_no_auth_requests.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@pytest.fixture(name="moto_s3", scope="module")
def moto_s3_fixture() -> Iterator[MotoS3]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoS3(server, f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(name="s3_env")
def s3_env_fixture(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path) -> MotoS3:
    """The fake credentials in the environment, where pyarrow's S3 client finds them, and
    no developer's ``~/.aws`` or instance metadata in the way."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return moto_s3
