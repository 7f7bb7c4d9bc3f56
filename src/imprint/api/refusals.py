"""Refused client certificates are logged and counted, whichever check refused them.

The application's gate (:func:`imprint.api.identity.peer_certificate`), the attestors and
:func:`imprint.api.identity.client_certificate` raise their refusals as errors; the
problem handler answers them and calls :func:`record_refusal`, which logs the
certificate's fingerprint, subject and issuer with the code, and counts the code in
``imprint_client_certificate_refusals_total``.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from starlette.requests import Request

from imprint.errors import ImprintError
from imprint.logs import get_logger

__all__ = ["CERTIFICATE_REFUSALS", "record_refusal"]

log = get_logger("imprint.client_certificates")

#: The problem codes that refuse a client certificate.
CERTIFICATE_REFUSALS = frozenset(
    {
        "self_signed",
        "eku_missing",
        "issuer_unknown",
        "chain_incomplete",
        "certificate_expired",
        "certificate_revoked",
        "certificate_denied",
    }
)


def record_refusal(request: Request, error: ImprintError) -> None:
    """Log and count ``error`` if it refuses the client certificate of ``request``."""
    if error.code not in CERTIFICATE_REFUSALS:
        return
    leaf = getattr(request.state, "client_leaf", None)
    if leaf is None:
        return  # not about a certificate on this connection (e.g. a signed request's)
    der = leaf.public_bytes(serialization.Encoding.DER)
    log.warning(
        "client_certificate_refused",
        code=error.code,
        detail=error.message,
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        source=request.client.host if request.client else None,
        path=request.url.path,
    )
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        runtime.metrics.client_certificate_refused(error.code)
