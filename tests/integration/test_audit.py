"""The audit log over real HTTPS: every admin change is written, nothing secret is in
it, and it filters, pages and stays inside the reader's organizations."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.conftest import Service
from tests.integration.oauth_helpers import (
    PASSWORD,
    bearer,
    login,
    make_client,
    make_org,
    make_user,
    pkce_pair,
    token_for,
)
from tests.integration.test_lifecycle import Factory, csr_of, device_ref


def entries(http: httpx.Client, **params: str | int) -> list[dict[str, object]]:
    answer = http.get("/api/v1/audit", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, object]] = answer.json()["items"]
    return items


def test_admin_changes_are_logged_without_secrets(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        make_user(admin, "wile@acme.test", "acme", "operator")
        client = make_client(admin, "acme", "viewer")
        created = admin.post(
            "/api/v1/enrollments",
            json={
                "id": "rockets",
                "mechanism": "registration-key",
                "owner": "acme",
                "generate_pre_shared_key": True,
            },
        )
        assert created.status_code == 201, created.text
        key = admin.post("/api/v1/enrollments/rockets/registration-key").json()["key"]
        logged = entries(admin)
    actions = [e["action"] for e in logged]
    assert actions == [
        "registration_key.rotate",
        "enrollment.create",
        "oauth_client.create",
        "user.create",
        "org.create",
    ]
    assert {e["actor"] for e in logged} == {"api-key:admin"}
    assert {e["org_id"] for e in logged if e["action"] != "registration_key.rotate"} == {"acme"}
    assert logged[2]["target_id"] == client["client_id"]
    assert logged[3]["details"] == {"username": "wile@acme.test", "role": "operator"}
    text = json.dumps(logged)
    for secret in (
        PASSWORD,
        client["client_secret"],
        key,
        key.split("-")[0],
        created.json()["pre_shared_key"],
    ):
        assert secret not in text


def test_filters_pages_and_scope(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        make_org(admin, "acme-labs", parent="acme")
        make_org(admin, "globex")
        acme_admin = token_for(service, admin, "acme", "admin")
        viewer = token_for(service, admin, "acme", "viewer")
        only_orgs = entries(admin, action="org.create")
        assert [e["target_id"] for e in only_orgs] == ["globex", "acme-labs", "acme"]
        first = admin.get("/api/v1/audit", params={"action": "org.create", "limit": 2}).json()
        assert [e["target_id"] for e in first["items"]] == ["globex", "acme-labs"]
        rest = entries(admin, action="org.create", limit=2, before=first["next_before"])
        assert [e["target_id"] for e in rest] == ["acme"]
        assert entries(admin, actor="api-key:nobody") == []
        assert len(entries(admin, since="2000-01-01T00:00:00", until="2999-01-01T00:00:00")) >= 3
    with bearer(service, acme_admin) as http:
        made = http.post(
            "/api/v1/orgs", json={"id": "acme-east", "name": "East", "parent_id": "acme"}
        )
        assert made.status_code == 201
        mine = entries(http)
        foreign = http.get("/api/v1/audit", params={"org": "globex"})
    assert {e["org_id"] for e in mine} <= {"acme", "acme-labs", "acme-east"}
    assert "globex" not in json.dumps(mine)
    assert mine[0]["action"] == "org.create"
    assert str(mine[0]["actor"]).startswith("client:cli-")
    assert foreign.status_code == 404
    with bearer(service, viewer) as http:
        refused = http.get("/api/v1/audit")
    assert refused.status_code == 403
    assert refused.json()["code"] == "role_insufficient"


def test_logins_are_logged_with_their_outcome(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        make_user(admin, "road@runner.test", "acme", "viewer")
        client = make_client(
            admin,
            "acme",
            grant_types=["authorization_code"],
            redirect_uris=["http://127.0.0.1:9/callback"],
            scopes=["openid"],
            public=True,
        )
    _, challenge = pkce_pair()
    assert (
        login(
            service, client["client_id"], "road@runner.test", "beep beep!!", challenge
        ).status_code
        == 401
    )
    assert (
        login(service, client["client_id"], "road@runner.test", PASSWORD, challenge).status_code
        == 303
    )
    with service.admin() as admin:
        logins = entries(admin, action="user.login")
    assert [e["outcome"] for e in logins] == ["success", "failure"]
    assert "beep beep" not in json.dumps(logins)
    assert PASSWORD not in json.dumps(logins)


def test_device_trust_and_secret_changes_are_logged(service: Service, tmp_path: Path) -> None:
    factory = Factory(service, tmp_path, "audited")
    answer = factory.provision(
        factory.device("m-1"), csr_of(ec.generate_private_key(ec.SECP256R1()))
    )
    assert answer.status_code == 200, answer.text
    ref = device_ref(service, "m-1")
    fingerprint = "ab" * 32
    with service.admin() as admin:
        steps = [
            admin.post(f"/api/v1/devices/{ref}/disable"),
            admin.post(f"/api/v1/devices/{ref}/enable"),
            admin.post(f"/api/v1/devices/{ref}/revoke", json={"reason": "keyCompromise"}),
            admin.post(f"/api/v1/devices/{ref}/reset"),
            admin.post(
                "/api/v1/enrollments",
                json={"id": "labels", "mechanism": "oob-secret", "owner": "acme"},
            ),
            admin.post(
                "/api/v1/enrollments/labels/oob-secrets",
                json={"device_id": "s-1", "secret": "label-secret-0001"},
            ),
            admin.delete("/api/v1/enrollments/labels/oob-secrets/s-1"),
            admin.post(
                "/api/v1/denied-certificates",
                json={"fingerprint_sha256": fingerprint, "reason": "cloned"},
            ),
            admin.delete(f"/api/v1/denied-certificates/{fingerprint}"),
            admin.post("/api/v1/enrollments/audited/revoke", json={}),
        ]
        assert [s.status_code for s in steps] == [
            200, 200, 200, 200, 201, 201, 204, 201, 204, 200,
        ], [s.text for s in steps]  # fmt: skip
        logged = entries(admin, limit=50)
    actions = [e["action"] for e in reversed(logged)]
    assert actions[actions.index("client_ca.add") :] == [
        "client_ca.add",
        "device.disable",
        "device.enable",
        "device.revoke",
        "device.reset",
        "enrollment.create",
        "oob_secret.register",
        "oob_secret.remove",
        "deny_list.add",
        "deny_list.remove",
        "enrollment.revoke",
    ]
    assert "label-secret-0001" not in json.dumps(logged)
    by_action = {e["action"]: e for e in logged}
    assert by_action["device.revoke"]["target_id"] == ref
    assert by_action["device.revoke"]["org_id"] == "acme"
    assert by_action["deny_list.add"]["target_id"] == fingerprint
