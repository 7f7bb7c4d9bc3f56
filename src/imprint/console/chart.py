"""The data behind the console's charts, and how it reaches the page.

The charts are drawn in the browser by uPlot (``static/vendor/uplot/``, vendored, see
its README.md) from ``static/charts.js``. The CSP allows no inline script, so a page
carries its chart's data in a ``<script type="application/json">`` block
(:func:`json_block`), which the browser never executes, and shows the same numbers
as a table and a one-line summary for readers without JavaScript or without sight.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time

from markupsafe import Markup

from imprint.console.queries import DayCount

__all__ = ["DailyAttempts", "daily_attempts", "json_block"]

# What could end a <script> element or open a comment inside it, written as JSON escapes.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def json_block(element_id: str, value: object) -> Markup:
    """``value`` as a ``<script type="application/json" id=...>`` block.

    ``<``, ``>`` and ``&`` are written as JSON escapes, so no string in ``value`` can
    close the element; ``element_id`` is the template's own constant.
    """
    text = json.dumps(value, separators=(",", ":"), allow_nan=False).translate(_SCRIPT_SAFE)
    return Markup(  # noqa: S704 (the JSON above cannot close the element)
        f'<script type="application/json" id="{element_id}">{text}</script>'
    )


@dataclass(frozen=True)
class DailyAttempts:
    """Provisioning attempts per UTC day, the dashboard's bar chart."""

    days: Sequence[DayCount]

    @property
    def succeeded(self) -> int:
        return sum(d.ok for d in self.days)

    @property
    def failed(self) -> int:
        return sum(d.failed for d in self.days)

    def summary(self) -> str:
        """One sentence with what the chart shows (its accessible description)."""
        if not self.days:
            return "No provisioning attempts."
        first, last = self.days[0], self.days[-1]
        return (
            f"Provisioning attempts per UTC day from {first.day.isoformat()} to "
            f"{last.day.isoformat()}: {self.succeeded} succeeded, {self.failed} failed; "
            f"on {last.day.isoformat()} (today) {last.ok} succeeded, {last.failed} failed."
        )

    def data(self) -> dict[str, list[int] | list[str]]:
        """What charts.js draws: each day as UTC midnight in Unix seconds, and counts."""
        return {
            "day": [d.day.isoformat() for d in self.days],
            "at": [int(datetime.combine(d.day, time.min, UTC).timestamp()) for d in self.days],
            "ok": [d.ok for d in self.days],
            "failed": [d.failed for d in self.days],
        }


def daily_attempts(days: Sequence[DayCount]) -> DailyAttempts:
    """The dashboard chart of ``days`` (oldest first, the last one today)."""
    return DailyAttempts(tuple(days))
