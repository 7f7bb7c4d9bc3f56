"""EST (RFC 7030) at ``/.well-known/est/`` and ``/.well-known/est/<label>/``.

A thin front-end: each request becomes :class:`~imprint.attestation.base.Evidence` for
the one provisioning use case, which decides, issues, records and audits exactly as for
every other protocol. The label names an enrollment (its id); without one, the
mechanism's own rules find it.

Client authentication maps onto imprint's mechanisms:

* HTTP Basic ``<device id>:<password>``: an ``oob-secret`` enrollment's device, with
  its registered secret or a one-time password (``simpleenroll``, ``serverkeygen``);
* mutual TLS with a manufacturer certificate: an ``x509`` enrollment (same);
* mutual TLS with the device's current imprint certificate: ``simplereenroll``.

Errors are ``text/plain`` with the status RFC 7030 asks for: 400 for a request that is
not acceptable, 401 (with ``WWW-Authenticate``) when the client is not authenticated,
403 when policy refuses it, 415 for a wrong content type, 202 with ``Retry-After``
while it waits for an administrator or its secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Awaitable, Callable

from cryptography import x509
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.api.device_plane import run_blocking
from imprint.api.identity import peer_certificate, runtime_of
from imprint.api.refusals import record_refusal
from imprint.attestation.base import AttestationFailed, Evidence, TooManyAttempts
from imprint.attestation.oob_secret import HTTP_BASIC_FORMAT
from imprint.channel_binding import ChannelBinding
from imprint.compat.est import (
    CERTS_ONLY,
    CSRATTRS,
    PKCS10,
    certs_only,
    check_channel_binding,
    csr_attributes,
    generated_request,
    read_csr,
    server_key_answer,
)
from imprint.errors import (
    AuthenticationRequired,
    CAError,
    Conflict,
    ImprintError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from imprint.provisioning.enrollments import Mechanism
from imprint.provisioning.service import Outcome
from imprint.runtime import Runtime

router = APIRouter(tags=["est"])

PREFIX = "/.well-known/est"
_REALM = 'Basic realm="imprint EST", charset="UTF-8"'


class _UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain", headers=headers)


def _error(error: ImprintError) -> Response:
    """RFC 7030 4.2.3: an error status and a human-readable text/plain body."""
    if isinstance(error, TooManyAttempts):
        headers = {"Retry-After": str(error.retry_after)}
        return _text(429, error.message, headers)
    if isinstance(error, AttestationFailed | AuthenticationRequired):
        return _text(401, f"{error.code}: {error.message}", {"WWW-Authenticate": _REALM})
    if isinstance(error, _UnsupportedMediaType):
        return _text(415, f"{error.code}: {error.message}")
    status = 400
    if isinstance(error, PermissionDenied):
        status = 403
    elif isinstance(error, NotFound):
        status = 404
    elif isinstance(error, Conflict):
        status = 409
    elif isinstance(error, CAError):
        status = 503
    return _text(status, f"{error.code}: {error.message}")


def _basic(request: Request) -> tuple[str, str] | None:
    """The HTTP Basic credentials, if the request has them.

    Raises:
        AuthenticationRequired: a malformed Authorization header.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise AuthenticationRequired("EST takes HTTP Basic or a client certificate")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise AuthenticationRequired("malformed HTTP Basic credentials") from None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        raise AuthenticationRequired("HTTP Basic needs <device id>:<password>")
    return user, password


def _channel_binding(request: Request) -> bytes | None:
    """The connection's tls-unique (TLS 1.2) or tls-exporter (TLS 1.3) value."""
    tls = request.scope.get("extensions", {}).get("tls") or {}
    binding = tls.get("channel_binding")
    return binding.value() if isinstance(binding, ChannelBinding) else None


def _binding_required(runtime: Runtime, label: str | None) -> bool:
    wanted = runtime.settings.est.channel_binding_required
    return "*" in wanted or (label is not None and label in wanted)


async def _csr_body(request: Request) -> x509.CertificateSigningRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != PKCS10:
        raise _UnsupportedMediaType(f"send the request as {PKCS10} (base64 DER)")
    return read_csr(await request.body())


def _enrollment_evidence(
    request: Request, runtime: Runtime, csr: x509.CertificateSigningRequest, label: str | None
) -> Evidence:
    """simpleenroll/serverkeygen: HTTP Basic (oob-secret) or a manufacturer certificate.

    Raises:
        AuthenticationRequired: neither.
    """
    source = request.client.host if request.client else None
    credentials = _basic(request)
    if credentials is not None:
        device_id, password = credentials
        return Evidence(
            mechanism=Mechanism.OOB_SECRET,
            csr=csr,
            at=runtime.clock.now(),
            registration_id=device_id,
            enrollment_id=label,
            fields={"format": HTTP_BASIC_FORMAT, "password": password},
            source=source,
        )
    presented = peer_certificate(request)
    if presented is None:
        raise AuthenticationRequired(
            "authenticate with HTTP Basic (device id and its secret or one-time password) "
            "or a manufacturer certificate"
        )
    return Evidence(
        mechanism=Mechanism.X509,
        csr=csr,
        at=runtime.clock.now(),
        enrollment_id=label,
        client_certificate=presented.certificate,
        source=source,
    )


