"""Failed-attempt limits over real HTTPS (decision 0009): strangers cannot lock an owner
out, the key spaces do not mix, and the limit holds exactly under concurrency.

Requests come from two loopback addresses (127.0.0.1 and 127.0.0.2) so the server sees
two sources."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from imprint.app.sign_ins import check_password
from imprint.attestation.base import TooManyAttempts
from imprint.store.tables import provisioning_records
from tests.integration.conftest import Service, ensure_org
from tests.integration.oauth_helpers import (
    PASSWORD,
    client_token,
    make_client,
    make_org,
    make_user,
)
from tests.integration.test_oob_secret import (
    b64url,
    create_enrollment,
    make_csr,
    register,
    request_body,
)

STRANGER = "127.0.0.2"
SECRET = "s3cret-from-the-label"


def from_address(service: Service, address: str, **kwargs: Any) -> httpx.Client:
    """An HTTPS client whose connections leave from ``address``."""
    context = ssl.create_default_context(cafile=str(service.root_cert))
    transport = httpx.HTTPTransport(verify=context, local_address=address)
    return httpx.Client(base_url=service.base_url, transport=transport, timeout=30, **kwargs)


def oob_enrollment(service: Service, *devices: str) -> None:
    with service.admin() as admin:
        ensure_org(admin, "acme")
        create_enrollment(admin)
        for device in devices:
            assert register(admin, "oob-lab", device).status_code == 201


def symmetric_body(device_key: bytes, device_id: str) -> dict[str, Any]:
    """A symmetric-key request as the documented wire format describes it."""
    pem, csr = make_csr(device_id)

    digest = b64url(hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).digest())
    expiry, nonce = int(time.time()) + 600, secrets.token_urlsafe(18)
    message = f"{device_id}\n{expiry}\n{nonce}\n{digest}".encode()
    token = b64url(hmac.new(device_key, message, hashlib.sha256).digest())
    return {
        "mechanism": "symmetric-key",
        "csr": pem,
        "registration_id": device_id,
        "evidence": {"expiry": expiry, "nonce": nonce, "token": token},
    }


def device_key_of(service: Service, enrollment_id: str, device_id: str) -> bytes:
    """The key of ``device_id``, derived from a new symmetric-key group's key."""
    with service.admin() as admin:
        ensure_org(admin, "acme")
        made = admin.post(
            "/api/v1/enrollments",
            json={"mechanism": "symmetric-key", "owner": "acme", "id": enrollment_id},
        )
    assert made.status_code == 201, made.text
    group_key = base64.b64decode(made.json()["group_key"])
    return hmac.new(group_key, device_id.encode(), hashlib.sha256).digest()


def test_a_strangers_failures_never_block_a_device_with_a_key(service: Service) -> None:
    device_key = device_key_of(service, "sym-lab", "meter-1")
    # From the device's own address, even: a key cannot be guessed, so only the
    # stranger's refusals are counted, and only the stranger is told to wait.
    with service.client() as http:
        answers = [
            http.post("/api/v1/provision", json=symmetric_body(b"\0" * 32, "meter-1"))
            for _ in range(15)
        ]
        codes = [a.json()["code"] for a in answers]
        assert codes == ["signature_invalid"] * 10 + ["too_many_attempts"] * 5
        assert int(answers[-1].headers["retry-after"]) >= 1
        device = http.post("/api/v1/provision", json=symmetric_body(device_key, "meter-1"))
    assert device.status_code == 200, device.text
    assert device.json()["status"] == "approved"


def test_replays_count_as_failures_and_are_limited_like_them(service: Service) -> None:
    """A replayed request is refused in the request's unit of work, after its evidence
    checked out: it still counts against its source, which is told to wait (429, with
    no journal entry) once over the limit, as for any other refused evidence."""
    body = symmetric_body(device_key_of(service, "sym-replay", "meter-2"), "meter-2")

    def journal() -> int:
        with service.runtime.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(provisioning_records)).scalar_one()
            )

    with service.client() as http:
        assert http.post("/api/v1/provision", json=body).status_code == 200
        replays = [http.post("/api/v1/provision", json=body) for _ in range(10)]
        journaled = journal()
        limited = [http.post("/api/v1/provision", json=body) for _ in range(2)]
    assert [a.json()["code"] for a in replays] == ["replay_detected"] * 10
    assert [a.json()["code"] for a in limited] == ["too_many_attempts"] * 2
    assert int(limited[-1].headers["retry-after"]) >= 1
    assert journal() == journaled  # told to wait, not journaled


