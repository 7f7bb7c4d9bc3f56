"""A channel field's chart, drawn on the server as one HTML page with an SVG line chart.

The time axis is real (points sit where their time puts them, not evenly spaced) and
labelled in UTC; the value axis spans the values. No script and no external resource:
the page works under the strictest content security policy and with a read key alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from markupsafe import escape

__all__ = ["line_chart"]

_W, _H = 760, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 24, 24, 56
_TICKS = 5
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1rem;color:#222}"
    ".axis{stroke:#555;stroke-width:1}.grid{stroke:#ddd;stroke-width:1}"
    ".line{fill:none;stroke:#d62020;stroke-width:2}.dot{fill:#d62020}"
    ".tick{font-size:11px;fill:#444}.empty{font-size:14px;fill:#666}"
)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _time_label(at: datetime, span: timedelta) -> str:
    if span <= timedelta(days=1):
        return at.strftime("%H:%M:%S" if span < timedelta(minutes=10) else "%H:%M")
    return at.strftime("%m-%d %H:%M")


def line_chart(title: str, label: str, points: Sequence[tuple[datetime, str]]) -> str:
    """An HTML page charting ``points`` (time, value); values that are not numbers are
    left out of the line but counted in the caption."""
    numeric = [(at, v) for at, text in points if (v := _number(text)) is not None]
    width, height = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img" aria-label="{escape(title)}">',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + height}" x2="{_LEFT + width}" '
        f'y2="{_TOP + height}"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + height}"/>',
    ]
    if not numeric:
        parts.append(
            f'<text class="empty" x="{_LEFT + width / 2}" y="{_TOP + height / 2}" '
            'text-anchor="middle">No data yet</text>'
        )
    else:
        first, last = numeric[0][0], numeric[-1][0]
        span = max(last - first, timedelta(seconds=1))
        low = min(v for _, v in numeric)
        high = max(v for _, v in numeric)
        if high == low:
            low, high = low - 1, high + 1

        def x_of(at: datetime) -> float:
            return _LEFT + width * ((at - first) / span)

        def y_of(value: float) -> float:
            return _TOP + height * (1 - (value - low) / (high - low))

        for i in range(_TICKS + 1):
            value = low + (high - low) * i / _TICKS
            y = y_of(value)
            parts.append(
                f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + width}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{value:.4g}</text>"
            )
            at = first + span * i / _TICKS
            x = x_of(at)
            parts.append(
                f'<text class="tick time" x="{x:.1f}" y="{_TOP + height + 18}" '
                f'text-anchor="middle" data-utc="{at.strftime("%Y-%m-%dT%H:%M:%SZ")}">'
                f"{_time_label(at, span)}</text>"
            )
        coordinates = " ".join(f"{x_of(at):.1f},{y_of(v):.1f}" for at, v in numeric)
        parts.append(f'<polyline class="line" points="{coordinates}"/>')
        for at, value in numeric:
            stamp = at.strftime("%Y-%m-%d %H:%M:%S UTC")
            parts.append(
                f'<circle class="dot" cx="{x_of(at):.1f}" cy="{y_of(value):.1f}" r="3">'
                f"<title>{stamp}: {value:g}</title></circle>"
            )
        parts.append(
            f'<text class="tick" x="{_LEFT + width / 2}" y="{_H - 10}" text-anchor="middle">'
            f"{escape(first.strftime('%Y-%m-%d %H:%M:%S'))} to "
            f"{escape(last.strftime('%Y-%m-%d %H:%M:%S'))} UTC</text>"
        )
    parts.append("</svg>")
    skipped = len(points) - len(numeric)
    caption = f"{len(numeric)} value(s) of {escape(label)}, times in UTC"
    if skipped:
        caption += f"; {skipped} value(s) that are not numbers left out"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<h1>{escape(title)}</h1>{"".join(parts)}<p class="caption">{caption}</p>'
        "</body></html>"
    )
