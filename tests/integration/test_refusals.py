"""Every kind of wrong evidence, in one matrix, through the real HTTPS server.

Each case sets the stage through the admin API (an enrollment, a first device, an
uploaded CRL, ...), then sends one request that must be refused. The test checks what
a device or an operator would see: the HTTP status, problem+json, the specific stable
``code``, no secret and no stack trace in the body, and that the database is exactly
as it was. Only the append-only provisioning records may grow, and only by the records of
this request: the steps it passed, and one failure with the refusal's ``code``.

A case whose refusal needs no HTTP answer (a certificate nobody trusts is stopped in
the TLS handshake) expects ``status=None``.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import MetaData, inspect, select
from sqlalchemy.engine import Engine

from imprint.attestation.jws import provision_payload, sign_compact
from imprint.attestation.oob_secret import idprov_signature, oob_mac
from imprint.attestation.symmetric_key import csr_sha256, derive_device_key, symmetric_key_token
from imprint.provisioning.oob_secrets import OobSecret
from imprint.store.oob_secrets import SqlOobSecretStore
from tests.integration.conftest import Service, foreign_credentials, write_credentials
from tests.integration.test_lifecycle import Factory
from tests.integration.test_x509_attestation import Manufacturer, crl_of

PROBLEM = "application/problem+json"
PROVISION = "/api/v1/provision"
RENEW = "/api/v1/renew"
SECRET = "printed-on-the-box-0042"
# Append-only: every request, refused or not, leaves its step records here.
RECORDS = "provisioning_records"
NOT_STATE = {"alembic_version", RECORDS}


# --- what a case builds and sends -----------------------------------------------------------


@dataclass
class Attempt:
    """The refused request: a JSON body (or raw bytes), headers, a client certificate."""

    body: dict[str, Any] | None = None
    content: bytes | None = None
    path: str = PROVISION
    headers: dict[str, str] = field(default_factory=dict)
    cert: tuple[Path, Path] | None = None
    secrets: tuple[str, ...] = ()  # must not appear in the answer


class Stage:
    """The server of one case and the admin calls that set the stage."""

    def __init__(self, service: Service, directory: Path) -> None:
        self.service = service
        self.directory = directory

    def enroll(self, mechanism: str, **fields: Any) -> dict[str, Any]:
        body = {"mechanism": mechanism, "owner": "acme", **fields}
        with self.service.admin() as admin:
            response = admin.post("/api/v1/enrollments", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def admin_post(self, path: str, body: Any = None, status: int = 200) -> dict[str, Any]:
        with self.service.admin() as admin:
            response = admin.post(path, json=body)
        assert response.status_code == status, response.text
        answer: dict[str, Any] = response.json() if response.content else {}
        return answer

    def device_ref(self, device_id: str) -> str:
        with self.service.admin() as admin:
            items = admin.get("/api/v1/devices", params={"limit": 1000}).json()["items"]
        return str(next(item["id"] for item in items if item["device_id"] == device_id))

    def succeeds(self, attempt: Attempt) -> dict[str, Any]:
        """Send a request that must be approved (to set the stage)."""
        response = send(self.service, attempt)
        assert response is not None
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer


def csr(key: Any = None) -> tuple[str, x509.CertificateSigningRequest]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chosen-by-device")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode(), request


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def send(service: Service, attempt: Attempt) -> httpx.Response | None:
    """POST the attempt; None when the TLS handshake refused the client certificate."""
    try:
        with service.client(cert=attempt.cert) as client:
            return client.post(
                attempt.path,
                json=attempt.body if attempt.content is None else None,
                content=attempt.content,
                headers=attempt.headers,
            )
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return None


# --- x509: manufacturer certificates --------------------------------------------------------


def x509_signed(
    stage: Stage, leaf: x509.Certificate, key: Any, line: Any, **claims: Any
) -> Attempt:
    pem_text, request = csr()
    payload = provision_payload(request, f"{stage.service.base_url}{PROVISION}")
    payload.update(claims)
    token = sign_compact(payload, key, [leaf, line.certificate])
    return Attempt({"mechanism": "x509", "csr": pem_text, "evidence": {"jws": token}})


def acme_enrolled(stage: Stage, **x509_options: Any) -> Manufacturer:
    acme = Manufacturer.create("Acme")
    stage.enroll("x509", x509={"certificate_chain": acme.chain(), **x509_options})
    return acme


def x509_wrong_chain(stage: Stage) -> Attempt:
    acme_enrolled(stage)
    globex = Manufacturer.create("Globex")
    leaf, key = globex.line.idevid("intruder-1")
    return x509_signed(stage, leaf, key, globex.line)


def x509_expired_idevid(stage: Stage) -> Attempt:
    acme = acme_enrolled(stage)  # without accept_expired
    now = datetime.now(UTC)
    leaf, key = acme.line.idevid(
        "old-meter", valid=(now - timedelta(days=400), now - timedelta(days=1))
    )
    return x509_signed(stage, leaf, key, acme.line)


def x509_revoked_by_manufacturer(stage: Stage) -> Attempt:
    acme = acme_enrolled(stage)
    leaf, key = acme.line.idevid("stolen-meter")
    crl = crl_of(acme.line.certificate, acme.line.key, [leaf.serial_number], 1)
    stage.admin_post("/api/v1/manufacturer-crls", {"crl": crl}, status=201)
    return x509_signed(stage, leaf, key, acme.line)


def x509_denied(stage: Stage) -> Attempt:
    acme = acme_enrolled(stage)
    leaf, key = acme.line.idevid("cloned-meter")
    stage.admin_post(
        "/api/v1/denied-certificates", {"certificate": pem(leaf), "reason": "cloned"}, status=201
    )
    return x509_signed(stage, leaf, key, acme.line)


def x509_cn_of_another_device(stage: Stage) -> Attempt:
    acme = acme_enrolled(stage)
    first, first_key = acme.line.idevid("meter-7")
    stage.succeeds(x509_signed(stage, first, first_key, acme.line))
    second, second_key = acme.line.idevid("meter-7")  # same CN, another certificate
    return x509_signed(stage, second, second_key, acme.line)


def _acme_device(stage: Stage) -> tuple[Manufacturer, x509.Certificate, Any]:
    acme = acme_enrolled(stage)
    leaf, key = acme.line.idevid("meter-9")
    return acme, leaf, key


def x509_forged_signature(stage: Stage) -> Attempt:
    acme, leaf, key = _acme_device(stage)
    attempt = x509_signed(stage, leaf, key, acme.line)
    assert attempt.body is not None
    header, payload, signature = attempt.body["evidence"]["jws"].split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    attempt.body["evidence"]["jws"] = f"{header}.{payload}.{flipped}"
    return attempt


def x509_stale_request(stage: Stage) -> Attempt:
    acme, leaf, key = _acme_device(stage)
    return x509_signed(stage, leaf, key, acme.line, iat=int(time.time()) - 3600)


def x509_for_another_server(stage: Stage) -> Attempt:
    acme, leaf, key = _acme_device(stage)
    return x509_signed(
        stage, leaf, key, acme.line, aud="https://elsewhere.example/api/v1/provision"
    )


def x509_signed_for_another_csr(stage: Stage) -> Attempt:
    acme, leaf, key = _acme_device(stage)
    attempt = x509_signed(stage, leaf, key, acme.line)
    assert attempt.body is not None
    attempt.body["csr"] = csr()[0]
    return attempt


def x509_replayed(stage: Stage) -> Attempt:
    acme, leaf, key = _acme_device(stage)
    attempt = x509_signed(stage, leaf, key, acme.line)
    stage.succeeds(attempt)
    return attempt


# --- client-ca: the connector's self-provisioning ---------------------------------------------


def client_ca_body() -> dict[str, Any]:
    return {"mechanism": "client-ca", "csr": csr()[0]}


def client_ca_issuer_not_in_the_list(stage: Stage) -> Attempt:
    Factory(stage.service, stage.directory, "connector")
    # A manufacturer CA of an x509 enrollment gets through the TLS gate, but the
    # client-ca list does not name it.
    acme = acme_enrolled(stage)
    leaf, key = acme.line.idevid("dev-1")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    files = write_credentials(stage.directory, "dev-1", pem(leaf) + pem(acme.line.certificate), key)
    return Attempt(client_ca_body(), cert=files)


#: Refusals of imprint.attestation.peer_chain, made before the provisioning use case.
CERTIFICATE_GATE = {"self_signed", "eku_missing", "issuer_unknown", "chain_incomplete"}


def client_ca_issuer_nobody_trusts(stage: Stage) -> Attempt:
    Factory(stage.service, stage.directory, "connector")
    return Attempt(client_ca_body(), cert=foreign_credentials(stage.directory, "dev-2"))


def client_ca_other_certificate_for_a_pinned_cn(stage: Stage) -> Attempt:
    factory = Factory(stage.service, stage.directory, "connector")
    stage.succeeds(Attempt(client_ca_body(), cert=factory.device("dev-3")))
    return Attempt(client_ca_body(), cert=factory.device("dev-3"))


def client_ca_list_disabled(stage: Stage) -> Attempt:
    factory = Factory(stage.service, stage.directory, "connector")
    stage.admin_post("/api/v1/enrollments/connector/disable")
    return Attempt(client_ca_body(), cert=factory.device("dev-4"))


# --- oob-secret and idprov -------------------------------------------------------------------


def oob_body(secret: str, device_id: str, *, timestamp: int | None = None) -> dict[str, Any]:
    pem_text, request = csr()
    stamp = int(time.time()) if timestamp is None else timestamp
    nonce = secrets.token_urlsafe(18)
    mac = oob_mac(secret, device_id, stamp, nonce, csr_sha256(request))
    return {
        "mechanism": "oob-secret",
        "csr": pem_text,
        "registration_id": device_id,
        "evidence": {"timestamp": stamp, "nonce": nonce, "mac": mac},
    }


def oob_registered(stage: Stage, device_id: str = "meter-1") -> None:
    stage.enroll("oob-secret", id="lab")
    body = {"device_id": device_id, "secret": SECRET}
    stage.admin_post("/api/v1/enrollments/lab/oob-secrets", body, status=201)


def oob_wrong_hmac(stage: Stage) -> Attempt:
    oob_registered(stage)
    return Attempt(oob_body("not-the-secret-at-all", "meter-1"), secrets=(SECRET,))


def oob_replayed(stage: Stage) -> Attempt:
    oob_registered(stage)
    attempt = Attempt(oob_body(SECRET, "meter-1"), secrets=(SECRET,))
    stage.succeeds(attempt)
    return attempt


def oob_stale_timestamp(stage: Stage) -> Attempt:
    oob_registered(stage)
    return Attempt(
        oob_body(SECRET, "meter-1", timestamp=int(time.time()) - 3600), secrets=(SECRET,)
    )


def oob_expired_secret(stage: Stage) -> Attempt:
    stage.enroll("oob-secret", id="lab")
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    store = SqlOobSecretStore(stage.service.runtime.engine, stage.service.runtime.box)
    store.write([OobSecret("lab", "meter-1", SECRET, valid_until=past, created_at=past)], [])
    return Attempt(oob_body(SECRET, "meter-1"), secrets=(SECRET,))


def oob_secret_used_by_another_key(stage: Stage) -> Attempt:
    oob_registered(stage)
    stage.succeeds(Attempt(oob_body(SECRET, "meter-1")))
    return Attempt(oob_body(SECRET, "meter-1"), secrets=(SECRET,))


def idprov_request(device_id: str, secret: str) -> bytes:
    """idprov's request as its Go client marshals it (compact, fields in struct order)."""
    public_key = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    escaped = public_key.replace("\n", "\\n")

    def message(signature: str) -> bytes:
        return (
            f'{{"deviceID":"{device_id}","ip":"192.0.2.7","mac":"",'
            f'"publicKeyPEM":"{escaped}","signature":"{signature}"}}'
        ).encode()

    return message(idprov_signature(secret, message("")))


