"""OAuth client operations: machines and applications of an organization that get tokens.

An operator of an organization creates and deletes its clients, with a role no higher
than her own, and rotates their secrets. Clients of no organization, and those
configured under ``auth.clients``, belong to the whole instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from imprint.app.base import Operations, Page, page_of
from imprint.app.scoping import scope_of
from imprint.auth.clients import (
    CLIENT_CREDENTIALS,
    IssuedClient,
    OAuthClient,
    create_client,
    new_client_secret,
)
from imprint.errors import Conflict, InvalidValue, NotFound, PermissionDenied
from imprint.tenancy.access import Principal, authorize
from imprint.tenancy.roles import Role

__all__ = ["OAuthClientOperations"]


class OAuthClientOperations(Operations):
    def list(self, principal: Principal, *, limit: int = 1000) -> Sequence[OAuthClient]:
        """The clients of the organizations the principal sees; for the whole instance,
        the configured clients first, then every stored one."""
        scope = scope_of(self._rt, principal)
        stored = self._rt.oauth_clients.search(scope, limit)
        configured = list(self._rt.clients.configured) if scope is None else []
        return [*configured, *stored]

    def page(
        self, principal: Principal, *, limit: int = 100, after: str | None = None
    ) -> Page[OAuthClient]:
        """One page of :meth:`list` (configured clients first, then the stored ones by
        client id), with the total and the next page's cursor (opaque)."""
        everything = self.list(principal, limit=1_000_000)
        keys = {
            id(c): f"0:{n:06d}" if c.configured else f"1:{c.client_id}"
            for n, c in enumerate(everything)
        }
        return page_of(everything, lambda c: keys[id(c)], limit=limit, after=after)

    def show(self, principal: Principal, client_id: str) -> OAuthClient:
        """One client (never its secret).

        Raises:
            NotFound: no such client, or one of an organization the principal does not see.
        """
        scope = scope_of(self._rt, principal)
        stored = self._rt.oauth_clients.find(client_id) if len(client_id) <= 100 else None
        if stored is not None and (scope is None or stored.org_id in scope):
            return stored
        if scope is None:
            for client in self._rt.clients.configured:
                if client.client_id == client_id:
                    return client
        raise NotFound(f"no OAuth client {client_id!r}")

    def create(
        self,
        principal: Principal,
        name: str,
        *,
        grant_types: Sequence[str] = (CLIENT_CREDENTIALS,),
        scopes: Sequence[str] = (),
        audience: str | None = None,
        redirect_uris: Sequence[str] = (),
        org_id: str | None = None,
        role: Role = Role.VIEWER,
        public: bool = False,
    ) -> IssuedClient:
        """Create a client of ``org_id`` (operator there, never a role above one's own),
        or of no organization (the whole instance only). The secret is returned once.

        Raises:
            InvalidValue: no organization named by a member, or a bad field.
            NotFound: the organization is not visible, or does not exist.
            PermissionDenied: not operator there, or a role above one's own.
        """
        with self._transaction():
            if org_id is None:
                if not principal.instance_admin:
                    raise InvalidValue("org_id: the organization the client acts for")
            else:
                mine = authorize(
                    principal,
                    org_id,
                    Role.OPERATOR,
                    self._rt.org_tree(),
                    what=f"organization {org_id!r}",
                )
                if not mine.allows(role):
                    raise PermissionDenied(
                        "you cannot give a role above your own", code="role_insufficient"
                    )
                self._rt.orgs.get(org_id)
            issued = create_client(
                self._rt.oauth_clients,
                name,
                grant_types=grant_types,
                scopes=scopes,
                audience=audience,
                redirect_uris=redirect_uris,
                org_id=org_id,
                role=role,
                public=public,
                at=self._now(),
            )
            client = issued.client
            self._audit(
                principal,
                "oauth_client.create",
                "oauth_client",
                client.client_id,
                org_id=client.org_id,
                name=client.name,
                grant_types=list(client.grant_types),
                role=client.role.value,
            )
        return issued

    def rotate_secret(self, principal: Principal, client_id: str) -> IssuedClient:
        """Give a stored confidential client a new secret, returned once; the old one is
        refused from now on (tokens already issued run out as usual). Operator of its
        organization.

        Raises:
            NotFound: not visible.
            Conflict: a configured client (``client_configured``) or a public one
                (``client_public``).
            PermissionDenied: not operator there.
        """
        with self._transaction():
            client = self._manageable(principal, client_id)
            if client.public:
                raise Conflict("a public client has no secret", code="client_public")
            secret, digest = new_client_secret()
            self._rt.oauth_clients.set_secret(client_id, digest)
            self._audit(
                principal,
                "oauth_client.secret.rotate",
                "oauth_client",
                client_id,
                org_id=client.org_id,
            )
        return IssuedClient(replace(client, secret_sha256=digest), secret)

    def _manageable(self, principal: Principal, client_id: str) -> OAuthClient:
        client = self.show(principal, client_id)
        if client.configured:
            raise Conflict(
                "a configured client is changed in the configuration file",
                code="client_configured",
            )
        if client.org_id is not None:
            authorize(
                principal,
                client.org_id,
                Role.OPERATOR,
                self._rt.org_tree(),
                what=f"OAuth client {client_id!r}",
            )
        return client

    def delete(self, principal: Principal, client_id: str) -> None:
        """Delete a stored client; its tokens stop working (operator of its organization).

        Raises:
            NotFound: not visible.
            Conflict: a configured client (``client_configured``).
            PermissionDenied: not operator there.
        """
        with self._transaction():
            client = self.show(principal, client_id)
            if client.configured:
                raise Conflict(
                    "a configured client is removed from the configuration file",
                    code="client_configured",
                )
            if client.org_id is not None:
                authorize(
                    principal,
                    client.org_id,
                    Role.OPERATOR,
                    self._rt.org_tree(),
                    what=f"OAuth client {client_id!r}",
                )
            self._rt.oauth_clients.remove(client_id)
            self._audit(
                principal,
                "oauth_client.delete",
                "oauth_client",
                client_id,
                org_id=client.org_id,
            )
