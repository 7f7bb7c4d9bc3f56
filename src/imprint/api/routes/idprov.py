"""idprov compatibility routes: idprov devices and tools work against imprint unchanged.

Thin translators (see :mod:`imprint.compat.idprov`): a provisioning request becomes
oob-secret evidence for the same Provisioner every other route calls, and the outcome
is written back in idprov's format. As idprov does, a refused request is answered
``200`` with status ``Rejected`` (idprov clients treat any HTTP error as a transport
failure); imprint adds its error ``code`` and ``detail`` to that body. Malformed
requests get ``400`` and too many failures ``429``, as problem+json.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.device_plane import run_blocking
from imprint.api.identity import (
    OptionalClientCertificate,
    OptionalPrincipal,
    PrincipalDep,
    RuntimeDep,
    client_certificate,
)
from imprint.app.scoping import scope_of
from imprint.attestation.base import AttestationFailed
from imprint.compat.idprov import (
    ProvisionRequest,
    Status,
    directory_message,
    provision_response,
    status_message,
)
from imprint.errors import (
    AuthenticationRequired,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from imprint.pki.records import CertificateStatus
from imprint.provisioning.devices import Device, DeviceStatus
from imprint.provisioning.enrollments import Enrollment, Mechanism
from imprint.provisioning.service import Outcome
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

router = APIRouter(prefix="/idprov", tags=["idprov"])

JSON = "application/json"
_MAX_ENROLLMENTS = 10_000


class ProvisionRequestIn(BaseModel):
    """idprov's PostProvisionRequestMessage (unknown fields are ignored, as in Go)."""

    model_config = ConfigDict(extra="ignore")

    deviceID: str | None = Field(default=None, max_length=200)
    ip: str | None = Field(default=None, max_length=64)
    mac: str | None = Field(default=None, max_length=64)
    publicKeyPEM: str | None = Field(default=None, max_length=16384)
    signature: str | None = Field(default=None, max_length=200)


class OobSecretIn(BaseModel):
    """idprov's PostOobSecretMessage."""

    model_config = ConfigDict(extra="ignore")

    deviceID: str = Field(max_length=200)
    oobSecret: str = Field(max_length=1024)
    validUntil: str | None = Field(
        default=None, max_length=64, description="ISO 8601; default three days from now"
    )


class OobSecretOut(BaseModel):
    deviceID: str
    enrollmentID: str
    validUntil: datetime
    result: str


def _pem(runtime: Runtime) -> str:
    root = runtime.authority.trust_anchors[0]
    return root.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _oob_enrollments(runtime: Runtime, principal: Principal | None = None) -> list[Enrollment]:
    """The enabled oob-secret enrollments (of the organizations ``principal`` sees)."""
    owners = None if principal is None else scope_of(runtime, principal)
    found = runtime.enrollments.search(
        mechanism=Mechanism.OOB_SECRET, enabled=True, limit=_MAX_ENROLLMENTS, owners=owners
    )
    return list(found)


@router.get("/directory", summary="idprov: endpoints, CA certificate and services")
async def directory(runtime: RuntimeDep) -> Response:
    body = directory_message(_pem(runtime), runtime.settings.services)
    return Response(body, media_type=JSON)


@router.post(
    "/provreq",
    summary="idprov: request a certificate with an OOB-secret signature, or renew one "
    "over mutual TLS with the current certificate",
)
async def provision(body: ProvisionRequestIn, request: Request, runtime: RuntimeDep) -> Response:
    return await run_blocking(runtime, _provision, body, request, runtime)


def _provision(body: ProvisionRequestIn, request: Request, runtime: Runtime) -> Response:
    idprov = ProvisionRequest(
        device_id=body.deviceID or "",
        ip=body.ip or "",
        mac=body.mac or "",
        public_key_pem=body.publicKeyPEM or "",
        signature=body.signature or "",
    )
    now = runtime.clock.now()
    source = request.client.host if request.client else None
    try:
        current = client_certificate(request)
        if current is not None:
            # idprov's renewal: the device's own certificate instead of a secret.
            renewal = idprov.renewal_evidence(now, source, current.certificate)
            return _approved(runtime, runtime.provisioner.renew(renewal), now, secret="")
        outcome = runtime.provisioner.provision(idprov.evidence(now, source))
    except (AttestationFailed, PermissionDenied) as exc:
        rejected = provision_response("Rejected", extra={"code": exc.code, "detail": exc.message})
        return Response(rejected, media_type=JSON)
    if outcome.status == "pending" or outcome.bundle is None:
        retry = outcome.retry_after or 30
        waiting = provision_response("Waiting", retry_seconds=retry)
        return Response(waiting, media_type=JSON, headers={"Retry-After": str(retry)})
    bundle = outcome.bundle
    secret = runtime.oob_secrets.get(bundle.enrollment_id, bundle.device_id)
    if secret is None:  # removed between issuing and answering: cannot sign the answer
        raise NotFound("the device's out-of-band secret was removed; register it again")
    return _approved(runtime, outcome, now, secret=secret.secret)


