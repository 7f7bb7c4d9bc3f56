"""Channel data over the real HTTPS server: ThingSpeak's /update and feed reads, the
connector's mTLS write with first-contact self-provisioning, the per-channel rate
limit, and the admin channel API."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import thingspeak  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from imprint.settings import ChannelSettings, Settings
from imprint.store.tables import channel_entries, devices
from tests.e2e.conftest import openssl
from tests.integration.conftest import Service, ensure_org, start_service, write_credentials
from tests.integration.oauth_helpers import bearer, make_org, token_for
from tests.integration.test_channels_provisioning import (
    channel_enrollment,
    make_csr,
    provision,
)

PROBLEM = "application/problem+json"
FIELDS = {"field1": "temperature", "field2": "humidity"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No rate limit, unless a test asks for one."""
    return settings.model_copy(update={"channels": ChannelSettings(min_write_interval_seconds=0)})


def stored_entries(service: Service) -> int:
    with service.runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(channel_entries)).scalar_one())


def stored_devices(service: Service) -> int:
    with service.runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(devices)).scalar_one())


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


class Device:
    """A registration-key device with a channel, its keys and its credentials."""

    def __init__(self, service: Service, owner: str = "the-simpsons", serial: str = "74743827342"):
        with service.admin() as admin:
            key = channel_enrollment(
                admin,
                f"thermo-{serial}",
                owner,
                channel={"fields": FIELDS, "delivery": "plain"},
            )
            first = key.split("-")[0]
            self.private_key = ec.generate_private_key(ec.SECP256R1())
            with service.client() as client:
                answer = provision(client, serial, first, make_csr(self.private_key))
            assert answer.status_code == 200, answer.text
            bundle = answer.json()["bundle"]
            self.channel_id: int = bundle["channel"]["id"]
            self.write_key: str = bundle["channel"]["write_key"]
            shown = admin.get(f"/api/v1/channels/{self.channel_id}")
            assert shown.status_code == 200, shown.text
            self.read_key: str = shown.json()["read_keys"][0]["key"]
            self.device_ref: str = shown.json()["device_ref"]
        self.credentials = write_credentials(
            service.workdir, serial, bundle["certificate_chain"], self.private_key
        )


@pytest.fixture
def device(service: Service) -> Device:
    return Device(service)


