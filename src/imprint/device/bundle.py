"""The provisioning bundle as the device keeps it, and the checks before trusting one.

An approved answer is used only after it verified:

1. the response MAC, for mechanisms with a shared secret (registration-key, oob-secret):
   the answer came from a server that knows the secret, and the chain is the one it sent;
2. the device id is the one the device asked for (when it named one);
3. the certificate certifies the device's own key;
4. the chain verifies up to one of the trust anchors in the answer, with
   ``cryptography.x509.verification``, at the device's current time;
5. sealed secrets open with the shared secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from imprint.device.errors import ProtocolError, VerificationFailed
from imprint.device.evidence import check_response_mac, open_sealed
from imprint.device.keys import PrivateKey, chain_pem, public_key_der

__all__ = ["Bundle", "verify_bundle", "verify_chain"]


@dataclass(frozen=True, slots=True)
class Bundle:
    """Everything a provisioned device holds. Secrets are left out of ``repr``.

    Attributes:
        chain: the device certificate, then the issuing CA(s) below the root.
        trust_anchors: imprint's root(s): trust these for imprint's services.
        renew_after: when renewal is due (two thirds of the lifetime).
        mechanism: how the device was first provisioned.
    """

    device_id: str
    owner: str
    enrollment_id: str
    serial: str
    chain: tuple[x509.Certificate, ...]
    trust_anchors: tuple[x509.Certificate, ...]
    not_after: datetime
    renew_after: datetime
    private_key: PrivateKey = field(repr=False)
    mechanism: str
    services: Mapping[str, str] = field(default_factory=dict)
    pre_shared_key: str | None = field(default=None, repr=False)
    tokens: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)
    request_id: str | None = None

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def certificate_pem(self) -> str:
        return chain_pem(self.chain[:1])

    @property
    def chain_pem(self) -> str:
        return chain_pem(self.chain)

    @property
    def trust_anchors_pem(self) -> str:
        return chain_pem(self.trust_anchors)


def verify_chain(
    chain: tuple[x509.Certificate, ...],
    trust_anchors: tuple[x509.Certificate, ...],
    *,
    at: datetime | None = None,
) -> None:
    """Check that ``chain[0]`` chains through ``chain[1:]`` to one of ``trust_anchors``.

    The CA certificates must satisfy the Web PKI CA rules; the device certificate's
    extensions are left to its profile (a device certificate need not name a host).

    Raises:
        VerificationFailed: the chain does not verify, with the verifier's reason.
    """
    if not chain or not trust_anchors:
        raise VerificationFailed("the answer has no certificate or no trust anchor")
    verifier = (
        PolicyBuilder()
        .store(Store(list(trust_anchors)))
        .time(at or datetime.now(UTC))
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(chain[0], list(chain[1:]))
    except VerificationError as exc:
        raise VerificationFailed(f"the certificate chain does not verify: {exc}") from None


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise ProtocolError(f"the bundle has no {name}")
    return value


def _strings(value: object, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ProtocolError(f"the bundle's {name} is not an object of strings")
    return {str(k): v for k, v in value.items()}


def _tokens(value: object) -> dict[str, dict[str, str]]:
    """``{"hub": {"access_token": ..., "token_type": ..., "expires_at": ...}}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("the bundle's tokens is not an object")
    return {str(name): _strings(token, f"tokens.{name}") for name, token in value.items()}


def _time(data: Mapping[str, Any], name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(_text(data, name))
    except ValueError:
        raise ProtocolError(f"the bundle's {name} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _certificates(pem: str, name: str) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(pem.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        raise ProtocolError(f"the bundle's {name} is not PEM certificates") from None


def verify_bundle(
    data: Mapping[str, Any],
    key: PrivateKey,
    *,
    mechanism: str,
    secret: bytes | None = None,
    device_id: str | None = None,
    request_id: str | None = None,
    at: datetime | None = None,
) -> Bundle:
    """Check an approved answer's bundle and turn it into a :class:`Bundle`.

    Args:
        data: the ``bundle`` object of the answer.
        key: the private key the CSR was made with.
        mechanism: recorded in the bundle.
        secret: the shared secret keying the response MAC and sealed secrets (the second
            half of a registration key, an OOB secret); None when there is none.
        device_id: the device id the device asked for, if it named one.
        at: the time to verify the chain at (default now).

    Raises:
        VerificationFailed: a check failed; do not use the answer.
        ProtocolError: the bundle is malformed.
    """
    answered_id = _text(data, "device_id")
    chain_text = _text(data, "certificate_chain")
    if secret is not None:
        check_response_mac(secret, answered_id, chain_text, data.get("response_mac"))
    if device_id is not None and answered_id != device_id:
        raise VerificationFailed(
            f"the certificate is for device {answered_id!r}, not {device_id!r}"
        )
    chain = _certificates(chain_text, "certificate_chain")
    if chain[0] != _certificates(_text(data, "certificate"), "certificate")[0]:
        raise VerificationFailed("the certificate is not the first of the chain")
    if public_key_der(chain[0].public_key()) != public_key_der(key):
        raise VerificationFailed("the certificate does not certify this device's key")
    anchors_raw = data.get("trust_anchors")
    if not isinstance(anchors_raw, list) or not all(isinstance(a, str) for a in anchors_raw):
        raise ProtocolError("the bundle's trust_anchors is not a list of PEM certificates")
    anchors = tuple(c for pem in anchors_raw for c in _certificates(pem, "trust_anchors"))
    verify_chain(chain, anchors, at=at)
    psk = data.get("pre_shared_key")
    tokens = _tokens(data.get("tokens"))
    sealed = data.get("sealed")
    if sealed is not None:
        if secret is None or not isinstance(sealed, dict):
            raise ProtocolError("the bundle holds sealed secrets this mechanism cannot open")
        opened = open_sealed(secret, answered_id, sealed)
        psk = opened.get("pre_shared_key", psk)
        tokens.update(_tokens(opened.get("tokens")))
    if psk is not None and not isinstance(psk, str):
        raise ProtocolError("the bundle's pre_shared_key is not a string")
    return Bundle(
        device_id=answered_id,
        owner=_text(data, "owner"),
        enrollment_id=_text(data, "enrollment_id"),
        serial=_text(data, "serial"),
        chain=chain,
        trust_anchors=anchors,
        not_after=_time(data, "not_after"),
        renew_after=_time(data, "renew_after"),
        private_key=key,
        mechanism=mechanism,
        services=_strings(data.get("services"), "services"),
        pre_shared_key=psk,
        tokens=tokens,
        request_id=request_id,
    )
