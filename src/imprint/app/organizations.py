"""Organization operations: the tree, creating, renaming and deleting an organization,
and sign-up.

An admin of an organization creates organizations below it; only the whole instance (an
API key, the command line) creates top-level ones. Sign-up creates a top-level
organization, its admin and a registration key for its devices in one operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from imprint.app.base import Operations, Page, page_of
from imprint.app.scoping import scope_of
from imprint.auth.passwords import check_password_policy
from imprint.errors import Conflict, InvalidValue, PermissionDenied
from imprint.provisioning.channels import ChannelTemplate
from imprint.provisioning.enrollments import (
    Enrollment,
    EnrollmentKind,
    Mechanism,
    create_enrollment,
    new_enrollment_id,
)
from imprint.provisioning.ratelimit import Space
from imprint.provisioning.registration_keys import create_registration_key
from imprint.tenancy.access import Principal, authorize, role_in
from imprint.tenancy.orgs import (
    Organization,
    OrgTree,
    create_organization,
    validate_org_id,
)
from imprint.tenancy.roles import Role
from imprint.tenancy.users import User, create_user, normalize_username

__all__ = ["SIGNUP_CHANNEL", "OrgEntry", "OrganizationOperations", "SignedUp"]

# What the sign-up's enrollment gives every device: a channel, as in the midPoint story
# (change it with ``PATCH /api/v1/enrollments/{id}``).
SIGNUP_CHANNEL = ChannelTemplate(fields={"field1": "temperature"})


@dataclass(frozen=True, slots=True)
class OrgEntry:
    """An organization as a principal sees it: its children and her role there."""

    org: Organization
    children: list[str]
    role: Role | None


@dataclass(frozen=True, slots=True)
class SignedUp:
    """What sign-up made; ``registration_key`` is shown once and never again."""

    org: Organization
    user: User
    enrollment: Enrollment
    registration_key: str


class OrganizationOperations(Operations):
    def list(self, principal: Principal) -> Sequence[OrgEntry]:
        """The organizations the principal sees (hers and everything below), by id."""
        tree = self._rt.org_tree()
        scope = scope_of(self._rt, principal)
        visible = sorted(
            (o for o in tree.orgs.values() if scope is None or o.id in scope), key=lambda o: o.id
        )
        return [self._entry(principal, org, tree) for org in visible]

    def page(
        self, principal: Principal, *, limit: int = 100, after: str | None = None
    ) -> Page[OrgEntry]:
        """One page of :meth:`list`, by id, with the total and the next page's cursor."""
        return page_of(self.list(principal), lambda e: e.org.id, limit=limit, after=after)

    def tree(self, principal: Principal) -> OrgTree:
        """The part of the organization tree the principal sees."""
        return OrgTree(entry.org for entry in self.list(principal))

    def show(self, principal: Principal, org_id: str) -> OrgEntry:
        """One organization.

        Raises:
            NotFound: no such organization, or one the principal does not see.
        """
        tree = self._rt.org_tree()
        role = authorize(principal, org_id, Role.VIEWER, tree, what=f"organization {org_id!r}")
        return OrgEntry(self._rt.orgs.get(org_id), tree.children(org_id), role)

    def create(
        self,
        principal: Principal,
        name: str,
        *,
        parent_id: str | None = None,
        org_id: str | None = None,
    ) -> OrgEntry:
        """Create an organization below ``parent_id`` (admin there), or a top-level one
        (the whole instance only).

        Raises:
            PermissionDenied: a top-level organization asked by a member, or not admin of
                the parent.
            NotFound: no such parent, or one the principal does not see.
            InvalidValue: a bad name or id, or the tree would grow too deep.
            Conflict: the id is taken.
        """
        with self._transaction():
            if parent_id is None:
                if not principal.instance_admin:
                    raise PermissionDenied(
                        "only an API key creates top-level organizations; name a parent_id",
                        code="role_insufficient",
                    )
            else:
                authorize(
                    principal,
                    parent_id,
                    Role.ADMIN,
                    self._rt.org_tree(),
                    what=f"organization {parent_id!r}",
                )
            org = create_organization(
                self._rt.orgs, name, parent_id=parent_id, org_id=org_id, at=self._now()
            )
            self._audit(
                principal,
                "org.create",
                "organization",
                org.id,
                org_id=org.id,
                name=org.name,
                parent_id=org.parent_id,
            )
            return self._entry(principal, org, self._rt.org_tree())

    def rename(self, principal: Principal, org_id: str, name: str) -> OrgEntry:
        """Give an organization a new display name (admin there); its id never changes.

        Raises:
            NotFound: not visible.
            PermissionDenied: not admin there.
            InvalidValue: a bad name.
        """
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidValue("name: 1 to 200 characters")
        with self._transaction():
            tree = self._rt.org_tree()
            authorize(principal, org_id, Role.ADMIN, tree, what=f"organization {org_id!r}")
            before = self._rt.orgs.get(org_id)
            self._rt.orgs.rename(org_id, name)
            self._audit(
                principal,
                "org.rename",
                "organization",
                org_id,
                org_id=org_id,
                name=name,
                previous_name=before.name,
            )
            return self._entry(principal, replace(before, name=name), tree)

    def delete(self, principal: Principal, org_id: str) -> Organization:
        """Delete an empty organization: no sub-organizations, members, enrollments,
        devices, channels, OAuth clients, client credentials or valid certificates.
        Admin of its parent (the whole instance for a top-level one).

        Raises:
            NotFound: not visible.
            PermissionDenied: not admin of the parent.
            Conflict: it still holds something (``org_not_empty``).
        """
        with self._transaction():
            tree = self._rt.org_tree()
            authorize(principal, org_id, Role.VIEWER, tree, what=f"organization {org_id!r}")
            org = self._rt.orgs.get(org_id)
            if org.parent_id is None or org.parent_id not in tree:
                if not principal.instance_admin:
                    raise PermissionDenied(
                        "only an API key deletes top-level organizations",
                        code="role_insufficient",
                    )
            else:
                authorize(
                    principal,
                    org.parent_id,
                    Role.ADMIN,
                    tree,
                    what=f"organization {org.parent_id!r}",
                )
            held = self._rt.orgs.holdings(org_id, self._rt.clock.now())
            if held:
                raise Conflict(
                    f"organization {org_id!r} is not empty: it still has {', '.join(held)}",
                    code="org_not_empty",
                )
            self._rt.orgs.remove(org_id)
            self._audit(
                principal,
                "org.delete",
                "organization",
                org_id,
                org_id=org_id,
                name=org.name,
                parent_id=org.parent_id,
            )
        return org

    def signup(
        self,
        *,
        organization: str,
        username: str,
        password: str,
        org_id: str | None = None,
        source: str | None = None,
    ) -> SignedUp:
        """Self-registration: a top-level organization, its admin user, and a
        registration-key enrollment with its first key that gives each device a data
        channel (:data:`SIGNUP_CHANNEL`). Nobody is signed in: the audit
        entry names the new admin (``user:<username>``).

        Every sign-up counts against ``source`` (the caller's address).

        Raises:
            PermissionDenied: self-registration is switched off.
            TooManyAttempts: too many sign-ups from ``source``.
            InvalidValue: a bad user name, password, organization name or id.
            Conflict: the user name or the organization id is taken.
        """
        if not self._rt.settings.auth.self_registration:
            raise PermissionDenied(
                "self-registration is switched off here", code="self_registration_disabled"
            )
        # Every sign-up counts against the address, in its own key space.
        self._rt.attempt_limiter.count([(Space.SIGNUP, source or "-")])
        username = normalize_username(username)
        check_password_policy(password)
        if org_id is not None:
            validate_org_id(org_id)
        now = self._now().replace(microsecond=0)
        with self._transaction():
            if self._rt.users.find_by_username(username) is not None:
                raise Conflict(f"a user named {username!r} exists already")
            org = create_organization(self._rt.orgs, organization, org_id=org_id, at=now)
            user = create_user(
                self._rt.users, username, password, org_id=org.id, role=Role.ADMIN, at=now
            )
            enrollment = create_enrollment(
                self._rt.enrollments,
                Enrollment(
                    id=new_enrollment_id(),
                    kind=EnrollmentKind.GROUP,
                    mechanism=Mechanism.REGISTRATION_KEY,
                    owner=org.id,
                    created_at=now,
                    updated_at=now,
                    # midPoint's thermometers: each device gets its channel at once.
                    channel=SIGNUP_CHANNEL,
                ),
            )
            key = create_registration_key(
                self._rt.registration_keys, self._rt.enrollments, enrollment.id, at=now
            )
            admin = Principal(
                kind="user", subject=user.id, name=user.username, memberships={org.id: Role.ADMIN}
            )
            self._audit(
                admin,
                "signup",
                "organization",
                org.id,
                org_id=org.id,
                name=org.name,
                user_id=user.id,
                enrollment_id=enrollment.id,
            )
        return SignedUp(org=org, user=user, enrollment=enrollment, registration_key=key.key)

    @staticmethod
    def _entry(principal: Principal, org: Organization, tree: OrgTree) -> OrgEntry:
        return OrgEntry(org, tree.children(org.id), role_in(principal, org.id, tree))
