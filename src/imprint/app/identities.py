"""Client identity operations: PSKs and identity certificates of client applications.

A PSK belongs to an organization: operators issue (or register) and revoke them, every
member sees them (never their keys); another organization's PSK is not found. An
identity certificate names an owner (an organization id): an operator there signs it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from imprint.app.base import Operations
from imprint.app.scoping import scope_of
from imprint.errors import InvalidValue, NotFound, PermissionDenied
from imprint.identities.identity import IdentityCertificate
from imprint.identities.psk import ClientPsk, new_psk, parse_key
from imprint.tenancy.access import Principal, authorize
from imprint.tenancy.roles import Role

__all__ = ["IdentityOperations"]

#: PSK ids are UUIDs; a longer one is not looked up.
_MAX_PSK_ID = 36


class IdentityOperations(Operations):
    # PSKs ----------------------------------------------------------------------------

    def _visible_psk(self, principal: Principal, psk_id: str, needed: Role) -> ClientPsk:
        """The PSK, if the principal holds ``needed`` in its organization.

        Raises:
            NotFound: no such PSK, or a foreign one.
            PermissionDenied: visible, but the role is too low.
        """
        if len(psk_id) > _MAX_PSK_ID:
            raise NotFound(f"no PSK {psk_id[:_MAX_PSK_ID]!r}")
        psk = self._rt.identities.psks.get(psk_id)
        scope = scope_of(self._rt, principal)
        if scope is not None and psk.org_id not in scope:
            raise NotFound(f"no PSK {psk_id!r}")
        if needed is not Role.VIEWER:
            tree = self._rt.org_tree()
            authorize(principal, psk.org_id, needed, tree, what=f"PSK {psk_id!r}")
        return psk

    def issue_psk(
        self,
        principal: Principal,
        *,
        org_id: str | None = None,
        subject: str | None = None,
        key: str | None = None,
    ) -> ClientPsk:
        """Issue a PSK for an organization, or register the client's own ``key`` (32 hex
        digits or base64 of 16 bytes). The key is in the answer, and nowhere else.

        Args:
            org_id: default the owner claim of the principal's token.
            subject: the client's PSK identity; default a new UUID.

        Raises:
            InvalidValue: no organization, or a malformed key.
            NotFound: no such organization, or one the principal does not see.
            PermissionDenied: the role there is below operator.
            PskSubjectTaken: the organization has a PSK with that subject.
        """
        org = org_id or principal.owner
        if org is None:
            raise InvalidValue("org_id: the organization the PSK belongs to")
        with self._transaction():
            tree = self._rt.org_tree()
            authorize(principal, org, Role.OPERATOR, tree, what=f"organization {org!r}")
            if org_id is not None and org_id not in tree:
                raise NotFound(f"no organization {org!r}")
            psk = new_psk(
                org,
                subject=subject,
                key=None if key is None else parse_key(key),
                created_by=principal.actor,
                at=self._now().replace(microsecond=0),
            )
            self._rt.identities.psks.add(psk)
            self._audit(
                principal,
                "psk.create",
                "psk",
                psk.id,
                org_id=org,
                subject=psk.subject,
                origin=psk.origin.value,
            )
        return psk

    def list_psks(self, principal: Principal, *, limit: int = 1000) -> Sequence[ClientPsk]:
        """The PSKs of the organizations the principal sees (their keys are not for show)."""
        return self._rt.identities.psks.search(scope_of(self._rt, principal), limit)

    def show_psk(self, principal: Principal, psk_id: str) -> ClientPsk:
        """Raises:
        NotFound: no such PSK, or a foreign one."""
        return self._visible_psk(principal, psk_id, Role.VIEWER)

    def revoke_psk(self, principal: Principal, psk_id: str) -> ClientPsk:
        """Delete a PSK: the client no longer connects with it (the audit log keeps that
        it existed).

        Raises:
            NotFound: no such PSK, or a foreign one.
            PermissionDenied: the role is below operator.
        """
        with self._transaction():
            psk = self._visible_psk(principal, psk_id, Role.OPERATOR)
            self._rt.identities.psks.remove(psk.id)
            self._audit(
                principal, "psk.revoke", "psk", psk.id, org_id=psk.org_id, subject=psk.subject
            )
        return psk

    # Identity certificates -----------------------------------------------------------

    def sign_identity(
        self, principal: Principal, csr: x509.CertificateSigningRequest
    ) -> IdentityCertificate:
        """Sign (or hand back) the identity certificate of the principal's owner (the
        owner claim of its token) for the CSR's key; its CN is the owner, whatever the CSR
        asks for.

        The owner's claim on the key commits on its own before anything is signed (so
        concurrent requests see it); the certificate, its record and the audit entry
        commit together.

        Raises:
            PermissionDenied: no owner (``owner_required``), or a role below operator.
            NotFound: the owner is not one of the principal's organizations.
            IdentityKeyConflict: the owner's valid identity holds another key.
        """
        owner = principal.owner
        if owner is None:
            raise PermissionDenied(
                "identity certificates are for a user's or client's token carrying the owner "
                "claim; this credential names no owner",
                code="owner_required",
            )
        with self._transaction():
            tree = self._rt.org_tree()
            authorize(principal, owner, Role.OPERATOR, tree, what=f"organization {owner!r}")
            identity = self._rt.identities.issuer.sign(
                csr, owner, requested_by=f"identity:{principal.actor}"
            )
            self._audit(
                principal,
                "identity.sign",
                "certificate",
                identity.serial,
                org_id=owner,
                reused=identity.reused,
            )
        return identity
