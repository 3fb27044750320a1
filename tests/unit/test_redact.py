"""Redaction at its edges: URLs of every shape, registered secrets, the log filter and
the standard streams (``gpuwatch.util.redact``, ``gpuwatch.util.redact_output``)."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
from dataclasses import dataclass
from enum import StrEnum

import click
import pytest

from gpuwatch.util.redact import (
    MASK,
    MIN_SECRET_CHARS,
    SecretRegistry,
    redact,
    redact_tree,
    redact_url,
    redact_webhook,
    register_secret,
    without_userinfo,
)
from gpuwatch.util.redact_output import RedactingFilter, RedactingStream

# -- URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://prometheus.monitoring:9090",
        "https://mimir.example/prometheus/api/v1/query?query=up",
        "http://[::1]:9090/",
        "http://[2001:db8::1]/path@not-userinfo",
        "s3://bucket/prefix",
        "not a url at all",
        "",
    ],
)
def test_a_url_without_user_info_is_unchanged(url):
    assert redact_url(url) == url
    assert SecretRegistry().redact(url) == url


def test_a_user_without_password_is_kept():
    assert redact_url("https://alice@example.com/x") == "https://alice@example.com/x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://admin:hunter22@host:9090/api", "http://admin:***@host:9090/api"),
        ("http://admin:hunter22@[::1]:9090/api", "http://admin:***@[::1]:9090/api"),
        ("http://admin:hunter22@[2001:db8::7]/", "http://admin:***@[2001:db8::7]/"),
        ("https://u:p%40ss%3Aw0rd@host/", "https://u:***@host/"),
        # An unencoded @ in the password: everything up to the last @ of the authority.
        ("https://u:p@ss@host/x@y", "https://u:***@host/x@y"),
        ("http://:onlypassword@host", "http://:***@host"),
        ("s3://AKIAEXAMPLE:secretkey@bucket/prefix", "s3://AKIAEXAMPLE:***@bucket/prefix"),
    ],
)
def test_a_url_password_is_masked_and_the_rest_kept(url, shown):
    assert redact_url(url) == shown
    assert (
        SecretRegistry().redact(f"cannot reach {url}: refused") == f"cannot reach {shown}: refused"
    )


def test_secret_query_parameters_are_masked():
    url = "s3://bucket/x?region=eu&secret_key=abc123&X-Amz-Signature=f00&token=t0k3n"
    assert redact_url(url) == "s3://bucket/x?region=eu&secret_key=***&X-Amz-Signature=***&token=***"


def test_without_userinfo():
    assert without_userinfo("http://u:p@h:1/x") == "http://h:1/x"
    assert without_userinfo("http://u@[::1]:1/x") == "http://[::1]:1/x"
    assert without_userinfo("gateway:9091") == "http://gateway:9091"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com/***"),
        ("http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/***"),
        ("https://user:pw@[::1]:8443/x", "https://[::1]:8443/***"),
        ("no scheme at all", MASK),
        ("http://[bad", MASK),
    ],
)
def test_a_webhook_shows_its_scheme_and_host_only(url, shown):
    assert redact_webhook(url) == shown


# -- registered secrets ----------------------------------------------------------------


def test_empty_and_blank_secrets_are_never_registered():
    registry = SecretRegistry()
    for nothing in ("", "   ", "\n", None):
        registry.register(nothing)
    registry.register_url("http://user:@host/")
    registry.register_webhook("")
    text = "every character of this text stays"
    assert registry.redact(text) == text
    assert "" not in registry


def test_secrets_too_short_to_search_for_are_not_registered():
    registry = SecretRegistry()
    registry.register("x" * (MIN_SECRET_CHARS - 1))
    assert registry.redact("xxx marks the spot") == "xxx marks the spot"
    registry.register("x" * MIN_SECRET_CHARS)
    assert registry.redact("xxxx marks the spot") == "*** marks the spot"


def test_a_token_inside_other_text_is_masked_and_the_text_around_it_kept():
    registry = SecretRegistry()
    registry.register("tok3n-42")
    assert registry.redact("a-tok3n-42-b tok3n-42tok3n-42") == "a-***-b ******"


def test_a_secret_containing_another_is_masked_whole():
    registry = SecretRegistry()
    registry.register("abcd1234")
    registry.register("abcd1234efgh5678")
    assert registry.redact("[abcd1234efgh5678] [abcd1234]") == "[***] [***]"


def test_a_secret_is_masked_percent_encoded_json_escaped_and_html_escaped():
    registry = SecretRegistry()
    secret = 'p@ss "w0rd" <&>'
    registry.register(secret)
    for form in (
        "p%40ss%20%22w0rd%22%20%3C%26%3E",
        json.dumps(secret)[1:-1],
        "p@ss &quot;w0rd&quot; &lt;&amp;&gt;",
        secret,
    ):
        assert registry.redact(f"<{form}>") == f"<{MASK}>", form


def test_a_secret_read_with_a_newline_is_masked_with_and_without_it():
    registry = SecretRegistry()
    registry.register("file-token-99\n")
    assert registry.redact("Bearer-less file-token-99 here") == "Bearer-less *** here"


def test_a_url_password_is_registered_with_its_basic_auth_header():
    registry = SecretRegistry()
    registry.register_url("http://gw:pa%24%24word@host/")
    basic = base64.b64encode(b"gw:pa$$word").decode()
    text = f"pa$$word pa%24%24word Authorization: Basic {basic}"
    assert registry.redact(text) == "*** *** Authorization: Basic ***"


def test_a_webhook_is_masked_whole_and_by_its_path():
    registry = SecretRegistry()
    url = "https://hooks.slack.com/services/T01/B02/SeCrEt"
    registry.register_webhook(url)
    assert registry.redact(f"posting to {url} failed") == (
        "posting to https://hooks.slack.com/*** failed"
    )
    # urllib3 logs the path without the host.
    assert registry.redact('"POST /services/T01/B02/SeCrEt HTTP/1.1" 404') == (
        '"POST /*** HTTP/1.1" 404'
    )


def test_bearer_tokens_are_masked_by_shape():
    assert SecretRegistry().redact("Authorization: Bearer eyJhbGciOi.x.y") == (
        "Authorization: Bearer ***"
    )


def test_the_process_registry_masks_what_is_registered():
    register_secret("process-wide-canary-3141")
    assert redact("x process-wide-canary-3141 y") == "x *** y"


# -- trees ------------------------------------------------------------------------------


class Colour(StrEnum):
    RED = "red"


@dataclass(frozen=True)
class Note:
    colour: Colour
    message: str
    extra: dict[str, object]
    items: tuple[str, ...] = ()


def test_a_tree_is_rebuilt_only_where_a_secret_was():
    register_secret("tree-canary-2718")
    clean = Note(Colour.RED, "fine", {"n": 1, "f": 1.5, "none": None}, ("a",))
    assert redact_tree(clean) is clean
    dirty = Note(Colour.RED, "x tree-canary-2718", {"k": ["tree-canary-2718"]}, ("a",))
    masked = redact_tree(dirty)
    assert masked == Note(Colour.RED, "x ***", {"k": ["***"]}, ("a",))
    assert masked.colour is Colour.RED
    assert masked.items is dirty.items


# -- the log filter and the streams -------------------------------------------------------


def test_the_log_filter_masks_message_arguments_and_traceback(capsys):
    register_secret("log-canary-1618")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.redact.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("reached %s with %r", "http://u:pw123@h/", {"token": "log-canary-1618"})
        try:
            raise ValueError("refused log-canary-1618")
        except ValueError:
            logger.exception("failed at %s", "log-canary-1618")
        # One argument short: logging reports the call on stderr, with the arguments.
        logger.warning("malformed %s %s", "log-canary-1618")  # noqa: PLE1206
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "log-canary-1618" not in text and "pw123" not in text
    assert "reached http://u:***@h/ with {'token': '***'}" in text
    assert "ValueError: refused ***" in text
    reported = capsys.readouterr().err
    assert "Arguments: ('***',)" in reported  # (the traceback quotes this file's source)


def test_the_redacting_stream_masks_every_write_and_keeps_click_on_it(monkeypatch):
    register_secret("stream-canary-1414")
    target = io.StringIO()
    stream = RedactingStream(target)
    monkeypatch.setattr(sys, "stdout", stream)
    click.echo("echoed stream-canary-1414")
    print("printed", "stream-canary-1414")
    sys.stdout.writelines(["lines stream-canary-1414\n"])
    assert target.getvalue() == "echoed ***\nprinted ***\nlines ***\n"
    assert not hasattr(stream, "buffer")
    assert stream.isatty() is False
