"""Provisioning: one function per mechanism, all sharing one exchange.

Each function makes a CSR for the device's key (a new P-256 key unless one is given),
posts it with the mechanism's evidence to ``/api/v1/provision``, keeps asking while
the answer is *pending* (202, e.g. awaiting an administrator's approval, or an OOB
secret not registered yet) for as long as the client's :class:`WaitPolicy` allows,
and returns the bundle once it verified (see :mod:`imprint.device.bundle`).

Every attempt carries fresh evidence (a new nonce, a new timestamp) for the same CSR,
so a retry is never a replay, and the server hands a retry with the same key the
certificate it already issued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from imprint.device.bundle import Bundle, verify_bundle
from imprint.device.client import PROVISION_PATH, ImprintClient, WaitPolicy
from imprint.device.errors import PendingTimeout, ProtocolError
from imprint.device.evidence import (
    KEY_HALF_HEADER,
    derive_device_key,
    oob_secret_evidence,
    signed_request,
    split_registration_key,
    symmetric_key_evidence,
)
from imprint.device.keys import PrivateKey, generate_key, make_csr
from imprint.device.retry import parse_retry_after

__all__ = [
    "exchange",
    "provision_client_ca",
    "provision_oob_secret",
    "provision_registration_key",
    "provision_symmetric_key",
    "provision_x509",
]

log = logging.getLogger("imprint.device")

Build = Callable[[], tuple[Mapping[str, Any], Mapping[str, str]]]
DEFAULT_RETRY_AFTER = 30.0


def exchange(
    client: ImprintClient, path: str, build: Build
) -> tuple[Mapping[str, Any], str | None]:
    """POST until the answer is approved, waiting while it is pending.

    Args:
        client: the connection (with its retry and wait policies).
        path: ``/api/v1/provision`` or ``/api/v1/renew``.
        build: makes ``(body, headers)`` for each attempt.

    Returns:
        ``(bundle object, request id)`` of the approved answer, not verified yet.

    Raises:
        PendingTimeout: still pending after ``client.wait.max_total`` seconds.
        RequestRefused, ServiceUnavailable, ProtocolError: as for every request.
    """
    policy: WaitPolicy = client.wait
    clock = client.clock
    deadline = clock.monotonic() + policy.max_total
    while True:
        answer = client.request("POST", path, build)
        body = answer.body
        status = body.get("status")
        request_id = body.get("request_id")
        if answer.status == 202 or status == "pending":
            remaining = deadline - clock.monotonic()
            device_id = str(body.get("device_id", ""))
            if remaining <= 0:
                raise PendingTimeout(
                    f"device {device_id!r} is still pending (request {request_id}); "
                    "provision again later with the same key",
                    request_id=str(request_id),
                    device_id=device_id,
                )
            asked = parse_retry_after(answer.headers.get("retry-after"))
            wait = min(asked or DEFAULT_RETRY_AFTER, policy.max_interval, remaining)
            log.info("pending: device %s waits %.1f s (request %s)", device_id, wait, request_id)
            clock.sleep(wait)
            continue
        bundle = body.get("bundle")
        if status != "approved" or not isinstance(bundle, dict):
            raise ProtocolError("the answer is neither approved with a bundle nor pending")
        return bundle, request_id if isinstance(request_id, str) else None


def _provision(
    client: ImprintClient,
    *,
    mechanism: str,
    key: PrivateKey | None,
    evidence: Callable[[x509.CertificateSigningRequest], Mapping[str, Any]],
    registration_id: str | None = None,
    enrollment_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    secret: bytes | None = None,
    device_id: str | None = None,
    common_name: str | None = None,
) -> Bundle:
    own_key = key if key is not None else generate_key()
    csr = make_csr(own_key, common_name or registration_id)
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def build() -> tuple[Mapping[str, Any], Mapping[str, str]]:
        body: dict[str, Any] = {"mechanism": mechanism, "csr": csr_pem, "evidence": evidence(csr)}
        if registration_id is not None:
            body["registration_id"] = registration_id
        if enrollment_id is not None:
            body["enrollment_id"] = enrollment_id
        return body, headers or {}

    data, request_id = exchange(client, PROVISION_PATH, build)
    return verify_bundle(
        data,
        own_key,
        mechanism=mechanism,
        secret=secret,
        device_id=device_id,
        request_id=request_id,
    )


def _common_name(certificate: x509.Certificate) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) and value else None


def provision_x509(
    client: ImprintClient,
    idevid_chain: Sequence[x509.Certificate],
    idevid_key: PrivateKey,
    *,
    mode: Literal["mtls", "signed"] = "mtls",
    key: PrivateKey | None = None,
    enrollment_id: str | None = None,
) -> Bundle:
    """Provision with the manufacturer's certificate (IDevID).

    Args:
        client: the connection to imprint.
        idevid_chain: the device's manufacturer certificate, then its intermediates.
        idevid_key: the manufacturer certificate's private key.
        mode: ``mtls`` shows the certificate in the TLS handshake; ``signed`` sends a
            signed request instead (for a server behind a TLS-terminating proxy).
        key: the device's new operational key; default a new P-256 key.
        enrollment_id: name the enrollment when several could admit the certificate.

    Raises:
        ValueError: an empty chain or an unknown mode.
        RequestRefused: e.g. ``not_enrolled``, ``certificate_denied``, ``replay_detected``.
        PendingTimeout, ServiceUnavailable, VerificationFailed, ProtocolError.
    """
    chain = tuple(idevid_chain)
    if not chain:
        raise ValueError("idevid_chain needs the device's manufacturer certificate")
    hint = _common_name(chain[0])
    if mode == "signed":
        audience = client.endpoint("provision", PROVISION_PATH)
        return _provision(
            client,
            mechanism="x509",
            key=key,
            evidence=lambda csr: {"jws": signed_request(csr, idevid_key, chain, audience)},
            enrollment_id=enrollment_id,
            common_name=hint,
        )
    if mode != "mtls":
        raise ValueError("mode must be 'mtls' or 'signed'")
    with client.with_client_certificate(chain, idevid_key) as mtls:
        return _provision(
            mtls,
            mechanism="x509",
            key=key,
            evidence=lambda _csr: {},
            enrollment_id=enrollment_id,
            common_name=hint,
        )


def provision_client_ca(
    client: ImprintClient,
    device_chain: Sequence[x509.Certificate],
    device_key: PrivateKey,
    *,
    key: PrivateKey | None = None,
    enrollment_id: str | None = None,
) -> Bundle:
    """Provision with a certificate from a client CA the enrollment trusts (mutual TLS).

    The device id is the certificate's common name.

    Raises:
        ValueError: an empty chain or a certificate without a common name.
        RequestRefused: e.g. ``not_enrolled``, ``identity_taken``.
        PendingTimeout, ServiceUnavailable, VerificationFailed, ProtocolError.
    """
    chain = tuple(device_chain)
    name = _common_name(chain[0]) if chain else None
    if name is None:
        raise ValueError("client-ca needs a device certificate with a common name")
    with client.with_client_certificate(chain, device_key) as mtls:
        return _provision(
            mtls,
            mechanism="client-ca",
            key=key,
            evidence=lambda _csr: {},
            enrollment_id=enrollment_id,
            device_id=name,
            common_name=name,
        )


def provision_symmetric_key(
    client: ImprintClient,
    device_id: str,
    *,
    device_key: bytes | None = None,
    group_key: bytes | None = None,
    key: PrivateKey | None = None,
    enrollment_id: str | None = None,
) -> Bundle:
    """Provision with a symmetric key: the device's own key, or derived from a group key.

    Args:
        device_id: the registration id.
        device_key: this device's key (raw bytes): the derived key of a group, or an
            individual enrollment's key.
        group_key: the group key to derive the device key from (better done at the
            factory, so that the group key never sits on a device).

    Raises:
        ValueError: neither or both of ``device_key`` and ``group_key``.
        RequestRefused: e.g. ``signature_invalid``, ``request_expired``.
        PendingTimeout, ServiceUnavailable, VerificationFailed, ProtocolError.
    """
    if (device_key is None) == (group_key is None):
        raise ValueError("give device_key or group_key, exactly one of them")
    secret = (
        device_key if device_key is not None else derive_device_key(group_key or b"", device_id)
    )
    return _provision(
        client,
        mechanism="symmetric-key",
        key=key,
        evidence=lambda csr: symmetric_key_evidence(secret, device_id, csr),
        registration_id=device_id,
        enrollment_id=enrollment_id,
        device_id=device_id,
    )


def provision_registration_key(
    client: ImprintClient,
    serial: str,
    registration_key: str,
    *,
    key: PrivateKey | None = None,
    enrollment_id: str | None = None,
) -> Bundle:
    """Provision with the registration key the owner typed in, e.g. ``HQ481047-1JWORF43``.

    Only the first half is sent (in the ``X-Imprint-Key-Half`` header); the second half
    opens the sealed pre-shared key and verifies the response MAC.

    Raises:
        ValueError: not a registration key.
        RequestRefused: e.g. ``signature_invalid`` for a wrong or retired key.
        PendingTimeout, ServiceUnavailable, VerificationFailed, ProtocolError.
    """
    first, second = split_registration_key(registration_key)
    return _provision(
        client,
        mechanism="registration-key",
        key=key,
        evidence=lambda _csr: {},
        registration_id=serial,
        enrollment_id=enrollment_id,
        headers={KEY_HALF_HEADER: first},
        secret=second.encode("ascii"),
        device_id=serial,
    )


def provision_oob_secret(
    client: ImprintClient,
    device_id: str,
    secret: str,
    *,
    key: PrivateKey | None = None,
    enrollment_id: str | None = None,
) -> Bundle:
    """Provision with the out-of-band secret registered for ``device_id``.

    While no secret is registered yet the server answers *pending* and the device waits
    (see :class:`~imprint.device.client.WaitPolicy`). The answer's MAC is checked with
    the secret.

    Raises:
        RequestRefused: e.g. ``signature_invalid``, ``secret_used``, ``secret_expired``.
        PendingTimeout, ServiceUnavailable, VerificationFailed, ProtocolError.
    """
    return _provision(
        client,
        mechanism="oob-secret",
        key=key,
        evidence=lambda csr: oob_secret_evidence(secret, device_id, csr),
        registration_id=device_id,
        enrollment_id=enrollment_id,
        secret=secret.encode("utf-8"),
        device_id=device_id,
    )
