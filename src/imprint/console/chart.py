"""A small bar chart drawn server-side as SVG (no script, no library)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from imprint.console.queries import DayCount

__all__ = ["bar_chart"]

_W, _H, _PAD_L, _PAD_B, _PAD_T = 700, 170, 36, 24, 10


def bar_chart(days: Sequence[DayCount]) -> Markup:
    """Stacked bars per day: succeeded (bottom) and failed (top) attempts."""
    top = max([d.ok + d.failed for d in days] + [1])
    width = (_W - _PAD_L) / max(len(days), 1)
    height = _H - _PAD_B - _PAD_T
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        'aria-labelledby="chart-title" preserveAspectRatio="xMinYMin meet">',
        '<title id="chart-title">Provisioning attempts per day</title>',
        f'<line x1="{_PAD_L}" y1="{_PAD_T + height}" x2="{_W}" y2="{_PAD_T + height}" '
        'class="axis"/>',
        f'<text x="{_PAD_L - 6}" y="{_PAD_T + 4}" text-anchor="end" class="tick">{top}</text>',
        f'<text x="{_PAD_L - 6}" y="{_PAD_T + height}" text-anchor="end" class="tick">0</text>',
    ]
    for i, day in enumerate(days):
        x = _PAD_L + i * width + width * 0.15
        w = width * 0.7
        ok_h = height * day.ok / top
        failed_h = height * day.failed / top
        label = escape(f"{day.day.isoformat()}: {day.ok} succeeded, {day.failed} failed")
        parts.append(f'<g class="day" data-day="{day.day.isoformat()}"><title>{label}</title>')
        if day.ok:
            y = _PAD_T + height - ok_h
            parts.append(
                f'<rect class="ok" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{ok_h:.1f}"/>'
            )
        if day.failed:
            y = _PAD_T + height - ok_h - failed_h
            parts.append(
                f'<rect class="failed" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                f'height="{failed_h:.1f}"/>'
            )
        parts.append("</g>")
        if i % 2 == 0 or len(days) <= 7:
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="{_H - 8}" text-anchor="middle" class="tick">'
                f"{day.day.strftime('%m-%d')}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (numbers and escaped labels only)
