"""gpuwatch's own error hierarchy, so callers never catch a client library's exceptions.

Every error says where the problem is (a file and key, a URL, a resource and verb) and
what was expected, because the person reading it is usually fixing a config at 3 a.m.
"""

from __future__ import annotations


class GpuwatchError(Exception):
    """Base of every error gpuwatch raises on purpose."""


class ConfigError(GpuwatchError):
    """A setting or rule file is unreadable, malformed or refers to something unknown.

    ``problems`` holds one line per problem, each naming the origin (file and line, or
    environment variable, or command-line flag), the key, and what was expected.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SourceError(GpuwatchError):
    """A metrics or cluster source could not deliver what a cycle needs."""

    kind = "source"


class SourceUnreachable(SourceError):
    kind = "unreachable"


class SourceAuthRefused(SourceError):
    kind = "auth_refused"


class SourceBadQuery(SourceError):
    kind = "bad_query"


class StateError(GpuwatchError):
    """The persisted state could not be read or written.

    ``set_aside``: the state was unreadable and has been kept elsewhere, so starting
    afresh loses nothing; otherwise (a store that cannot be reached, say) the state is
    still there, and a cycle must not act as if people had never been told anything.
    """

    def __init__(self, message: str, set_aside: bool = False) -> None:
        super().__init__(message)
        self.set_aside = set_aside


class SourceBadResponse(SourceError):
    """The server answered, but not with what its API promises (garbage, wrong shape)."""

    kind = "bad_response"


class SourceTooLarge(SourceError):
    """A request the server refused as too expensive (422, 503, timeout): split it."""

    kind = "too_large"


class SourcePartialData(SourceError):
    """Part of the data could not be read even after splitting; nothing is judged on it."""

    kind = "partial_data"
