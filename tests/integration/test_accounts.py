"""Accounts: a user changes her own password, an admin resets a password or disables a
user, and in each case the sessions and tokens issued before stop working."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from imprint.audit import AuditQuery
from tests.integration.conftest import Service
from tests.integration.identity_helpers import sign_in, sign_in_client
from tests.integration.oauth_helpers import PASSWORD, bearer, make_org, make_user

NEW_PASSWORD = "a brand new passphrase"


def works(service: Service, token: str) -> bool:
    with bearer(service, token) as http:
        answer = http.get("/api/v1/orgs")
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


def next_second(service: Service) -> None:
    """Tokens carry their issue time in whole seconds: start the change in a later one."""
    service.clock.advance(timedelta(seconds=1))


@pytest.mark.slow
def test_a_user_changes_her_password_and_her_older_tokens_end(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "simpsons")
        homer = make_user(admin, "homer@simps.net", "simpsons", "operator")
        client_id = sign_in_client(admin, "simpsons")
    old_token = sign_in(service, client_id, "homer@simps.net", PASSWORD)
    assert old_token is not None
    assert works(service, old_token)
    next_second(service)

    def change(token: str, **body: str) -> httpx.Response:
        with bearer(service, token) as http:
            return http.put("/api/v1/users/me/password", json=body)

    wrong = change(old_token, current_password="not it at all", new_password=NEW_PASSWORD)
    assert (wrong.status_code, wrong.json()["code"]) == (403, "password_wrong")
    short = change(old_token, current_password=PASSWORD, new_password="short")
    assert (short.status_code, short.json()["code"]) == (400, "value_invalid")
    assert "10 to 1024 characters" in short.json()["detail"]
    extra = change(old_token, current_password=PASSWORD, new_password=NEW_PASSWORD, x="y")
    assert extra.status_code == 400
    assert works(service, old_token)  # none of these changed anything
    assert sign_in(service, client_id, "homer@simps.net", NEW_PASSWORD) is None

    done = change(old_token, current_password=PASSWORD, new_password=NEW_PASSWORD)
    assert done.status_code == 204, done.text
    assert not works(service, old_token)
    assert sign_in(service, client_id, "homer@simps.net", PASSWORD) is None
    new_token = sign_in(service, client_id, "homer@simps.net", NEW_PASSWORD)
    assert new_token is not None
    assert works(service, new_token)

    entries = service.runtime.audit.search(AuditQuery(target_id=homer))
    actions = [(e.action, e.outcome) for e in entries]
    assert ("user.password.change", "success") in actions
    assert NEW_PASSWORD not in repr(entries)
    assert PASSWORD not in repr(entries)

    with service.admin() as admin:  # an API key has no password of its own
        answer = admin.put(
            "/api/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
    assert (answer.status_code, answer.json()["code"]) == (403, "not_a_local_user")


@pytest.mark.slow
@pytest.mark.both_databases
def test_an_admin_manages_only_accounts_wholly_in_her_organizations(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "simpsons")
        make_org(admin, "household", parent="simpsons")
        make_org(admin, "flanders")
        marge_id = make_user(admin, "marge@simps.net", "simpsons", "admin")
        lisa = make_user(admin, "lisa@simps.net", "simpsons", "viewer")
        bart = make_user(admin, "bart@simps.net", "household", "operator")
        both = make_user(admin, "rod@simps.net", "household", "viewer")
        shared = admin.put(f"/api/v1/users/{both}/roles/flanders", json={"role": "viewer"})
        assert shared.status_code == 200, shared.text
        ned = make_user(admin, "ned@flanders.example", "flanders", "admin")
        client_id = sign_in_client(admin, "simpsons")
    marge = sign_in(service, client_id, "marge@simps.net", PASSWORD)
    lisa_token = sign_in(service, client_id, "lisa@simps.net", PASSWORD)
    bart_token = sign_in(service, client_id, "bart@simps.net", PASSWORD)
    assert marge is not None
    assert lisa_token is not None
    assert bart_token is not None
    next_second(service)

    with bearer(service, marge) as http:
        # Another tree's user does not exist for her; a shared one is not hers to manage.
        foreign = http.put(f"/api/v1/users/{ned}/password", json={"password": NEW_PASSWORD})
        assert foreign.status_code == 404
        shared = http.patch(f"/api/v1/users/{both}", json={"disabled": True})
        assert (shared.status_code, shared.json()["code"]) == (403, "user_managed_elsewhere")
        own = http.patch(f"/api/v1/users/{marge_id}", json={"disabled": True})
        assert (own.status_code, own.json()["code"]) == (409, "own_account")
        for bad in ({"disabled": "maybe"}, {"disabled": True, "role": "admin"}, {}):
            assert http.patch(f"/api/v1/users/{bart}", json=bad).status_code == 400
        short = http.put(f"/api/v1/users/{bart}/password", json={"password": "x"})
        assert short.status_code == 400
        assert works(service, bart_token)  # refused requests changed nothing

        disabled = http.patch(f"/api/v1/users/{bart}", json={"disabled": True})
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["disabled"] is True
        assert not works(service, bart_token)
        assert sign_in(service, client_id, "bart@simps.net", PASSWORD) is None
        assert http.patch(f"/api/v1/users/{bart}", json={"disabled": False}).status_code == 200
        assert sign_in(service, client_id, "bart@simps.net", PASSWORD) is not None
        assert not works(service, bart_token)  # what was issued before stays refused

        reset = http.put(f"/api/v1/users/{lisa}/password", json={"password": NEW_PASSWORD})
        assert reset.status_code == 204, reset.text
    assert not works(service, lisa_token)
    assert sign_in(service, client_id, "lisa@simps.net", NEW_PASSWORD) is not None
    lisa_new = sign_in(service, client_id, "lisa@simps.net", NEW_PASSWORD)
    assert lisa_new is not None
    with bearer(service, lisa_new) as http:  # a viewer manages nobody
        answer = http.patch(f"/api/v1/users/{bart}", json={"disabled": True})
    assert (answer.status_code, answer.json()["code"]) == (403, "role_insufficient")

    with service.admin() as admin:  # the whole instance manages every account
        assert admin.patch(f"/api/v1/users/{both}", json={"disabled": True}).status_code == 200
    actions = {e.action for e in service.runtime.audit.search(AuditQuery(target_type="user"))}
    assert {"user.disable", "user.enable", "user.password.reset"} <= actions
