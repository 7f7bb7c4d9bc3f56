"""Profiles, names, SANs, serial numbers and revocation reasons."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from imprint.errors import InvalidValue, UnknownProfile
from imprint.pki.authority import REVOCATION_REASONS, parse_reason
from imprint.pki.profiles import PROFILE_NAMES, parse_sans, profile_named, subject_name
from imprint.pki.serials import random_serial, serial_hex
from imprint.settings import ProfileSettings


def test_profiles_take_their_validity_from_settings() -> None:
    settings = ProfileSettings(
        device_validity_days=365, client_validity_days=7, server_validity_days=45
    )
    assert profile_named("device", settings).validity == timedelta(days=365)
    assert profile_named("client", settings).validity == timedelta(days=7)
    assert profile_named("server", settings).validity == timedelta(days=45)


def test_each_profile_has_its_extended_key_usage() -> None:
    settings = ProfileSettings()
    usages = {name: profile_named(name, settings).extended_key_usages for name in PROFILE_NAMES}
    assert usages == {
        "device": (ExtendedKeyUsageOID.CLIENT_AUTH,),
        "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
        "server": (ExtendedKeyUsageOID.SERVER_AUTH,),
    }
    assert [profile_named(name, settings).requires_san for name in PROFILE_NAMES] == [
        False,
        False,
        True,
    ]


@pytest.mark.parametrize("name", ["ca", "Device", "", "root"])
def test_unknown_profile_names_the_known_ones(name: str) -> None:
    with pytest.raises(UnknownProfile, match="device, client, server") as caught:
        profile_named(name, ProfileSettings())
    assert caught.value.code == "profile_unknown"


def test_sans_are_parsed_into_dns_ip_and_uri_entries() -> None:
    assert parse_sans(
        [
            "Sensor-1.Example.COM.",
            "*.devices.example.com",
            "192.0.2.10",
            "2001:db8::1",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            " spiffe://example.org/device/42 ",
        ]
    ) == [
        x509.DNSName("sensor-1.example.com"),
        x509.DNSName("*.devices.example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.10")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.UniformResourceIdentifier("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
        x509.UniformResourceIdentifier("spiffe://example.org/device/42"),
    ]


@pytest.mark.parametrize(
    "value", ["", "bad name", "under_score.example", "a..b", "ünïcode.example", "x" * 64 + ".com"]
)
def test_bad_san_values_are_refused(value: str) -> None:
    with pytest.raises(InvalidValue, match="not a DNS name"):
        parse_sans([value])


def test_subject_name_orders_organization_before_common_name() -> None:
    name = subject_name("sensor-1", "Example Corp", "Line 3")
    assert name.rfc4514_string() == "CN=sensor-1,OU=Line 3,O=Example Corp"
    assert list(subject_name(None)) == []


@pytest.mark.parametrize("value", ["", "x" * 65, "tab\there", "nul\x00", "del\x7f"])
def test_bad_subject_attributes_are_refused(value: str) -> None:
    with pytest.raises(InvalidValue, match="common name"):
        subject_name(value)


def test_longest_allowed_common_name_is_64_characters() -> None:
    assert subject_name("x" * 64).rfc4514_string() == "CN=" + "x" * 64


def test_serials_carry_128_random_bits_and_a_fixed_length() -> None:
    serials = [random_serial() for _ in range(2000)]
    assert len(set(serials)) == len(serials)
    assert all(2**128 <= serial < 2**129 for serial in serials)
    assert {len(serial_hex(serial)) for serial in serials} == {33}
    # Every one of the 128 low bits is seen both set and clear.
    ored, anded = 0, (1 << 129) - 1
    for serial in serials:
        ored |= serial
        anded &= serial
    assert ored == (1 << 129) - 1
    assert anded == 1 << 128


def test_serial_hex_is_lowercase_without_separators() -> None:
    assert serial_hex(0xABCDEF) == "abcdef"


@pytest.mark.parametrize(
    "text", ["keyCompromise", "key-compromise", "key_compromise", "KEYCOMPROMISE"]
)
def test_revocation_reason_spellings(text: str) -> None:
    assert parse_reason(text) is x509.ReasonFlags.key_compromise


def test_every_final_crl_reason_is_known() -> None:
    # removeFromCRL is for delta CRLs; certificateHold would need a release.
    assert x509.ReasonFlags.remove_from_crl not in REVOCATION_REASONS.values()
    assert x509.ReasonFlags.certificate_hold not in REVOCATION_REASONS.values()
    assert len(REVOCATION_REASONS) == len(x509.ReasonFlags) - 2
    for name, flag in REVOCATION_REASONS.items():
        assert parse_reason(name) is flag


@pytest.mark.parametrize(
    "text", ["", "stolen", "removeFromCRL", "certificateHold", "key compromise"]
)
def test_unknown_revocation_reason_is_refused(text: str) -> None:
    with pytest.raises(InvalidValue, match="unknown revocation reason"):
        parse_reason(text)
