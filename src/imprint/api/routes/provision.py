"""The native device protocol: the directory and provisioning."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint import __version__
from imprint.api.device_plane import run_blocking
from imprint.api.device_route import DeviceRoute, json_response
from imprint.api.identity import RuntimeDep, peer_certificate, runtime_of
from imprint.attestation.base import Evidence
from imprint.attestation.registration_key import KEY_HALF_HEADER
from imprint.pki.csr import load_csr
from imprint.provisioning.bundle import Bundle
from imprint.provisioning.enrollments import Mechanism
from imprint.provisioning.service import Outcome
from imprint.runtime import Runtime

router = APIRouter(tags=["devices"])
#: The registration and renewal routes, served without FastAPI's request handling.
device_routes = APIRouter(tags=["devices"], route_class=DeviceRoute)


class ProvisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mechanism: Mechanism
    csr: str = Field(max_length=65536, description="PEM PKCS#10 request made on the device")
    registration_id: str | None = Field(
        default=None, max_length=200, description="The identity the device claims"
    )
    enrollment_id: str | None = Field(default=None, max_length=63)
    evidence: dict[str, Any] = Field(
        default_factory=dict, description="Mechanism-specific proof (see docs/provisioning.md)"
    )


class ChannelOut(BaseModel):
    id: int = Field(description="The channel to write to (ThingSpeak-style integer id)")
    write_key: str | None = Field(
        description="null when it travels sealed (then it is in `sealed`, under `channel`)"
    )


class BundleOut(BaseModel):
    device_id: str
    owner: str
    enrollment_id: str
    serial: str
    certificate: str
    certificate_chain: str = Field(description="PEM: the certificate, then the issuing CA(s)")
    trust_anchors: list[str]
    not_after: datetime
    renew_after: datetime
    services: dict[str, str]
    pre_shared_key: str | None
    tokens: dict[str, dict[str, str]] = Field(
        description='{"hub": {access_token, token_type, expires_at}} when the enrollment names '
        "a hub provider (in `sealed`, under `tokens`, for mechanisms with a shared secret)"
    )
    sealed: dict[str, str] | None = Field(
        description="Secrets encrypted for the device (HKDF-SHA256 + AES-256-GCM)"
    )
    response_mac: str | None = Field(
        description="HMAC over device id and chain, for mechanisms with a shared secret"
    )
    channel: ChannelOut | None = Field(
        default=None, description="The device's data channel, when its enrollment gives one"
    )

    @classmethod
    def of(cls, bundle: Bundle) -> BundleOut:
        # This route always sends a CSR, so the bundle always holds a certificate.
        assert bundle.certificate_pem is not None
        assert bundle.chain_pem is not None
        assert bundle.serial is not None
        assert bundle.not_after is not None
        assert bundle.renew_after is not None
        channel = bundle.channel
        return cls(
            device_id=bundle.device_id,
            owner=bundle.owner,
            enrollment_id=bundle.enrollment_id,
            serial=bundle.serial,
            certificate=bundle.certificate_pem,
            certificate_chain=bundle.chain_pem,
            trust_anchors=list(bundle.trust_anchors_pem),
            not_after=bundle.not_after,
            renew_after=bundle.renew_after,
            services=dict(bundle.services),
            pre_shared_key=bundle.pre_shared_key,
            tokens={name: dict(token) for name, token in bundle.tokens.items()},
            sealed=None if bundle.sealed is None else dict(bundle.sealed),
            response_mac=bundle.response_mac,
            channel=None
            if channel is None
            else ChannelOut(id=channel.id, write_key=channel.write_key),
        )


class ProvisionOut(BaseModel):
    status: Literal["approved", "pending"]
    request_id: str
    device_id: str
    retry_after: int | None = None
    bundle: BundleOut | None = None


def outcome_response(outcome: Outcome) -> Response:
    """200 with the bundle, or 202 with Retry-After while the request waits."""
    body = ProvisionOut(
        status=outcome.status,
        request_id=outcome.request_id,
        device_id=outcome.device_id,
        retry_after=outcome.retry_after,
        bundle=BundleOut.of(outcome.bundle) if outcome.bundle else None,
    )
    if outcome.status == "pending":
        return json_response(body, 202, {"Retry-After": str(outcome.retry_after or 30)})
    return json_response(body)


def _with_key_half(body: ProvisionIn, request: Request) -> dict[str, Any]:
    """The registration-key half may come in a header, which stays out of URLs and logs."""
    half = request.headers.get(KEY_HALF_HEADER)
    if half is None or body.mechanism is not Mechanism.REGISTRATION_KEY:
        return body.evidence
    return {**body.evidence, "key_half": half}


@device_routes.post(
    "/api/v1/provision",
    summary="Prove who you are, get a certificate and everything else",
    response_model=ProvisionOut,
    responses={202: {"description": "Pending: retry after the Retry-After seconds"}},
)
async def provision(body: ProvisionIn, request: Request) -> Response:
    runtime = runtime_of(request)
    # The answer is made after the registration's commit, outside its commit group's
    # write phase: on SQLite the other workers' writes wait for that phase to end.
    return outcome_response(await run_blocking(runtime, _provision, body, request, runtime))


def _provision(body: ProvisionIn, request: Request, runtime: Runtime) -> Outcome:
    csr = load_csr(body.csr)
    presented = peer_certificate(request)  # evidence: the attestor decides what it proves
    evidence = Evidence(
        mechanism=body.mechanism,
        csr=csr,
        at=runtime.clock.now(),
        registration_id=body.registration_id,
        enrollment_id=body.enrollment_id,
        fields=_with_key_half(body, request),
        client_certificate=presented.certificate if presented else None,
        client_intermediates=presented.intermediates if presented else (),
        source=request.client.host if request.client else None,
    )
    return runtime.provisioner.provision(evidence)


class RenewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csr: str = Field(max_length=65536, description="PEM PKCS#10 request for the new key")
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="Empty over mutual TLS; {'jws': ...} signed with the current certificate's key",
    )


@device_routes.post(
    "/api/v1/renew",
    summary="Renew with the current certificate (mutual TLS or a signed request)",
    response_model=ProvisionOut,
)
async def renew(body: RenewIn, request: Request) -> Response:
    runtime = runtime_of(request)
    return outcome_response(await run_blocking(runtime, _renew, body, request, runtime))


def _renew(body: RenewIn, request: Request, runtime: Runtime) -> Outcome:
    csr = load_csr(body.csr)
    presented = peer_certificate(request)
    evidence = Evidence(
        mechanism=Mechanism.RENEWAL,
        csr=csr,
        at=runtime.clock.now(),
        fields=body.evidence,
        client_certificate=presented.certificate if presented else None,
        client_intermediates=presented.intermediates if presented else (),
        source=request.client.host if request.client else None,
    )
    return runtime.provisioner.renew(evidence)


class Directory(BaseModel):
    service: str = "imprint"
    version: str
    endpoints: dict[str, str]
    ca_chain: str
    trust_anchors: list[str]
    services: dict[str, str]
    mechanisms: list[str]


@router.get("/.well-known/imprint", summary="Where everything is")
@router.get("/api/v1/directory", summary="Where everything is (same as /.well-known/imprint)")
async def directory(runtime: RuntimeDep) -> Directory:
    base = runtime.settings.server.base_url()
    authority = runtime.authority
    pem = serialization.Encoding.PEM
    return Directory(
        version=__version__,
        endpoints={
            "provision": f"{base}/api/v1/provision",
            "renew": f"{base}/api/v1/renew",
            "crl": f"{base}/crl/issuing.crl",
            "ca_chain": f"{base}/ca/chain.pem",
        },
        ca_chain="".join(c.public_bytes(pem).decode() for c in authority.chain),
        trust_anchors=[c.public_bytes(pem).decode() for c in authority.trust_anchors],
        services=dict(runtime.settings.services),
        mechanisms=runtime.provisioner.mechanisms,
    )
