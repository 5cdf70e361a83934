"""The drift picture: for each of a few statistics, the reference's and the served traffic's shares per
shared bin, overlaid, as an SVG inside markdown (what the Dagster UI shows, as it does the model's
precision-recall curve)."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

from sms_core.served_log.drift import Statistic

PANEL_WIDTH, PANEL_HEIGHT, PAD = 360, 210, 36
REFERENCE_COLOUR, SERVED_COLOUR = "#2563eb", "#dc2626"


def _edge(value: float) -> str:
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    return f"{value:.3g}"


def _panel(statistic: Statistic, left: float, top: float) -> str:
    bins = len(statistic.reference)
    width = (PANEL_WIDTH - 2 * PAD) / bins
    height = PANEL_HEIGHT - 2 * PAD
    tallest = max([*statistic.reference, *statistic.served, 1e-9])
    bars = []
    for index, (p, q) in enumerate(zip(statistic.reference, statistic.served, strict=True)):
        x = left + PAD + index * width
        for share, colour, offset in ((p, REFERENCE_COLOUR, 0.1), (q, SERVED_COLOUR, 0.5)):
            h = share / tallest * height
            bars.append(
                f'<rect x="{x + offset * width:.1f}" y="{top + PAD + height - h:.1f}" '
                f'width="{0.4 * width:.1f}" height="{h:.1f}" fill="{colour}" fill-opacity="0.75"/>'
            )
    labels = "".join(
        f'<text x="{left + PAD + index * width:.1f}" y="{top + PANEL_HEIGHT - PAD + 12}" font-size="9" '
        f'text-anchor="middle">{_edge(edge)}</text>'
        for index, edge in enumerate(statistic.edges)
        if index % max(1, bins // 5) == 0 or index == bins
    )
    title = f"{statistic.name}: Jensen-Shannon {statistic.value:.3f} ({statistic.severity})"
    return (
        f'<rect x="{left + PAD}" y="{top + PAD}" width="{PANEL_WIDTH - 2 * PAD}" height="{height}" '
        'fill="none" stroke="#999"/>'
        f"{''.join(bars)}{labels}"
        f'<text x="{left + PANEL_WIDTH / 2}" y="{top + 20}" font-size="11" text-anchor="middle">'
        f"{_escape(title)}</text>"
    )


def overlay_markdown(statistics: Sequence[Statistic], title: str) -> str:
    """Histograms of reference (blue) and served (red) shares, one panel per binned statistic."""
    binned = [s for s in statistics if s.reference]
    if not binned:
        return "no binned statistic to draw"
    columns = min(2, len(binned))
    rows = math.ceil(len(binned) / columns)
    width, height = columns * PANEL_WIDTH, rows * PANEL_HEIGHT + 40
    panels = "".join(
        _panel(statistic, (index % columns) * PANEL_WIDTH, 40 + (index // columns) * PANEL_HEIGHT)
        for index, statistic in enumerate(binned)
    )
    legend = (
        f'<rect x="10" y="26" width="10" height="10" fill="{REFERENCE_COLOUR}"/>'
        '<text x="24" y="35" font-size="11">'
        "the served model's training rows (the score: its held-out rows)</text>"
        f'<rect x="420" y="26" width="10" height="10" fill="{SERVED_COLOUR}"/>'
        '<text x="434" y="35" font-size="11">served traffic</text>'
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
        '<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{width / 2}" y="16" font-size="12" text-anchor="middle">{_escape(title)}</text>'
        f"{legend}{panels}</svg>"
    )
    encoded = base64.b64encode(svg.encode()).decode()
    return f"![drift: reference and served histograms](data:image/svg+xml;base64,{encoded})"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