def test_update_takes_the_key_every_way_thingspeak_does(service: Service, device: Device) -> None:
    key = device.write_key
    with service.client() as http:
        by_get = http.get("/update", params={"api_key": key, "field1": "20.5"})
        by_form = http.post("/update", data={"api_key": key, "field1": "21", "field2": "40"})
        by_json = http.post("/update", json={"api_key": key, "field2": 41})
        by_header = http.post("/update", data={"field1": "22"}, headers={"THINGSPEAKAPIKEY": key})
        by_x_header = http.get(
            "/update", params={"field1": "23"}, headers={"X-THINGSPEAKAPIKEY": key}
        )
        as_json = http.get(
            "/update.json",
            params={
                "api_key": key,
                "field1": "24",
                "lat": "44.97",
                "long": "-93.26",
                "status": "ok",
            },
        )
    answers = [by_get, by_form, by_json, by_header, by_x_header]
    assert [(a.status_code, a.text) for a in answers] == [(200, str(n)) for n in range(1, 6)]
    assert by_get.headers["content-type"].startswith("text/plain")
    assert as_json.status_code == 200, as_json.text
    entry = as_json.json()
    assert entry["channel_id"] == device.channel_id
    assert entry["entry_id"] == 6
    assert (entry["field1"], entry["field2"], entry["field8"]) == ("24", None, None)
    assert (entry["latitude"], entry["longitude"], entry["status"]) == ("44.97", "-93.26", "ok")
    assert entry["created_at"].endswith("Z")

    read = {"api_key": device.read_key}
    channel = f"/channels/{device.channel_id}"
    with service.client() as http:
        feeds = http.get(f"{channel}/feeds.json", params={**read, "results": 3})
        everything = http.get(f"{channel}/feeds.json", params={**read, "status": "true"})
        last = http.get(f"{channel}/feeds/last.json", headers={"THINGSPEAKAPIKEY": device.read_key})
        field = http.get(f"{channel}/fields/2.json", params=read)
        field_last = http.get(f"{channel}/fields/1/last.json", params=read)
    assert feeds.status_code == 200, feeds.text
    body = feeds.json()
    assert body["channel"]["id"] == device.channel_id
    assert (body["channel"]["field1"], body["channel"]["field2"]) == ("temperature", "humidity")
    assert "field3" not in body["channel"]
    assert body["channel"]["last_entry_id"] == 6
    assert [f["entry_id"] for f in body["feeds"]] == [4, 5, 6]  # the newest, oldest first
    assert body["feeds"][0] == {
        "created_at": body["feeds"][0]["created_at"],
        "entry_id": 4,
        "field1": "22",
        "field2": None,
    }
    listed = everything.json()["feeds"]
    assert [(f["field1"], f["field2"]) for f in listed] == [
        ("20.5", None),
        ("21", "40"),
        (None, "41"),
        ("22", None),
        ("23", None),
        ("24", None),
    ]
    assert listed[-1]["status"] == "ok"
    times = [f["created_at"] for f in listed]
    assert times == sorted(times)
    assert last.json()["entry_id"] == 6
    assert [f["field2"] for f in field.json()["feeds"]] == [None, "40", "41", None, None, None]
    assert field_last.json() == {
        "created_at": last.json()["created_at"],
        "entry_id": 6,
        "field1": "24",
    }


def test_a_form_reads_as_thingspeak_clients_encode_it(service: Service, device: Device) -> None:
    """A urlencoded body: "+" a space, UTF-8 percent-encoded, "&" escaped in a value, the
    body's fields over the query's; more than 1,000 fields refused and nothing stored."""
    form = "&".join([
        f"api_key={device.write_key}", "field1=caf%C3%A9+au+lait", "status=a%26b%3Dc",
        "field2=40",
    ]).encode()  # fmt: skip
    crowded = "&".join(["field1=1"] * 1001 + [f"api_key={device.write_key}"]).encode()
    urlencoded = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    with service.client() as http:
        written = http.post(
            "/update.json", content=form, params={"field2": "1"}, headers=urlencoded
        )
        refused = http.post("/update.json", content=crowded, headers=urlencoded)
    assert written.status_code == 200, written.text
    entry = written.json()
    assert (entry["field1"], entry["field2"], entry["status"]) == ("café au lait", "40", "a&b=c")
    problem(refused, 400, "value_invalid")
    assert stored_entries(service) == 1


