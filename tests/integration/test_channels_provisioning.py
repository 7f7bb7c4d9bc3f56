"""A data channel per device, made at provisioning, over the real HTTPS server."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from imprint.provisioning.channels import (
    KeyKind,
    add_read_key,
    find_by_key,
    regenerate_read_key,
    regenerate_write_key,
)
from imprint.store.tables import channel_keys, channels
from tests.integration.conftest import Service, ensure_org, with_orgs


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "o")


PROBLEM = "application/problem+json"
SERIAL = "74743827342"
FIELDS = {"field1": "temperature", "field2": "humidity"}


def open_sealed(second_half: str, serial: str, sealed: dict[str, str]) -> dict[str, Any]:
    """The device side, written from the documented format, not from the server's code:
    AES-256-GCM under HKDF-SHA256(second half, salt, info "imprint bundle v1"), the
    serial number as associated data."""

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    assert sealed["alg"] == "HKDF-SHA256+A256GCM"
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=unb64(sealed["salt"]), info=b"imprint bundle v1"
    ).derive(second_half.encode("ascii"))
    plain = AESGCM(key).decrypt(
        unb64(sealed["nonce"]), unb64(sealed["ciphertext"]), serial.encode()
    )
    opened: dict[str, Any] = json.loads(plain)
    return opened


def make_csr(key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thermometer")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def channel_enrollment(
    admin: httpx.Client,
    enrollment_id: str,
    owner: str,
    *,
    key: str | None = None,
    channel: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    """A registration-key group giving each device a channel (of ``owner``, made if it
    does not exist yet); returns its key."""
    ensure_org(admin, owner)
    created = admin.post(
        "/api/v1/enrollments",
        json={
            "id": enrollment_id,
            "mechanism": "registration-key",
            "owner": owner,
            "channel": {"fields": FIELDS} if channel is None else channel,
            **fields,
        },
    )
    assert created.status_code == 201, created.text
    issued = admin.post(
        f"/api/v1/enrollments/{enrollment_id}/registration-key",
        json={} if key is None else {"key": key},
    )
    assert issued.status_code == 201, issued.text
    whole: str = issued.json()["key"]
    return whole


def provision(
    client: httpx.Client, serial: str, half: str, csr: str | None = None
) -> httpx.Response:
    return client.post(
        "/api/v1/provision",
        json={"mechanism": "registration-key", "csr": csr or make_csr(), "registration_id": serial},
        headers={"X-Imprint-Key-Half": half},
    )


def counts(service: Service) -> tuple[int, int, int]:
    """Devices, channels and certificates stored."""
    runtime = service.runtime
    with runtime.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(channels)).scalar_one()
    return (
        len(runtime.devices.search(limit=10_000)),
        stored,
        len(runtime.ledger.search(limit=10_000)),
    )


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


@pytest.mark.both_databases
def test_provisioning_makes_one_channel_and_keeps_it(service: Service) -> None:
    with service.admin() as admin:
        key = channel_enrollment(admin, "simpsons", "the-simpsons", generate_pre_shared_key=True)
        shown = admin.get("/api/v1/enrollments/simpsons").json()
    assert shown["channel"] == {"fields": FIELDS, "name": "{device_id}", "delivery": "sealed"}
    first, second = key.split("-")
    device_key = ec.generate_private_key(ec.SECP256R1())
    with service.client() as client:
        made = provision(client, SERIAL, first, make_csr(device_key))
        retried = provision(client, SERIAL, first, make_csr(device_key))
        rekeyed = provision(client, SERIAL, first)  # a new key pair: a new certificate
    for response in (made, retried, rekeyed):
        assert response.status_code == 200, response.text
    bundles = [r.json()["bundle"] for r in (made, retried, rekeyed)]
    opened = [open_sealed(second, SERIAL, b["sealed"]) for b in bundles]
    channel_id = bundles[0]["channel"]["id"]
    write_key = opened[0]["channel"]["write_key"]
    assert isinstance(channel_id, int)
    assert len(write_key) == 16
    assert write_key.isalnum()
    assert write_key.upper() == write_key
    for bundle, secrets in zip(bundles, opened, strict=True):
        # The id is readable; the write key travels only sealed, under the second half.
        assert bundle["channel"] == {"id": channel_id, "write_key": None}
        assert secrets["channel"] == {"id": channel_id, "write_key": write_key}
        assert write_key not in json.dumps(bundle)
        assert (
            secrets["pre_shared_key"] == service.runtime.enrollments.get("simpsons").pre_shared_key
        )
    assert bundles[1]["serial"] == bundles[0]["serial"]  # the retry got the same certificate
    assert bundles[2]["serial"] != bundles[0]["serial"]
    assert counts(service)[:2] == (1, 1)

    device = service.runtime.devices.find("the-simpsons", SERIAL)
    assert device is not None
    channel = service.runtime.channels.get(channel_id)
    assert (channel.owner, channel.device_ref, channel.device_id) == (
        "the-simpsons",
        device.id,
        SERIAL,
    )
    assert (channel.enrollment_id, channel.name, dict(channel.fields)) == (
        "simpsons",
        SERIAL,
        FIELDS,
    )
    assert channel.write_key.key == write_key
    assert len(channel.read_keys) == 1
    # At rest the keys are sealed and found by their SHA-256.
    with service.runtime.engine.connect() as conn:
        rows = conn.execute(
            select(
                channel_keys.c.kind, channel_keys.c.lookup_sha256, channel_keys.c.key_sealed
            ).where(channel_keys.c.channel_id == channel_id)
        ).all()
    assert sorted(r.kind for r in rows) == ["read", "write"]
    for row, stored in (
        (r, channel.write_key if r.kind == "write" else channel.read_keys[0]) for r in rows
    ):
        assert row.lookup_sha256 == hashlib.sha256(stored.key.encode()).hexdigest()
        assert stored.key.encode() not in row.key_sealed


def test_plain_delivery_gives_the_write_key_in_the_clear(service: Service) -> None:
    with service.admin() as admin:
        key = channel_enrollment(
            admin,
            "legacy",
            "the-simpsons",
            channel={
                "fields": {"field1": "temperature"},
                "name": "Thermometer {device_id}",
                "delivery": "plain",
            },
            generate_pre_shared_key=True,
        )
    first, second = key.split("-")
    with service.client() as client:
        response = provision(client, SERIAL, first)
    assert response.status_code == 200, response.text
    bundle = response.json()["bundle"]
    channel = service.runtime.channels.get(bundle["channel"]["id"])
    assert bundle["channel"]["write_key"] == channel.write_key.key
    assert channel.name == f"Thermometer {SERIAL}"
    # The PSK is still sealed: "plain" is about the channel's write key only.
    assert set(open_sealed(second, SERIAL, bundle["sealed"])) == {"pre_shared_key"}


def test_enrollments_without_a_channel_give_none(service: Service) -> None:
    with service.admin() as admin:
        created = admin.post(
            "/api/v1/enrollments",
            json={"id": "plain", "mechanism": "registration-key", "owner": "o"},
        )
        assert created.status_code == 201
        assert created.json()["channel"] is None
        key = admin.post("/api/v1/enrollments/plain/registration-key").json()["key"]
    with service.client() as client:
        response = provision(client, SERIAL, key.split("-")[0])
    assert response.status_code == 200, response.text
    assert response.json()["bundle"]["channel"] is None
    assert counts(service)[1] == 0


def test_bad_channel_templates_are_refused(service: Service) -> None:
    bad = [
        ({"fields": {}}, 400, "value_invalid"),
        ({"fields": {"field9": "x"}}, 400, "value_invalid"),
        ({"fields": {"temperature": "x"}}, 400, "value_invalid"),
        ({"fields": {"field1": ""}}, 400, "value_invalid"),
        ({"fields": {"field1": "a\nb"}}, 400, "value_invalid"),
        ({"fields": {"field1": "t"}, "name": "\x00"}, 400, "value_invalid"),
        ({"fields": {"field1": "t"}, "delivery": "shouted"}, 400, "request_invalid"),
        ({"fields": {"field1": "t"}, "colour": "red"}, 400, "request_invalid"),
        ({"fields": {f"field{n}": "t" for n in range(1, 10)}}, 400, "request_invalid"),
    ]
    with service.admin() as admin:
        for number, (channel, status, code) in enumerate(bad):
            response = admin.post(
                "/api/v1/enrollments",
                json={
                    "id": f"bad-{number}",
                    "mechanism": "registration-key",
                    "owner": "o",
                    "channel": channel,
                },
            )
            refused(response, status, code)
        assert admin.get("/api/v1/enrollments").json()["items"] == []


def test_keys_regenerate_and_the_old_ones_stop(service: Service) -> None:
    with service.admin() as admin:
        key = channel_enrollment(admin, "simpsons", "the-simpsons")
    first, second = key.split("-")
    with service.client() as client:
        bundle = provision(client, SERIAL, first).json()["bundle"]
    channel_id = bundle["channel"]["id"]
    store = service.runtime.channels
    before = store.get(channel_id)
    old_write, old_read = before.write_key.key, before.read_keys[0].key
    assert find_by_key(store, old_write, KeyKind.WRITE) == before
    assert find_by_key(store, old_write, KeyKind.READ) is None  # a write key does not read
    assert find_by_key(store, old_read, KeyKind.READ) == before
    assert find_by_key(store, old_read.lower(), KeyKind.READ) is None
    assert find_by_key(store, "", KeyKind.READ) is None

    now = datetime.now(UTC)
    after = regenerate_write_key(store, channel_id, at=now)
    assert after.write_key.key != old_write
    assert find_by_key(store, old_write, KeyKind.WRITE) is None
    assert find_by_key(store, after.write_key.key, KeyKind.WRITE) == after
    after = regenerate_read_key(store, channel_id, at=now)
    assert [k.key for k in after.read_keys] != [old_read]
    assert find_by_key(store, old_read, KeyKind.READ) is None
    after = add_read_key(store, channel_id, at=now)
    assert len(after.read_keys) == 2
    assert all(find_by_key(store, k.key, KeyKind.READ) == after for k in after.read_keys)
    assert after.id == channel_id

    # The device provisioning again is handed the new write key, in the same channel.
    with service.client() as client:
        again = provision(client, SERIAL, first).json()["bundle"]
    assert open_sealed(second, SERIAL, again["sealed"])["channel"] == {
        "id": channel_id,
        "write_key": after.write_key.key,
    }


def test_each_organization_has_its_own_channels(service: Service) -> None:
    with service.admin() as admin:
        key_a = channel_enrollment(admin, "simpsons", "the-simpsons")
        key_b = channel_enrollment(admin, "flanders", "the-flanders")
    with service.client() as client:
        in_a = provision(client, SERIAL, key_a.split("-")[0]).json()["bundle"]
        in_b = provision(client, SERIAL, key_b.split("-")[0]).json()["bundle"]
        second_device = provision(client, "74743827343", key_a.split("-")[0]).json()["bundle"]
    ids = {in_a["channel"]["id"], in_b["channel"]["id"], second_device["channel"]["id"]}
    assert len(ids) == 3
    store = service.runtime.channels
    assert store.get(in_a["channel"]["id"]).owner == "the-simpsons"
    assert store.get(in_b["channel"]["id"]).owner == "the-flanders"
    opened_a = open_sealed(key_a.split("-")[1], SERIAL, in_a["sealed"])
    opened_b = open_sealed(key_b.split("-")[1], SERIAL, in_b["sealed"])
    assert opened_a["channel"]["write_key"] != opened_b["channel"]["write_key"]
