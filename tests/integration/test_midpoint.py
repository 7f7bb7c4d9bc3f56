"""The midPoint-style registration over real HTTPS: serial + key half in, channel out."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Service, with_orgs
from tests.integration.test_channels_provisioning import (
    SERIAL,
    channel_enrollment,
    counts,
    make_csr,
    open_sealed,
    refused,
)


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "o", "mr-burns", "the-simpsons")


SEED_KEY = "HQ481047-1JWORF43"  # the registration key of the seed story
PATH = "/midpoint/ws/iot/devices"


def curl(service: Service, *args: str) -> tuple[int, dict[str, str], str]:
    """Run curl as an operator would; returns status, headers and body."""
    done = subprocess.run(
        ["curl", "-sS", "-D", "-", "--cacert", str(service.root_cert), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    head, _, body = done.stdout.partition("\n\n")  # text mode turned CRLF into LF
    status_line, *lines = head.split("\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def register(
    client: httpx.Client, serial: str, half: str | None, *, where: str = "header"
) -> httpx.Response:
    url = f"{PATH}/{serial}"
    if where == "query":
        return client.get(url, params={} if half is None else {"key": half})
    if where == "form":
        return client.post(url, data={} if half is None else {"key": half})
    return client.get(url, headers={} if half is None else {"X-Imprint-Key-Half": half})


def opened(response: httpx.Response, second: str, serial: str = SERIAL) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "approved"
    assert body["serial"] == serial
    secrets = open_sealed(second, serial, body["sealed"])
    assert secrets["channel"]["id"] == body["channel"]
    assert secrets["channel"]["write_key"] not in response.text
    return secrets


@pytest.mark.both_databases
def test_the_seed_request_gets_its_channel_sealed(service: Service) -> None:
    with service.admin() as admin:
        channel_enrollment(admin, "simpsons", "the-simpsons", key=SEED_KEY)
    url = f"{service.base_url}{PATH}/{SERIAL}?key=HQ481047"
    status, headers, body = curl(service, url)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    secrets = open_sealed("1JWORF43", SERIAL, answer["sealed"])
    channel = service.runtime.channels.get(answer["channel"])
    assert secrets == {"channel": {"id": channel.id, "write_key": channel.write_key.key}}
    assert channel.owner == "the-simpsons"
    assert answer["owner"] == "the-simpsons"
    # The device exists now, without a certificate: it never had a key pair.
    device = service.runtime.devices.find("the-simpsons", SERIAL)
    assert device is not None
    assert device.status.value == "provisioned"
    assert device.certificate_serial is None
    assert counts(service) == (1, 1, 1)  # the only certificate is the server's own

    # The same, with the half in a header (out of the URL) and in a POST form.
    status, _, in_header = curl(service, "-H", "X-Imprint-Key-Half: HQ481047", url.split("?")[0])
    assert status == 200, in_header
    status, _, in_form = curl(service, "-d", "key=HQ481047", url.split("?")[0])
    assert status == 200, in_form
    for text in (in_header, in_form):
        again = json.loads(text)
        assert open_sealed("1JWORF43", SERIAL, again["sealed"]) == secrets
        assert again["sealed"]["salt"] != answer["sealed"]["salt"]
    assert counts(service) == (1, 1, 1)


@pytest.mark.slow
def test_plain_delivery_answers_the_lines_midpoint_firmware_reads(service: Service) -> None:
    with service.admin() as admin:
        channel_enrollment(
            admin,
            "legacy",
            "the-simpsons",
            key=SEED_KEY,
            channel={"fields": {"field1": "temperature"}, "delivery": "plain"},
        )
    url = f"{service.base_url}{PATH}/{SERIAL}?key=HQ481047"
    status, headers, body = curl(service, "-H", "Accept: text/plain", url)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain")
    assert headers["cache-control"] == "no-store"
    device = service.runtime.devices.find("the-simpsons", SERIAL)
    assert device is not None
    channel = service.runtime.channels.for_device(device.id)
    assert channel is not None
    assert body == f"channel={channel.id}\nwriteKey={channel.write_key.key}\n"
    with service.client() as client:  # byte for byte, as the firmware reads it
        again = register(client, SERIAL, "HQ481047", where="query")
    assert again.content == f"channel={channel.id}\nwriteKey={channel.write_key.key}\n".encode()
    assert counts(service)[:2] == (1, 1)


@pytest.mark.both_databases
def test_repeated_and_concurrent_registrations_keep_one_channel(service: Service) -> None:
    with service.admin() as admin:
        key = channel_enrollment(admin, "simpsons", "the-simpsons")
    first, second = key.split("-")
    with service.client() as client:
        answers = [register(client, SERIAL, first, where=w) for w in ("header", "query", "form")]

    def one(serial: str) -> httpx.Response:
        with service.client() as client:
            return register(client, serial, first)

    with ThreadPoolExecutor(max_workers=4) as pool:
        again = list(pool.map(one, [SERIAL] * 6))  # a registered device, many times at once
        first_contact = list(pool.map(one, ["74743827343"] * 6))
    secrets = [opened(r, second) for r in answers + again]
    assert all(s == secrets[0] for s in secrets)
    # Racing first contacts: a request that loses the race gets the winner's answer.
    assert [r.status_code for r in first_contact] == [200] * 6, [r.text for r in first_contact]
    raced = [opened(r, second, "74743827343") for r in first_contact]
    assert all(s == raced[0] for s in raced)
    assert raced[0]["channel"]["id"] != secrets[0]["channel"]["id"]
    assert counts(service)[:2] == (2, 2)
    with service.client() as client:
        assert opened(register(client, "74743827343", first), second, "74743827343") == raced[0]


def test_a_registered_device_keeps_its_channel_when_it_gets_a_certificate(
    service: Service,
) -> None:
    with service.admin() as admin:
        key = channel_enrollment(admin, "simpsons", "the-simpsons")
    first, second = key.split("-")
    with service.client() as client:
        registered = opened(register(client, SERIAL, first), second)
        certified = client.post(
            "/api/v1/provision",
            json={"mechanism": "registration-key", "csr": make_csr(), "registration_id": SERIAL},
            headers={"X-Imprint-Key-Half": first},
        )
        after = opened(register(client, SERIAL, first), second)
    assert certified.status_code == 200, certified.text
    bundle = certified.json()["bundle"]
    assert open_sealed(second, SERIAL, bundle["sealed"])["channel"] == registered["channel"]
    assert after == registered
    device = service.runtime.devices.find("the-simpsons", SERIAL)
    assert device is not None
    assert device.certificate_serial == bundle["serial"]


@pytest.mark.slow
def test_wrong_missing_or_doubled_halves_change_nothing(service: Service) -> None:
    with service.admin() as admin:
        key = channel_enrollment(admin, "simpsons", "the-simpsons")
        other = channel_enrollment(admin, "flanders", "the-flanders")
    first, second = key.split("-")
    before = counts(service)
    with service.client() as client:
        wrong = register(client, SERIAL, "ZZZZ9999" if first != "ZZZZ9999" else "YYYY9999")
        second_half = register(client, SERIAL, second, where="query")
        malformed = register(client, SERIAL, "hq481047", where="form")
        missing = register(client, SERIAL, None)
        doubled = client.get(
            f"{PATH}/{SERIAL}", params={"key": first}, headers={"X-Imprint-Key-Half": second}
        )
        bad_serial = register(client, "a b", first)
        long_serial = register(client, "7" * 201, first)
        other_org = register(client, SERIAL, other.split("-")[0])
    refused(wrong, 403, "signature_invalid")
    refused(second_half, 403, "signature_invalid")
    refused(malformed, 400, "value_invalid")
    refused(missing, 400, "evidence_missing")
    refused(doubled, 400, "value_invalid")
    refused(bad_serial, 400, "value_invalid")
    refused(long_serial, 400, "request_invalid")
    assert second not in doubled.text
    assert first not in doubled.text
    assert counts(service) == (before[0] + 1, before[1] + 1, before[2])
    assert other_org.json()["owner"] == "the-flanders"  # its own key, its own organization


def test_a_serial_is_never_looked_up_across_organizations(service: Service) -> None:
    with service.admin() as admin:
        key_a = channel_enrollment(
            admin, "simpsons", "the-simpsons", device_id_pattern=r"7474\d{7}"
        )
        key_b = channel_enrollment(admin, "flanders", "the-flanders")
        created = admin.post(
            "/api/v1/enrollments",
            json={
                "id": "burns-one",
                "kind": "individual",
                "registration_id": "66600000001",
                "mechanism": "registration-key",
                "owner": "mr-burns",
                "channel": {"fields": {"field1": "radiation"}},
            },
        )
        assert created.status_code == 201, created.text
        key_c = admin.post("/api/v1/enrollments/burns-one/registration-key").json()["key"]
    with service.client() as client:
        in_b = opened(
            register(client, "66600000001", key_b.split("-")[0]), key_b.split("-")[1], "66600000001"
        )
        before = counts(service)
        # Org A's key with a serial that is not one of A's: refused by A's own pattern.
        outside = register(client, "66600000001", key_a.split("-")[0])
        # Mr Burns's key names one device; another serial is not admitted.
        not_named = register(client, SERIAL, key_c.split("-")[0])
        after = counts(service)
        in_c = opened(
            register(client, "66600000001", key_c.split("-")[0]), key_c.split("-")[1], "66600000001"
        )
    refused(outside, 403, "device_id_rejected")
    refused(not_named, 403, "signature_invalid")
    assert after == before
    # The same serial in org C is org C's device, with its own channel; B's is untouched.
    assert in_c["channel"]["id"] != in_b["channel"]["id"]
    channel_b = service.runtime.channels.get(in_b["channel"]["id"])
    assert channel_b.owner == "the-flanders"
    assert channel_b.write_key.key == in_b["channel"]["write_key"]
    assert service.runtime.channels.get(in_c["channel"]["id"]).owner == "mr-burns"


def test_guessing_is_rate_limited_even_for_the_right_key_next(service: Service) -> None:
    with service.admin() as admin:
        key = channel_enrollment(admin, "simpsons", "the-simpsons")
    first = key.split("-")[0]
    guesses = [f"{i:08d}" for i in range(10)]
    assert first not in guesses
    before = counts(service)
    with service.client() as client:
        for guess in guesses:
            refused(register(client, SERIAL, guess, where="query"), 403, "signature_invalid")
        limited = register(client, SERIAL, first)
    refused(limited, 429, "too_many_attempts")
    assert int(limited.headers["retry-after"]) >= 1
    assert counts(service) == before


def test_an_enrollment_without_a_channel_has_nothing_to_give(service: Service) -> None:
    with service.admin() as admin:
        created = admin.post(
            "/api/v1/enrollments",
            json={"id": "certs-only", "mechanism": "registration-key", "owner": "o"},
        )
        assert created.status_code == 201
        key = admin.post("/api/v1/enrollments/certs-only/registration-key").json()["key"]
    before = counts(service)
    with service.client() as client:
        response = register(client, SERIAL, key.split("-")[0])
    refused(response, 403, "channel_not_configured")
    assert counts(service) == before


@pytest.mark.slow
def test_manual_approval_holds_the_device_until_approved(service: Service) -> None:
    with service.admin() as admin:
        key = channel_enrollment(admin, "simpsons", "the-simpsons", manual_approval=True)
    first, second = key.split("-")
    with service.client() as client:
        waiting = register(client, SERIAL, first)
    assert waiting.status_code == 202, waiting.text
    assert waiting.json() == {"status": "pending", "serial": SERIAL, "retry_after": 30}
    assert waiting.headers["retry-after"] == "30"
    assert counts(service)[1] == 0
    device = service.runtime.devices.find("the-simpsons", SERIAL)
    assert device is not None
    with service.admin() as admin:
        approved = admin.post(f"/api/v1/devices/{device.id}/approve")
        assert approved.status_code == 200, approved.text
    with service.client() as client:
        secrets = opened(register(client, SERIAL, first), second)
    assert service.runtime.channels.get(secrets["channel"]["id"]).device_ref == device.id


@pytest.mark.slow
def test_the_route_is_described_in_the_api_document(service: Service) -> None:
    with service.client() as client:
        document = client.get("/openapi.json")
    assert document.status_code == 200
    route = document.json()["paths"]["/midpoint/ws/iot/devices/{serial}"]
    assert set(route) == {"get", "post"}
    assert "X-Imprint-Key-Half" in route["get"]["description"]
