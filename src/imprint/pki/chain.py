"""Chain validation with ``cryptography.x509.verification``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from imprint.errors import InvalidValue

__all__ = ["ChainInvalid", "verify_ca_chain", "verify_client_certificate"]


class ChainInvalid(InvalidValue):
    code = "chain_invalid"


# The Web PKI defaults demand a SAN in every leaf; device certificates often name the
# device in the subject alone, so a SAN may be present but need not be.
_DEVICE_EE = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
)


def verify_client_certificate(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: datetime | None = None,
) -> list[x509.Certificate]:
    """Check that ``leaf`` is a valid TLS client certificate under ``roots``.

    Returns:
        The verified chain, leaf first, anchor last.

    Raises:
        ChainInvalid: with the verifier's reason.
    """
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(at or datetime.now(UTC))
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_DEVICE_EE)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except VerificationError as exc:
        raise ChainInvalid(f"certificate chain does not verify: {exc}") from None


def verify_ca_chain(chain: Sequence[x509.Certificate], *, at: datetime | None = None) -> None:
    """Check that ``chain`` (CA first, self-signed root last) links up and is valid now.

    The first certificate is treated as the end of the path with a policy that
    accepts any extensions, so an intermediate CA can be checked on its own.

    Raises:
        ChainInvalid: the chain does not verify.
    """
    root = chain[-1]
    if len(chain) == 1:
        try:
            root.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ChainInvalid(f"the root certificate's self-signature is invalid: {exc}") from None
        now = at or datetime.now(UTC)
        if not root.not_valid_before_utc <= now <= root.not_valid_after_utc:
            raise ChainInvalid("the root certificate is not valid now")
        return
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(at or datetime.now(UTC))
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(chain[0], list(chain[1:-1]))
    except VerificationError as exc:
        raise ChainInvalid(f"CA chain does not verify: {exc}") from None
