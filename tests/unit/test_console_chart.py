"""The console's chart data and the static files it serves, without a browser."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from imprint.console.chart import daily_attempts, json_block
from imprint.console.pages import static_file
from imprint.console.queries import DayCount


def test_a_json_block_cannot_be_closed_by_the_data_it_carries() -> None:
    hostile = {"label": "</script><script>alert(1)</script><!--", "n": 1}
    block = str(json_block("channel-data", hostile))
    assert block.startswith('<script type="application/json" id="channel-data">')
    assert block.endswith("</script>")
    inner = block[block.index(">") + 1 : -len("</script>")]
    assert "<" not in inner
    assert ">" not in inner
    assert json.loads(inner) == hostile  # the browser's JSON.parse reads it back whole


def test_a_json_block_refuses_numbers_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        json_block("x", {"v": float("nan")})


def test_the_daily_chart_gives_each_utc_day_its_midnight_and_counts() -> None:
    days = [DayCount(date(2026, 11, 30), 2, 0), DayCount(date(2026, 12, 1), 3, 1)]
    chart = daily_attempts(days)
    midnight = [(d.day - date(1970, 1, 1)).days * 86400 for d in days]  # Unix time, UTC
    assert midnight == [1795996800, 1796083200]
    assert chart.data() == {
        "day": ["2026-11-30", "2026-12-01"],
        "at": midnight,
        "ok": [2, 3],
        "failed": [0, 1],
    }
    assert chart.summary() == (
        "Provisioning attempts per UTC day from 2026-11-30 to 2026-12-01: 5 succeeded, "
        "1 failed; on 2026-12-01 (today) 3 succeeded, 1 failed."
    )
    assert daily_attempts([]).summary() == "No provisioning attempts."


def test_the_vendored_library_is_served_and_nothing_beside_it() -> None:
    script = static_file("vendor/uplot/uPlot.iife.min.js")
    assert script is not None
    assert script[1] == "text/javascript"
    assert re.search(rb"\(v1\.6\.32\)", script[0][:100])
    assert static_file("vendor/uplot/uPlot.min.css") is not None
    for name in (
        "vendor/uplot/LICENSE",
        "vendor/uplot/README.md",
        "vendor/../chart.py",
        "vendor/uplot/../../../pages.py",
        "vendor/uplot/.x.js",
        "vendor//uplot/uPlot.min.css",
        "vendor\\uplot\\uPlot.min.css",
        "/etc/passwd.css",
        "a/b/c/d.js",
        "charts.js/",
    ):
        assert static_file(name) is None, name
