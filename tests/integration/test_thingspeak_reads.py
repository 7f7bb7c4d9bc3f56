"""ThingSpeak's read API over real HTTPS, driven by the ``thingspeak`` PyPI client and by
plain HTTP as ThingSpeak's REST documentation describes it; and the midPoint story from
the sign-up to Marge's chart."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest
import thingspeak  # type: ignore[import-untyped]

from imprint.settings import ChannelSettings, Settings
from tests.integration.conftest import Service, start_service
from tests.integration.test_channel_data import Device
from tests.integration.test_channels_provisioning import open_sealed
from tests.integration.test_tenancy import PASSWORD


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No write rate limit; sign-up open (the midPoint story starts with it)."""
    return settings.model_copy(
        update={
            "channels": ChannelSettings(min_write_interval_seconds=0),
            "auth": settings.auth.model_copy(update={"self_registration": True}),
        }
    )


@pytest.fixture
def device(service: Service) -> Device:
    return Device(service)


def xml_of(text: str) -> ElementTree.Element:
    return ElementTree.fromstring(text)  # noqa: S314 (the answer of the server under test)


def written(service: Service, device: Device, *values: dict[str, object]) -> list[int]:
    ids = []
    with service.client() as http:
        for value in values:
            answer = http.post("/update.json", data={"api_key": device.write_key, **value})
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["entry_id"])
    return ids


@pytest.mark.slow
def test_every_thingspeak_client_method_against_the_server(
    service: Service, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(service.root_cert))
    url = service.base_url
    writer = thingspeak.Channel(device.channel_id, api_key=device.write_key, server_url=url)
    reader = thingspeak.Channel(device.channel_id, api_key=device.read_key, server_url=url)
    xml = thingspeak.Channel(device.channel_id, api_key=device.read_key, fmt="xml", server_url=url)
    text = thingspeak.Channel(device.channel_id, api_key=device.read_key, fmt="csv", server_url=url)
    empty_age = json.loads(reader.get_last_data_age(1))
    first = json.loads(writer.update({"field1": 21.5, "field2": 60, "status": "booted"}))
    second = json.loads(writer.update({"field1": 22}))
    service.clock.advance(timedelta(seconds=90))

    view = json.loads(reader.view())
    feed = json.loads(reader.get({"results": 10}))
    field = json.loads(reader.get_field(2, {"results": 10}))
    last = json.loads(reader.get_field_last(1))
    age = json.loads(reader.get_last_data_age(1))
    age_of_2 = json.loads(reader.get_last_data_age(2))

    assert empty_age == -1
    assert (first["entry_id"], second["entry_id"]) == (1, 2)
    assert view["id"] == device.channel_id
    assert (view["field1"], view["field2"], view["last_entry_id"]) == ("temperature", "humidity", 2)
    assert [(f["entry_id"], f["field1"], f["field2"]) for f in feed["feeds"]] == [
        (1, "21.5", "60"),
        (2, "22", None),
    ]
    assert feed["channel"]["last_entry_id"] == 2
    assert [f["field2"] for f in field["feeds"]] == ["60", None]
    assert "field1" not in field["feeds"][0]
    assert (last["entry_id"], last["field1"]) == (2, "22")
    assert age["last_data_age_units"] == "s"
    assert 90 <= int(age["last_data_age"]) < 200  # the server's clock moved 90 s
    assert int(age_of_2["last_data_age"]) >= int(age["last_data_age"])

    root = xml_of(xml.get({"results": 10}))
    assert root.tag == "channel"
    assert root.findtext("id") == str(device.channel_id)
    assert [f.findtext("field1") for f in root.iter("feed")] == ["21.5", "22"]
    assert xml_of(xml.view()).findtext("last-entry-id") == "2"
    assert [f.findtext("field2") for f in xml_of(xml.get_field(2)).iter("feed")] == [
        "60",
        "",
    ]
    assert xml_of(xml.get_field_last(1)).findtext("field1") == "22"
    rows = list(csv.DictReader(io.StringIO(text.get())))
    assert [(r["entry_id"], r["field1"]) for r in rows] == [("1", "21.5"), ("2", "22")]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", rows[0]["created_at"])
    assert text.get_field_last(1) == "22"
    assert next(csv.reader(io.StringIO(text.get_field(1)))) == [
        "created_at",
        "entry_id",
        "field1",
    ]

    # The wrong key opens nothing, whatever the method.
    wrong = thingspeak.Channel(device.channel_id, api_key="Z" * 16, server_url=url)
    for method, args in (
        (wrong.view, ()),
        (wrong.get, ()),
        (wrong.get_field, (1,)),
        (wrong.get_field_last, (1,)),
        (wrong.get_last_data_age, (1,)),
    ):
        with pytest.raises(Exception, match="401"):
            method(*args)
    # The write key is not a read key.
    as_writer = thingspeak.Channel(device.channel_id, api_key=device.write_key, server_url=url)
    with pytest.raises(Exception, match="401"):
        as_writer.get()


