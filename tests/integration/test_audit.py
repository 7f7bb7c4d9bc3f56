"""The audit log over real HTTPS: every admin change is written, nothing secret is in
it, it filters, pages and stays inside the reader's organizations, and its hash chain
is verified for API keys (and the console's instance-wide viewer)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request
from sqlalchemy import text

from imprint import console
from imprint.api.problems import install_problem_handlers
from imprint.audit import records
from imprint.console import pages
from imprint.console.session import ConsoleSession
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role
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


@pytest.mark.slow
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
    first = logged.pop()  # the oldest: the first start's admin key
    assert (first["actor"], first["action"], first["target_id"]) == (
        "imprint:bootstrap",
        "api_key.create",
        "admin",
    )
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


@pytest.mark.both_databases
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


@pytest.mark.slow
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
        "device.provision",  # the device itself, through the provisioning use case
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
    assert by_action["device.provision"]["actor"] == "device:m-1"
    assert by_action["device.revoke"]["target_id"] == ref
    assert by_action["device.revoke"]["org_id"] == "acme"
    assert by_action["deny_list.add"]["target_id"] == fingerprint


def test_the_chain_is_verified_for_api_keys_only(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        make_user(admin, "wile@acme.test", "acme", "operator")
        acme_admin = token_for(service, admin, "acme", "admin")
        whole = admin.get("/api/v1/audit/verify")
    stored = list(records(service.runtime.audit))
    assert whole.status_code == 200, whole.text
    assert whole.json() == {
        "ok": True,
        "entries": len(stored),
        "head": stored[-1].hash,
        "broken": None,
    }
    changed = next(r.id for r in stored if r.action == "user.create")
    with service.runtime.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET actor = 'api-key:x' WHERE id = :id"), {"id": changed}
        )
    with service.admin() as admin:
        broken = admin.get("/api/v1/audit/verify").json()
    assert broken["ok"] is False
    assert broken["head"] is None
    assert broken["broken"] == {"id": changed, "reason": "content_changed"}
    assert broken["entries"] == [r.id for r in stored].index(changed) + 1
    with bearer(service, acme_admin) as http:
        refused = http.get("/api/v1/audit/verify")
    assert refused.status_code == 403
    assert refused.json()["code"] == "instance_admin_required"


def test_the_console_verifies_the_chain_for_the_whole_instance(service: Service) -> None:
    """Console sign-ins are members of organizations, never the whole instance: the
    page is asked here as a session of the whole instance would ask it, from an
    application of the console's routes built for it (``include_router``), which
    ``dependency_overrides`` reaches (``create_app`` serves the routes as declared)."""
    with service.admin() as admin:
        make_org(admin, "acme")
        make_org(admin, "globex")
    stored = list(records(service.runtime.audit))
    app = FastAPI()
    app.state.runtime = service.runtime
    install_problem_handlers(app)
    app.include_router(console.router)
    whole = Principal(kind="api-key", subject="k-1", name="ops", instance_admin=True)
    member = Principal(kind="user", subject="u-1", name="a@acme", memberships={"acme": Role.ADMIN})
    viewer = whole

    def signed_in(request: Request) -> Principal:
        request.state.console_session = ConsoleSession(
            "s-1", viewer.subject, None, "csrf", int(time.time()) + 600, viewer
        )
        return viewer

    app.dependency_overrides[pages._user] = signed_in

    async def visit() -> tuple[str, str, str, httpx.Response]:
        nonlocal viewer
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as b:
            offered = (await b.get("/console/audit")).text
            verified = (await b.get("/console/audit", params={"verify": "1"})).text
            with service.runtime.engine.begin() as conn:
                first = {"id": stored[0].id}
                conn.execute(text("DELETE FROM audit_log WHERE id = :id"), first)
            broken = (await b.get("/console/audit", params={"verify": "1"})).text
            viewer = member
            return offered, verified, broken, await b.get("/console/audit?verify=1")

    offered, verified, broken, org_admin = asyncio.run(visit())
    assert 'href="/console/audit?verify=1"' in offered
    assert 'id="chain"' not in offered
    assert f"Chain verified: {len(stored)} entries, head <code>{stored[-1].hash}</code>" in verified
    assert f"Chain broken at entry {stored[1].id}: the entry before it is missing" in broken
    assert org_admin.status_code == 200
    assert 'id="chain"' not in org_admin.text
    assert "verify=1" not in org_admin.text


@pytest.mark.slow
def test_enrollment_states_and_oob_imports_are_logged(service: Service) -> None:
    """Enable, disable, delete and a bulk import: one entry each, with the import's counts;
    a dry run and an import with a bad row write nothing, so they log nothing."""
    rows = [{"device_id": f"m-{i}", "secret": f"label-secret-000{i}"} for i in range(3)]
    with service.admin() as admin:
        make_org(admin, "acme")
        created = admin.post(
            "/api/v1/enrollments", json={"id": "labels", "mechanism": "oob-secret", "owner": "acme"}
        )
        assert created.status_code == 201, created.text
        bulk = "/api/v1/enrollments/labels/oob-secrets:bulk"
        steps = [
            admin.post("/api/v1/enrollments/labels/disable"),
            admin.post("/api/v1/enrollments/labels/enable"),
            admin.post(bulk, params={"dry_run": "true"}, json=rows),
            admin.post(bulk, json=[*rows, {"device_id": "m-9", "secret": "tiny"}]),
            admin.post(bulk, json=rows),
            admin.post(bulk, json=rows[:1]),
            admin.delete("/api/v1/enrollments/labels"),
        ]
        assert [s.status_code for s in steps] == [200, 200, 200, 400, 200, 200, 204], [
            s.text for s in steps
        ]
        logged = entries(admin, limit=50)
    mine = [e for e in reversed(logged) if e["target_id"] == "labels"]
    assert [e["action"] for e in mine] == [
        "enrollment.create",
        "enrollment.disable",
        "enrollment.enable",
        "oob_secret.import",
        "oob_secret.import",
        "enrollment.delete",
    ]
    assert {(e["actor"], e["org_id"]) for e in mine} == {("api-key:admin", "acme")}
    imports = [e["details"] for e in mine if e["action"] == "oob_secret.import"]
    assert imports == [
        {"written": True, "rows": 3, "created": 3, "updated": 0, "unchanged": 0},
        {"written": False, "rows": 1, "created": 0, "updated": 0, "unchanged": 1},
    ]
    assert "label-secret" not in json.dumps(logged)
