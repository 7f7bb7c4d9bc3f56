"""The application's check of a client certificate chain that the TLS handshake let in.

The handshake accepts any client chain (:mod:`imprint.tls`); this module is where a chain
is first judged, against every CA certificate imprint knows
(:class:`imprint.client_trust.ClientTrust`: its own chain, the manufacturer chains of x509
enrollments, the CAs of client-ca enrollments). It decides whether the chain belongs
here at all; what the certificate may do is decided after it, by the attestor of a
mechanism or by :func:`imprint.api.identity.client_certificate`. Each refusal has its own
code, in this order:

``self_signed``
    the leaf is its own issuer and imprint does not know it as a CA.
``eku_missing``
    the leaf has an extended key usage without ``clientAuth`` (none at all is allowed
    here, as RFC 5280 reads it; x509 enrollments require it).
``issuer_unknown``
    the certificates sent do not lead to a CA imprint knows: an untrusted root, an
    issuer nobody configured, or a known CA's name on a certificate it did not sign.
``chain_incomplete``
    the certificates sent stop short of a known CA, and the missing issuer is an
    intermediate CA: the client sent certificates above the gap, or that intermediate
    has been seen in a verified chain before (this process remembers the names of
    intermediates it verified). A device must send its intermediates; imprint never
    completes a chain from what other devices sent.

Validity in time is not checked here: whether an expired certificate may still do
something (renewal within its grace period, an enrollment that accepts expired
manufacturer certificates) is its consumer's decision, which answers
``certificate_expired``. So is revocation (``certificate_revoked``).

Paths are built by name and signature (a leaf, then the intermediates the client sent,
up to at most :data:`MAX_DEPTH` CAs, ending at any known CA certificate); the consumers
then verify the path they accept with ``cryptography.x509.verification``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from imprint.attestation.base import ChainIncomplete, EkuMissing, IssuerUnknown, SelfSigned

__all__ = [
    "MAX_DEPTH",
    "IntermediateMemory",
    "PresentedChain",
    "build_path",
    "check_presented",
    "issued_by",
    "refuse_without_client_auth",
]

#: CA certificates a path may have above the leaf.
MAX_DEPTH = 6


@dataclass(frozen=True, slots=True)
class PresentedChain:
    """A client certificate and the certificates the client sent with it, in its order."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_pem(cls, pems: Sequence[str]) -> PresentedChain:
        """The chain from the ASGI TLS extension's ``client_cert_chain`` (leaf first).

        Raises:
            ValueError: a certificate cannot be parsed.
        """
        certificates = [x509.load_pem_x509_certificate(p.encode("ascii")) for p in pems]
        return cls(certificates[0], tuple(certificates[1:]))


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s name and key signed ``certificate``."""
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _self_issued(certificate: x509.Certificate) -> bool:
    return issued_by(certificate, certificate)


def build_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Iterable[x509.Certificate],
) -> tuple[x509.Certificate, ...] | None:
    """The path from ``leaf`` through ``intermediates`` to one of ``anchors``, leaf first
    and anchor last; None when there is none. Any anchor ends a path (a trusted
    intermediate as well as a root). Time and extensions are not looked at."""
    trusted = list(anchors)
    path = [leaf]
    current = leaf
    for _ in range(MAX_DEPTH + 1):
        for anchor in trusted:
            if issued_by(current, anchor):
                return (*path, anchor)
        following = next(
            (c for c in intermediates if c not in path and issued_by(current, c)), None
        )
        if following is None or _self_issued(following):
            return None
        path.append(following)
        current = following
    return None


def refuse_without_client_auth(leaf: x509.Certificate, *, required: bool = False) -> None:
    """Refuse a certificate whose extended key usage does not allow client authentication.

    Raises:
        EkuMissing: an extended key usage without ``clientAuth`` (or ``anyExtendedKeyUsage``),
            or none at all when ``required``.
    """
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        if required:
            raise EkuMissing(
                "the client certificate has no extended key usage; it needs clientAuth"
            ) from None
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages or (
        not required and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    ):
        return
    raise EkuMissing(
        "the client certificate's extended key usage does not include clientAuth "
        "(TLS client authentication)"
    )


class IntermediateMemory:
    """Names of intermediate CAs seen in verified client chains (bounded, this process)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._lock = threading.Lock()
        self._names: OrderedDict[x509.Name, None] = OrderedDict()
        self._capacity = capacity

    def remember(self, path: Sequence[x509.Certificate]) -> None:
        with self._lock:
            for certificate in path[1:-1]:
                self._names[certificate.subject] = None
                self._names.move_to_end(certificate.subject)
            while len(self._names) > self._capacity:
                self._names.popitem(last=False)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._names


def check_presented(
    chain: PresentedChain,
    known: Sequence[x509.Certificate],
    *,
    seen: IntermediateMemory | None = None,
) -> tuple[x509.Certificate, ...]:
    """Check that ``chain`` leads to a CA imprint knows; return that path.

    Raises:
        SelfSigned, EkuMissing, IssuerUnknown, ChainIncomplete: see the module docstring.
    """
    leaf = chain.leaf
    if _self_issued(leaf) and leaf not in known:
        raise SelfSigned(
            f"the client certificate {leaf.subject.rfc4514_string()} is self-signed; "
            "it must be issued by a CA imprint trusts"
        )
    refuse_without_client_auth(leaf)
    path = build_path(leaf, chain.intermediates, known)
    if path is not None:
        if seen is not None:
            seen.remember(path)
        return path
    raise _why_no_path(chain, known, seen)


def _why_no_path(
    chain: PresentedChain, known: Sequence[x509.Certificate], seen: IntermediateMemory | None
) -> IssuerUnknown | ChainIncomplete:
    # Follow what the client sent as far as it links up.
    walked = [chain.leaf]
    top = chain.leaf
    while len(walked) <= MAX_DEPTH:
        following = next(
            (c for c in chain.intermediates if c not in walked and issued_by(top, c)), None
        )
        if following is None:
            break
        walked.append(following)
        top = following
    if _self_issued(top):
        return IssuerUnknown(
            f"the client chain ends in {top.subject.rfc4514_string()}, "
            "a root CA imprint does not trust"
        )
    missing = top.issuer.rfc4514_string()
    if any(k.subject == top.issuer for k in known):
        return IssuerUnknown(
            f"a CA named {missing} is trusted, but it did not sign {top.subject.rfc4514_string()}"
        )
    unused = [c for c in chain.intermediates if c not in walked]
    if unused or (seen is not None and top.issuer in seen):
        return ChainIncomplete(
            f"the client did not send the intermediate CA {missing} that issued "
            f"{top.subject.rfc4514_string()}; send the whole chain up to the trusted CA"
        )
    return IssuerUnknown(
        f"no CA imprint trusts issued {top.subject.rfc4514_string()} (its issuer is "
        f"{missing}); if that is an intermediate CA under a trusted one, the client must "
        "send it too"
    )
