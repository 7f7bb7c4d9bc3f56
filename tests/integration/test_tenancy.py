"""Organizations, users and roles over real HTTPS: the tree, who sees what, role
enforcement, self-registration, and the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imprint.audit import AuditQuery
from imprint.auth.passwords import verify_password
from imprint.cli.client import app as client_cli
from imprint.cli.org import app as org_cli
from imprint.cli.user import app as user_cli
from imprint.errors import NotFound, PermissionDenied
from imprint.settings import Settings
from imprint.tenancy.access import Principal, authorize, org_scope, role_in
from imprint.tenancy.orgs import Organization, OrgTree
from imprint.tenancy.roles import Role
from tests.integration.conftest import Service, start_service
from tests.integration.oauth_helpers import (
    PASSWORD,
    bearer,
    make_org,
    token_for,
)

PROBLEM = "application/problem+json"


def _tree() -> OrgTree:
    at = datetime.now(UTC)
    pairs = [
        ("simpsons", None),
        ("household", "simpsons"),
        ("power-plant", "simpsons"),
        ("sector-7g", "power-plant"),
        ("flanders", None),
    ]
    return OrgTree(Organization(i, i.title(), p, at) for i, p in pairs)


def test_org_scope_is_the_members_orgs_and_everything_below() -> None:
    tree = _tree()
    homer = Principal("user", "u1", "homer", {"simpsons": Role.ADMIN})
    marge = Principal("user", "u2", "marge", {"household": Role.VIEWER})
    lenny = Principal("user", "u3", "lenny", {"sector-7g": Role.OPERATOR})
    assert org_scope(homer, tree) == {"simpsons", "household", "power-plant", "sector-7g"}
    assert org_scope(marge, tree) == {"household"}
    assert org_scope(lenny, tree) == {"sector-7g"}
    key = Principal("api-key", "k", "admin", instance_admin=True)
    assert org_scope(key, tree) is None
    assert role_in(homer, "sector-7g", tree) is Role.ADMIN  # reaches down
    assert role_in(lenny, "power-plant", tree) is None  # never up
    with pytest.raises(NotFound):
        authorize(marge, "flanders", Role.VIEWER, tree, what="organization 'flanders'")
    with pytest.raises(NotFound):
        authorize(marge, "simpsons", Role.VIEWER, tree, what="organization 'simpsons'")
    with pytest.raises(PermissionDenied):
        authorize(marge, "household", Role.OPERATOR, tree, what="organization 'household'")
    assert authorize(lenny, "sector-7g", Role.OPERATOR, tree, what="x") is Role.OPERATOR


def _simpsons(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "simpsons")
        make_org(admin, "household", parent="simpsons")
        make_org(admin, "power-plant", parent="simpsons")
        make_org(admin, "flanders")


@pytest.mark.both_databases
@pytest.mark.slow
def test_members_see_their_subtree_and_foreign_orgs_are_404(service: Service) -> None:
    _simpsons(service)
    with service.admin() as admin:
        homer = token_for(service, admin, "simpsons", "admin")
        marge = token_for(service, admin, "household", "viewer")
    with bearer(service, homer) as http:
        listed = http.get("/api/v1/orgs").json()["items"]
        foreign = http.get("/api/v1/orgs/flanders")
        missing = http.get("/api/v1/orgs/nobody")
        child = http.post(
            "/api/v1/orgs", json={"id": "garage", "name": "Garage", "parent_id": "household"}
        )
    assert {o["id"] for o in listed} == {"simpsons", "household", "power-plant"}
    assert foreign.status_code == 404
    assert foreign.headers["content-type"] == PROBLEM
    assert foreign.json()["detail"] == "no organization 'flanders'"
    assert missing.json()["detail"] == "no organization 'nobody'"  # the same as a foreign one
    assert child.status_code == 201, child.text
    with bearer(service, marge) as http:
        assert [o["id"] for o in http.get("/api/v1/orgs").json()["items"]] == [
            "garage",
            "household",
        ]
        assert http.get("/api/v1/orgs/simpsons").status_code == 404
        assert http.get("/api/v1/orgs/garage").json()["role"] == "viewer"


@pytest.mark.slow
def test_roles_are_enforced_viewer_reads_operator_runs_admin_manages(service: Service) -> None:
    _simpsons(service)
    with service.admin() as admin:
        viewer = token_for(service, admin, "household", "viewer")
        operator = token_for(service, admin, "household", "operator")
        admin_token = token_for(service, admin, "household", "admin")
    sub = {"name": "Kitchen", "parent_id": "household"}
    user = {"username": "bart@simps.net", "password": PASSWORD, "org_id": "household"}
    client = {"name": "sensor-bot", "org_id": "household", "role": "operator"}
    with bearer(service, viewer) as http:
        assert http.get("/api/v1/orgs/household").status_code == 200
        for path, body in (
            ("/api/v1/orgs", sub),
            ("/api/v1/users", user),
            ("/api/v1/oauth-clients", client),
        ):
            denied = http.post(path, json=body)
            assert denied.status_code == 403, path
            assert denied.json()["code"] == "role_insufficient"
    with bearer(service, operator) as http:
        assert http.post("/api/v1/orgs", json=sub).status_code == 403
        assert http.post("/api/v1/users", json=user).status_code == 403
        assert http.post("/api/v1/oauth-clients", json=client).status_code == 201
        above = http.post("/api/v1/oauth-clients", json={**client, "role": "admin"})
        assert above.status_code == 403
    with bearer(service, admin_token) as http:
        assert http.post("/api/v1/orgs", json=sub).status_code == 201
        made = http.post("/api/v1/users", json={**user, "role": "operator"})
        assert made.status_code == 201, made.text
        user_id = made.json()["id"]
        promoted = http.put(f"/api/v1/users/{user_id}/roles/household", json={"role": "admin"})
        assert promoted.json()["memberships"] == {"household": "admin"}
        top = http.post("/api/v1/orgs", json={"name": "Top"})
        assert top.status_code == 403  # only an API key makes top-level organizations
        # enrollments are scoped by organization; the deny-list is the whole instance's
        assert http.get("/api/v1/enrollments").status_code == 200
        instance = http.get("/api/v1/denied-certificates")
        assert instance.status_code == 403
        assert instance.json()["code"] == "instance_admin_required"
    with service.admin() as admin:
        assert admin.get(f"/api/v1/users/{user_id}").json()["memberships"] == {"household": "admin"}
        logged = admin.get("/api/v1/audit", params={"target_id": user_id}).json()["items"]
    assert [(e["action"], e["org_id"], e["details"]) for e in logged] == [
        ("user.role.set", "household", {"role": "admin"}),
        ("user.create", "household", {"username": "bart@simps.net", "role": "operator"}),
    ]
    assert all(str(e["actor"]).startswith("client:cli-") for e in logged)  # the admin's token


def test_deleting_a_client_revokes_its_tokens(service: Service) -> None:
    _simpsons(service)
    with service.admin() as admin:
        token = token_for(service, admin, "household", "viewer")
        client_id = admin.get("/api/v1/oauth-clients").json()["items"][0]["client_id"]
        with bearer(service, token) as http:
            assert http.get("/api/v1/orgs").status_code == 200
        assert admin.delete(f"/api/v1/oauth-clients/{client_id}").status_code == 204
        deleted = admin.get("/api/v1/audit", params={"action": "oauth_client.delete"})
        assert [(e["target_id"], e["actor"]) for e in deleted.json()["items"]] == [
            (client_id, "api-key:admin")
        ]
    with bearer(service, token) as http:
        assert http.get("/api/v1/orgs").status_code == 401


@pytest.mark.slow
def test_signup_creates_an_org_its_admin_and_a_working_registration_key(
    settings: Settings, tmp_path: Path
) -> None:
    opened = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"self_registration": True})}
    )
    for service in start_service(opened, tmp_path):
        with service.client() as http:
            made = http.post(
                "/api/v1/signup",
                json={
                    "organization": "The Simpsons",
                    "username": "homer@simps.net",
                    "password": PASSWORD,
                },
            )
            assert made.status_code == 201, made.text
            assert made.headers["cache-control"] == "no-store"
            body = made.json()
            first, _, second = body["registration_key"].partition("-")
            provisioned = http.post(
                "/api/v1/provision",
                json={
                    "mechanism": "registration-key",
                    "csr": _csr(),
                    "registration_id": "74743827342",
                    "evidence": {"key_half": first},
                },
            )
            twice = http.post(
                "/api/v1/signup",
                json={"organization": "Again", "username": "HOMER@simps.net", "password": PASSWORD},
            )
            weak = http.post(
                "/api/v1/signup",
                json={"organization": "Weak", "username": "ned@flanders.org", "password": "short"},
            )
            blank = http.post(  # refused inside the transaction: nothing of it stays
                "/api/v1/signup",
                json={"organization": " ", "username": "ned@flanders.org", "password": PASSWORD},
            )
        assert provisioned.status_code == 200, provisioned.text
        assert provisioned.json()["bundle"]["owner"] == body["org_id"]
        assert len(second) == 8
        assert twice.status_code == 409
        assert weak.status_code == 400
        assert weak.json()["code"] == "value_invalid"
        assert PASSWORD not in made.text
        orgs = service.runtime.orgs.all()
        assert [o.id for o in orgs] == [body["org_id"]]  # the refused sign-ups left nothing
        enrollment = service.runtime.enrollments.get(body["enrollment_id"])
        assert enrollment.owner == body["org_id"]
        assert blank.status_code == 400
        assert [e.id for e in service.runtime.enrollments.search(limit=100)] == [enrollment.id]
        assert service.runtime.users.find_by_username("ned@flanders.org") is None
        (signed,) = service.runtime.audit.search(AuditQuery(action="signup"))
        assert (signed.actor, signed.target_id, signed.org_id) == (
            "user:homer@simps.net",
            body["org_id"],
            body["org_id"],
        )
        assert signed.details == {
            "name": "The Simpsons",
            "user_id": body["user_id"],
            "enrollment_id": body["enrollment_id"],
        }


def _csr() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thermometer")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_signup_is_off_by_default_answers_403_and_stores_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.auth.self_registration is False
    for service in start_service(settings, tmp_path):
        with service.client() as http:
            refused = http.post(
                "/api/v1/signup",
                json={"organization": "X", "username": "x@example.org", "password": PASSWORD},
            )
        assert refused.status_code == 403
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["code"] == "self_registration_disabled"
        assert service.runtime.orgs.all() == []
        assert service.runtime.users.find_by_username("x@example.org") is None


@pytest.mark.slow
@pytest.mark.both_databases
def test_the_command_line_manages_orgs_users_and_clients(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "cli.yaml"
    runner = CliRunner()

    commands = {"org": org_cli, "user": user_cli, "client": client_cli}
    monkeypatch.setenv("IMPRINT_CONFIG", str(config))

    def run(group: str, *args: str, stdin: str | None = None) -> str:
        result = runner.invoke(commands[group], list(args), input=stdin)
        assert result.exit_code == 0, result.output
        return result.stdout

    for service in start_service(settings, tmp_path):
        config.write_text(
            f"data_dir: {settings.data_dir}\ndatabase:\n  url: {settings.database_url()}\n"
            "ca:\n  passphrase: test-passphrase\n"
        )

        made = run("org", "create", "The Simpsons", "--id", "simpsons", "-o", "json")
        assert json.loads(made)["id"] == "simpsons"
        run("org", "create", "Household", "--id", "household", "--parent", "simpsons")
        tree = run("org", "tree")
        assert "simpsons (The Simpsons)" in tree
        assert tree.index("household") > tree.index("simpsons")
        assert "household" in run("org", "list")
        user_id = json.loads(
            run(
                "user",
                "create",
                "marge@simps.net",
                "--org",
                "household",
                "--output",
                "json",
                stdin=f"{PASSWORD}\n",
            )
        )["id"]
        assert user_id.startswith("usr-")
        run("user", "role", "marge@simps.net", "simpsons", "operator")
        assert "simpsons:operator" in run("user", "list")
        new = "a brand new passphrase"
        short = runner.invoke(user_cli, ["password", "marge@simps.net"], input="short\nshort\n")
        assert short.exit_code == 1
        assert "password: 10 to 1024 characters" in short.output
        run("user", "password", "marge@simps.net", stdin=f"{new}\n")
        marge = service.runtime.users.get(user_id)
        assert verify_password(marge.password_hash, new)
        assert marge.sessions_valid_after is not None
        assert run("user", "disable", "marge@simps.net").strip() == "marge@simps.net: disabled"
        assert service.runtime.users.get(user_id).disabled
        run("user", "enable", "marge@simps.net")
        assert not service.runtime.users.get(user_id).disabled
        lines = run("client", "create", "bot", "--org", "simpsons", "--role", "operator").split()
        client_id, secret = lines[-2], lines[-1]
        assert client_id in run("client", "list")
        assert secret not in run("client", "list")
        with service.client() as http:
            answer = http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            )
        assert answer.status_code == 200, answer.text
        with bearer(service, answer.json()["access_token"]) as http:
            seen = {o["id"] for o in http.get("/api/v1/orgs").json()["items"]}
        assert seen == {"simpsons", "household"}
        bad = runner.invoke(user_cli, ["role", "nobody", "simpsons", "viewer"])
        assert bad.exit_code == 1
