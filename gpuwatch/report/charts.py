"""The report's charts, drawn from the figures as SVG and PNG with no plotting library.

The weekly HTML must open offline and as a Slack attachment, so every chart is inline:
bar charts and the histogram are SVG text, the heatmap is a PNG (one pixel block per GPU
and hour: too many cells for SVG elements) encoded here with numpy and zlib and embedded
as a ``data:`` URI. The SVG is inline HTML, so it needs no ``xmlns``: the page holds no
URL at all. All text is XML-escaped, and the output is a pure function of the input (no
timestamps, no random ids), so two renders of one report are byte-identical.

Colours: utilization uses viridis (0 % dark purple, 100 % bright yellow; perceptually
uniform and readable by colour-blind readers). A gap (no data) is grey hatching, so
that it can never be mistaken for 0 % (idle).
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from gpuwatch.report.figures import Heatmap

# Viridis at 0, 0.1, ..., 1.
_VIRIDIS = np.array(
    [
        (0x44, 0x01, 0x54),
        (0x48, 0x24, 0x75),
        (0x41, 0x44, 0x87),
        (0x35, 0x5F, 0x8D),
        (0x2A, 0x78, 0x8E),
        (0x21, 0x91, 0x8C),
        (0x22, 0xA8, 0x84),
        (0x44, 0xBF, 0x70),
        (0x7A, 0xD1, 0x51),
        (0xBD, 0xDF, 0x26),
        (0xFD, 0xE7, 0x25),
    ],
    dtype=np.float64,
)
GAP_LIGHT = (0xEE, 0xEE, 0xEE)
GAP_DARK = (0xB4, 0xB4, 0xB4)
"""The two greys of a gap's hatching (diagonal stripes)."""
_HATCH_PX = 3
_ATTR_NAME = re.compile(r"[a-z][a-z0-9-]*")