def test_wrong_keys_and_bad_input_store_nothing(service: Service, device: Device) -> None:
    other = Device(service, owner="flanders", serial="1111")
    key = device.write_key
    with service.client() as http:
        text = {
            "unknown key": http.get("/update", params={"api_key": "A" * 16, "field1": "1"}),
            "no key": http.post("/update", data={"field1": "1"}),
            "read key": http.get("/update", params={"api_key": device.read_key, "field1": "1"}),
            "garbage key": http.get("/update", params={"api_key": "x' or 1=1", "field1": "1"}),
            "unknown field": http.get("/update", params={"api_key": key, "field5": "1"}),
        }
        json_refusals = [
            (http.get("/update.json", params={"api_key": "B" * 16, "field1": "1"}), 401,
             "channel_key_invalid"),
            (http.get("/update.json", params={"api_key": key, "field3": "1"}), 400,
             "channel_field_unknown"),
            (http.get("/update.json", params={"api_key": key, "created_at": "2020-01-01"}), 400,
             "parameter_unknown"),
            (http.get("/update.json", params={"api_key": key}), 400, "channel_update_empty"),
            (http.get("/update.json", params={"api_key": key, "field1": "x" * 256}), 400,
             "value_invalid"),
            (http.get("/update.json", params={"api_key": key, "lat": "91"}), 400, "value_invalid"),
            (http.get("/update.json", params={"api_key": key, "elevation": "nan"}), 400,
             "value_invalid"),
            (http.post("/update.json", json=[1, 2]), 400, "value_invalid"),
            (http.post("/update.json", json={"api_key": key, "field1": {"a": 1}}), 400,
             "value_invalid"),
            (http.post("/update.json", content=b"{", headers={"content-type": "application/json"}),
             400, "value_invalid"),
            (http.post("/update.json", content=b"field1=1", headers={"content-type": "text/csv"}),
             400, "media_type_unsupported"),
            (http.post("/update.json", data={"field1": "1"}), 401, "client_certificate_required"),
        ]  # fmt: skip
        reads = [
            http.get(f"/channels/{device.channel_id}/feeds.json"),
            http.get(f"/channels/{device.channel_id}/feeds.json", params={"api_key": key}),
            http.get(
                f"/channels/{device.channel_id}/feeds.json", params={"api_key": other.read_key}
            ),
            http.get("/channels/999999/feeds.json", params={"api_key": device.read_key}),
        ]
        no_field = http.get(
            f"/channels/{device.channel_id}/fields/3.json", params={"api_key": device.read_key}
        )
        too_many = http.get(
            f"/channels/{device.channel_id}/feeds.json",
            params={"api_key": device.read_key, "results": 8001},
        )
    assert {k: (v.status_code, v.text) for k, v in text.items()} == {
        "unknown key": (401, "0"),
        "no key": (401, "0"),
        "read key": (401, "0"),
        "garbage key": (401, "0"),
        "unknown field": (400, "0"),
    }
    for response, status, code in json_refusals:
        problem(response, status, code)
    assert "x" * 20 not in json_refusals[4][0].text  # the rejected value is not echoed
    for response in reads:
        problem(response, 401, "channel_key_invalid")
    problem(no_field, 400, "channel_field_unknown")
    problem(too_many, 400, "request_invalid")
    assert stored_entries(service) == 0
    with service.client() as http:
        empty = http.get(
            f"/channels/{device.channel_id}/feeds/last.json", params={"api_key": device.read_key}
        )
    assert (empty.status_code, empty.json()) == (200, -1)


@pytest.mark.both_databases
def test_the_device_certificate_writes_its_own_channel(service: Service, device: Device) -> None:
    stranger = service.device_credentials("stranger")  # ours, but no device's certificate
    with service.client(cert=device.credentials) as http:
        written = http.post("/update", data={"field1": "19.5"})
        as_json = http.post("/update.json", json={"field2": "55"})
    with service.client(cert=stranger) as http:
        refused = http.post("/update.json", data={"field1": "1"})
    assert (written.status_code, written.text) == (200, "1")
    assert as_json.json()["channel_id"] == device.channel_id
    problem(refused, 401, "channel_key_invalid")
    with service.admin() as admin:
        revoked = admin.post(f"/api/v1/devices/{device.device_ref}/revoke", json={})
    assert revoked.status_code == 200, revoked.text
    with service.client(cert=device.credentials) as http:
        after = http.post("/update.json", data={"field1": "2"})
    problem(after, 403, "certificate_revoked")
    assert stored_entries(service) == 2


# -- the connector: openssl and curl, as the seed does it ----------------------------------


def seed_ca(directory: Path) -> None:
    """The seed's client CA command, unchanged but for the CN."""
    openssl(
        "req", "-x509", "-nodes", "-days", "365", "-sha256",
        "-subj", "/C=US/ST=MN/L=Mpls/O=westpharma/CN=127.0.0.1",
        "-newkey", "rsa:2048", "-keyout", "ca-key.pem", "-out", "ca-cert.pem",
        cwd=directory,
    )  # fmt: skip


