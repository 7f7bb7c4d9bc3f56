"""The broker ACL derived from certificates: one user per device id, organizations kept
apart, and names that could widen a topic filter left out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.mqtt.acl import AclEntry, acl_entries, render_acl
from imprint.pki.records import CertificateRecord, CertificateStatus

_KEY = ec.generate_private_key(ec.SECP256R1())


def record(common_name: str, unit: str | None, serial: int) -> CertificateRecord:
    now = datetime.now(UTC)
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if unit is not None:
        names.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
        .public_key(_KEY.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(_KEY, hashes.SHA256())
    )
    return CertificateRecord(
        serial=format(serial, "x"),
        issuer="ca",
        profile="device",
        subject=common_name,
        sans=(),
        status=CertificateStatus.ISSUED,
        not_before=now,
        not_after=now + timedelta(days=1),
        requested_by="test",
        created_at=now,
        der=certificate.public_bytes(serialization.Encoding.DER),
    )


def test_each_device_gets_its_subtree_and_its_organizations() -> None:
    entries, skipped = acl_entries(
        [record("lamp-7", "acme", 1), record("lamp-7", "acme", 2), record("cli", None, 3)]
    )
    assert entries == [AclEntry("cli", None), AclEntry("lamp-7", "acme")]
    assert skipped == []
    text = render_acl(entries)
    assert "user lamp-7\ntopic readwrite devices/lamp-7/#\ntopic readwrite orgs/acme/#\n" in text
    assert "user cli\ntopic readwrite devices/cli/#\n\n" in text


def test_an_id_held_in_two_organizations_is_left_out() -> None:
    entries, skipped = acl_entries(
        [record("sensor", "acme", 1), record("sensor", "globex", 2), record("ok", "acme", 3)]
    )
    assert entries == [AclEntry("ok", "acme")]
    assert skipped == ["sensor: held by devices of several organizations"]
    assert "user sensor" not in render_acl(entries, skipped)


def test_names_that_would_widen_a_topic_filter_are_left_out() -> None:
    entries, skipped = acl_entries(
        [record("a/b", "acme", 1), record("#", "acme", 2), record("x", "ac+me", 3)]
    )
    assert entries == []
    assert len(skipped) == 3
    assert "\nuser " not in render_acl(entries, skipped)
