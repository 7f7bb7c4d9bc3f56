"""Renewal with the current certificate, over mutual TLS or as a signed request."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from imprint.attestation.jws import provision_payload, sign_compact
from imprint.pki.authority import IssuanceRequest
from tests.integration.conftest import Service, write_credentials
from tests.integration.test_lifecycle import Factory, csr_of


def provisioned(service: Service, tmp_path: Path, name: str, **policy: object):  # type: ignore[no-untyped-def]
    """A device provisioned through client-ca; returns (factory, its imprint key, bundle)."""
    factory = Factory(service, tmp_path, f"renew-{name}", **policy)
    key = ec.generate_private_key(ec.SECP256R1())
    response = factory.provision(factory.device(name), csr_of(key))
    assert response.status_code == 200, response.text
    return factory, key, response.json()["bundle"]


def test_renew_over_mtls_with_the_imprint_certificate(service: Service, tmp_path: Path) -> None:
    _factory, key, bundle = provisioned(service, tmp_path, "m1")
    credentials = write_credentials(tmp_path, "m1-op", bundle["certificate_chain"], key)
    new_key = ec.generate_private_key(ec.SECP256R1())
    with service.client(cert=credentials) as client:
        renewed = client.post("/api/v1/renew", json={"csr": csr_of(new_key)})
    assert renewed.status_code == 200, renewed.text
    fresh = renewed.json()["bundle"]
    assert fresh["serial"] != bundle["serial"]
    assert fresh["device_id"] == "m1"
    assert service.runtime.ledger.get(bundle["serial"]).revocation_reason == "superseded"
    # A device that lost the answer asks again with the superseded certificate and the
    # same new key: it gets the certificate already issued, not a third one.
    # With any other key the superseded certificate is refused as revoked.
    with service.client(cert=credentials) as client:
        again = client.post("/api/v1/renew", json={"csr": csr_of(new_key)})
        other = client.post(
            "/api/v1/renew", json={"csr": csr_of(ec.generate_private_key(ec.SECP256R1()))}
        )
    assert again.status_code == 200, again.text
    assert again.json()["bundle"]["serial"] == fresh["serial"]
    assert service.runtime.ledger.get(fresh["serial"]).status.value == "issued"
    assert other.status_code == 403
    assert other.json()["code"] == "certificate_revoked"


@pytest.mark.both_databases
def test_renew_with_a_signed_request(service: Service, tmp_path: Path) -> None:
    _factory, key, bundle = provisioned(service, tmp_path, "s1")
    current = x509.load_pem_x509_certificate(bundle["certificate"].encode())
    new_key = ec.generate_private_key(ec.SECP256R1())
    csr_pem = csr_of(new_key)
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    token = sign_compact(provision_payload(csr, f"{service.base_url}/api/v1/renew"), key, [current])
    with service.client() as client:
        renewed = client.post("/api/v1/renew", json={"csr": csr_pem, "evidence": {"jws": token}})
        replayed = client.post("/api/v1/renew", json={"csr": csr_pem, "evidence": {"jws": token}})
        wrong_audience = client.post(
            "/api/v1/renew",
            json={
                "csr": csr_pem,
                "evidence": {
                    "jws": sign_compact(
                        provision_payload(csr, f"{service.base_url}/api/v1/provision"),
                        key,
                        [current],
                    )
                },
            },
        )
    assert renewed.status_code == 200, renewed.text
    # The nonce is spent only once every other check passed (a refusal leaves no trace);
    # the replay names the superseded certificate and the renewed key, as a device
    # collecting a lost answer would, and is refused for its spent nonce.
    assert (replayed.status_code, replayed.json()["code"]) == (403, "replay_detected")
    assert wrong_audience.status_code == 403


def test_renewal_without_evidence_and_with_a_foreign_certificate(
    service: Service, tmp_path: Path
) -> None:
    factory, _key, _bundle = provisioned(service, tmp_path, "x1")
    with service.client() as client:
        missing = client.post(
            "/api/v1/renew", json={"csr": csr_of(ec.generate_private_key(ec.SECP256R1()))}
        )
    # The maker's certificate passes the TLS gate but is not an imprint certificate.
    with service.client(cert=factory.device("x1")) as client:
        foreign = client.post(
            "/api/v1/renew", json={"csr": csr_of(ec.generate_private_key(ec.SECP256R1()))}
        )
    assert (missing.status_code, missing.json()["code"]) == (400, "evidence_missing")
    assert (foreign.status_code, foreign.json()["code"]) == (403, "not_enrolled")


@pytest.mark.slow
def test_expired_certificate_renews_only_within_the_grace_period(
    service: Service, tmp_path: Path
) -> None:
    results = {}
    for name, grace in (("g0", 0), ("g1", 1)):
        _factory, _key, _bundle = provisioned(service, tmp_path, name, renewal_grace_days=grace)
        device = next(d for d in service.runtime.devices.search(limit=100) if d.device_id == name)
        short_key = ec.generate_private_key(ec.SECP256R1())
        short = service.runtime.authority.issue(
            IssuanceRequest(
                public_key=short_key.public_key(),
                profile="device",
                common_name=name,
                organizational_unit="acme",
                validity=timedelta(seconds=1),
            )
        )
        service.runtime.devices.save(replace(device, certificate_serial=short.record.serial))
        service.clock.advance(timedelta(seconds=2))  # the short certificate has expired
        csr_pem = csr_of(ec.generate_private_key(ec.SECP256R1()))
        token = sign_compact(
            provision_payload(
                x509.load_pem_x509_csr(csr_pem.encode()), f"{service.base_url}/api/v1/renew"
            ),
            short_key,
            [short.certificate],
        )
        with service.client() as client:
            results[name] = client.post(
                "/api/v1/renew", json={"csr": csr_pem, "evidence": {"jws": token}}
            )
    assert (results["g0"].status_code, results["g0"].json()["code"]) == (403, "certificate_expired")
    assert results["g1"].status_code == 200, results["g1"].text


def test_disabled_device_cannot_renew(service: Service, tmp_path: Path) -> None:
    _factory, key, bundle = provisioned(service, tmp_path, "d1")
    device = next(d for d in service.runtime.devices.search(limit=100) if d.device_id == "d1")
    with service.admin() as client:
        client.post(f"/api/v1/devices/{device.id}/disable")
    credentials = write_credentials(tmp_path, "d1-op", bundle["certificate_chain"], key)
    with service.client(cert=credentials) as client:
        refused = client.post(
            "/api/v1/renew", json={"csr": csr_of(ec.generate_private_key(ec.SECP256R1()))}
        )
    assert (refused.status_code, refused.json()["code"]) == (403, "device_disabled")
