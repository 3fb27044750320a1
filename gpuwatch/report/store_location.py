"""Opening the weekly report's location: a local folder or a pyarrow filesystem URI.

``report.location`` is a folder, a ``file://`` URI or an object-store URI (``s3://``,
``gs://``); ``report.s3_endpoint_url`` and ``report.s3_region`` point ``s3://`` at
S3-compatible stores (MinIO, Alibaba OSS). This module turns those settings into an
open filesystem and a root path in it, and into a name to show that carries no
credentials, so that what ``ReportStore`` reads and writes is the same on every store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from gpuwatch.config.settings import ReportSettings
from gpuwatch.report.store_errors import ReportStoreError, classify, translated
from gpuwatch.util.redact import redact, without_userinfo

# Timeouts for S3 endpoints gpuwatch configures itself (s3_endpoint_url / s3_region):
# an unreachable endpoint fails the report in seconds rather than hanging the daemon.
S3_CONNECT_TIMEOUT_S = 10.0
S3_REQUEST_TIMEOUT_S = 60.0

BUCKET_FILESYSTEMS = frozenset({"s3", "gcs"})
"""Filesystems whose first path segment is a bucket, which must exist beforehand."""


@dataclass(frozen=True)
class OpenedLocation:
    """A report location, open: ``ReportStore``'s constructor arguments (see there)."""

    filesystem: pafs.FileSystem
    root: str
    uri: str | None = None
    endpoint: str | None = None


def open_location(settings: ReportSettings) -> OpenedLocation:
    """Open ``settings.location``: a local folder (created when missing) or a URI.

    ``s3://`` goes to ``s3_endpoint_url`` and ``s3_region`` when either is set (MinIO,
    Alibaba OSS); any other URI is opened by ``pyarrow.fs.FileSystem.from_uri``.
    Credentials come from the environment, as the AWS and Google SDKs read them.
    """
    location = settings.location.strip()
    if not location:
        raise ReportStoreError("(empty)", "open", "invalid_location", "report.location is empty")
    if "://" not in location:
        return _local_folder(Path(location))
    scheme = urlsplit(location).scheme.lower()
    shown = _redact(location)
    custom_s3 = settings.s3_endpoint_url is not None or settings.s3_region is not None
    if custom_s3 and scheme != "s3":
        raise ReportStoreError(
            shown,
            "open",
            "invalid_location",
            "report.s3_endpoint_url and report.s3_region apply to s3:// locations only",
        )
    if custom_s3:
        return _s3(location, settings.s3_endpoint_url, settings.s3_region)
    try:
        filesystem, root = pafs.FileSystem.from_uri(location)
    except (OSError, pa.ArrowException) as exc:
        kind, reason = classify(exc, bucket=urlsplit(location).hostname, endpoint=None)
        if kind == "io" and isinstance(exc, pa.ArrowInvalid):
            kind = "invalid_location"
        # pyarrow quotes the URI it was given, credentials and all.
        reason = redact(reason.replace(location, shown))
        raise ReportStoreError(shown, "open", kind, reason) from exc
    if isinstance(filesystem, pafs.LocalFileSystem):
        return _local_folder(Path(root))
    return OpenedLocation(filesystem, root, uri=shown)


def _local_folder(folder: Path) -> OpenedLocation:
    folder = folder.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ReportStoreError(
            str(folder), "open", "not_a_directory", "a file is there, not a folder"
        )
    with translated(str(folder), "create the folder"):
        folder.mkdir(parents=True, exist_ok=True)
    return OpenedLocation(pafs.LocalFileSystem(), folder.as_posix())


def _s3(location: str, endpoint_url: str | None, region: str | None) -> OpenedLocation:
    shown = _redact(location)
    parts = urlsplit(location)
    if parts.username or parts.password or parts.query:
        raise ReportStoreError(
            shown,
            "open",
            "invalid_location",
            "with report.s3_endpoint_url or report.s3_region the location takes no "
            "credentials or options; credentials come from the environment",
        )
    if not parts.hostname:
        raise ReportStoreError(shown, "open", "invalid_location", "expected s3://bucket/prefix")
    options: dict[str, object] = {
        "region": region,
        "connect_timeout": S3_CONNECT_TIMEOUT_S,
        "request_timeout": S3_REQUEST_TIMEOUT_S,
    }
    endpoint = None
    if endpoint_url is not None:
        try:
            scheme, netloc = _parse_endpoint(endpoint_url)
        except ValueError as exc:
            raise ReportStoreError(shown, "open", "invalid_location", str(exc)) from exc
        endpoint = f"{scheme}://{netloc}"
        options.update(
            endpoint_override=netloc,
            scheme=scheme,
            # Alibaba OSS refuses path-style requests (SecondLevelDomainForbidden);
            # MinIO and most other S3-compatible servers want them.
            force_virtual_addressing=netloc.split(":")[0].endswith(".aliyuncs.com"),
        )
    where = shown_with_endpoint(shown, endpoint)
    with translated(where, "open", bucket=parts.hostname, endpoint=endpoint):
        filesystem = pafs.S3FileSystem(**options)
    root = f"{parts.hostname}{parts.path}"
    return OpenedLocation(filesystem, root, uri=shown, endpoint=endpoint)


def bucket_of(filesystem: pafs.FileSystem, root: str) -> str | None:
    """The bucket ``root`` lies in on an object store, which must exist beforehand; None
    on filesystems without buckets."""
    return root.split("/", 1)[0] if filesystem.type_name in BUCKET_FILESYSTEMS else None


def _redact(uri: str) -> str:
    """``uri`` without user info (credentials) and query (options, possibly secrets)."""
    parts = urlsplit(without_userinfo(uri))
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def _parse_endpoint(endpoint_url: str) -> tuple[str, str]:
    """``("https", "host:port")`` from ``report.s3_endpoint_url`` (https when it names no
    scheme), without any user info; ValueError when it is not an HTTP(S) endpoint."""
    text = endpoint_url.strip()
    parts = urlsplit(text if "://" in text else f"https://{text}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host or port == -1:
        raise ValueError(
            f"report.s3_endpoint_url {_redact(parts.geturl())!r}: expected http(s)://host[:port]"
        )
    host = f"[{host}]" if ":" in host else host
    return parts.scheme, f"{host}:{port}" if port else host


def shown_with_endpoint(uri: str, endpoint: str | None) -> str:
    """How errors show a location: its URI, and the endpoint when gpuwatch was given one."""
    return f"{uri} (endpoint {endpoint})" if endpoint else uri
