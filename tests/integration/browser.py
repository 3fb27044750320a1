"""Debian's Chromium, headless, as a test instrument for HTML files gpuwatch writes.

One run of ``chromium --headless --screenshot`` loads a local file and gives back what
a reader's browser would do with it:

- the screenshot, decoded here (zlib + numpy, all five PNG filters) so a test can look
  at pixels;
- the console messages, from ``--enable-logging=stderr --v=0``, which prints each as
  ``[pid:tid:date:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)`` (Chromium
  156; older ones wrote ``CONSOLE(<line>)``). Chromium logs every console level as INFO,
  so the level is not known: for a page with no script, every message is a problem
  (a blocked load, a CSP violation, a script a template smuggled in);
- the network requests the page made, from ``--log-net-log``: every
  ``URL_REQUEST_START_JOB`` whose network isolation key is the page's (``file://``).
  Chromium makes requests of its own even with ``--disable-background-networking``
  (component updates, the clock, a spelling dictionary); those carry the isolation key
  of their own site or ``null null`` and initiator ``not an origin``, and are kept
  apart in ``browser_requests``.

A missing Chromium fails the test with the command that installs it: a report test
that silently skips is a report nobody looked at.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

INSTALL = "sudo apt-get install -y --no-install-recommends chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--enable-logging=stderr",
    "--v=0",
)
WINDOW = (1280, 2400)
_CONSOLE = re.compile(
    r"^\[[^\]]*:CONSOLE[:(](?P<line>\d+)\)?\] \"(?P<message>.*)\", source: (?P<source>.*) "
    r"\((?P<source_line>\d+)\)$"
)


@dataclass(frozen=True)
class ConsoleMessage:
    message: str
    source: str
    line: int


@dataclass(frozen=True)
class PageLoad:
    screenshot: np.ndarray
    """RGB uint8, ``(height, width, 3)``."""
    console: tuple[ConsoleMessage, ...]
    requests: tuple[str, ...]
    """URLs the page asked for (its own ``file://`` load aside)."""
    browser_requests: tuple[str, ...]
    """URLs Chromium asked for by itself (updates, the clock): not the page's doing."""
    stderr: str


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"Chromium is needed to test the HTML report; install it: {INSTALL}")


def load_page(html_file: Path, *, timeout_s: float = 60.0) -> PageLoad:
    """Open ``html_file`` in headless Chromium; return what it showed, logged and asked
    for. Fails the test when Chromium does not finish within ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="gpuwatch-chromium-") as tmp:
        work = Path(tmp)
        shot, netlog = work / "screenshot.png", work / "netlog.json"
        command = [
            chromium_binary(),
            *FLAGS,
            f"--user-data-dir={work / 'profile'}",
            f"--screenshot={shot}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--log-net-log={netlog}",
            html_file.resolve().as_uri(),
        ]
        try:
            run = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"chromium did not finish within {timeout_s:.0f} s: {exc.stderr!r}")
        if run.returncode != 0 or not shot.is_file():
            pytest.fail(f"chromium failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
        page, browser = network_requests(netlog)
        return PageLoad(
            screenshot=decode_png(shot.read_bytes()),
            console=console_messages(run.stderr),
            requests=page,
            browser_requests=browser,
            stderr=run.stderr,
        )


def console_messages(stderr: str) -> tuple[ConsoleMessage, ...]:
    """The console messages in Chromium's ``--enable-logging=stderr`` output."""
    found = []
    for line in stderr.splitlines():
        match = _CONSOLE.match(line.strip())
        if match:
            found.append(
                ConsoleMessage(match["message"], match["source"], int(match["source_line"]))
            )
        elif ":CONSOLE" in line:
            # A format this parser does not know: report it rather than miss it.
            found.append(ConsoleMessage(line.strip(), "?", 0))
    return tuple(found)


def network_requests(netlog: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(page requests, browser requests)`` from a ``--log-net-log`` file."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except ValueError:
        # Chromium writes the closing brackets at exit; tolerate a log cut short.
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    event_types = log["constants"]["logEventTypes"]
    start_job = event_types["URL_REQUEST_START_JOB"]
    page: list[str] = []
    browser: list[str] = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event.get("type") != start_job or "url" not in params:
            continue
        url = params["url"]
        if url.startswith(("file:", "data:")):
            continue
        isolation = str(params.get("network_isolation_key", ""))
        initiator = str(params.get("initiator", ""))
        from_page = isolation.startswith("file://") or initiator in ("null", "file://")
        (page if from_page else browser).append(url)
    return tuple(page), tuple(browser)


# --------------------------------------------------------------------------- PNG


def decode_png(png: bytes) -> np.ndarray:
    """An 8-bit RGB or RGBA, non-interlaced PNG as RGB uint8 ``(height, width, 3)``.

    None, Sub and Up scanlines are undone with numpy; Average and Paeth, whose every
    byte depends on the one decoded before it, byte by byte (Chromium uses them on a
    few rows only).
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    position, idat, header = 8, bytearray(), b""
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}")
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(bytes(idat)), np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:]
        if kind == 0:
            row = line.copy()
        elif kind == 1:
            row = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(stride)
        elif kind == 2:
            row = line + previous
        elif kind in (3, 4):
            row = _sequential_row(line, previous, bpp, paeth=kind == 4)
        else:
            raise ValueError(f"PNG row {y}: unknown filter {kind}")
        out[y] = row
        previous = row
    return out.reshape(height, width, bpp)[:, :, :3]


def _sequential_row(line: np.ndarray, above: np.ndarray, bpp: int, *, paeth: bool) -> np.ndarray:
    data, up = line.tolist(), above.tolist()
    row = [0] * len(data)
    for i, value in enumerate(data):
        left = row[i - bpp] if i >= bpp else 0
        if paeth:
            upper_left = up[i - bpp] if i >= bpp else 0
            estimate = left + up[i] - upper_left
            dist_left, dist_up = abs(estimate - left), abs(estimate - up[i])
            dist_upper_left = abs(estimate - upper_left)
            if dist_left <= dist_up and dist_left <= dist_upper_left:
                predicted = left
            elif dist_up <= dist_upper_left:
                predicted = up[i]
            else:
                predicted = upper_left
        else:
            predicted = (left + up[i]) // 2
        row[i] = (value + predicted) & 0xFF
    return np.array(row, np.uint8)
