"""The API's changes to trust and client identities are in the audit log, each with who
made it: manufacturer CRLs, client CAs, channel keys and identity certificates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from imprint.attestation.revocation import key_sha256
from imprint.audit import AuditQuery
from imprint.provisioning.channels import ChannelTemplate, channel_for_device
from tests.integration.conftest import Service, with_orgs
from tests.integration.identity_helpers import csr_pem, make_csr, user_token
from tests.integration.oauth_helpers import bearer
from tests.integration.test_x509_attestation import Manufacturer, crl_of, enroll


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


def _logged(service: Service, prefix: str) -> list[tuple[str, str, str | None, str | None]]:
    entries = service.runtime.audit.search(AuditQuery(limit=200))
    return [
        (e.action, e.actor, e.target_id, e.org_id)
        for e in reversed(entries)
        if e.action.startswith(prefix)
    ]


@pytest.mark.both_databases
def test_trust_and_identity_changes_are_audited(service: Service) -> None:
    maker = Manufacturer.create("Acme")
    enroll(service, maker.chain())
    issuer_key = key_sha256(maker.line.certificate)
    channel = channel_for_device(
        service.runtime.channels,
        ChannelTemplate(fields={"field1": "temperature"}),
        owner="acme",
        enrollment_id="weather",
        device_ref="0b6c1f6e-2f7e-4b5e-9c55-3c1f2a9d0001",
        device_id="station-1",
        at=datetime.now(UTC),
    )
    ca_pem = maker.root.public_bytes(serialization.Encoding.PEM).decode()
    ca_fingerprint = maker.root.fingerprint(hashes.SHA256()).hex()
    with service.admin() as admin:
        crl = crl_of(maker.line.certificate, maker.line.key, [], 1)
        created = admin.post(
            "/api/v1/enrollments",
            json={"id": "factory", "mechanism": "client-ca", "owner": "acme"},
        )
        steps = [
            admin.post("/api/v1/manufacturer-crls", json={"crl": crl}),
            admin.delete(f"/api/v1/manufacturer-crls/{issuer_key}"),
            admin.post("/api/v1/enrollments/factory/client-cas", json={"pem": ca_pem}),
            admin.delete(f"/api/v1/enrollments/factory/client-cas/{ca_fingerprint}"),
            admin.post(f"/api/v1/channels/{channel.id}/keys/write/regenerate"),
            admin.post(f"/api/v1/channels/{channel.id}/keys/read"),
        ]
        admin_actor = next(
            e.actor for e in service.runtime.audit.search(AuditQuery(action="enrollment.create"))
        )
    assert created.status_code == 201, created.text
    assert [s.status_code for s in steps] == [201, 204, 201, 204, 200, 201], [s.text for s in steps]
    token = user_token(service, "marge@simps.net", "acme")
    _, csr = make_csr("laptop")
    with bearer(service, token) as http:
        signed = http.post("/api/v1/sign/identity-csr", json={"csr": csr_pem(csr)})
    assert signed.status_code == 200, signed.text

    assert admin_actor.startswith("api-key:")
    assert _logged(service, "manufacturer_crl.") == [
        ("manufacturer_crl.upload", admin_actor, issuer_key, None),
        ("manufacturer_crl.remove", admin_actor, issuer_key, None),
    ]
    assert _logged(service, "client_ca.") == [
        ("client_ca.add", admin_actor, "factory", "acme"),
        ("client_ca.remove", admin_actor, "factory", "acme"),
    ]
    assert _logged(service, "channel.") == [
        ("channel.key_regenerate", admin_actor, str(channel.id), "acme"),
        ("channel.key_add", admin_actor, str(channel.id), "acme"),
    ]
    assert _logged(service, "identity.") == [
        ("identity.sign", "user:marge@simps.net", signed.json()["serial"], "acme"),
    ]
