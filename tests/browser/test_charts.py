"""The dashboard and channel charts (uPlot, vendored): drawn, on UTC axes, every day
labelled, live, readable at 390 px, and still useful without JavaScript.

The browser runs at UTC+14 (Pacific/Kiritimati): a label drawn in the browser's own
time zone would be 14 hours off and fail."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from imprint.channels.entries import EntryDraft
from imprint.device import RequestRefused
from imprint.provisioning.channels import Channel, ChannelTemplate, channel_for_device
from tests.browser.conftest import Console, Problems, login, open_page, screenshot
from tests.browser.fleet import oob_enrollment, provision, register

ZONE = "Pacific/Kiritimati"


@pytest.fixture
def far_page(browser: Any, problems: Problems) -> Iterator[Any]:
    """A page whose browser lives at UTC+14; it fails the test on console errors."""
    page = open_page(browser, problems, timezone_id=ZONE)
    yield page
    page.context.close()
    unexpected = problems.unexpected()
    assert not unexpected, "the browser reported errors:\n" + "\n".join(unexpected)


def _labels(page: Any, selector: str) -> list[str]:
    """The tick labels the chart drew on its x axis (charts.js keeps them)."""
    expect(page.locator(f"{selector} canvas").first).to_be_visible()
    raw = page.locator(selector).get_attribute("data-x-labels")
    assert raw, f"{selector} drew no x-axis labels"
    labels: list[str] = json.loads(raw)
    return labels


def _channel(console: Console, values: list[str]) -> Channel:
    rt = console.service.runtime
    channel = channel_for_device(
        rt.channels,
        ChannelTemplate(fields={"field1": "temperature", "field2": "humidity"}),
        owner="acme-west",
        enrollment_id="weather",
        device_ref="0b6c1f6e-2f7e-4b5e-9c55-3c1f2a9d0001",
        device_id="station-1",
        at=datetime.now(UTC),
    )
    for value in values:  # a burst: all within the same second or two
        rt.channel_entries.append(
            channel.id, EntryDraft(fields={"field1": value}), min_interval=timedelta(0)
        )
    return channel


def _day_label(day: date, first: bool) -> str:
    return f"{day.day}\n{day.strftime('%b')}" if first or day.day == 1 else str(day.day)


def test_the_dashboard_chart_labels_every_utc_day_including_today(
    console: Console, far_page: Any, tmp_path: Path
) -> None:
    service, page = console.service, far_page
    oob_enrollment(service, "meters-east", "acme-east")
    register(service, "meters-east", "meter-0001", "label-secret-0001")
    provision(service, tmp_path, "meter-0001", "label-secret-0001")
    with pytest.raises(RequestRefused):
        provision(service, tmp_path, "meter-0001", "not-the-label-secret")

    login(page, console, console.admin)
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=13 - n) for n in range(14)]
    labels = _labels(page, "#attempts-chart")
    assert labels == [_day_label(day, n == 0) for n, day in enumerate(days)]
    assert labels[-1].split("\n")[0] == str(today.day)  # today has its label
    summary = page.locator("#attempts-chart").get_attribute("aria-label")
    assert summary is not None
    assert f"on {today.isoformat()} (today) 1 succeeded, 1 failed" in summary
    # the numbers stay in a table, folded away once the chart is drawn
    assert page.locator("details.chart-data").get_attribute("open") is None
    row = page.locator(f'#attempts-table tr[data-day="{today.isoformat()}"]')
    assert row.locator("td").all_text_contents() == [f"{today.isoformat()} (today)", "1", "1"]

    page.set_viewport_size({"width": 390, "height": 844})
    canvas = page.locator("#attempts-chart canvas").first
    expect(canvas).to_have_attribute("width", re.compile(r"^\d+$"))
    box = canvas.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # too narrow for two-line labels side by side: each day upright, still every day
    upright = json.dumps([day.strftime("%m-%d") for day in days], separators=(",", ":"))
    expect(page.locator("#attempts-chart")).to_have_attribute("data-x-labels", upright)
    screenshot(page, "dashboard-chart")


def test_the_channel_chart_has_a_utc_time_axis_and_updates_live(
    console: Console, far_page: Any
) -> None:
    page = far_page
    channel = _channel(console, ["20.5", "21.0", "22.25", "21.5", "23.0", "19.75"])
    entries = console.service.runtime.channel_entries.latest(channel.id, 100)
    first, last = entries[0].created_at, entries[-1].created_at

    login(page, console, console.admin)
    page.goto(f"{console.url}/channels/{channel.id}")
    expect(page.locator("#chart-status")).to_have_text(
        re.compile(r"^6 entries, updated \d\d:\d\d:\d\d UTC$")
    )
    hours, minutes, seconds = map(
        int, page.locator("#chart-status").inner_text().split()[3].split(":")
    )
    now = datetime.now(UTC)
    behind = (now.hour * 3600 + now.minute * 60 + now.second) - (
        hours * 3600 + minutes * 60 + seconds
    )
    assert behind % 86400 < 120  # "updated" is the UTC clock, not the browser's UTC+14

    labels = _labels(page, '[data-field="field1"]')
    assert len(labels) >= 2
    times = [label.split("\n")[0] for label in labels]
    for text in times:  # 24-hour UTC clock times around the entries
        assert re.fullmatch(r"\d\d:\d\d(:\d\d)?", text), labels
        hour, minute = int(text[:2]), int(text[3:5])
        at = first.replace(hour=hour, minute=minute, second=0, microsecond=0)
        assert first - timedelta(minutes=3) <= at <= last + timedelta(minutes=3), (labels, first)
    assert any(f"\n{first.strftime('%m-%d')}" in label for label in labels)  # the UTC date
    assert page.locator("[data-latest=field1]").inner_text() == "latest 19.75"
    assert page.locator('[data-field="field2"]').inner_text() == "No numeric data yet."
    assert page.locator('[data-field="field1"]').get_attribute("aria-label") == (
        "temperature (field1) over time, in UTC: the last 100 entries at most"
    )
    screenshot(page, "channel-chart")

    console.service.runtime.channel_entries.append(
        channel.id, EntryDraft(fields={"field1": "24.5"}), min_interval=timedelta(0)
    )
    expect(page.locator("#chart-status")).to_have_text(re.compile(r"^7 entries"), timeout=15_000)
    assert page.locator("[data-latest=field1]").inner_text() == "latest 24.5"
    assert page.locator("#entry-count").inner_text() == "7"
    expect(page.locator('[data-field="field1"] canvas')).to_have_count(1)  # redrawn, not stacked


def test_without_javascript_the_numbers_are_tables(
    console: Console, browser: Any, problems: Problems
) -> None:
    channel = _channel(console, ["20.5", "21.0"])
    page = open_page(browser, problems, java_script_enabled=False)
    try:
        login(page, console, console.admin)
        today = datetime.now(UTC).date().isoformat()
        assert page.locator("details.chart-data").get_attribute("open") == ""
        assert page.locator(f'#attempts-table tr[data-day="{today}"]').is_visible()
        page.goto(f"{console.url}/channels/{channel.id}")
        assert "The charts need JavaScript" in page.locator("main").inner_text()
        rows = page.locator("#latest-entries tbody tr")
        expect(rows).to_have_count(2)
        assert rows.first.inner_text().split("\t")[2:] == ["21.0", "\N{EN DASH}"]  # newest first
        expect(page.locator("canvas")).to_have_count(0)
    finally:
        page.context.close()
    assert not problems.unexpected(), problems.unexpected()


def test_the_charting_library_is_served_from_the_console_itself(
    console: Console, far_page: Any
) -> None:
    page = far_page
    script = page.request.get(f"{console.url}/static/vendor/uplot/uPlot.iife.min.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "(v1.6.32)" in script.text()[:200]
    css = page.request.get(f"{console.url}/static/vendor/uplot/uPlot.min.css")
    assert css.status == 200
    for name in (
        "vendor/uplot/LICENSE",
        "vendor/uplot/README.md",
        "vendor/../pages.py",
        "vendor/%2E%2E/%2E%2E/pages.py",
        "vendor/uplot/.hidden.js",
        "vendor//uplot/uPlot.min.css",
        "a/b/c/d.js",
    ):
        assert page.request.get(f"{console.url}/static/{name}").status == 404, name