def seed_device(directory: Path, name: str) -> None:
    """The seed's two device commands, unchanged."""
    openssl(
        "req", "-new", "-nodes", "-days", "365", "-sha256",
        "-subj", f"/C=US/ST=MN/L=Mpls/O=westpharma/CN={name}",
        "-newkey", "rsa:2048", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
        cwd=directory,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "365",
        cwd=directory,
    )  # fmt: skip


def curl_alias(service: Service, directory: Path, name: str, *data: str) -> tuple[int, str]:
    """The seed's curl command: only the host, the file paths and --cacert (imprint's CA
    is private) differ. Returns the HTTP status and the body."""
    command = [
        "curl", "-v",
        "-X", "POST", f"{service.base_url}/api:v1/stack/alias",
        "--cacert", str(service.root_cert),
        "--cert", f"./{name}.pem",
        "--key", f"./{name}-key.pem",
    ]  # fmt: skip
    for item in data:
        command += ["-d", item]
    command += ["--silent", "-w", "\n%{http_code}"]
    result = subprocess.run(
        command, cwd=directory, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def connector_enrollment(
    service: Service,
    directory: Path,
    enrollment_id: str,
    *,
    channel: bool = True,
    **options: Any,
) -> None:
    body: dict[str, Any] = {
        "id": enrollment_id,
        "mechanism": "client-ca",
        "owner": "westpharma",
        **options,
    }
    if channel:
        body["channel"] = {"fields": {"field1": "temperature", "field2": "pressure"}}
    with service.admin() as admin:
        ensure_org(admin, "westpharma")
        made = admin.post("/api/v1/enrollments", json=body)
        assert made.status_code == 201, made.text
        trusted = admin.post(
            f"/api/v1/enrollments/{enrollment_id}/client-cas",
            json={"pem": (directory / "ca-cert.pem").read_text()},
        )
        assert trusted.status_code == 201, trusted.text


@pytest.mark.slow
def test_the_seed_curl_self_provisions_and_writes(service: Service, tmp_path: Path) -> None:
    seed_ca(tmp_path)
    connector_enrollment(service, tmp_path, "connector")
    seed_device(tmp_path, "thermostat-42")
    assert curl_alias(service, tmp_path, "thermostat-42", "temperature=50") == (204, "")
    device = service.runtime.devices.find("westpharma", "thermostat-42")
    assert device is not None
    assert device.status.value == "provisioned"
    assert device.certificate_serial is None  # no CSR: nothing issued, the certificate is pinned
    pin = openssl("x509", "-in", "thermostat-42.pem", "-noout", "-fingerprint", "-sha256",
                  cwd=tmp_path)  # fmt: skip
    assert device.pinned_fingerprint == pin.strip().split("=")[1].replace(":", "").lower()
    # Again: the certificate identifies the device; a label in another case, two values.
    assert curl_alias(service, tmp_path, "thermostat-42", "Temperature=51", "pressure=1013") == (
        204,
        "",
    )
    with service.admin() as admin:
        (listed,) = admin.get("/api/v1/channels").json()["items"]
        shown = admin.get(f"/api/v1/channels/{listed['id']}").json()
    assert (listed["device_id"], listed["owner"]) == ("thermostat-42", "westpharma")
    with service.client() as http:
        feeds = http.get(
            f"/channels/{listed['id']}/feeds.json",
            params={"api_key": shown["read_keys"][0]["key"]},
        ).json()
    assert [(f["entry_id"], f["field1"], f["field2"]) for f in feeds["feeds"]] == [
        (1, "50", None),
        (2, "51", "1013"),
    ]
    assert stored_devices(service) == 1

    # Refusals: an unknown name, a clone with the same CN, a name on first contact.
    status, body = curl_alias(service, tmp_path, "thermostat-42", "humidity=3")
    assert status == 400
    assert json.loads(body)["code"] == "channel_field_unknown"
    assert "temperature, pressure" in json.loads(body)["detail"]
    seed_device(tmp_path, "thermostat-43")
    status, body = curl_alias(service, tmp_path, "thermostat-43", "humidity=3")
    assert (status, json.loads(body)["code"]) == (400, "channel_field_unknown")
    assert service.runtime.devices.find("westpharma", "thermostat-43") is None  # not provisioned
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("ca-cert.pem", "ca-key.pem"):
        (clone / name).write_bytes((tmp_path / name).read_bytes())
    seed_device(clone, "thermostat-42")
    status, body = curl_alias(service, clone, "thermostat-42", "temperature=99")
    assert (status, json.loads(body)["code"]) == (403, "identity_taken")
    status, body = curl_alias(service, tmp_path, "thermostat-42")
    assert (status, json.loads(body)["code"]) == (400, "media_type_unsupported")
    assert stored_entries(service) == 2
    assert stored_devices(service) == 1


@pytest.mark.slow
def test_connector_without_a_channel_or_a_certificate_is_refused(
    service: Service, tmp_path: Path
) -> None:
    seed_ca(tmp_path)
    connector_enrollment(service, tmp_path, "no-channel", channel=False)
    seed_device(tmp_path, "sensor-1")
    status, body = curl_alias(service, tmp_path, "sensor-1", "temperature=50")
    assert (status, json.loads(body)["code"]) == (403, "channel_not_configured")
    with service.client() as http:
        anonymous = http.post("/api:v1/stack/alias", data={"temperature": "50"})
    problem(anonymous, 401, "client_certificate_required")
    assert stored_devices(service) == 0
    assert stored_entries(service) == 0


@pytest.mark.slow
def test_connector_waits_for_approval_then_writes(service: Service, tmp_path: Path) -> None:
    seed_ca(tmp_path)
    connector_enrollment(service, tmp_path, "approved-only", manual_approval=True)
    seed_device(tmp_path, "meter-7")
    status, body = curl_alias(service, tmp_path, "meter-7", "temperature=20")
    assert (status, json.loads(body)["code"]) == (403, "device_pending")
    assert stored_entries(service) == 0
    pending = service.runtime.devices.find("westpharma", "meter-7")
    assert pending is not None
    assert pending.status.value == "pending"
    with service.admin() as admin:
        approved = admin.post(f"/api/v1/devices/{pending.id}/approve")
    assert approved.status_code == 200, approved.text
    assert curl_alias(service, tmp_path, "meter-7", "temperature=21") == (204, "")
    assert curl_alias(service, tmp_path, "meter-7", "temperature=22") == (204, "")
    channel = service.runtime.channels.for_device(pending.id)
    assert channel is not None
    entries = service.runtime.channel_entries.latest(channel.id, 10)
    assert [(e.entry_id, e.fields["field1"]) for e in entries] == [(1, "21"), (2, "22")]


@pytest.mark.slow
def test_the_channel_api_is_in_the_openapi_document(service: Service) -> None:
    with service.client() as http:
        paths = http.get("/openapi.json").json()["paths"]
    for path in (
        "/update",
        "/update.json",
        "/api:v1/stack/alias",
        "/channels/{channel_id}/feeds.{fmt}",
        "/channels/{channel_id}/feeds/last.{fmt}",
        "/channels/{channel_id}/fields/{number}.{fmt}",
        "/channels/{channel_id}/charts/{number}",
        "/api/v1/channels/{channel_id}/keys/{kind}/regenerate",
    ):
        assert path in paths


# -- rate limit, concurrency, the ThingSpeak client, the admin API ---------------------------


@pytest.fixture
def limited(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    yield from _one_entry_every(2, settings, tmp_path)


def _one_entry_every(seconds: float, settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """A second server whose channels take one entry every ``seconds``."""
    slow = settings.model_copy(
        update={"channels": ChannelSettings(min_write_interval_seconds=seconds)}
    )
    workdir = tmp_path / f"every-{seconds:g}s"
    workdir.mkdir()
    yield from start_service(slow, workdir)


@pytest.mark.slow
def test_the_rate_limit_answers_0_on_update_and_429_on_json(limited: Service) -> None:
    device = Device(limited)
    params = {"api_key": device.write_key, "field1": "1"}
    with limited.client() as http:
        first = http.get("/update", params=params)
        text = http.get("/update", params=params)
        as_json = http.get("/update.json", params=params)
    with limited.client(cert=device.credentials) as http:
        by_certificate = http.post("/update.json", data={"field1": "2"})
    assert (first.status_code, first.text) == (200, "1")
    assert (text.status_code, text.text) == (200, "0")  # ThingSpeak's answer
    assert 1 <= int(text.headers["retry-after"]) <= 2
    problem(as_json, 429, "channel_rate_limited")
    assert 1 <= int(as_json.headers["retry-after"]) <= 2
    problem(by_certificate, 429, "channel_rate_limited")
    assert stored_entries(limited) == 1
    limited.clock.advance(timedelta(seconds=2))  # the window is 2 s
    with limited.client() as http:
        later = http.get("/update", params=params)
    assert later.text == "2"  # the refused writes used no entry id


@pytest.fixture
def hourly(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """One entry an hour a channel: writes at once all fall within one window."""
    yield from _one_entry_every(3600, settings, tmp_path)


@pytest.mark.both_databases
def test_concurrent_writes_within_the_limit_let_one_through(hourly: Service) -> None:
    """Sixteen writes to one channel at once, within its window: one is stored and fifteen
    refused, also where a write waits for another's row lock (PostgreSQL) and then
    looks for the entry before its own."""
    device = Device(hourly)
    start = threading.Barrier(16)
    answers: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        with hourly.client() as http:
            assert http.get("/healthz").status_code == 200  # connected: the writes meet
            start.wait(timeout=30)
            got = http.post("/update", data={"api_key": device.write_key, "field1": str(n)})
        with lock:
            answers.append(got.text)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == ["0"] * 15 + ["1"], answers
    assert stored_entries(hourly) == 1


@pytest.mark.slow
@pytest.mark.both_databases
def test_concurrent_writes_get_consecutive_ids(service: Service, device: Device) -> None:
    answers: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        try:
            with service.client() as http:
                for i in range(5):
                    got = http.post(
                        "/update", data={"api_key": device.write_key, "field1": f"{n}.{i}"}
                    )
                    with lock:
                        answers.append(got.text)
        except Exception as exc:  # reported below, not lost in the thread
            with lock:
                failures.append(repr(exc))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert sorted(int(a) for a in answers) == list(range(1, 41))
    with service.client() as http:
        feeds = http.get(
            f"/channels/{device.channel_id}/feeds.json",
            params={"api_key": device.read_key, "results": 100},
        ).json()
    assert [f["entry_id"] for f in feeds["feeds"]] == list(range(1, 41))
    assert feeds["channel"]["last_entry_id"] == 40
    assert len({f["field1"] for f in feeds["feeds"]}) == 40


def test_the_thingspeak_client_writes_and_reads(
    service: Service, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(service.root_cert))  # requests' trust store
    writer = thingspeak.Channel(
        device.channel_id, api_key=device.write_key, server_url=service.base_url
    )
    written = json.loads(writer.update({"field1": 21.5, "field2": 60}))
    again = json.loads(writer.update({"field1": 22}))
    reader = thingspeak.Channel(
        device.channel_id, api_key=device.read_key, server_url=service.base_url
    )
    feed = json.loads(reader.get({"results": 2}))
    field = json.loads(reader.get_field(2))
    last = json.loads(reader.get_field_last(1))
    assert (written["entry_id"], written["field1"], written["field2"]) == (1, "21.5", "60")
    assert again["entry_id"] == 2
    assert [f["field1"] for f in feed["feeds"]] == ["21.5", "22"]
    assert feed["channel"]["field1"] == "temperature"
    assert [f["field2"] for f in field["feeds"]] == ["60", None]
    assert (last["entry_id"], last["field1"]) == (2, "22")
    wrong = thingspeak.Channel(device.channel_id, api_key="Z" * 16, server_url=service.base_url)
    with pytest.raises(Exception, match="401"):
        wrong.update({"field1": 1})
    with pytest.raises(Exception, match="401"):
        wrong.get()


@pytest.mark.slow
def test_members_see_read_keys_of_their_organizations_only(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "simpsons")
        make_org(admin, "household", parent="simpsons")
        make_org(admin, "flanders")
        homer = token_for(service, admin, "simpsons", "viewer")
        marge = token_for(service, admin, "household", "operator")
        ned = token_for(service, admin, "flanders", "admin")
    mine = Device(service, owner="household", serial="2001")
    theirs = Device(service, owner="flanders", serial="2002")
    with bearer(service, homer) as http:
        listed = http.get("/api/v1/channels").json()["items"]
        shown = http.get(f"/api/v1/channels/{mine.channel_id}")
        foreign = http.get(f"/api/v1/channels/{theirs.channel_id}")
        missing = http.get("/api/v1/channels/424242")
        regenerate = http.post(f"/api/v1/channels/{mine.channel_id}/keys/write/regenerate")
    assert [c["id"] for c in listed] == [mine.channel_id]
    assert "read_keys" not in listed[0]  # keys only in the single view
    assert shown.status_code == 200, shown.text
    assert [k["key"] for k in shown.json()["read_keys"]] == [mine.read_key]
    assert shown.json()["write_key"] is None  # a viewer does not get the write key
    assert shown.headers["cache-control"] == "no-store"
    problem(foreign, 404, "not_found")
    assert foreign.json()["detail"] == f"no channel {theirs.channel_id}"
    problem(missing, 404, "not_found")
    problem(regenerate, 403, "role_insufficient")
    with bearer(service, ned) as http:
        assert [c["id"] for c in http.get("/api/v1/channels").json()["items"]] == [
            theirs.channel_id
        ]
        problem(http.get(f"/api/v1/channels/{mine.channel_id}"), 404, "not_found")

    with bearer(service, marge) as http:
        seen = http.get(f"/api/v1/channels/{mine.channel_id}").json()
        new_write = http.post(f"/api/v1/channels/{mine.channel_id}/keys/write/regenerate")
        new_read = http.post(f"/api/v1/channels/{mine.channel_id}/keys/read/regenerate")
        added = http.post(f"/api/v1/channels/{mine.channel_id}/keys/read")
    assert seen["write_key"]["key"] == mine.write_key
    fresh_write = new_write.json()["write_key"]["key"]
    assert fresh_write != mine.write_key
    fresh_read = new_read.json()["read_keys"][0]["key"]
    assert fresh_read != mine.read_key
    assert added.status_code == 201
    assert len(added.json()["read_keys"]) == 2
    with service.client() as http:
        old = http.get("/update", params={"api_key": mine.write_key, "field1": "1"})
        new = http.get("/update", params={"api_key": fresh_write, "field1": "1"})
        old_read = http.get(
            f"/channels/{mine.channel_id}/feeds.json", params={"api_key": mine.read_key}
        )
        new_reads = [
            http.get(f"/channels/{mine.channel_id}/feeds.json", params={"api_key": k["key"]})
            for k in added.json()["read_keys"]
        ]
    assert (old.status_code, old.text) == (401, "0")
    assert (new.status_code, new.text) == (200, "1")
    problem(old_read, 401, "channel_key_invalid")
    assert [r.json()["channel"]["last_entry_id"] for r in new_reads] == [1, 1]
