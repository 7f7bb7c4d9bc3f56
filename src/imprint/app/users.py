"""User operations: members of organizations, their roles, passwords and accounts.

An admin of an organization creates its members and gives or takes roles there (never
above her own). Resetting a password, disabling, enabling or deleting a user needs the admin
role in every organization the user is a member of, and is never done to oneself; a
user changes her own password with the current one.

A user is visible when she is a member of an organization the principal sees; what the
operations return shows only those memberships.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from imprint.app.base import Operations, Page
from imprint.app.scoping import scope_of
from imprint.app.sign_ins import check_password
from imprint.errors import Conflict, NotFound, PermissionDenied
from imprint.tenancy.access import Principal, authorize, org_scope, role_in
from imprint.tenancy.orgs import OrgTree
from imprint.tenancy.roles import Role
from imprint.tenancy.users import User, canonical_username, create_user, set_password

__all__ = ["UserOperations"]


def _seen(user: User, scope: set[str] | None) -> User:
    """The user with only the memberships the principal sees."""
    roles = dict(user.memberships or {})
    return replace(
        user, memberships={o: r for o, r in roles.items() if scope is None or o in scope}
    )


class UserOperations(Operations):
    def list(
        self, principal: Principal, *, org_id: str | None = None, limit: int = 100
    ) -> Sequence[User]:
        """Users with a membership in an organization the principal sees (``org_id``:
        only members of that one), by user name."""
        scope = scope_of(self._rt, principal)
        orgs = scope
        if org_id is not None:
            orgs = {org_id} if scope is None or org_id in scope else set()
        found = self._rt.users.in_orgs(orgs, max(1, min(limit, 10_000)))
        return [_seen(u, scope) for u in found]

    def page(
        self,
        principal: Principal,
        *,
        org_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
        username: str | None = None,
    ) -> Page[User]:
        """One page of :meth:`list` (``after``: the previous page's last user name), with
        the total that match and the next page's cursor; ``username``: only her (the page
        is empty when the principal does not see her)."""
        if username is not None:
            try:
                one = self.find(principal, username)
            except NotFound:
                return Page([], 0)
            seen = org_id is None or org_id in (one.memberships or {})
            return Page([one], 1) if seen else Page([], 0)
        scope = scope_of(self._rt, principal)
        orgs = scope
        if org_id is not None:
            orgs = {org_id} if scope is None or org_id in scope else set()
        limit = max(1, min(limit, 10_000))
        found = self._rt.users.in_orgs(orgs, limit + 1, after)
        items = [_seen(u, scope) for u in found[:limit]]
        following = items[-1].username if len(found) > limit else None
        return Page(items, self._rt.users.count_in_orgs(orgs), following)

    def show(self, principal: Principal, user_id: str) -> User:
        """One user.

        Raises:
            NotFound: no such user, or one in none of the principal's organizations.
        """
        tree = self._rt.org_tree()
        return _seen(self._visible(principal, user_id, tree), self._scope(principal, tree))

    def find(self, principal: Principal, username: str) -> User:
        """The user with this name (as :meth:`show`).

        Raises:
            NotFound: no such user, or one the principal does not see.
        """
        found = self._rt.users.find_by_username(canonical_username(username))
        if found is None:
            raise NotFound(f"no user {username!r}")
        try:
            return self.show(principal, found.id)
        except NotFound:
            raise NotFound(f"no user {username!r}") from None

    def create(
        self, principal: Principal, username: str, password: str, *, org_id: str, role: Role
    ) -> User:
        """Create a user with a password and a first membership (admin of ``org_id``,
        and never a role above one's own).

        Raises:
            NotFound: no such organization, or one the principal does not see.
            PermissionDenied: not admin there, or a role above one's own.
            InvalidValue: a bad user name or password.
            Conflict: the user name is taken.
        """
        with self._transaction():
            tree = self._rt.org_tree()
            self._grant(principal, org_id, role, tree)
            self._rt.orgs.get(org_id)  # a membership names an existing organization
            user = create_user(
                self._rt.users, username, password, org_id=org_id, role=role, at=self._now()
            )
            self._audit(
                principal,
                "user.create",
                "user",
                user.id,
                org_id=org_id,
                username=user.username,
                role=role.value,
            )
        return _seen(user, self._scope(principal, tree))

    def set_role(self, principal: Principal, user_id: str, org_id: str, role: Role) -> User:
        """Give a visible user a role in an organization (admin there, never above one's
        own role).

        Raises:
            NotFound: the user or the organization is not visible.
            PermissionDenied: not admin there, or a role above one's own.
        """
        with self._transaction():
            tree = self._rt.org_tree()
            self._visible(principal, user_id, tree)
            self._grant(principal, org_id, role, tree)
            self._rt.orgs.get(org_id)
            self._rt.users.set_membership(user_id, org_id, role)
            self._audit(principal, "user.role.set", "user", user_id, org_id=org_id, role=role.value)
            return _seen(self._rt.users.get(user_id), self._scope(principal, tree))

    def remove_role(self, principal: Principal, user_id: str, org_id: str) -> None:
        """Take a visible user's membership in an organization away (admin there).

        Raises:
            NotFound: the user or the organization is not visible.
            PermissionDenied: not admin there.
        """
        with self._transaction():
            tree = self._rt.org_tree()
            self._visible(principal, user_id, tree)
            authorize(principal, org_id, Role.ADMIN, tree, what=f"organization {org_id!r}")
            self._rt.orgs.get(org_id)
            self._rt.users.set_membership(user_id, org_id, None)
            self._audit(principal, "user.role.remove", "user", user_id, org_id=org_id)

    def change_own_password(
        self, principal: Principal, current_password: str, new_password: str, *, source: str | None
    ) -> None:
        """A user of this instance replaces her own password; her sessions and tokens
        issued before end. A wrong current password counts as a failed sign-in from
        ``source`` (and is audited as one).

        Raises:
            PermissionDenied: not a local user (``not_a_local_user``), or a wrong current
                password (``password_wrong``).
            TooManyAttempts: too many failed attempts.
            InvalidValue: the new password breaks the policy.
        """
        if principal.kind != "user":
            raise PermissionDenied(
                "only a user of this instance has a password here", code="not_a_local_user"
            )
        # Before the transaction: a failed check writes its own audit entry, which must
        # stay when this raises.
        user = check_password(
            self._rt, source, principal.name, current_password, via="password-change"
        )
        if user is None or user.id != principal.subject:
            raise PermissionDenied("the current password is wrong", code="password_wrong")
        with self._transaction():
            set_password(self._rt.users, user.id, new_password, at=self._now())
            self._audit(principal, "user.password.change", "user", user.id)

    def reset_password(self, principal: Principal, user_id: str, password: str) -> User:
        """Give another user a new password; her sessions and tokens end (admin of every
        organization she is a member of).

        Raises:
            NotFound: not visible.
            Conflict: one's own account (``own_account``).
            PermissionDenied: not admin of all her organizations.
            InvalidValue: the password breaks the policy.
        """
        with self._transaction():
            tree = self._rt.org_tree()
            user = self._managed(principal, user_id, tree)
            set_password(self._rt.users, user.id, password, at=self._now())
            self._audit(principal, "user.password.reset", "user", user.id)
        return _seen(user, self._scope(principal, tree))

    def disable(self, principal: Principal, user_id: str) -> User:
        """Disable a user: she cannot sign in, her sessions and tokens end (as
        :meth:`reset_password` for who may)."""
        return self._set_disabled(principal, user_id, True)

    def enable(self, principal: Principal, user_id: str) -> User:
        """Enable a disabled user again (what was issued before stays refused)."""
        return self._set_disabled(principal, user_id, False)

    def delete(self, principal: Principal, user_id: str) -> User:
        """Delete a user and her memberships; her sessions and tokens end. The audit log
        keeps her entries (they name her). As :meth:`reset_password` for who may;
        :meth:`disable` keeps the account instead.

        Raises:
            NotFound: not visible.
            Conflict: one's own account (``own_account``).
            PermissionDenied: not admin of all her organizations.
        """
        with self._transaction():
            tree = self._rt.org_tree()
            user = self._managed(principal, user_id, tree)
            self._rt.users.remove(user.id)
            self._audit(
                principal,
                "user.delete",
                "user",
                user.id,
                username=user.username,
                memberships={o: r.value for o, r in (user.memberships or {}).items()},
            )
        return _seen(user, self._scope(principal, tree))

    def _set_disabled(self, principal: Principal, user_id: str, disabled: bool) -> User:
        with self._transaction():
            tree = self._rt.org_tree()
            user = self._managed(principal, user_id, tree)
            self._rt.users.set_disabled(user.id, disabled)
            self._audit(principal, "user.disable" if disabled else "user.enable", "user", user.id)
            return _seen(self._rt.users.get(user.id), self._scope(principal, tree))

    # What a principal may reach ------------------------------------------------------------

    @staticmethod
    def _scope(principal: Principal, tree: OrgTree) -> set[str] | None:
        return org_scope(principal, tree)

    def _visible(self, principal: Principal, user_id: str, tree: OrgTree) -> User:
        scope = self._scope(principal, tree)
        try:
            user = self._rt.users.get(user_id)
        except NotFound:
            user = None
        if user is None or (scope is not None and not set(user.memberships or {}) & scope):
            raise NotFound(f"no user {user_id!r}")
        return user

    @staticmethod
    def _grant(principal: Principal, org_id: str, role: Role, tree: OrgTree) -> None:
        mine = authorize(principal, org_id, Role.ADMIN, tree, what=f"organization {org_id!r}")
        if not mine.allows(role):
            raise PermissionDenied(
                "you cannot give a role above your own", code="role_insufficient"
            )

    def _managed(self, principal: Principal, user_id: str, tree: OrgTree) -> User:
        """A user whose account the principal may manage: admin of every organization she
        is a member of (or the whole instance), and not the principal herself."""
        user = self._visible(principal, user_id, tree)
        if principal.kind == "user" and principal.subject == user.id:
            raise Conflict(
                "this is your own account: change your password with PUT "
                "/api/v1/users/me/password; another admin disables you",
                code="own_account",
            )
        if principal.instance_admin:
            return user
        roles = [role_in(principal, org_id, tree) for org_id in user.memberships or {}]
        for role in roles:
            if role is not None and role is not Role.ADMIN:
                raise PermissionDenied(
                    f"this needs the admin role; you are {role.value}", code="role_insufficient"
                )
        if None in roles:
            raise PermissionDenied(
                "she is also a member of an organization you do not administer",
                code="user_managed_elsewhere",
            )
        return user
