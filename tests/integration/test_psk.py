"""PSK mode: issue or register a client PSK for an organization, list, revoke; the key
is sealed at rest and shown once. Through the real HTTPS server with real user tokens."""

from __future__ import annotations

import base64
import uuid

import pytest
from sqlalchemy import func, select

from imprint.store.tables import client_psks
from tests.integration.conftest import Service
from tests.integration.identity_helpers import user_token
from tests.integration.oauth_helpers import bearer

PATH = "/api/v1/psk"


def psk_rows(service: Service) -> int:
    with service.runtime.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(client_psks)).scalar()
    return int(count or 0)


@pytest.mark.slow
@pytest.mark.both_databases
def test_issued_psk_is_shown_once_and_sealed_at_rest(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    with bearer(service, token) as http:
        answer = http.post(PATH, json={})
        assert answer.status_code == 201, answer.text
        assert answer.headers["cache-control"] == "no-store"
        issued = answer.json()
        listed = http.get(PATH).json()["items"]
        shown = http.get(f"{PATH}/{issued['id']}").json()
    key = bytes.fromhex(issued["key"])
    assert len(key) == 16
    assert base64.b64decode(issued["key_base64"]) == key
    assert issued["org_id"] == "acme"
    assert issued["origin"] == "issued"
    assert uuid.UUID(issued["subject"])  # a fresh UUID as the PSK identity
    assert [item["id"] for item in listed] == [issued["id"]]
    for later in (listed[0], shown):
        assert "key" not in later
        assert "key_base64" not in later
    with service.runtime.engine.connect() as conn:
        sealed = conn.execute(select(client_psks.c.key_sealed)).scalar_one()
    assert key not in sealed
    assert issued["key"].encode() not in sealed
    stored = service.runtime.identities.psks.with_key(issued["id"])
    assert stored.key == key


@pytest.mark.slow
def test_a_client_registers_its_own_key(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    own = bytes(range(16))
    with bearer(service, token) as http:
        as_hex = http.post(PATH, json={"subject": "d2d-client-1", "key": own.hex()})
        as_b64 = http.post(
            PATH, json={"subject": "d2d-client-2", "key": base64.b64encode(own).decode()}
        )
        unpadded = http.post(
            PATH,
            json={"subject": "d2d-client-3", "key": base64.urlsafe_b64encode(own).decode()[:22]},
        )
        # plgd's preSharedKey: a 16-character string whose bytes are the key.
        as_plgd = http.post(PATH, json={"subject": "d2d-client-4", "key": "0123456789012345"})
        short = http.post(PATH, json={"subject": "d2d-client-5", "key": "012345678901234"})
        taken = http.post(PATH, json={"subject": "d2d-client-1"})
    for answer in (as_hex, as_b64, unpadded):
        assert answer.status_code == 201, answer.text
        assert answer.json()["origin"] == "registered"
        assert answer.json()["key"] is None  # the client has it; it is not echoed
        stored = service.runtime.identities.psks.with_key(answer.json()["id"])
        assert stored.key == own
    assert as_plgd.status_code == 201, as_plgd.text
    assert "0123456789012345" not in as_plgd.text
    assert service.runtime.identities.psks.with_key(as_plgd.json()["id"]).key == b"0123456789012345"
    assert short.status_code == 400
    assert "16-character string" in short.json()["detail"]
    assert taken.status_code == 409
    assert taken.json()["code"] == "psk_subject_taken"
    assert psk_rows(service) == 4


@pytest.mark.slow
def test_bad_input_is_refused_without_storing(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"key": "00" * 15}, 400, "value_invalid"),
        ({"key": "zz" * 16}, 400, "value_invalid"),
        ({"key": base64.b64encode(bytes(17)).decode()}, 400, "value_invalid"),
        ({"key": "0" * 65}, 400, "request_invalid"),
        ({"subject": "has space"}, 400, "value_invalid"),
        ({"subject": ""}, 400, "value_invalid"),
        ({"owner": "globex"}, 400, "request_invalid"),
        ({"org_id": "globex"}, 404, "not_found"),
    ]
    with bearer(service, token) as http:
        for body, status, code in cases:
            answer = http.post(PATH, json=body)
            assert answer.status_code == status, (body, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == code
            assert "00" * 15 not in answer.text
    with service.client() as anonymous:
        assert anonymous.post(PATH, json={}).status_code == 401
    with service.admin() as admin:  # an API key names no owner: org_id is needed
        answer = admin.post(PATH, json={})
        assert answer.status_code == 400
        assert answer.json()["code"] == "value_invalid"
    assert psk_rows(service) == 0


@pytest.mark.slow
def test_organizations_see_and_revoke_only_their_own(service: Service) -> None:
    acme = user_token(service, "marge@simps.net", "acme")
    viewer = user_token(service, "bart@simps.net", "acme", role="viewer")
    globex = user_token(service, "hank@globex.com", "globex")
    with bearer(service, acme) as http:
        mine = http.post(PATH, json={"subject": "laptop"}).json()
    with bearer(service, globex) as http:
        theirs = http.post(PATH, json={"subject": "laptop"}).json()  # same subject, other org
        assert [p["id"] for p in http.get(PATH).json()["items"]] == [theirs["id"]]
        assert http.get(f"{PATH}/{mine['id']}").status_code == 404
        assert http.delete(f"{PATH}/{mine['id']}").status_code == 404
    with bearer(service, viewer) as http:
        assert [p["id"] for p in http.get(PATH).json()["items"]] == [mine["id"]]
        assert http.post(PATH, json={}).json()["code"] == "role_insufficient"
        assert http.delete(f"{PATH}/{mine['id']}").json()["code"] == "role_insufficient"
    with service.admin() as admin:
        everything = {p["id"] for p in admin.get(PATH).json()["items"]}
        assert everything == {mine["id"], theirs["id"]}
    with bearer(service, acme) as http:
        assert http.delete(f"{PATH}/{mine['id']}").status_code == 204
        assert http.get(f"{PATH}/{mine['id']}").status_code == 404
        assert http.delete(f"{PATH}/{mine['id']}").status_code == 404
    assert psk_rows(service) == 1
    with service.admin() as admin:
        entries = admin.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    actions = [(e["action"], e["target_id"]) for e in entries if e["action"].startswith("psk.")]
    assert ("psk.create", mine["id"]) in actions
    assert ("psk.revoke", mine["id"]) in actions
    assert mine["key"] not in str(entries)
