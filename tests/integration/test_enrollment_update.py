"""Changing an enrollment after it exists: ``PATCH /api/v1/enrollments/{id}`` over real
HTTPS changes what can change safely, audits it, and refuses the rest with a reason."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from imprint.audit import AuditQuery
from tests.integration.conftest import Service
from tests.integration.oauth_helpers import bearer, make_org, token_for

PROBLEM = "application/problem+json"
SERIAL = "74743827342"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def updates(service: Service, enrollment_id: str) -> list[Any]:
    found = service.runtime.audit.search(AuditQuery(target_id=enrollment_id))
    return [e for e in reversed(found) if e.action == "enrollment.update"]


@pytest.mark.both_databases
def test_a_channel_added_later_reaches_the_next_midpoint_device(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "the-simpsons")
        created = admin.post(
            "/api/v1/enrollments",
            json={"id": "simpsons", "mechanism": "registration-key", "owner": "the-simpsons"},
        )
        assert created.status_code == 201, created.text
        key = admin.post(
            "/api/v1/enrollments/simpsons/registration-key", json={"key": "HQ481047-1JWORF43"}
        )
        assert key.status_code == 201, key.text
        with service.client() as device:
            before = device.get(f"/midpoint/ws/iot/devices/{SERIAL}", params={"key": "HQ481047"})
            detail = problem(before, 403, "channel_not_configured")["detail"]
            assert "PATCH /api/v1/enrollments/simpsons" in detail
            changed = admin.patch(
                "/api/v1/enrollments/simpsons",
                json={"channel": {"fields": {"field1": "temperature"}}},
            )
            after = device.get(f"/midpoint/ws/iot/devices/{SERIAL}", params={"key": "HQ481047"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["changed"] == ["channel"]
    assert changed.json()["channel"]["fields"] == {"field1": "temperature"}
    assert after.status_code == 200, after.text
    assert after.json()["channel"] >= 1
    (entry,) = updates(service, "simpsons")
    assert (entry.actor, entry.org_id, entry.details) == (
        "api-key:admin",
        "the-simpsons",
        {"changed": ["channel"]},
    )


def test_every_safe_field_changes_and_only_what_is_given(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        assert (
            admin.post(
                "/api/v1/enrollments",
                json={"id": "line-7", "mechanism": "oob-secret", "owner": "acme", "quota": 5},
            ).status_code
            == 201
        )
        changed = admin.patch(
            "/api/v1/enrollments/line-7",
            json={
                "services": {"mqtt": "mqtts://broker.example:8883"},
                "valid_from": "2030-01-01T00:00:00Z",
                "valid_until": "2031-01-01T00:00:00Z",
                "manual_approval": True,
                "pre_shared_key": "0123456789012345",
                "profile": "client",
                "validity_days": 30,
                "key_types": ["ec-p256"],
                "device_id_pattern": "^sensor-[0-9]+$",
                "reprovision": "reset-required",
                "renewal_grace_days": 7,
                "channel": {"fields": {"field1": "level"}, "delivery": "plain"},
            },
        )
        cleared = admin.patch(
            "/api/v1/enrollments/line-7", json={"quota": None, "valid_from": None}
        )
        generated = admin.patch(
            "/api/v1/enrollments/line-7", json={"generate_pre_shared_key": True}
        )
        same = admin.patch(
            "/api/v1/enrollments/line-7", json={"owner": "acme", "profile": "client"}
        )
        shown = admin.get("/api/v1/enrollments/line-7").json()
    assert changed.status_code == 200, changed.text
    assert changed.json()["changed"] == [
        "channel",
        "device_id_pattern",
        "key_types",
        "manual_approval",
        "pre_shared_key",
        "profile",
        "renewal_grace_days",
        "reprovision",
        "services",
        "valid_from",
        "valid_until",
        "validity_days",
    ]
    assert changed.json()["pre_shared_key"] is None  # a given key is never shown back
    assert "0123456789012345" not in changed.text
    assert cleared.json()["changed"] == ["quota", "valid_from"]
    assert generated.headers["cache-control"] == "no-store"
    psk = generated.json()["pre_shared_key"]
    assert len(psk) >= 16
    assert same.json()["changed"] == []
    stored = service.runtime.enrollments.get("line-7")
    assert stored.pre_shared_key == psk
    assert (stored.quota, stored.valid_from, stored.profile, stored.key_types) == (
        None,
        None,
        "client",
        ("ec-p256",),
    )
    assert shown["reprovision"] == "reset-required"
    assert shown["services"] == {"mqtt": "mqtts://broker.example:8883"}
    logged = updates(service, "line-7")
    assert [e.details["changed"] for e in logged][1:] == [
        ["quota", "valid_from"],
        ["pre_shared_key"],
        [],
    ]
    assert all(psk not in str(e.details) for e in logged)


def test_unsafe_and_invalid_changes_are_refused_and_change_nothing(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        make_org(admin, "globex")
        admin.post(
            "/api/v1/enrollments",
            json={"id": "plant", "mechanism": "symmetric-key", "owner": "acme"},
        )
        before = service.runtime.enrollments.get("plant")
        owner = admin.patch("/api/v1/enrollments/plant", json={"owner": "globex", "quota": 3})
        mechanism = admin.patch("/api/v1/enrollments/plant", json={"mechanism": "x509"})
        group_key = admin.patch("/api/v1/enrollments/plant", json={"group_key": "AAAA"})
        rule = admin.patch("/api/v1/enrollments/plant", json={"device_id_rule": "common-name"})
        short_psk = admin.patch("/api/v1/enrollments/plant", json={"pre_shared_key": "short"})
        window = admin.patch(
            "/api/v1/enrollments/plant",
            json={"valid_from": "2031-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"},
        )
        both = admin.patch(
            "/api/v1/enrollments/plant",
            json={"pre_shared_key": "0123456789012345", "generate_pre_shared_key": True},
        )
        unknown = admin.patch("/api/v1/enrollments/plant", json={"colour": "red"})
        missing = admin.patch("/api/v1/enrollments/nope", json={"quota": 3})
        viewer = token_for(service, admin, "acme", "operator")
    with bearer(service, viewer) as operator:
        not_admin = operator.patch("/api/v1/enrollments/plant", json={"quota": 3})
    assert "owner organization" in problem(owner, 409, "change_unsafe")["detail"]
    assert "mechanism cannot be changed" in problem(mechanism, 409, "change_unsafe")["detail"]
    assert "lock out" in problem(group_key, 409, "change_unsafe")["detail"]
    problem(rule, 409, "change_unsafe")
    assert "pre_shared_key" in problem(short_psk, 400, "value_invalid")["detail"]
    assert "valid_until" in problem(window, 400, "value_invalid")["detail"]
    problem(both, 400, "value_invalid")
    assert "colour" in problem(unknown, 400, "request_invalid")["detail"]
    problem(missing, 404, "not_found")
    problem(not_admin, 403, "role_insufficient")
    assert service.runtime.enrollments.get("plant") == before
    assert updates(service, "plant") == []


def test_an_enrollment_of_an_unknown_organization_is_refused(service: Service) -> None:
    with service.admin() as admin:
        refused = admin.post(
            "/api/v1/enrollments",
            json={"id": "orphan", "mechanism": "oob-secret", "owner": "nosuchorg"},
        )
    detail = problem(refused, 404, "not_found")["detail"]
    assert "no organization 'nosuchorg'" in detail
    assert "POST /api/v1/orgs" in detail
    assert list(service.runtime.enrollments.search(limit=10)) == []
    assert service.runtime.audit.search(AuditQuery(action="enrollment.create")) == []