def _issued(outcome: Outcome) -> x509.Certificate | Response:
    """The certificate of an approved outcome, or the 202 of a waiting one."""
    if outcome.status == "pending" or outcome.bundle is None:
        seconds = str(outcome.retry_after or 30)
        return _text(202, "the request waits for approval; retry later", {"Retry-After": seconds})
    assert outcome.bundle.certificate_pem is not None
    return x509.load_pem_x509_certificate(outcome.bundle.certificate_pem.encode("ascii"))


async def _answer(
    request: Request, operation: str, work: Callable[[], Awaitable[Response]]
) -> Response:
    """Run one operation; an imprint error becomes RFC 7030's error answer."""
    try:
        response = await work()
    except ImprintError as error:
        record_refusal(request, error)  # a refused client certificate is logged and counted
        response = _error(error)
    runtime_of(request).metrics.est_answered(operation, response.status_code)
    return response


async def _cacerts(request: Request) -> Response:
    runtime = runtime_of(request)
    body = certs_only(list(runtime.authority.chain))
    return Response(body, media_type=CERTS_ONLY, headers={"Content-Transfer-Encoding": "base64"})


async def _enroll(request: Request, label: str | None, *, server_key: bool) -> Response:
    runtime = runtime_of(request)
    csr = await _csr_body(request)
    check_channel_binding(
        csr, _channel_binding(request), required=_binding_required(runtime, label)
    )
    key = None
    if server_key:  # an RSA key takes a while to make: not on the event loop
        key, csr = await run_in_threadpool(generated_request, csr)
    evidence = _enrollment_evidence(request, runtime, csr, label)
    outcome = await run_blocking(runtime, runtime.provisioner.provision, evidence)
    issued = _issued(outcome)
    if isinstance(issued, Response):
        return issued
    if key is not None:
        body, content_type = server_key_answer(key, issued)
        return Response(body, media_type=content_type)
    return Response(
        certs_only([issued]),
        media_type=CERTS_ONLY,
        headers={"Content-Transfer-Encoding": "base64"},
    )


async def _reenroll(request: Request, label: str | None) -> Response:
    runtime = runtime_of(request)
    csr = await _csr_body(request)
    check_channel_binding(
        csr, _channel_binding(request), required=_binding_required(runtime, label)
    )
    presented = peer_certificate(request)
    if presented is None:
        raise AuthenticationRequired("simplereenroll: present the current certificate over TLS")
    evidence = Evidence(
        mechanism=Mechanism.RENEWAL,
        csr=csr,
        at=runtime.clock.now(),
        client_certificate=presented.certificate,
        source=request.client.host if request.client else None,
    )
    outcome = await run_blocking(runtime, runtime.provisioner.renew, evidence)
    issued = _issued(outcome)
    if isinstance(issued, Response):
        return issued
    return Response(
        certs_only([issued]),
        media_type=CERTS_ONLY,
        headers={"Content-Transfer-Encoding": "base64"},
    )


async def _csrattrs(request: Request, label: str | None) -> Response:
    runtime = runtime_of(request)
    key_types: tuple[str, ...] = ("ec-p256",)
    if label is not None:
        # An unknown label gets the defaults: labels are not enumerable here.
        with contextlib.suppress(NotFound):
            key_types = runtime.enrollments.get(label).key_types
    body = csr_attributes(key_types, binding=_binding_required(runtime, label))
    return Response(body, media_type=CSRATTRS, headers={"Content-Transfer-Encoding": "base64"})


def _routes(prefix: str) -> None:
    labelled = "{label}" in prefix

    def label_of(request: Request) -> str | None:
        return request.path_params.get("label") if labelled else None

    @router.get(f"{prefix}/cacerts", summary="EST: the CA certificates (PKCS#7 certs-only)")
    async def cacerts(request: Request) -> Response:
        return await _answer(request, "cacerts", lambda: _cacerts(request))

    @router.post(f"{prefix}/simpleenroll", summary="EST: enroll (HTTP Basic or mutual TLS)")
    async def simpleenroll(request: Request) -> Response:
        label = label_of(request)
        return await _answer(
            request, "simpleenroll", lambda: _enroll(request, label, server_key=False)
        )

    @router.post(f"{prefix}/simplereenroll", summary="EST: renew with the current certificate")
    async def simplereenroll(request: Request) -> Response:
        label = label_of(request)
        return await _answer(request, "simplereenroll", lambda: _reenroll(request, label))

    @router.post(f"{prefix}/serverkeygen", summary="EST: enroll with a key made by the server")
    async def serverkeygen(request: Request) -> Response:
        label = label_of(request)
        return await _answer(
            request, "serverkeygen", lambda: _enroll(request, label, server_key=True)
        )

    @router.get(f"{prefix}/csrattrs", summary="EST: what the CSR should contain")
    async def csrattrs(request: Request) -> Response:
        label = label_of(request)
        return await _answer(request, "csrattrs", lambda: _csrattrs(request, label))


_routes(PREFIX)
_routes(PREFIX + "/{label}")
