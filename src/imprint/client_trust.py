"""Every CA certificate a client certificate may chain to, as the application sees it.

The TLS handshake lets any client chain through (:mod:`imprint.tls`); the application's
first check (:func:`imprint.attestation.peer_chain.check_presented`, called by
:func:`imprint.api.identity.peer_certificate`) keeps out chains that lead to no CA in
this set, with a specific refusal. What a certificate is *allowed* to do is decided
after it, by the attestor of the mechanism or by
:func:`imprint.api.identity.client_certificate` for imprint's own certificates.

The set holds imprint's own CA chain and the CAs that enrollments bring (an x509
enrollment's manufacturer chain, a client-ca enrollment's CAs). It only grows while the
server runs (a deleted enrollment's CA stays until the next start); the attestors no
longer accept what it admitted, which is what matters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from cryptography import x509

from imprint.attestation.peer_chain import IntermediateMemory

__all__ = ["ClientTrust"]


class ClientTrust:
    """A growing set of CA certificates, and the intermediates seen in verified chains
    (which tell a missing intermediate from an unknown issuer)."""

    def __init__(self, certificates: Iterable[x509.Certificate] = ()) -> None:
        self._lock = threading.Lock()
        self._certificates: list[x509.Certificate] = []
        self._known: set[x509.Certificate] = set()
        self.seen = IntermediateMemory()
        self.add(certificates)

    def add(self, certificates: Iterable[x509.Certificate]) -> int:
        """Trust more CA certificates; return how many were new."""
        with self._lock:
            new = [c for c in dict.fromkeys(certificates) if c not in self._known]
            self._certificates.extend(new)
            self._known.update(new)
            return len(new)

    def certificates(self) -> list[x509.Certificate]:
        with self._lock:
            return list(self._certificates)

    def roots(self) -> list[x509.Certificate]:
        """The self-signed certificates: the anchors."""
        return [c for c in self.certificates() if c.subject == c.issuer]

    def intermediates(self) -> list[x509.Certificate]:
        return [c for c in self.certificates() if c.subject != c.issuer]

    def __contains__(self, certificate: object) -> bool:
        with self._lock:
            return certificate in self._known

    def __len__(self) -> int:
        with self._lock:
            return len(self._certificates)
