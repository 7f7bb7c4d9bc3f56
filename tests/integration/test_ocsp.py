"""OCSP (RFC 6960, RFC 5019 GET) against the real server, asked by ``openssl ocsp``, which
finds the responder through the certificate's AIA extension."""

from __future__ import annotations

import base64
import subprocess
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from imprint.pki.authority import IssuanceRequest
from tests.integration.conftest import Service


def openssl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, cwd=cwd
    )


def issue(service: Service, name: str, directory: Path) -> tuple[x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.runtime.authority.issue(
        IssuanceRequest(public_key=key.public_key(), profile="device", common_name=name)
    )
    path = directory / f"{name}.pem"
    path.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    return issued.certificate, path


def ask(service: Service, leaf: Path, cwd: Path, *extra: str) -> tuple[str, str]:
    """``openssl ocsp`` at the URL the certificate's AIA names; (status line, all output)."""
    uri = openssl("x509", "-noout", "-ocsp_uri", "-in", leaf, cwd=cwd).stdout.strip()
    assert uri == f"{service.base_url}/ocsp"
    result = openssl(
        "ocsp", "-issuer", cwd / "issuing.pem", "-cert", leaf, "-url", uri,
        "-CAfile", service.root_cert, "-verify_other", cwd / "issuing.pem", *extra, cwd=cwd,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Response verify OK" in output
    line = next(x for x in result.stdout.splitlines() if x.startswith(str(leaf)))
    return line.split(": ", 1)[1], output


@pytest.mark.both_databases
def test_openssl_ocsp_reads_good_revoked_and_unknown(service: Service, tmp_path: Path) -> None:
    with service.client() as client:
        (tmp_path / "issuing.pem").write_bytes(client.get("/ca/issuing.pem").content)
    good, good_file = issue(service, "good-device", tmp_path)
    aia = good.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_method for d in aia] == [
        AuthorityInformationAccessOID.OCSP,
        AuthorityInformationAccessOID.CA_ISSUERS,
    ]
    status, output = ask(service, good_file, tmp_path)
    assert status == "good"
    assert "WARNING: no nonce" not in output  # openssl sends a nonce; it came back
    status, output = ask(service, good_file, tmp_path, "-no_nonce")
    assert status == "good"
    assert "Next Update" in output

    _, revoked_file = issue(service, "lost-device", tmp_path)
    assert ask(service, revoked_file, tmp_path, "-no_nonce")[0] == "good"  # now kept
    revoked = x509.load_pem_x509_certificate(revoked_file.read_bytes())
    with service.admin() as admin:
        response = admin.post(
            f"/api/v1/certificates/{revoked.serial_number:x}/revoke",
            json={"reason": "keyCompromise"},
        )
    assert response.status_code == 200, response.text
    for extra in ((), ("-no_nonce",)):  # the kept "good" was dropped by the revocation
        status, output = ask(service, revoked_file, tmp_path, *extra)
        assert status == "revoked", output
        assert "Reason: keyCompromise" in output
        assert "Revocation Time" in output

    # A certificate the CA never issued (signed by a copy of nothing imprint knows, but
    # naming imprint's issuing CA): unknown.
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    issuing = service.runtime.authority.material.issuing
    stranger = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")]))
        .issuer_name(issuing.subject)
        .public_key(stranger_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(good.not_valid_before_utc)
        .not_valid_after(good.not_valid_after_utc)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(aia, False)
        .sign(stranger_key, hashes.SHA256())
    )
    stranger_file = tmp_path / "stranger.pem"
    stranger_file.write_bytes(stranger.public_bytes(serialization.Encoding.PEM))
    for extra in ((), ("-no_nonce",)):
        assert ask(service, stranger_file, tmp_path, *extra)[0] == "unknown"


def test_responder_certificate_is_delegated_and_renewed_before_expiry(service: Service) -> None:
    responder = service.runtime.ocsp.responder_certificate()
    issuing = service.runtime.authority.material.issuing
    assert responder.issuer == issuing.subject
    responder.verify_directly_issued_by(issuing)
    usage = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    aia = responder.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert all(d.access_method != AuthorityInformationAccessOID.OCSP for d in aia)
    record = service.runtime.ledger.get(format(responder.serial_number, "x"))
    assert record.requested_by == "imprint:ocsp"
    lifetime = responder.not_valid_after_utc - responder.not_valid_before_utc
    assert lifetime <= timedelta(days=7, minutes=5)

    service.clock.advance(timedelta(days=4))
    assert not service.runtime.ocsp.signer_due()
    assert service.runtime.ocsp.responder_certificate() == responder, "not due yet"
    service.clock.advance(timedelta(days=2))  # inside the 48 hours before expiry
    assert service.runtime.ocsp.signer_due()
    renewed = service.runtime.ocsp.responder_certificate()
    assert renewed.serial_number != responder.serial_number
    assert renewed.not_valid_after_utc > responder.not_valid_after_utc


def _request(certificate: x509.Certificate, issuer: x509.Certificate, nonce: bool) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_get_form_caching_and_refusals(service: Service, tmp_path: Path) -> None:
    good, _ = issue(service, "get-device", tmp_path)
    issuing = service.runtime.authority.material.issuing
    der = _request(good, issuing, nonce=False)
    with service.client() as client:
        path = quote(base64.b64encode(der).decode(), safe="")
        first = client.get(f"/ocsp/{path}")
        second = client.get(f"/ocsp/{path}")
        assert first.headers["content-type"] == "application/ocsp-response"
        assert "max-age" in first.headers["cache-control"]
        answer = ocsp.load_der_ocsp_response(first.content)
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert answer.this_update_utc is not None
        assert answer.next_update_utc is not None
        assert answer.next_update_utc - answer.this_update_utc == timedelta(minutes=60)
        assert second.content == first.content, "the kept response, signed once"

        nonced = client.post(
            "/ocsp",
            content=_request(good, issuing, nonce=True),
            headers={"Content-Type": "application/ocsp-request"},
        )
        response = ocsp.load_der_ocsp_response(nonced.content)
        nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        assert nonce == b"0123456789abcdef"

        before = len(service.runtime.ledger.search(limit=1000))
        refusals = {
            "garbage": client.post(
                "/ocsp",
                content=b"\x30\x03junk",
                headers={"Content-Type": "application/ocsp-request"},
            ),
            "wrong content type": client.post(
                "/ocsp", content=der, headers={"Content-Type": "text/plain"}
            ),
            "not base64": client.get("/ocsp/%%%%"),
            "another issuer": client.post(
                "/ocsp",
                content=_request(good, service.runtime.authority.material.root, nonce=False),
                headers={"Content-Type": "application/ocsp-request"},
            ),
        }
        statuses = {
            case: ocsp.load_der_ocsp_response(r.content).response_status
            for case, r in refusals.items()
        }
    assert statuses == {
        "garbage": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        "wrong content type": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        "not base64": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        "another issuer": ocsp.OCSPResponseStatus.UNAUTHORIZED,
    }
    assert len(service.runtime.ledger.search(limit=1000)) == before
    with service.client() as client:
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {service.admin_token}"})
    assert 'imprint_ocsp_responses_total{cached="true",outcome="good"}' in metrics.text


@pytest.mark.both_databases
def test_a_fresh_answer_is_made_where_it_is_cheapest(service: Service, tmp_path: Path) -> None:
    """A nonce'd request reads the ledger and signs: on SQLite on the event loop's thread,
    as a registration does (no thread-pool worker with a connection of its own); on
    PostgreSQL in the thread pool through the sync driver (one round trip; measured
    faster there than through the async driver)."""
    from tests.integration.test_statement_budget import counted

    with service.client() as client:
        (tmp_path / "issuing.pem").write_bytes(client.get("/ca/issuing.pem").content)
    _, leaf = issue(service, "looked-up", tmp_path)
    assert service.runtime.ocsp.signer_due()
    ask(service, leaf, tmp_path)  # the first has the responder's certificate issued
    assert not service.runtime.ocsp.signer_due()
    with counted(service) as everything:
        status, output = ask(service, leaf, tmp_path)  # openssl sends a nonce: made fresh
    assert status == "good"
    assert "WARNING: no nonce" not in output
    tally = everything.of_request("FROM certificates")
    in_the_pool = {name.startswith("AnyIO worker") for _, name, _ in tally.drivers}
    assert in_the_pool == {service.runtime.engine.dialect.name == "postgresql"}
    assert {is_async for _, _, is_async in tally.drivers} == {False}
