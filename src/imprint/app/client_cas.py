"""Client CA operations: the CAs a client-ca enrollment trusts, for every admin surface.

Scoped by the enrollment's organization: admins add and remove trusted CAs (they decide
which devices get in), viewers list them; a foreign enrollment is not found. The TLS
handshake (``runtime.client_trust``) admits an added CA once its addition commits.
"""

from __future__ import annotations

from collections.abc import Sequence

from imprint.app.base import Operations
from imprint.app.scoping import scope_of, visible_enrollment
from imprint.errors import InvalidValue
from imprint.provisioning.client_cas import ClientCA, decode, fingerprint, parse_pem_bundle
from imprint.provisioning.enrollments import Enrollment, Mechanism
from imprint.store.db import after_commit
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

__all__ = ["ClientCAOperations"]


class ClientCAOperations(Operations):
    def add(self, principal: Principal, enrollment_id: str, pem: str) -> Sequence[ClientCA]:
        """Trust the CA certificates of ``pem`` for a client-ca enrollment; every CA it
        trusts now (one it trusted already is kept as it was).

        Raises:
            NotFound, PermissionDenied: not visible, or the role is below admin.
            InvalidValue: not a client-ca enrollment, not PEM certificates, or one of them
                is not a CA certificate.
        """
        with self._transaction():
            enrollment = visible_enrollment(self._rt, principal, enrollment_id, Role.ADMIN)
            if enrollment.mechanism is not Mechanism.CLIENT_CA:
                raise InvalidValue(f"enrollment {enrollment_id!r} is not a client-ca enrollment")
            certificates = parse_pem_bundle(pem)
            decoded = decode(pem)
            for item in decoded:
                if not item.is_ca:
                    raise InvalidValue(f"{item.subject} is not a CA certificate (basicConstraints)")
            now = self._now().replace(microsecond=0)
            self._rt.client_cas.add(
                [
                    ClientCA(
                        id="",
                        enrollment_id=enrollment_id,
                        fingerprint_sha256=fingerprint(c),
                        subject=c.subject.rfc4514_string(),
                        pem=item.pem,
                        created_at=now,
                    )
                    for c, item in zip(certificates, decoded, strict=True)
                ]
            )
            trust = self._rt.client_trust
            after_commit(self._rt.engine, lambda: trust.add(certificates))
            self._audit(
                principal,
                "client_ca.add",
                "enrollment",
                enrollment_id,
                org_id=enrollment.owner,
                fingerprints=[fingerprint(c) for c in certificates],
            )
        return self._rt.client_cas.for_enrollment(enrollment_id)

    def list(self, principal: Principal, enrollment_id: str) -> Sequence[ClientCA]:
        """The CAs an enrollment trusts (viewer and up)."""
        visible_enrollment(self._rt, principal, enrollment_id, Role.VIEWER)
        return self._rt.client_cas.for_enrollment(enrollment_id)

    def by_enrollment(
        self, principal: Principal, *, limit: int = 200
    ) -> Sequence[tuple[Enrollment, Sequence[ClientCA]]]:
        """Every client-ca enrollment the principal sees, by id, with the CAs it trusts."""
        found = self._rt.enrollments.search(
            mechanism=Mechanism.CLIENT_CA,
            owner=None,
            limit=limit,
            owners=scope_of(self._rt, principal),
        )
        return [
            (e, self._rt.client_cas.for_enrollment(e.id)) for e in sorted(found, key=lambda e: e.id)
        ]

    def remove(self, principal: Principal, enrollment_id: str, fingerprint_sha256: str) -> None:
        """Stop trusting a CA for the enrollment: its devices no longer get in (the TLS
        handshake only ever learns CAs, so it may still let their connection through).

        Raises:
            NotFound: no such (visible) enrollment, or it does not trust that CA.
            PermissionDenied: the role is below admin.
        """
        with self._transaction():
            enrollment = visible_enrollment(self._rt, principal, enrollment_id, Role.ADMIN)
            self._rt.client_cas.remove(enrollment_id, fingerprint_sha256)
            self._audit(
                principal,
                "client_ca.remove",
                "enrollment",
                enrollment_id,
                org_id=enrollment.owner,
                fingerprint=fingerprint_sha256,
            )
