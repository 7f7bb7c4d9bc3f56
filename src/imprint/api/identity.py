"""Who is calling: the client certificate (direct or via a trusted proxy) and API keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from imprint.api.device_plane import run_blocking
from imprint.attestation.base import (
    CertificateExpired,
    CertificateRevoked,
    ChainIncomplete,
    IssuerUnknown,
)
from imprint.attestation.peer_chain import PresentedChain, check_presented
from imprint.auth.api_keys import ApiKey
from imprint.errors import AuthenticationRequired, InvalidValue, NotFound, PermissionDenied
from imprint.pki.chain import ChainInvalid, verify_client_certificate
from imprint.pki.records import CertificateStatus
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, require_instance_admin

__all__ = [
    "AdminKey",
    "DeviceInstanceAdmin",
    "DevicePrincipal",
    "InstanceAdmin",
    "OptionalApiKey",
    "OptionalClientCertificate",
    "OptionalPrincipal",
    "PresentedCertificate",
    "PrincipalDep",
    "RuntimeDep",
    "client_certificate",
    "peer_certificate",
]


@dataclass(frozen=True, slots=True)
class PresentedCertificate:
    """A client certificate that passed the application's gate (see :func:`peer_certificate`).

    ``certificate`` is the leaf; ``intermediates`` what the client sent with it, in its
    order (from a proxy, what it forwarded after the leaf: HAProxy and nginx forward the
    leaf alone); ``path`` the path from the leaf to the CA imprint knows that it leads
    to, leaf first.
    """

    certificate: x509.Certificate
    source: Literal["tls", "proxy"]
    intermediates: tuple[x509.Certificate, ...] = ()
    path: tuple[x509.Certificate, ...] = ()

    @property
    def fingerprint_sha256(self) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _from_tls(request: Request) -> PresentedChain | None:
    tls = request.scope.get("extensions", {}).get("tls")
    if not tls or not tls.get("client_cert_chain"):
        return None
    try:
        return PresentedChain.from_pem(tls["client_cert_chain"])
    except ValueError:
        raise InvalidValue("the client certificate chain cannot be parsed") from None


def forwarded_chain(header: str) -> PresentedChain:
    """The client certificate in a proxy's header, with the certificates forwarded after
    it: PEM, URL-encoded or not (nginx's ``$ssl_client_escaped_cert``, the leaf; an AWS
    load balancer's, the chain), or DER in base64 without PEM's lines, several separated
    by commas (HAProxy's ``%[ssl_c_der,base64]``, the leaf; Traefik's, the chain,
    URL-encoded). The leaf comes first.

    Raises:
        InvalidValue: the header holds no certificates in any of these forms.
    """
    text = unquote(header).strip()
    try:
        if text.startswith("-----BEGIN"):
            certificates = x509.load_pem_x509_certificates(text.encode("ascii"))
        else:
            certificates = [
                x509.load_der_x509_certificate(base64.b64decode(part.strip(), validate=True))
                for part in text.split(",")
            ]
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise InvalidValue("the forwarded client certificate cannot be parsed") from None
    return PresentedChain(certificates[0], tuple(certificates[1:]))


def _from_trusted_proxy(request: Request, runtime: Runtime) -> PresentedChain | None:
    """The certificate a configured proxy forwarded in ``server.client_cert_header``
    (:func:`forwarded_chain`); None without one, and for a header from any other
    address."""
    server = runtime.settings.server
    header = request.headers.get(server.client_cert_header)
    if not header or not server.trusted_proxies or request.client is None:
        return None
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return None
    if not any(peer in ipaddress.ip_network(net, strict=False) for net in server.trusted_proxies):
        return None  # a forwarded certificate from anyone else is ignored
    return forwarded_chain(header)


_FORWARDED_HINT = (
    "forwarded by a proxy, which may forward the leaf alone: a missing intermediate CA "
    "belongs in an x509 enrollment's chain or a client-ca enrollment"
)


def _known_path(chain: PresentedChain, runtime: Runtime) -> tuple[x509.Certificate, ...]:
    """The path from ``chain`` to a CA imprint knows (:func:`check_presented`)."""
    trust = runtime.client_trust
    try:
        return check_presented(chain, trust.certificates(), seen=trust.seen)
    except (IssuerUnknown, ChainIncomplete):
        # Its CA may have been added since the client CAs were last loaded (through
        # another worker a moment ago): judge the chain again once they are reloaded.
        if not runtime.client_trust_caught_up():
            raise
        return check_presented(chain, trust.certificates(), seen=trust.seen)


def peer_certificate(request: Request) -> PresentedCertificate | None:
    """The client certificate of this request, once the application's gate admits it.

    This is how a route obtains the peer's certificate chain. The TLS handshake lets any
    chain through; here it must lead to a CA imprint knows (its own CA, or one an
    enrollment brings: manufacturer chains, client CAs), checked by
    :func:`imprint.attestation.peer_chain.check_presented`. It is evidence for an
    attestor to check, never an identity by itself (validity in time and revocation
    are the consumer's to check); :func:`client_certificate` is the identity.

    A certificate on the TLS connection itself wins; otherwise one forwarded in the
    configured header is used, only from a configured proxy address, and judged the
    same way, with the certificates the proxy forwarded after it. A refusal is
    logged and counted by the problem handler (:mod:`imprint.api.refusals`).

    Raises:
        SelfSigned, EkuMissing, IssuerUnknown, ChainIncomplete: the chain is refused.
        InvalidValue: a certificate cannot be parsed.
    """
    if hasattr(request.state, "peer_certificate"):
        known: PresentedCertificate | None = request.state.peer_certificate
        return known
    runtime = runtime_of(request)
    presented: PresentedCertificate | None = None
    direct = _from_tls(request)
    chain = direct if direct is not None else _from_trusted_proxy(request, runtime)
    if chain is not None:
        request.state.client_leaf = chain.leaf
        source: Literal["tls", "proxy"] = "tls" if direct is not None else "proxy"
        try:
            path = _known_path(chain, runtime)
        except (IssuerUnknown, ChainIncomplete) as refused:
            if source == "tls":
                raise
            # What a proxy forwards is its configuration's, not the device's, to change.
            raise type(refused)(f"{refused.message} ({_FORWARDED_HINT})") from None
        presented = PresentedCertificate(chain.leaf, source, chain.intermediates, path)
    request.state.peer_certificate = presented
    return presented


def _issued_by_imprint(certificate: x509.Certificate, runtime: Runtime) -> bool:
    """Whether imprint's CA issued ``certificate``, checked at its own last valid second
    (so that an expired one is recognised as ours, then refused as expired)."""
    authority = runtime.authority
    try:
        verify_client_certificate(
            certificate,
            authority.chain[:-1],
            authority.trust_anchors,
            at=min(runtime.clock.now(), certificate.not_valid_after_utc),
        )
    except ChainInvalid:
        return False
    return True


def client_certificate(request: Request) -> PresentedCertificate | None:
    """The client certificate of this request if imprint's CA issued it, else None.

    A certificate on the TLS connection itself wins; otherwise a certificate forwarded
    in the configured header is used, but only from a configured proxy address (see
    :func:`peer_certificate`). Either must verify against imprint's CA: one the TLS
    gate let in for an attestor (a manufacturer certificate) is no identity here. A
    certificate imprint issued and later revoked is refused, whatever TLS accepted.

    Raises:
        CertificateRevoked: the certificate is one of ours and revoked.
        CertificateExpired: the certificate is one of ours and not valid now.
        SelfSigned, EkuMissing, IssuerUnknown, ChainIncomplete: the chain is refused
            (:func:`peer_certificate`).
    """
    runtime = runtime_of(request)
    presented = peer_certificate(request)
    if presented is None or not _issued_by_imprint(presented.certificate, runtime):
        return None  # none, or one the gate let in for an attestor (a manufacturer's)
    if presented.certificate.issuer == runtime.authority.material.issuing.subject:
        serial = format(presented.certificate.serial_number, "x")
        try:
            record = runtime.ledger.get(serial)
        except NotFound:
            record = None
        if record is not None and record.status is CertificateStatus.REVOKED:
            raise CertificateRevoked(f"client certificate {serial} has been revoked")
    now = runtime.clock.now()
    leaf = presented.certificate
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise CertificateExpired(
            f"the client certificate is valid from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now"
        )
    return presented


#: Declares ``Authorization: Bearer`` in the OpenAPI document (an operation's
#: ``security``) of every route that reads the caller's credentials; the functions below
#: read the header themselves, so this one never refuses anything.
BEARER = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="An API key or an access token"
)
_Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def optional_principal(request: Request, _bearer: _Bearer = None) -> Principal | None:
    """The caller named by ``Authorization: Bearer``: an API key, one of imprint's access
    tokens, or a token of the configured external OpenID provider; None without one.

    Raises:
        AuthenticationRequired: a malformed header, or a credential that does not verify.
    """
    if hasattr(request.state, "principal"):
        known: Principal | None = request.state.principal
        return known
    header = request.headers.get("authorization")
    principal = None
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationRequired("use 'Authorization: Bearer <API key or access token>'")
        principal = runtime_of(request).bearer.principal(token.strip())
    request.state.principal = principal
    return principal


def require_principal(request: Request, _bearer: _Bearer = None) -> Principal:
    """Require an authenticated caller (API key or access token).

    Raises:
        AuthenticationRequired: none, or an invalid one.
    """
    principal = optional_principal(request)
    if principal is None:
        raise AuthenticationRequired("this endpoint needs an API key or an access token")
    return principal


def optional_api_key(request: Request, _bearer: _Bearer = None) -> ApiKey | None:
    """The API key of this request; None without one or for an access token."""
    principal = optional_principal(request)
    if principal is None or principal.kind != "api-key":
        return None
    return runtime_of(request).api_keys.find(principal.subject)


def admin_key(request: Request, _bearer: _Bearer = None) -> ApiKey:
    """Require an admin API key (the whole instance).

    Endpoints not yet scoped by organization take only API keys: an access token of an
    organization member must not reach the objects of other organizations.

    Raises:
        AuthenticationRequired: none, or an invalid one.
        PermissionDenied: an access token instead of an API key.
    """
    principal = require_principal(request)
    key = optional_api_key(request)
    if key is None:
        raise PermissionDenied(
            f"{principal.kind} credentials do not reach this endpoint yet: it is not scoped "
            "by organization, so it needs an admin API key",
            code="api_key_required",
        )
    return key


def instance_admin(request: Request, _bearer: _Bearer = None) -> Principal:
    """Require the whole instance (an API key), for objects no organization owns.

    Raises:
        AuthenticationRequired: none, or an invalid one.
        PermissionDenied: an access token (code ``instance_admin_required``).
    """
    principal = require_principal(request)
    require_instance_admin(principal, "this endpoint")
    return principal


async def _device_principal(request: Request, _bearer: _Bearer = None) -> Principal:
    """:func:`require_principal` for the device plane (see :func:`_on_device_plane`)."""
    return await _on_device_plane(request, require_principal)


async def _device_instance_admin(request: Request, _bearer: _Bearer = None) -> Principal:
    """:func:`instance_admin` for the device plane (see :func:`_on_device_plane`)."""
    return await _on_device_plane(request, instance_admin)


async def _on_device_plane(request: Request, resolve: Callable[[Request], Principal]) -> Principal:
    """``resolve(request)`` where :func:`imprint.api.device_plane.run_blocking` puts the
    device plane's work; for a token of the external provider, in the thread pool (its
    keys may have to be fetched first, over the network)."""
    runtime = runtime_of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and runtime.bearer.external(token.strip()):
        return await run_in_threadpool(resolve, request)
    return await run_blocking(runtime, resolve, request)


AdminKey = Annotated[ApiKey, Depends(admin_key)]
DeviceInstanceAdmin = Annotated[Principal, Depends(_device_instance_admin)]
DevicePrincipal = Annotated[Principal, Depends(_device_principal)]
InstanceAdmin = Annotated[Principal, Depends(instance_admin)]
OptionalApiKey = Annotated[ApiKey | None, Depends(optional_api_key)]
OptionalClientCertificate = Annotated[PresentedCertificate | None, Depends(client_certificate)]
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
PrincipalDep = Annotated[Principal, Depends(require_principal)]


async def _runtime(request: Request) -> Runtime:
    """The runtime as a dependency: ``async``, so resolving it costs no thread hop."""
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