def _approved(runtime: Runtime, outcome: Outcome, now: datetime, *, secret: str) -> Response:
    """An approved PostProvisionResponseMessage signed with ``secret`` (the empty secret
    for a renewal over mutual TLS, as idprov's client verifies it)."""
    bundle = outcome.bundle
    # idprov requests always carry a key, so the bundle always holds a certificate.
    assert bundle is not None
    assert bundle.chain_pem is not None
    assert bundle.renew_after is not None
    approved = provision_response(
        "Approved",
        retry_seconds=max(0, int((bundle.renew_after - now).total_seconds())),
        ca_cert=bundle.trust_anchors_pem[0],
        client_cert=bundle.chain_pem,
        secret=secret,
    )
    return Response(approved, media_type=JSON)


@router.post("/oobsecret", summary="idprov: register a device's OOB secret (admin)")
def post_oob_secret(
    body: OobSecretIn,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    enrollment_id: Annotated[
        str | None,
        Query(max_length=63, description="Default: the only enabled oob-secret enrollment"),
    ] = None,
) -> OobSecretOut:
    if enrollment_id is None:
        enabled = _oob_enrollments(runtime, principal)
        if len(enabled) != 1:
            raise InvalidRequest(
                f"{len(enabled)} enabled oob-secret enrollments; name one with ?enrollment_id=",
                code="enrollment_ambiguous",
            )
        enrollment_id = enabled[0].id
    result, summary = runtime.app.oob_secrets.register(
        principal, enrollment_id, body.deviceID, body.oobSecret, body.validUntil or None
    )
    return OobSecretOut(
        deviceID=summary.device_id,
        enrollmentID=summary.enrollment_id,
        validUntil=summary.valid_until,
        result=result.value,
    )


def _find_device(runtime: Runtime, device_id: str, principal: Principal | None) -> Device | None:
    """The oob-secret device of that id (among those ``principal`` sees, if given)."""
    owners = dict.fromkeys(e.owner for e in _oob_enrollments(runtime, principal))
    for owner in owners:
        device = runtime.devices.find(owner, device_id)
        if device is not None and device.mechanism == Mechanism.OOB_SECRET.value:
            return device
    return None


@router.get(
    "/status/{device_id}",
    summary="idprov: a device's provisioning status (admin credentials, or its certificate)",
)
def status(
    device_id: str,
    runtime: RuntimeDep,
    principal: OptionalPrincipal,
    certificate: OptionalClientCertificate,
) -> Response:
    # A device of an organization the caller does not see answers as an unknown one.
    device = _find_device(runtime, device_id, principal)
    if principal is None:
        if certificate is None:
            raise AuthenticationRequired(
                "use an API key or access token, or the device's own client certificate"
            )
        serial = format(certificate.certificate.serial_number, "x")
        if device is None or device.certificate_serial != serial:
            raise PermissionDenied("this certificate is not the device's current certificate")
    ca_pem = _pem(runtime)
    if device is None:
        return Response(status_message(device_id, "Waiting", ca_pem, None), media_type=JSON)
    if device.status is DeviceStatus.DISABLED:
        return Response(status_message(device_id, "Rejected", ca_pem, None), media_type=JSON)
    chain = _current_chain(runtime, device)
    state: Status = "Approved" if chain is not None else "Waiting"
    return Response(status_message(device_id, state, ca_pem, chain), media_type=JSON)


def _current_chain(runtime: Runtime, device: Device) -> bytes | None:
    """The device's certificate and issuing CA(s) in PEM, while the certificate is valid."""
    if device.status is not DeviceStatus.PROVISIONED or device.certificate_serial is None:
        return None
    try:
        record = runtime.ledger.get(device.certificate_serial)
    except NotFound:
        return None
    if record.status is not CertificateStatus.ISSUED or record.der is None:
        return None
    if record.not_after <= runtime.clock.now():
        return None
    leaf = x509.load_der_x509_certificate(record.der)
    pem = serialization.Encoding.PEM
    return b"".join(c.public_bytes(pem) for c in (leaf, *runtime.authority.chain[:-1]))
