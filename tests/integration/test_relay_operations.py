"""The browser relay's decisions as application operations, on a real database (both
backends): approve and deny authorize, act and audit in one unit of work; a request
decided meanwhile, by the other of two racing approvals, leaves no certificate behind;
the relay's expiry follows the runtime's clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.audit import AuditQuery, verify_chain
from imprint.errors import ImprintError, PermissionDenied
from imprint.identities import RelayDecided, RelayExpired, RelayStatus
from imprint.pki.records import CertificateStatus
from imprint.runtime import Runtime, prepare
from imprint.settings import Settings
from imprint.tenancy.access import Principal, cli_principal
from imprint.tenancy.roles import Role
from tests.integration.conftest import ServerClock

pytestmark = pytest.mark.both_databases

MARGE = Principal("user", "usr-marge", "marge", {"acme": Role.OPERATOR}, owner="acme")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    opened, _first = prepare(settings, clock=ServerClock())
    opened.app.organizations.create(cli_principal(), "Acme", org_id="acme")
    yield opened
    opened.close()


def _csr() -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def _issued_identities(runtime: Runtime) -> list[str]:
    return [
        r.serial
        for r in runtime.ledger.search(status=CertificateStatus.ISSUED, limit=100)
        if r.profile == "client"
    ]


def test_approve_signs_decides_and_audits_once(runtime: Runtime) -> None:
    relays = runtime.app.relays
    state, relay = relays.start(_csr(), "192.0.2.9")
    identity = relays.approve(MARGE, state)
    assert identity.owner == "acme"
    assert _issued_identities(runtime) == [identity.serial]
    approved = runtime.audit.search(AuditQuery(action="relay.approve"))
    assert [(e.actor, e.target_id, e.org_id) for e in approved] == [
        ("user:marge", identity.serial, "acme")
    ]
    assert approved[0].details["public_key_sha256"] == relay.spki_sha256
    assert len(runtime.audit.search(AuditQuery(action="identity.sign"))) == 1
    with pytest.raises(RelayDecided):
        relays.deny(MARGE, state)
    collected = relays.collect(state)
    assert collected.status is RelayStatus.APPROVED
    assert collected.identity is not None
    assert collected.identity.serial == identity.serial
    client = f"relay:{relay.spki_sha256[:16]}"
    started = runtime.audit.search(AuditQuery(action="relay.start"))
    assert [(e.actor, e.target_id) for e in started] == [(client, relay.spki_sha256)]
    handed = runtime.audit.search(AuditQuery(action="relay.collect"))
    assert [(e.actor, e.target_id, e.org_id) for e in handed] == [(client, identity.serial, "acme")]
    assert verify_chain(runtime.audit).ok


def test_deny_audits_and_a_viewer_cannot_approve(runtime: Runtime) -> None:
    relays = runtime.app.relays
    state, _ = relays.start(_csr(), None)
    viewer = Principal("user", "usr-b", "bart", {"acme": Role.VIEWER}, owner="acme")
    with pytest.raises(PermissionDenied):
        relays.approve(viewer, state)
    assert runtime.audit.search(AuditQuery(action="relay.approve")) == []
    assert relays.pending(state).status is RelayStatus.PENDING  # the refusal changed nothing
    relays.deny(MARGE, state)
    assert [e.actor for e in runtime.audit.search(AuditQuery(action="relay.deny"))] == [
        "user:marge"
    ]
    assert relays.collect(state).status is RelayStatus.DENIED
    assert _issued_identities(runtime) == []


def test_of_two_racing_approvals_one_wins_and_the_other_leaves_no_certificate(
    runtime: Runtime,
) -> None:
    relays = runtime.app.relays
    state, _ = relays.start(_csr(), None)
    won: list[str] = []
    lost: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def approve() -> None:
        start.wait()
        try:
            identity = relays.approve(MARGE, state)
        except ImprintError as exc:
            with lock:
                lost.append(exc.code)
            return
        with lock:
            won.append(identity.serial)

    threads = [threading.Thread(target=approve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(won) == 1
    assert lost == ["relay_decided"]
    assert _issued_identities(runtime) == won
    assert len(runtime.audit.search(AuditQuery(action="relay.approve"))) == 1


def test_a_relay_expires_by_the_runtime_clock(runtime: Runtime) -> None:
    relays = runtime.app.relays
    state, relay = relays.start(_csr(), None)
    assert relays.seconds_left(relay) >= 59
    assert isinstance(runtime.clock, ServerClock)
    runtime.clock.advance(relay.expires_at - runtime.clock.now())
    with pytest.raises(RelayExpired):
        relays.approve(MARGE, state)
    with pytest.raises(RelayExpired):
        relays.collect(state)
    assert _issued_identities(runtime) == []
    assert timedelta(0) < runtime.clock.offset
