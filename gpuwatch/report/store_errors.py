"""Why the report location could not be read or written, in words a person can act on.

pyarrow's filesystems raise ``OSError`` and ``ArrowException`` whose messages come from
the AWS SDK, Google Cloud or the OS. ``ReportStoreError`` says instead which location
(never its credentials), what was being done, and the likely cause: a missing bucket,
refused credentials, an endpoint that does not answer, a folder that is a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from gpuwatch.model.errors import GpuwatchError


class ReportStoreError(GpuwatchError):
    """The report location could not be read or written.

    ``kind`` says why, for callers that react differently (and for tests):
    ``invalid_location``, ``invalid_name``, ``bucket_missing``, ``access_denied``,
    ``unreachable``, ``not_a_directory``, ``incomplete``, ``not_found``, ``bad_file``,
    ``io``.
    """

    def __init__(self, location: str, operation: str, kind: str, reason: str) -> None:
        self.location = location
        self.operation = operation
        self.kind = kind
        self.reason = reason
        super().__init__(f"report store {location}: cannot {operation}: {reason}")


# Substrings of the AWS SDK's, Google Cloud's and the OS's messages, by cause.
_BUCKET_MISSING = ("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist")
_ACCESS_DENIED = (
    "ACCESS_DENIED",
    "AccessDenied",
    "INVALID_ACCESS_KEY_ID",
    "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH",
    "SignatureDoesNotMatch",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "Forbidden",
)
_UNREACHABLE = (
    "NETWORK_CONNECTION",
    "curlCode",
    "Could not connect",
    "Couldn't connect",
    "Could not resolve",
    "Couldn't resolve",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "REQUEST_TIMEOUT",
    "timed out",
)


def classify(exc: BaseException, *, bucket: str | None, endpoint: str | None) -> tuple[str, str]:
    """``(kind, reason)`` for a filesystem error; the reason keeps the original message,
    which names the key and the request but never the credentials."""
    message = str(exc).strip() or type(exc).__name__
    if any(marker in message for marker in _BUCKET_MISSING):
        named = f"bucket {bucket!r}" if bucket else "the bucket"
        return "bucket_missing", f"{named} does not exist; create it first ({message})"
    if isinstance(exc, PermissionError) or any(marker in message for marker in _ACCESS_DENIED):
        return "access_denied", (
            "access denied: check the credentials (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, the instance or workload role) and what they may do "
            f"on the bucket ({message})"
        )
    if isinstance(exc, ConnectionError | TimeoutError) or any(
        marker in message for marker in _UNREACHABLE
    ):
        where = f"endpoint {endpoint}" if endpoint else "the storage endpoint"
        return "unreachable", f"{where} does not answer ({message})"
    if isinstance(exc, NotADirectoryError | FileExistsError):
        return "not_a_directory", f"a file is in the way of a folder ({message})"
    return "io", message


@contextmanager
def translated(
    location: str, operation: str, *, bucket: str | None = None, endpoint: str | None = None
) -> Iterator[None]:
    """Raise a filesystem failure within as a ReportStoreError of ``operation`` on
    ``location``, classified (``bucket`` and ``endpoint`` name what was missing)."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        kind, reason = classify(exc, bucket=bucket, endpoint=endpoint)
        raise ReportStoreError(location, operation, kind, reason) from exc