@pytest.mark.slow
def test_feeds_in_three_formats_with_results_start_and_end(
    service: Service, device: Device
) -> None:
    written(service, device, {"field1": 1}, {"field1": 2}, {"field1": 3, "status": "low battery"})
    entries = service.runtime.channel_entries.latest(device.channel_id, 10)
    base = f"/channels/{device.channel_id}"
    key = {"api_key": device.read_key}
    middle = entries[1].created_at
    at = middle.strftime("%Y-%m-%d %H:%M:%S")
    with service.client() as http:
        newest = http.get(f"{base}/feeds.json", params={**key, "results": 2}).json()
        # The seconds of the bound include the entry written in that second.
        since = http.get(f"{base}/feeds.json", params={**key, "start": at}).json()
        until = http.get(
            f"{base}/feeds.csv",
            params={**key, "end": (middle - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")},
        )
        future = http.get(f"{base}/feeds.json", params={**key, "start": "2999-01-01"}).json()
        xml = http.get(f"{base}/feeds.xml", params={**key, "results": 1})
        in_csv = http.get(f"{base}/feeds.csv", params=key)
        field = http.get(f"{base}/fields/1.csv", params={**key, "results": 2})
        last = http.get(f"{base}/feeds/last.json", params={**key, "status": "true"}).json()
        age = http.get(f"{base}/feeds/last_data_age.json", params=key)
        status = http.get(f"{base}/status.json", params=key).json()
        bad_start = http.get(f"{base}/feeds.json", params={**key, "start": "yesterday"})
        backwards = http.get(
            f"{base}/feeds.json", params={**key, "start": "2030-01-02", "end": "2030-01-01"}
        )
        no_field = http.get(f"{base}/fields/5.json", params=key)
        nobody = http.get(f"{base}/feeds.csv")
    assert [f["field1"] for f in newest["feeds"]] == ["2", "3"]
    assert [f["field1"] for f in since["feeds"]][-2:] == ["2", "3"]
    assert future["feeds"] == []
    assert until.status_code == 200
    assert until.text == "created_at,entry_id,field1,field2\n"  # nothing that early
    assert xml.headers["content-type"] == "application/xml"
    assert [f.findtext("entry-id") for f in xml_of(xml.text).iter("feed")] == ["3"]
    assert in_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert [r["field1"] for r in csv.DictReader(io.StringIO(in_csv.text))] == ["1", "2", "3"]
    assert [r["field1"] for r in csv.DictReader(io.StringIO(field.text))] == ["2", "3"]
    assert (last["entry_id"], last["status"]) == (3, "low battery")
    assert age.headers["cache-control"] == "no-store"
    assert int(age.json()["last_data_age"]) < 60
    assert status["channel"]["id"] == device.channel_id
    assert [(f["entry_id"], f["status"]) for f in status["feeds"]] == [(3, "low battery")]
    assert bad_start.status_code == 400
    assert "start" in bad_start.json()["detail"]
    assert backwards.status_code == 400
    assert no_field.status_code == 400
    assert nobody.status_code == 401


@pytest.mark.slow
def test_the_chart_page_draws_the_field_on_a_utc_time_axis(
    service: Service, device: Device
) -> None:
    written(service, device, {"field1": 18.5}, {"field1": 19.25}, {"field1": "warm"})
    path = f"/channels/{device.channel_id}/charts/1"
    with service.client() as http:
        page = http.get(path, params={"api_key": device.read_key})
        other_field = http.get(
            f"/channels/{device.channel_id}/charts/2", params={"api_key": device.read_key}
        )
        wrong = http.get(path, params={"api_key": device.write_key})
        missing = http.get(
            f"/channels/{device.channel_id}/charts/7", params={"api_key": device.read_key}
        )
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "script" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>") + 6]
    root = xml_of(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    dots = [c.findtext("s:title", namespaces=ns) for c in root.iterfind("s:circle", ns)]
    assert [d.split(": ")[1] for d in dots if d] == ["18.5", "19.25"]
    times = [
        datetime.strptime(d.split(" UTC")[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        for d in dots
        if d
    ]
    assert all(abs(datetime.now(UTC) - t) < timedelta(minutes=10) for t in times)
    ticks = [t.get("data-utc") for t in root.iterfind("s:text", ns) if t.get("data-utc")]
    assert len(ticks) == 6
    assert ticks == sorted(ticks)
    xs = [float(c.get("cx", "0")) for c in root.iterfind("s:circle", ns)]
    assert xs == sorted(xs)
    assert xs[0] < xs[-1]
    assert "temperature" in page.text
    assert "1 value(s) that are not numbers left out" in page.text
    assert other_field.status_code == 200
    assert "No data yet" in other_field.text
    assert wrong.status_code == 401
    assert missing.status_code == 400


@pytest.mark.both_databases
@pytest.mark.slow
def test_midpoint_story_from_signup_to_marges_chart(settings: Settings, tmp_path: Path) -> None:
    """Homer signs up, the thermometer registers with the first half of the key, opens
    its channel and write key with the second half, writes; Marge reads with a read key."""
    serial = "74743827342"
    for service in start_service(settings, tmp_path):
        with service.client() as http:
            made = http.post(
                "/api/v1/signup",
                json={
                    "organization": "The Simpsons",
                    "username": "homer@simps.net",
                    "password": PASSWORD,
                },
            )
            assert made.status_code == 201, made.text
            first, _, second = made.json()["registration_key"].partition("-")
            # The thermometer's request, exactly as in the story.
            registered = http.get(f"/midpoint/ws/iot/devices/{serial}", params={"key": first})
            assert registered.status_code == 200, registered.text
            answer = registered.json()
            opened = open_sealed(second, serial, answer["sealed"])
            channel_id, write_key = opened["channel"]["id"], opened["channel"]["write_key"]
            assert channel_id == answer["channel"]
            wrong_half = open_wrong(second, serial, answer["sealed"])
            stored = http.get("/update", params={"api_key": write_key, "field1": "21.5"})
            assert stored.text == "1"
        with service.admin() as admin:
            shown = admin.get(f"/api/v1/channels/{channel_id}")
            assert shown.status_code == 200, shown.text
            read_key = shown.json()["read_keys"][0]["key"]
            assert shown.json()["owner"] == made.json()["org_id"]
            assert shown.json()["device_id"] == serial
        with service.client() as marge:
            chart = marge.get(f"/channels/{channel_id}/charts/1", params={"api_key": read_key})
            feeds = marge.get(f"/channels/{channel_id}/feeds.csv", params={"api_key": read_key})
            refused = marge.get(f"/channels/{channel_id}/feeds.csv", params={"api_key": write_key})
        assert wrong_half is None
        assert chart.status_code == 200
        assert "21.5" in chart.text
        rows = list(csv.DictReader(io.StringIO(feeds.text)))
        assert [(r["entry_id"], r["field1"]) for r in rows] == [("1", "21.5")]
        assert refused.status_code == 401


def open_wrong(second: str, serial: str, sealed: dict[str, str]) -> object:
    """Opening with anything but the second half fails."""
    try:
        return open_sealed(second[::-1], serial, sealed)
    except Exception:  # the AEAD tag check fails, whatever its class
        return None


@pytest.mark.slow
def test_reads_name_the_channel_by_its_key_only(service: Service, device: Device) -> None:
    other = Device(service, owner="the-flanders", serial="999")
    with service.client() as http:
        crossed = http.get(
            f"/channels/{device.channel_id}/feeds.json", params={"api_key": other.read_key}
        )
        header = http.get(
            f"/channels/{device.channel_id}/feeds.json",
            headers={"THINGSPEAKAPIKEY": device.read_key},
        )
    assert crossed.status_code == 401
    assert header.status_code == 200
