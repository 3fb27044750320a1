"""The process's own outputs, redacted: log records and the standard streams.

The command line installs both before anything else runs (``gpuwatch.cli.common``), so
that whatever a library logs or an error prints passes ``gpuwatch.util.redact`` on its
way out: a log record's message, arguments, traceback and stack; every write to
standard output and standard error. Text is best redacted where it is made, before it
is wrapped into table cells or escaped into JSON; these are the last line, for what
gpuwatch does not make itself (urllib3's retry warnings, slack_sdk's debug log, a bug's
traceback).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from gpuwatch.util.redact import redact


class RedactingFilter(logging.Filter):
    """Redacts a record in place: its message (arguments merged in), its traceback and
    its stack. Never drops a record. On a handler it covers every record the handler
    writes; on a logger, only the records logged to that logger itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it, with the redacted args
            record.args = tuple(redact(str(arg)) for arg in _args(record))
            record.msg = redact(str(record.msg))
            return True
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _args(record: logging.LogRecord) -> tuple[Any, ...]:
    args = record.args
    if isinstance(args, tuple):
        return args
    return () if args is None else (args,)


LOG_FILTER = RedactingFilter()
"""One filter for every handler and logger it is installed on."""


def redact_log_records() -> None:
    """Install the filter on every handler of the root logger (what the command line's
    ``logging.basicConfig`` made): every record written through them is redacted."""
    for handler in logging.getLogger().handlers:
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)


def redact_logger(logger: logging.Logger) -> None:
    """Install the filter on ``logger`` itself, for a client library that logs what it
    was given (slack_sdk logs a webhook's URL): redacted whatever handlers run."""
    if LOG_FILTER not in logger.filters:
        logger.addFilter(LOG_FILTER)


class RedactingStream:
    """A text stream that redacts each write before passing it on. Everything else
    (encoding, ``isatty``, ``fileno``) is the wrapped stream's, except ``buffer``: the
    bytes underneath are not offered, so that writers (click) keep to the text."""

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(redact(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":
            raise AttributeError(name)
        return getattr(self.wrapped, name)


def redact_standard_streams() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in ``RedactingStream`` (once)."""
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)  # type: ignore[assignment]
