"""The pieces of webhooks that need no server: signatures, event names, hook claims and
answers, and the settings' thresholds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imprint.errors import InvalidValue
from imprint.provisioning.hooks import parse_claims
from imprint.settings import WebhookSettings
from imprint.webhooks.hook import _verdict
from imprint.webhooks.model import check_events
from imprint.webhooks.signing import signature, signed_headers, verify

BODY = b'{"id":"e1","type":"certificate.revoked"}'


def test_a_signature_covers_the_timestamp_and_the_exact_body() -> None:
    headers = signed_headers("whsec_a", 1_700_000_000, BODY)
    assert headers["Imprint-Signature"] == signature("whsec_a", 1_700_000_000, BODY)
    assert verify("whsec_a", headers, BODY, now=1_700_000_100)
    assert not verify("whsec_b", headers, BODY, now=1_700_000_100)
    assert not verify("whsec_a", headers, BODY + b"\n", now=1_700_000_100)
    assert not verify("whsec_a", headers, BODY, now=1_700_000_000 + 301)  # a replay
    moved = {**headers, "Imprint-Timestamp": "1700000001"}
    assert not verify("whsec_a", moved, BODY, now=1_700_000_001)


def test_events_are_known_and_in_canonical_order() -> None:
    assert check_events(["certificate.revoked", "provisioning.failed", "certificate.revoked"]) == (
        "provisioning.failed",
        "certificate.revoked",
    )
    for bad in ([], ["device.exploded"]):
        with pytest.raises(InvalidValue, match="events"):
            check_events(bad)


def test_a_hook_may_add_attributes_and_services_only() -> None:
    claims = parse_claims({"attributes": {"site": "berlin"}, "services": {"mqtt": "mqtts://b"}})
    assert (dict(claims.attributes), dict(claims.services)) == (
        {"site": "berlin"},
        {"mqtt": "mqtts://b"},
    )
    for bad in (
        {"subject": "CN=admin"},
        {"attributes": {"Site": "x"}},
        {"attributes": {"site": 7}},
        {"attributes": {"site": "x" * 501}},
        {"services": {"MQTT": "x"}},
        {"attributes": {f"a{n}": "x" for n in range(33)}},
        ["attributes"],
    ):
        with pytest.raises(InvalidValue):
            parse_claims(bad)


def test_a_hook_answer_is_a_decision() -> None:
    assert _verdict(b'{"decision": "allow"}').allowed
    denied = _verdict(b'{"decision": "deny", "reason": "no"}')
    assert (denied.allowed, denied.reason) == (False, "no")
    assert _verdict(b'{"decision": "deny"}').reason == "refused by the provisioning hook"
    for bad in (b"", b"[]", b'{"decision": "maybe"}', b"x" * 70000):
        with pytest.raises(InvalidValue):
            _verdict(bad)


def test_thresholds_are_sorted_and_bounded() -> None:
    assert WebhookSettings(expiry_thresholds_days=[1, 30, 7, 7]).expiry_thresholds_days == [
        30,
        7,
        1,
    ]
    with pytest.raises(ValidationError):
        WebhookSettings(expiry_thresholds_days=[0])
