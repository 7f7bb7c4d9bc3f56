"""The CA certificates a client certificate may chain to in the TLS handshake.

The handshake is only a gate: it keeps out certificates nobody here vouches for, so
that a handler never sees one. What a certificate is *allowed* to do is decided after
it, by the attestor of the mechanism or by :func:`imprint.api.identity.client_certificate`
for imprint's own certificates.

The gate admits imprint's own CA chain and the CAs that enrollments bring (an x509
enrollment's manufacturer chain, a client-ca enrollment's CAs). Certificates added
while the server runs reach every attached :class:`ssl.SSLContext` at once, for new
handshakes. OpenSSL cannot take a certificate out of a live context, so one that is no
longer needed (a deleted enrollment's) stays in the gate until the next start; the
attestors no longer accept it, which is what matters.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["ClientTrust"]


class ClientTrust:
    """A growing set of CA certificates, pushed to the TLS contexts that use it."""

    def __init__(self, certificates: Iterable[x509.Certificate] = ()) -> None:
        self._lock = threading.Lock()
        self._certificates: list[x509.Certificate] = []
        self._known: set[x509.Certificate] = set()
        self._contexts: list[ssl.SSLContext] = []
        self.add(certificates)

    def add(self, certificates: Iterable[x509.Certificate]) -> int:
        """Trust more CA certificates; return how many were new.

        Attached contexts learn them at once (for handshakes that start afterwards).
        """
        with self._lock:
            new = [c for c in dict.fromkeys(certificates) if c not in self._known]
            if not new:
                return 0
            self._certificates.extend(new)
            self._known.update(new)
            data = _pem(new)
            for context in self._contexts:
                context.load_verify_locations(cadata=data)
            return len(new)

    def attach(self, context: ssl.SSLContext) -> None:
        """Load every certificate into ``context`` and keep it up to date from now on."""
        with self._lock:
            if self._certificates:
                context.load_verify_locations(cadata=_pem(self._certificates))
            self._contexts.append(context)

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


def _pem(certificates: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)