def test_a_strangers_wrong_secrets_never_block_an_oauth_client(service: Service) -> None:
    with service.admin() as admin:
        machine = make_client(admin, None, "viewer")
    for _ in range(12):
        wrong = client_token(service, machine["client_id"], "not-" + machine["client_secret"])
        assert wrong.status_code == 401
    right = client_token(service, machine["client_id"], machine["client_secret"])
    assert right.status_code == 200, right.text


def test_the_owner_of_an_oob_secret_is_not_locked_out_from_elsewhere(service: Service) -> None:
    oob_enrollment(service, "meter-7")
    with from_address(service, STRANGER) as stranger:
        for _ in range(10):
            guess = stranger.post("/api/v1/provision", json=request_body("guess", "meter-7"))
            assert guess.json()["code"] == "signature_invalid"
        # The stranger's next guess, even the right secret, waits: a guessable secret is
        # limited before it is checked.
        held = stranger.post("/api/v1/provision", json=request_body(SECRET, "meter-7"))
    assert held.status_code == 429
    assert held.json()["code"] == "too_many_attempts"
    assert 1 <= int(held.headers["retry-after"]) <= 61
    with service.client() as owner:
        answer = owner.post("/api/v1/provision", json=request_body(SECRET, "meter-7"))
    assert answer.status_code == 200, answer.text
    # A minute later the stranger's address may try again.
    service.clock.advance(timedelta(seconds=61))
    with from_address(service, STRANGER) as stranger:
        again = stranger.post("/api/v1/provision", json=request_body("guess", "meter-7"))
    assert again.json()["code"] == "signature_invalid"


@pytest.mark.slow
def test_a_user_with_her_password_is_not_locked_out_from_elsewhere(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "simpsons")
        make_user(admin, "marge@simps.net", "simpsons", "admin")
    runtime = service.runtime
    for _ in range(10):
        assert check_password(runtime, "198.51.100.7", "marge@simps.net", "wrong") is None
    with pytest.raises(TooManyAttempts):
        check_password(runtime, "198.51.100.7", "marge@simps.net", PASSWORD)
    marge = check_password(runtime, "192.0.2.10", "marge@simps.net", PASSWORD)
    assert marge is not None
    assert marge.username == "marge@simps.net"


def test_an_identity_that_looks_like_an_address_locks_nothing_out(service: Service) -> None:
    oob_enrollment(service, "meter-8")
    with from_address(service, STRANGER) as stranger:
        for _ in range(12):
            stranger.post("/api/v1/provision", json=request_body("guess", "127.0.0.1"))
    with service.client() as owner:
        answer = owner.post("/api/v1/provision", json=request_body(SECRET, "meter-8"))
    assert answer.status_code == 200, answer.text


@pytest.mark.both_databases
@pytest.mark.slow
def test_the_limit_holds_exactly_under_60_concurrent_attempts(service: Service) -> None:
    oob_enrollment(service, "meter-9")
    bodies = [request_body(f"guess-{n}", "meter-9") for n in range(60)]
    start = threading.Barrier(60)

    def attempt(body: dict[str, Any]) -> int:
        with service.client() as http:
            http.get("/healthz")  # the handshake before the barrier, not in the race
            start.wait(timeout=60)
            answer = http.post("/api/v1/provision", json=body)
        assert answer.headers["content-type"] == "application/problem+json"
        return answer.status_code

    with ThreadPoolExecutor(max_workers=60) as pool:
        statuses = Counter(pool.map(attempt, bodies))
    assert statuses == {403: 10, 429: 50}
