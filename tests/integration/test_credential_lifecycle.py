"""Credentials with a lifecycle, through the REST API of a real HTTPS server: API keys
that expire, rotate and are revoked (with their last use), users deleted or deactivated
with their audit trail kept, organizations renamed and deleted only when empty, OAuth
client secrets rotated; each change audited with its actor. Devices are addressed by
their own id, and lists carry true totals and cursors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imprint.audit import AuditQuery
from tests.integration.conftest import Service
from tests.integration.fleet_helpers import pending_device
from tests.integration.identity_helpers import user_token
from tests.integration.oauth_helpers import bearer, client_token, make_client, make_org, make_user


def _audited(service: Service, action: str) -> list[tuple[str, str | None]]:
    entries = service.runtime.audit.search(AuditQuery(action=action))
    return [(e.actor, e.target_id) for e in entries]


def _key(service: Service, name: str, **body: object) -> tuple[str, str]:
    with service.admin() as admin:
        made = admin.post("/api/v1/api-keys", json={"name": name, **body})
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    return made.json()["key_id"], made.json()["token"]


def _works(service: Service, token: str) -> int:
    with bearer(service, token) as http:
        return http.get("/api/v1/orgs").status_code


@pytest.mark.both_databases
def test_an_api_key_expires_rotates_and_is_revoked(service: Service) -> None:
    key_id, token = _key(service, "ci", expires_in_days=1)
    assert _works(service, token) == 200
    with service.admin() as admin:
        listed = {k["name"]: k for k in admin.get("/api/v1/api-keys").json()["items"]}
    assert listed["ci"]["expires_at"] is not None
    assert listed["ci"]["last_used_at"] is not None
    assert "token" not in listed["ci"]

    # Rotation: the old token is refused at once, the new one works, the id stays.
    with service.admin() as admin:
        rotated = admin.post("/api/v1/api-keys/ci/rotate", json={"expires_in_days": 2}).json()
    assert rotated["key_id"] == key_id
    assert _works(service, token) == 401
    assert _works(service, rotated["token"]) == 200

    # Expiry, on the server's clock.
    service.clock.advance(timedelta(days=2, minutes=1))
    with bearer(service, rotated["token"]) as http:
        expired = http.get("/api/v1/orgs")
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]

    # Revocation of a key still valid: the next request is refused.
    _, other = _key(service, "deploy")
    assert _works(service, other) == 200
    with service.admin() as admin:
        assert admin.delete("/api/v1/api-keys/deploy").status_code == 204
        assert admin.delete("/api/v1/api-keys/deploy").status_code == 404
    assert _works(service, other) == 401

    actor = "api-key:admin"
    assert _audited(service, "api_key.create")[:2] == [(actor, "deploy"), (actor, "ci")]
    assert _audited(service, "api_key.rotate") == [(actor, "ci")]
    assert _audited(service, "api_key.revoke") == [(actor, "deploy")]


def test_last_use_is_written_at_most_once_a_minute(service: Service) -> None:
    _, token = _key(service, "poller")

    def last_used() -> str | None:
        with service.admin() as admin:
            found: str | None = admin.get("/api/v1/api-keys/poller").json()["last_used_at"]
        return found

    assert _works(service, token) == 200
    first = last_used()
    assert first is not None
    for _ in range(3):
        assert _works(service, token) == 200
    assert last_used() == first  # a burst within the minute writes nothing
    service.clock.advance(timedelta(minutes=2))
    assert _works(service, token) == 200
    later = last_used()
    assert later is not None
    assert later > first


def test_only_the_instance_manages_api_keys_and_bad_input_changes_nothing(
    service: Service,
) -> None:
    token = user_token(service, "ops@acme.test", "acme", role="admin")
    with bearer(service, token) as http:
        assert http.get("/api/v1/api-keys").status_code == 403
        assert http.post("/api/v1/api-keys", json={"name": "mine"}).status_code == 403
        assert http.delete("/api/v1/api-keys/admin").status_code == 403
    with service.admin() as admin:
        assert admin.post("/api/v1/api-keys", json={"name": "no spaces"}).status_code == 400
        for bad in ({"name": "x", "expires_in_days": 0}, {"name": "x", "role": "root"}, {}):
            assert admin.post("/api/v1/api-keys", json=bad).status_code == 400
        assert admin.post("/api/v1/api-keys/nobody/rotate").status_code == 404
        names = [k["name"] for k in admin.get("/api/v1/api-keys").json()["items"]]
    assert names == ["admin"]


def test_a_user_is_deactivated_or_deleted_and_her_audit_trail_stays(service: Service) -> None:
    token = user_token(service, "homer@simps.net", "simpsons", role="operator")
    user_id = service.runtime.users.find_by_username("homer@simps.net").id  # type: ignore[union-attr]
    with bearer(service, token) as http:
        assert (
            http.post("/api/v1/orgs", json={"name": "Sub", "parent_id": "simpsons"}).status_code
            == 403
        )
    with service.admin() as admin:
        assert admin.patch(f"/api/v1/users/{user_id}", json={"disabled": True}).json()["disabled"]
    assert _works(service, token) == 401  # deactivated: the account stays
    with service.admin() as admin:
        assert admin.get(f"/api/v1/users/{user_id}").status_code == 200
        assert admin.delete(f"/api/v1/users/{user_id}").status_code == 204
        assert admin.get(f"/api/v1/users/{user_id}").status_code == 404
        assert admin.delete(f"/api/v1/users/{user_id}").status_code == 404
    deleted = service.runtime.audit.search(AuditQuery(action="user.delete"))
    assert [(e.actor, e.target_id, e.details["username"]) for e in deleted] == [
        ("api-key:admin", user_id, "homer@simps.net")
    ]
    # What she did and what was done to her is still in the log.
    trail = service.runtime.audit.search(AuditQuery(target_id=user_id))
    assert {"user.create", "user.disable", "user.delete"} <= {e.action for e in trail}
    assert service.runtime.audit.search(AuditQuery(actor="user:homer@simps.net"))


def test_an_admin_cannot_delete_herself_or_a_user_of_another_organization(
    service: Service,
) -> None:
    token = user_token(service, "marge@simps.net", "simpsons", role="admin")
    with service.admin() as admin:
        make_org(admin, "flanders")
        ned = make_user(admin, "ned@flanders.example", "flanders", "admin")
    marge = service.runtime.users.find_by_username("marge@simps.net").id  # type: ignore[union-attr]
    with bearer(service, token) as http:
        assert http.delete(f"/api/v1/users/{marge}").json()["code"] == "own_account"
        assert http.delete(f"/api/v1/users/{ned}").status_code == 404
    assert service.runtime.users.get(ned).username == "ned@flanders.example"


def test_an_organization_is_renamed_and_deleted_only_when_empty(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        make_org(admin, "acme-east", parent="acme")
        renamed = admin.patch("/api/v1/orgs/acme", json={"name": "Acme Corporation"})
        assert renamed.status_code == 200
        assert (renamed.json()["id"], renamed.json()["name"]) == ("acme", "Acme Corporation")
        assert admin.patch("/api/v1/orgs/acme", json={"name": ""}).status_code == 400
        refused = admin.delete("/api/v1/orgs/acme")
        assert refused.status_code == 409
        assert refused.json()["code"] == "org_not_empty"
        assert "sub-organizations" in refused.json()["detail"]
        make_user(admin, "wile@acme.test", "acme-east", "viewer")
        busy = admin.delete("/api/v1/orgs/acme-east")
        assert busy.status_code == 409
        assert "members" in busy.json()["detail"]
        user = service.runtime.users.find_by_username("wile@acme.test")
        assert user is not None
        assert admin.delete(f"/api/v1/users/{user.id}").status_code == 204
        assert admin.delete("/api/v1/orgs/acme-east").status_code == 204
        assert admin.delete("/api/v1/orgs/acme").status_code == 204
        assert admin.get("/api/v1/orgs/acme").status_code == 404
        assert admin.get("/api/v1/orgs").json()["total"] == 0
    assert _audited(service, "org.rename") == [("api-key:admin", "acme")]
    renames = service.runtime.audit.search(AuditQuery(action="org.rename"))
    assert renames[0].details["previous_name"] == "Org acme"
    assert _audited(service, "org.delete") == [
        ("api-key:admin", "acme"),
        ("api-key:admin", "acme-east"),
    ]


def test_an_oauth_client_secret_is_rotated(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        client = make_client(admin, "acme", role="operator")
    client_id, secret = client["client_id"], client["client_secret"]
    assert client_token(service, client_id, secret).status_code == 200
    with service.admin() as admin:
        rotated = admin.post(f"/api/v1/oauth-clients/{client_id}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    new = rotated.json()["client_secret"]
    assert new
    assert new != secret
    assert client_token(service, client_id, secret).json()["error"] == "invalid_client"
    assert client_token(service, client_id, new).status_code == 200
    with service.admin() as admin:
        public = make_client(
            admin,
            "acme",
            grant_types=["authorization_code"],
            redirect_uris=["http://127.0.0.1:9/cb"],
            public=True,
        )
        no_secret = admin.post(f"/api/v1/oauth-clients/{public['client_id']}/rotate-secret")
        assert no_secret.json()["code"] == "client_public"
        assert admin.post("/api/v1/oauth-clients/nope/rotate-secret").status_code == 404
    assert _audited(service, "oauth_client.secret.rotate") == [("api-key:admin", client_id)]


@pytest.mark.slow
def test_a_device_is_addressed_by_its_own_id_and_lists_count_every_match(
    service: Service,
) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        make_org(admin, "beta")
    solo = pending_device(service, "acme", "pump-17")
    ours = pending_device(service, "acme", "dev-1")
    theirs = pending_device(service, "beta", "dev-1")
    for n in range(4):
        pending_device(service, "acme", f"meter-{n}")
    with service.admin() as admin:
        assert admin.get("/api/v1/devices/pump-17").json()["id"] == solo.id
        assert admin.get(f"/api/v1/devices/{solo.id}").json()["device_id"] == "pump-17"
        ambiguous = admin.get("/api/v1/devices/dev-1")
        assert ambiguous.status_code == 409
        assert ambiguous.json()["code"] == "device_ambiguous"
        assert (
            admin.get("/api/v1/devices/dev-1", params={"owner": "beta"}).json()["id"] == theirs.id
        )
        assert admin.get("/api/v1/devices/nope").status_code == 404
        approved = admin.post("/api/v1/devices/dev-1/approve", params={"owner": "acme"})
        assert approved.json()["id"] == ours.id
        seen: list[str] = []
        after = None
        while True:
            page = admin.get("/api/v1/devices", params={"limit": 3, "after": after}).json()
            assert page["total"] == 7
            seen += [d["id"] for d in page["items"]]
            after = page["next"]
            if after is None:
                break
        assert len(seen) == len(set(seen)) == 7
        only_acme = admin.get("/api/v1/devices", params={"owner": "acme", "limit": 1}).json()
        assert only_acme["total"] == 6
    # A member of beta sees her dev-1 by its id: acme's is not hers to see.
    token = user_token(service, "bea@beta.test", "beta", role="operator")
    with bearer(service, token) as http:
        assert http.get("/api/v1/devices/dev-1").json()["id"] == theirs.id
        assert http.get("/api/v1/devices/pump-17").status_code == 404
        assert http.get("/api/v1/devices").json()["total"] == 1
    assert _audited(service, "device.approve") == [("api-key:admin", ours.id)]
