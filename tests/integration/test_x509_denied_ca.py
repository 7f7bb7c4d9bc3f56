"""A manufacturer CA certificate on the deny-list refuses its devices, whether the device
shows it or only the enrollment's chain holds it (the root is never sent by a device)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes

from tests.integration.conftest import Service, with_orgs
from tests.integration.test_x509_attestation import (
    Manufacturer,
    enroll,
    provisioned,
    refused,
    signed_body,
)


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


def _deny(service: Service, fingerprint: str) -> None:
    with service.admin() as admin:
        response = admin.post(
            "/api/v1/denied-certificates",
            json={"fingerprint_sha256": fingerprint, "reason": "compromised CA"},
        )
    assert response.status_code == 201, response.text


def test_a_denied_root_from_the_enrollment_chain_refuses(service: Service) -> None:
    maker = Manufacturer.create("Initech")
    enroll(service, maker.chain())
    first, first_key = maker.line.idevid("meter-1")
    assert provisioned(service, signed_body(service, first, first_key, [maker.line.certificate]))

    _deny(service, maker.root.fingerprint(hashes.SHA256()).hex())
    leaf, key = maker.line.idevid("meter-2")
    problem = refused(
        service, signed_body(service, leaf, key, [maker.line.certificate]), "certificate_denied"
    )
    assert "a CA certificate in its chain" in problem["detail"]


@pytest.mark.both_databases
def test_a_denied_intermediate_the_device_shows_refuses(service: Service) -> None:
    maker = Manufacturer.create("Umbrella")
    enroll(service, maker.chain())
    _deny(service, maker.line.certificate.fingerprint(hashes.SHA256()).hex())
    leaf, key = maker.line.idevid("meter-3")
    problem = refused(
        service, signed_body(service, leaf, key, [maker.line.certificate]), "certificate_denied"
    )
    assert "a CA certificate in its chain" in problem["detail"]
