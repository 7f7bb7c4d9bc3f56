"""``POST /api/v1/sign/identity-csr``: identity certificates for the owner of a user's
token, through the real HTTPS server with tokens from the real sign-in."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from imprint.identities import spki_sha256
from imprint.pki.authority import IssuanceRequest, IssuedCertificate
from imprint.store.identities import SqlIdentityStore
from tests.integration.conftest import Service
from tests.integration.identity_helpers import (
    certificate_count,
    common_name_of,
    csr_pem,
    make_csr,
    openssl_verify,
    user_token,
)
from tests.integration.oauth_helpers import bearer

PATH = "/api/v1/sign/identity-csr"


@pytest.mark.slow
def test_the_certificate_names_the_owner_and_verifies_with_openssl(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    key, csr = make_csr("i-would-like-to-be-root")
    with bearer(service, token) as http:
        answer = http.post(PATH, json={"csr": csr_pem(csr)})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["owner"] == "acme"
    assert body["reused"] is False
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert common_name_of(certificate) == "acme"  # the CSR's CN is not taken
    assert certificate.public_key() == key.public_key()
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert format(certificate.serial_number, "x") == body["serial"]
    chain = x509.load_pem_x509_certificates(body["certificate_chain"].encode())
    assert chain[0] == certificate
    assert "OK" in openssl_verify(service.workdir, body["certificate_chain"], body["trust_anchors"])
    record = service.runtime.ledger.get(body["serial"])
    assert record.profile == "client"
    assert record.requested_by == "identity:user:marge@simps.net"


@pytest.mark.slow
@pytest.mark.both_databases
def test_same_key_gets_its_certificate_back_and_another_key_is_refused(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    key, first_csr = make_csr("laptop")
    with bearer(service, token) as http:
        first = http.post(PATH, json={"csr": csr_pem(first_csr)}).json()
        _, again_csr = make_csr("laptop-again", key)  # a new CSR, the same key
        again = http.post(PATH, json={"csr": csr_pem(again_csr)})
        assert again.status_code == 200, again.text
        assert again.json()["serial"] == first["serial"]
        assert again.json()["reused"] is True
        before = certificate_count(service)
        _, other_csr = make_csr("laptop")
        other = http.post(PATH, json={"csr": csr_pem(other_csr)})
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "identity_key_conflict"
    assert first["serial"] in other.json()["detail"]
    assert certificate_count(service) == before  # nothing was signed
    with service.admin() as admin:
        revoked = admin.post(f"/api/v1/certificates/{first['serial']}/revoke", json={})
        assert revoked.status_code == 200, revoked.text
    with bearer(service, token) as http:
        replaced = http.post(PATH, json={"csr": csr_pem(other_csr)})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["serial"] != first["serial"]
    assert replaced.json()["owner"] == "acme"


@pytest.mark.slow
def test_owners_are_independent(service: Service) -> None:
    acme = user_token(service, "marge@simps.net", "acme")
    globex = user_token(service, "hank@globex.com", "globex")
    _, csr = make_csr()
    with bearer(service, acme) as http:
        mine = http.post(PATH, json={"csr": csr_pem(csr)})
    _, other_csr = make_csr()
    with bearer(service, globex) as http:
        theirs = http.post(PATH, json={"csr": csr_pem(other_csr)})
    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["owner"] == "acme"
    assert theirs.json()["owner"] == "globex"


@pytest.mark.slow
def test_plgd_protojson_and_raw_pkcs10_bodies(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    key, csr = make_csr()
    encoded = base64.b64encode(csr_pem(csr).encode()).decode()
    with bearer(service, token) as http:
        plgd = http.post(PATH, json={"certificateSigningRequest": encoded})
        raw = http.post(
            PATH,
            content=csr.public_bytes(serialization.Encoding.DER),
            headers={"Content-Type": "application/pkcs10"},
        )
    assert plgd.status_code == 200, plgd.text
    assert set(plgd.json()) == {"certificate"}
    chain = x509.load_pem_x509_certificates(base64.b64decode(plgd.json()["certificate"]))
    assert common_name_of(chain[0]) == "acme"
    assert chain[0].public_key() == key.public_key()
    assert len(chain) == 2  # the certificate and the issuing CA
    assert raw.status_code == 200, raw.text
    assert raw.json()["serial"] == format(chain[0].serial_number, "x")


@pytest.mark.slow
def test_refusals_are_problems_and_sign_nothing(service: Service) -> None:
    operator = user_token(service, "marge@simps.net", "acme")
    viewer = user_token(service, "bart@simps.net", "acme", role="viewer")
    _, csr = make_csr()
    good = {"csr": csr_pem(csr)}
    before = certificate_count(service)
    cases: list[tuple[str | None, dict[str, object], int, str]] = [
        (None, {"json": good}, 401, "authentication_required"),
        (service.admin_token, {"json": good}, 403, "owner_required"),
        (viewer, {"json": good}, 403, "role_insufficient"),
        (operator, {"json": {"csr": "not a csr"}}, 400, "csr_invalid"),
        (operator, {"json": {"certificateSigningRequest": "%%%"}}, 400, "csr_invalid"),
        (
            operator,
            {"json": {"csr": csr_pem(csr), "certificateSigningRequest": "x"}},
            400,
            "value_invalid",
        ),
        (operator, {"json": {"csr": csr_pem(csr), "owner": "globex"}}, 400, "request_invalid"),
        (operator, {"json": []}, 400, "request_invalid"),
        (
            operator,
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            400,
            "request_invalid",
        ),
        (
            operator,
            {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
            400,
            "value_invalid",
        ),
        (
            operator,
            {"content": b"\x30\x03", "headers": {"Content-Type": "application/pkcs10"}},
            400,
            "csr_invalid",
        ),
    ]
    for token, request, status, code in cases:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with service.client(headers=headers) as http:
            answer = http.post(PATH, **request)  # type: ignore[arg-type]
        assert answer.status_code == status, (code, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == code
        assert "Traceback" not in answer.text
    assert certificate_count(service) == before


@pytest.mark.slow
@pytest.mark.both_databases
def test_concurrent_requests_with_different_keys_yield_one_identity(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    csrs = [csr_pem(make_csr()[1]) for _ in range(6)]

    def post(pem: str) -> httpx.Response:
        with bearer(service, token) as http:
            return http.post(PATH, json={"csr": pem})

    with ThreadPoolExecutor(max_workers=len(csrs)) as pool:
        answers = list(pool.map(post, csrs))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [409] * (len(csrs) - 1), [a.text for a in answers]
    identities = [r for r in service.runtime.ledger.search(limit=100) if r.profile == "client"]
    assert len(identities) == 1


def seed_identity(
    service: Service, owner: str, key: ec.EllipticCurvePrivateKey, validity: timedelta
) -> IssuedCertificate:
    """An identity with a short lifetime, recorded through the store as the issuer does."""
    issued = service.runtime.authority.issue(
        IssuanceRequest(
            public_key=key.public_key(), profile="client", common_name=owner, validity=validity
        )
    )
    store = SqlIdentityStore(service.runtime.engine)
    fingerprint = spki_sha256(key.public_key())
    assert store.claim(owner, fingerprint, "test", datetime.now(UTC), reuse=True) is None
    store.record(owner, fingerprint, issued.record.serial, issued.record.not_after)
    return issued


@pytest.mark.slow
def test_an_identity_due_for_renewal_is_renewed_for_its_key_only(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    key, csr = make_csr()
    issued = seed_identity(service, "acme", key, timedelta(seconds=3))
    _, other_csr = make_csr()
    with bearer(service, token) as http:
        refused = http.post(PATH, json={"csr": csr_pem(other_csr)})
        renewed = http.post(PATH, json={"csr": csr_pem(csr)})
    assert refused.status_code == 409
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["reused"] is False  # due for renewal: a new certificate
    assert renewed.json()["serial"] != issued.record.serial
    assert renewed.json()["not_after"] > issued.record.not_after.isoformat()


@pytest.mark.slow
def test_an_expired_identity_frees_the_owner_for_another_key(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    key, _ = make_csr()
    issued = seed_identity(service, "acme", key, timedelta(seconds=1))
    service.clock.advance(issued.record.not_after - service.clock.now() + timedelta(seconds=1))
    other_key, other_csr = make_csr()
    with bearer(service, token) as http:
        answer = http.post(PATH, json={"csr": csr_pem(other_csr)})
    assert answer.status_code == 200, answer.text
    certificate = x509.load_pem_x509_certificate(answer.json()["certificate"].encode())
    assert certificate.public_key() == other_key.public_key()