BAR_COLOUR = "#3b6ea5"
HIGHLIGHT_COLOUR = "#c0392b"
TEXT_COLOUR = "#222"
MUTED_COLOUR = "#666"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its length, the text printed after it, and attributes for
    that text (``data-money`` and friends, so that a test can read the value back)."""

    label: str
    value: float
    text: str
    attrs: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- bar chart


def bar_chart(bars: Sequence[Bar], caption: str, *, width: int = 720) -> str:
    """A horizontal bar chart as an SVG element; bars in the order given."""
    label_w, text_w, row_h, top = 190, 130, 24, 6
    plot_w = width - label_w - text_w
    height = top * 2 + row_h * max(len(bars), 1)
    peak = max((bar.value for bar in bars), default=0.0)
    parts = [_svg_open(width, height, caption)]
    for i, bar in enumerate(bars):
        y = top + i * row_h
        length = 0.0 if peak <= 0 else max(bar.value, 0.0) / peak * plot_w
        label = _truncate(bar.label, 30)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" font-size="12" '
            f'fill="{TEXT_COLOUR}"><title>{escape(bar.label)}</title>{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row_h - 8}" '
            f'fill="{BAR_COLOUR}"/>'
            f'<text x="{label_w + length + 6:.1f}" y="{y + 16}" font-size="12" '
            f'fill="{TEXT_COLOUR}"{_attrs(bar.attrs)}>{escape(bar.text)}</text>'
        )
    if not bars:
        parts.append(
            f'<text x="{label_w}" y="{top + 16}" font-size="12" fill="{MUTED_COLOUR}">'
            "no data</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- histogram


def histogram(
    edges: Sequence[float],
    counts: Sequence[int],
    caption: str,
    *,
    highlight_above: float | None = None,
    width: int = 720,
    height: int = 220,
) -> str:
    """Vertical bars, one per bin (``len(edges) == len(counts) + 1``), the count above
    each non-empty bar; bins starting at or above ``highlight_above`` in red."""
    if len(edges) != len(counts) + 1:
        raise ValueError("histogram: expected one more edge than counts")
    left, bottom, top = 44, 34, 18
    plot_w, plot_h = width - left - 10, height - top - bottom
    slot = plot_w / max(len(counts), 1)
    peak = max(counts, default=0)
    parts = [_svg_open(width, height, caption)]
    base = top + plot_h
    parts.append(
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="{MUTED_COLOUR}"/>'
    )
    for i, count in enumerate(counts):
        x = left + i * slot
        bar_h = 0.0 if peak == 0 else count / peak * plot_h
        hot = highlight_above is not None and edges[i] >= highlight_above - 1e-12
        colour = HIGHLIGHT_COLOUR if hot else BAR_COLOUR
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{base - bar_h:.1f}" width="{slot - 2:.1f}" '
            f'height="{bar_h:.1f}" fill="{colour}"><title>'
            f"{escape(f'{edges[i]:.0%}-{edges[i + 1]:.0%}: {count:,}')}</title></rect>"
        )
        if count:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{base - bar_h - 3:.1f}" font-size="9" '
                f'text-anchor="middle" fill="{TEXT_COLOUR}">{count:,}</text>'
            )
    for i, edge in enumerate(edges):
        if i % 2 == 0:
            parts.append(
                f'<text x="{left + i * slot:.1f}" y="{base + 14}" font-size="10" '
                f'text-anchor="middle" fill="{MUTED_COLOUR}">{edge:.0%}</text>'
            )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" '
        f'text-anchor="middle" fill="{MUTED_COLOUR}">highest GPU memory use in the hour</text>'
        f'<text x="4" y="{top - 6}" font-size="11" fill="{MUTED_COLOUR}">GPU-hours</text>'
        "</svg>"
    )
    return "".join(parts)


# --------------------------------------------------------------------------- heatmap


def utilization_colours(values: np.ndarray) -> np.ndarray:
    """RGB (uint8, shape ``values.shape + (3,)``) of each utilization 0..1; NaN cells get
    ``GAP_LIGHT`` here (the hatching is drawn per pixel by ``heatmap_pixels``)."""
    clipped = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    position = clipped * (len(_VIRIDIS) - 1)
    low = np.minimum(np.floor(position).astype(np.int64), len(_VIRIDIS) - 2)
    frac = (position - low)[..., None]
    rgb = _VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac
    out = np.rint(rgb).astype(np.uint8)
    out[np.isnan(values)] = GAP_LIGHT
    return out


def heatmap_pixels(values: np.ndarray, cell_w: int, cell_h: int) -> np.ndarray:
    """The heatmap as an RGB image: each cell a ``cell_w`` x ``cell_h`` block, gaps
    hatched with diagonal grey stripes."""
    rows, cols = values.shape
    image = np.repeat(np.repeat(utilization_colours(values), cell_h, axis=0), cell_w, axis=1)
    gap = np.repeat(np.repeat(np.isnan(values), cell_h, axis=0), cell_w, axis=1)
    y, x = np.indices((rows * cell_h, cols * cell_w))
    stripe = ((x + y) // _HATCH_PX) % 2 == 1
    image[gap & stripe] = GAP_DARK
    return image


def encode_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (uint8, ``(height, width, 3)``), every scanline with
    the Up filter (rows of a heatmap repeat, so most filtered rows are zeros)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("encode_png: expected uint8 of shape (height, width, 3)")
    height, width, _ = rgb.shape
    if not height or not width:
        raise ValueError("encode_png: empty image")
    rows = rgb.reshape(height, width * 3)
    up = rows - np.vstack([np.zeros((1, width * 3), np.uint8), rows[:-1]])  # wraps mod 256
    scanlines = np.hstack([np.full((height, 1), 2, np.uint8), up])

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class HeatmapLayout:
    cell_w: int
    cell_h: int
    show_row_labels: bool


def heatmap_layout(rows: int, hours: int) -> HeatmapLayout:
    """Cells as large as fit about 840 x 960 pixels; row labels once rows are tall
    enough to read them."""
    cell_w = max(1, min(8, 840 // max(hours, 1)))
    cell_h = max(2, min(14, 960 // max(rows, 1)))
    return HeatmapLayout(cell_w, cell_h, show_row_labels=cell_h >= 10)


def heatmap_svg(heat: Heatmap, caption: str) -> str:
    """The heatmap PNG inside an SVG with its pool bands, row labels (when rows are tall
    enough) and a tick per day."""
    rows, hours = heat.values.shape
    if not rows or not hours:
        return bar_chart((), caption)
    layout = heatmap_layout(rows, hours)
    png = encode_png(heatmap_pixels(heat.values, layout.cell_w, layout.cell_h))
    pool_w, label_w, top, bottom = 110, 170 if layout.show_row_labels else 0, 8, 26
    left = pool_w + label_w
    image_w, image_h = hours * layout.cell_w, rows * layout.cell_h
    width, height = left + image_w + 8, top + image_h + bottom
    parts = [
        _svg_open(width, height, caption),
        f'<image x="{left}" y="{top}" width="{image_w}" height="{image_h}" '
        f'preserveAspectRatio="none" style="image-rendering:pixelated" '
        f'href="{png_data_uri(png)}"/>',
    ]
    # Pool bands: a label per run of rows of one pool, and a rule between pools.
    start = 0
    for i in range(1, rows + 1):
        if i < rows and heat.row_pools[i] == heat.row_pools[start]:
            continue
        y0, y1 = top + start * layout.cell_h, top + i * layout.cell_h
        if y1 - y0 >= 12:
            parts.append(
                f'<text x="{pool_w - 6}" y="{(y0 + y1) / 2 + 4:.1f}" text-anchor="end" '
                f'font-size="11" font-weight="600" fill="{TEXT_COLOUR}">'
                f"{escape(_truncate(heat.row_pools[start], 16))}</text>"
            )
        if start:
            parts.append(
                f'<line x1="4" y1="{y0}" x2="{left + image_w}" y2="{y0}" '
                f'stroke="{TEXT_COLOUR}" stroke-width="1"/>'
            )
        start = i
    if layout.show_row_labels:
        for i, label in enumerate(heat.row_labels):
            parts.append(
                f'<text x="{left - 6}" y="{top + i * layout.cell_h + layout.cell_h - 2}" '
                f'text-anchor="end" font-size="{min(11, layout.cell_h - 1)}" '
                f'fill="{MUTED_COLOUR}">{escape(_truncate(label, 28))}</text>'
            )
    for day in range(0, hours + 1, 24):
        x = left + day * layout.cell_w
        parts.append(
            f'<line x1="{x}" y1="{top + image_h}" x2="{x}" y2="{top + image_h + 5}" '
            f'stroke="{MUTED_COLOUR}"/>'
        )
        if day < hours:
            when = heat.start + timedelta(hours=day)
            parts.append(
                f'<text x="{x + 2}" y="{top + image_h + 17}" font-size="10" '
                f'fill="{MUTED_COLOUR}">{escape(when.strftime("%a %d %b"))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def heatmap_legend_svg(width: int = 520) -> str:
    """The colour scale, 0 % to 100 %, and the gap swatch."""
    bar_w, height = 300, 44
    stops = "".join(
        f'<stop offset="{i / (len(_VIRIDIS) - 1):.2f}" stop-color="{_hex(rgb)}"/>'
        for i, rgb in enumerate(_VIRIDIS)
    )
    ticks = "".join(
        f'<text x="{10 + bar_w * p / 100:.0f}" y="38" font-size="10" text-anchor="middle" '
        f'fill="{MUTED_COLOUR}">{p} %</text>'
        for p in (0, 25, 50, 75, 100)
    )
    gap_x = 10 + bar_w + 40
    return (
        _svg_open(width, height, "Colour scale: utilization 0 % to 100 %; hatched grey: no data")
        + '<defs><linearGradient id="gw-util-scale" x1="0" x2="1" y1="0" y2="0">'
        + stops
        + "</linearGradient>"
        '<pattern id="gw-gap-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(-45)">'
        f'<rect width="6" height="6" fill="{_hex(GAP_LIGHT)}"/>'
        f'<rect width="3" height="6" fill="{_hex(GAP_DARK)}"/></pattern></defs>'
        f'<rect x="10" y="6" width="{bar_w}" height="18" fill="url(#gw-util-scale)"/>'
        + ticks
        + f'<rect x="{gap_x}" y="6" width="24" height="18" fill="url(#gw-gap-hatch)" '
        f'stroke="{MUTED_COLOUR}" stroke-width="0.5"/>'
        f'<text x="{gap_x + 30}" y="19" font-size="11" fill="{TEXT_COLOUR}">'
        "no data (gap)</text></svg>"
    )


# --------------------------------------------------------------------------- helpers


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(title)} {FONT} '
        f'style="max-width:100%;height:auto"><title>{escape(title)}</title>'
    )


def _attrs(attrs: Mapping[str, str]) -> str:
    for name in attrs:
        if not _ATTR_NAME.fullmatch(name):
            raise ValueError(f"chart attribute name {name!r}: expected a-z, 0-9 and -")
    return "".join(f" {name}={quoteattr(value)}" for name, value in attrs.items())


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hex(rgb: Sequence[float] | np.ndarray) -> str:
    r, g, b = (round(float(c)) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"