def idprov_wrong_signature(stage: Stage) -> Attempt:
    oob_registered(stage, "AA:BB:CC:DD:EE:01")
    return Attempt(
        content=idprov_request("AA:BB:CC:DD:EE:01", "wrong-secret"),
        path="/idprov/provreq",
        headers={"content-type": "application/json"},
        secrets=(SECRET,),
    )


# --- registration-key ------------------------------------------------------------------------


def regkey_enrollment(stage: Stage, enrollment_id: str, owner: str = "acme", **fields: Any) -> str:
    stage.enroll("registration-key", id=enrollment_id, owner=owner, **fields)
    issued = stage.admin_post(f"/api/v1/enrollments/{enrollment_id}/registration-key", status=201)
    return str(issued["key"])


def regkey_attempt(serial: str, key: str, **body: Any) -> Attempt:
    first, second = key.split("-")
    return Attempt(
        {"mechanism": "registration-key", "csr": csr()[0], "registration_id": serial, **body},
        headers={"X-Imprint-Key-Half": first},
        secrets=(second, key),
    )


def regkey_wrong_half(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons", generate_pre_shared_key=True)
    first, second = key.split("-")
    wrong = "".join("Z" if c != "Z" else "Y" for c in first)
    attempt = regkey_attempt("74743827342", f"{wrong}-{second}")
    attempt.secrets = (second, key)
    return attempt


def regkey_enrollment_of_another_organization(stage: Stage) -> Attempt:
    mine = regkey_enrollment(stage, "simpsons", owner="the-simpsons")
    regkey_enrollment(stage, "flanders", owner="the-flanders")
    return regkey_attempt("74743827342", mine, enrollment_id="flanders")


def regkey_serial_of_another_organization(stage: Stage) -> Attempt:
    """The serial belongs to the Flanders' individual enrollment; the Simpsons' key is for
    another serial. Unlike midPoint, a serial is never looked up across organizations."""
    regkey_enrollment(
        stage, "flanders-1", owner="the-flanders", kind="individual", registration_id="SN-100"
    )
    simpsons = regkey_enrollment(
        stage, "simpsons-1", owner="the-simpsons", kind="individual", registration_id="SN-200"
    )
    return regkey_attempt("SN-100", simpsons)


# --- symmetric-key ---------------------------------------------------------------------------


def symkey_attempt(
    device_key: bytes,
    device_id: str,
    *,
    expiry: int | None = None,
    token_csr: x509.CertificateSigningRequest | None = None,
    **body: Any,
) -> Attempt:
    pem_text, request = csr()
    expiry = int(time.time()) + 300 if expiry is None else expiry
    nonce = secrets.token_urlsafe(18)
    token = symmetric_key_token(
        device_key, device_id, expiry, nonce, csr_sha256(token_csr or request)
    )
    return Attempt(
        {
            "mechanism": "symmetric-key",
            "csr": pem_text,
            "registration_id": device_id,
            "evidence": {"expiry": expiry, "nonce": nonce, "token": token},
            **body,
        }
    )


def symkey_group(stage: Stage) -> tuple[bytes, str]:
    created = stage.enroll("symmetric-key", id="thermometers")
    return base64.b64decode(created["group_key"]), created["group_key"]


def symkey_wrong_derived_key(stage: Stage) -> Attempt:
    group_key, shown = symkey_group(stage)
    attempt = symkey_attempt(derive_device_key(group_key, "th-2"), "th-1")
    attempt.secrets = (shown,)
    return attempt


def symkey_expired_token(stage: Stage) -> Attempt:
    group_key, _ = symkey_group(stage)
    return symkey_attempt(derive_device_key(group_key, "th-1"), "th-1", expiry=int(time.time()) - 5)


def symkey_replayed(stage: Stage) -> Attempt:
    group_key, _ = symkey_group(stage)
    attempt = symkey_attempt(derive_device_key(group_key, "th-1"), "th-1")
    stage.succeeds(attempt)
    return attempt


def symkey_token_for_another_csr(stage: Stage) -> Attempt:
    group_key, _ = symkey_group(stage)
    return symkey_attempt(derive_device_key(group_key, "th-1"), "th-1", token_csr=csr()[1])


def symkey_individual_enrollment_of_another_device(stage: Stage) -> Attempt:
    group_key, _ = symkey_group(stage)
    own = base64.b64encode(secrets.token_bytes(32)).decode()
    stage.enroll(
        "symmetric-key", id="gateway-7", kind="individual", registration_id="gw-7", group_key=own
    )
    return symkey_attempt(derive_device_key(group_key, "th-1"), "th-1", enrollment_id="gateway-7")


# --- renewal ---------------------------------------------------------------------------------


def operational(
    stage: Stage, name: str
) -> tuple[Factory, ec.EllipticCurvePrivateKey, dict[str, Any]]:
    """A device provisioned through client-ca: its factory, imprint key and bundle."""
    factory = Factory(stage.service, stage.directory, f"renew-{name}")
    key = ec.generate_private_key(ec.SECP256R1())
    answer = stage.succeeds(
        Attempt({"mechanism": "client-ca", "csr": csr(key)[0]}, cert=factory.device(name))
    )
    return factory, key, answer["bundle"]


def renewal_revoked_signed(stage: Stage) -> Attempt:
    _factory, key, bundle = operational(stage, "r1")
    stage.admin_post(f"/api/v1/certificates/{bundle['serial']}/revoke", {"reason": "keyCompromise"})
    current = x509.load_pem_x509_certificate(bundle["certificate"].encode())
    pem_text, request = csr()
    token = sign_compact(
        provision_payload(request, f"{stage.service.base_url}{RENEW}"), key, [current]
    )
    return Attempt({"csr": pem_text, "evidence": {"jws": token}}, path=RENEW)


def renewal_superseded_over_mtls(stage: Stage) -> Attempt:
    _factory, key, bundle = operational(stage, "r2")
    files = write_credentials(stage.directory, "r2-op", bundle["certificate_chain"], key)
    stage.succeeds(Attempt({"csr": csr()[0]}, path=RENEW, cert=files))
    return Attempt({"csr": csr()[0]}, path=RENEW, cert=files)


def renewal_with_a_manufacturer_certificate(stage: Stage) -> Attempt:
    factory, _key, _bundle = operational(stage, "r3")
    return Attempt({"csr": csr()[0]}, path=RENEW, cert=factory.device("r3"))


# --- policy, after a successful attestation --------------------------------------------------


def policy_disabled_enrollment(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons")
    stage.admin_post("/api/v1/enrollments/simpsons/disable")
    return regkey_attempt("74743827342", key)


def policy_outside_the_window(stage: Stage) -> Attempt:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = regkey_enrollment(stage, "simpsons", valid_from=later)
    return regkey_attempt("74743827342", key)


def policy_quota_exceeded(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons", quota=1)
    stage.succeeds(regkey_attempt("74743827342", key))
    return regkey_attempt("74743827343", key)


def policy_key_type_not_allowed(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons")  # ec-p256 and ec-p384 only
    attempt = regkey_attempt("74743827342", key)
    assert attempt.body is not None
    attempt.body["csr"] = csr(rsa.generate_private_key(65537, 2048))[0]
    return attempt


def policy_device_id_outside_the_pattern(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons", device_id_pattern=r"\d{11}")
    return regkey_attempt("SN-74743827342", key)


def policy_device_disabled(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons")
    stage.succeeds(regkey_attempt("74743827342", key))
    stage.admin_post(f"/api/v1/devices/{stage.device_ref('74743827342')}/disable")
    return regkey_attempt("74743827342", key)


def policy_reset_required(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons", reprovision="reset-required")
    stage.succeeds(regkey_attempt("74743827342", key))
    return regkey_attempt("74743827342", key)  # a new key pair, no factory reset


def policy_approved_with_another_key(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons", manual_approval=True)
    pending = send(stage.service, regkey_attempt("74743827342", key))
    assert pending is not None
    assert pending.status_code == 202, pending.text
    stage.admin_post(f"/api/v1/devices/{stage.device_ref('74743827342')}/approve")
    return regkey_attempt("74743827342", key)  # not the key that was approved


# --- guessing --------------------------------------------------------------------------------


def rate_limited_even_with_the_right_key(stage: Stage) -> Attempt:
    key = regkey_enrollment(stage, "simpsons")
    second = key.split("-")[1]
    for guess in range(10):
        wrong = send(stage.service, regkey_attempt("74743827342", f"{guess:08d}-{second}"))
        assert wrong is not None
        assert wrong.status_code == 403, wrong.text
    return regkey_attempt("74743827342", key)


# --- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    arrange: Callable[[Stage], Attempt]
    status: int | None  # None: refused in the TLS handshake
    code: str | None

    @property
    def id(self) -> str:
        return self.arrange.__name__.replace("_", "-")


CASES = [
    Case(x509_wrong_chain, 403, "not_enrolled"),
    Case(x509_expired_idevid, 403, "certificate_expired"),
    Case(x509_revoked_by_manufacturer, 403, "certificate_revoked"),
    Case(x509_denied, 403, "certificate_denied"),
    Case(x509_cn_of_another_device, 403, "identity_taken"),
    Case(x509_forged_signature, 403, "signature_invalid"),
    Case(x509_stale_request, 403, "request_expired"),
    Case(x509_for_another_server, 403, "audience_mismatch"),
    Case(x509_signed_for_another_csr, 403, "key_mismatch"),
    Case(x509_replayed, 403, "replay_detected"),
    Case(client_ca_issuer_not_in_the_list, 403, "not_enrolled"),
    Case(client_ca_issuer_nobody_trusts, 403, "issuer_unknown"),
    Case(client_ca_other_certificate_for_a_pinned_cn, 403, "identity_taken"),
    Case(client_ca_list_disabled, 403, "not_enrolled"),
    Case(oob_wrong_hmac, 403, "signature_invalid"),
    Case(oob_replayed, 403, "replay_detected"),
    Case(oob_stale_timestamp, 403, "request_expired"),
    Case(oob_expired_secret, 403, "secret_expired"),
    Case(oob_secret_used_by_another_key, 403, "secret_used"),
    Case(idprov_wrong_signature, 200, "signature_invalid"),  # idprov's wire: 200 "Rejected"
    Case(regkey_wrong_half, 403, "signature_invalid"),
    Case(regkey_enrollment_of_another_organization, 403, "signature_invalid"),
    Case(regkey_serial_of_another_organization, 403, "signature_invalid"),
    Case(symkey_wrong_derived_key, 403, "signature_invalid"),
    Case(symkey_expired_token, 403, "request_expired"),
    Case(symkey_replayed, 403, "replay_detected"),
    Case(symkey_token_for_another_csr, 403, "signature_invalid"),
    Case(symkey_individual_enrollment_of_another_device, 403, "signature_invalid"),
    Case(renewal_revoked_signed, 403, "certificate_revoked"),
    Case(renewal_superseded_over_mtls, 403, "certificate_revoked"),
    Case(renewal_with_a_manufacturer_certificate, 403, "not_enrolled"),
    Case(policy_disabled_enrollment, 403, "enrollment_closed"),
    Case(policy_outside_the_window, 403, "enrollment_closed"),
    Case(policy_quota_exceeded, 403, "quota_exceeded"),
    Case(policy_key_type_not_allowed, 403, "key_type_not_allowed"),
    Case(policy_device_id_outside_the_pattern, 403, "device_id_rejected"),
    Case(policy_device_disabled, 403, "device_disabled"),
    Case(policy_reset_required, 403, "reprovision_refused"),
    Case(policy_approved_with_another_key, 403, "key_mismatch"),
    Case(rate_limited_even_with_the_right_key, 429, "too_many_attempts"),
]


def snapshot(engine: Engine) -> tuple[dict[str, list[tuple[Any, ...]]], list[tuple[Any, ...]]]:
    """Every row of every table the migrations made, and the provisioning records apart."""
    names = [n for n in inspect(engine).get_table_names() if n not in NOT_STATE]
    tables = MetaData()
    tables.reflect(engine, only=[*names, RECORDS])
    with engine.connect() as conn:
        state = {
            name: sorted(
                (tuple(row) for row in conn.execute(select(tables.tables[name]))), key=repr
            )
            for name in names
        }
        records = tables.tables[RECORDS]
        journal = [
            tuple(row)
            for row in conn.execute(select(records.c.id, records.c.status, records.c.code))
        ]
    return state, journal


def assert_refused(case: Case, response: httpx.Response | None, attempt: Attempt) -> None:
    if case.status is None:
        assert response is None, f"the handshake let it in: {response and response.text}"
        return
    assert response is not None, "the TLS handshake refused a request that should reach imprint"
    assert response.status_code == case.status, response.text
    text = response.text
    for secret in attempt.secrets:
        assert secret not in text
    assert "Traceback" not in text
    assert 'File "' not in text
    body = response.json()
    if attempt.path.startswith("/idprov/"):
        assert response.headers["content-type"] == "application/json"
        assert body["status"] == "Rejected"
        assert not body.get("clientCert")
    else:
        assert response.headers["content-type"] == PROBLEM
        assert set(body) >= {"type", "title", "status", "detail", "code"}
        assert body["status"] == case.status
    assert body["code"] == case.code, body


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_wrong_evidence_is_refused_and_changes_nothing(
    service: Service, tmp_path: Path, case: Case
) -> None:
    attempt = case.arrange(Stage(service, tmp_path))
    state_before, journal_before = snapshot(service.runtime.engine)

    response = send(service, attempt)

    assert_refused(case, response, attempt)
    state_after, journal_after = snapshot(service.runtime.engine)
    for table in state_before:
        assert state_after[table] == state_before[table], f"{table} changed"
    assert set(state_after) == set(state_before)
    # The journal says why: the steps passed (policy refusals come after attestation),
    # then one failure with the refusal's code. The rate limit and the application's
    # check of the client certificate chain refuse before the request reaches the use case.
    added = [row for row in journal_after if row not in journal_before]
    assert len(journal_after) == len(journal_before) + len(added)
    failures = [(status, code) for _id, status, code in added if status != "ok"]
    before_use_case = case.status in (None, 429) or case.code in CERTIFICATE_GATE
    expected = [] if before_use_case else [("failed", case.code)]
    assert failures == expected
