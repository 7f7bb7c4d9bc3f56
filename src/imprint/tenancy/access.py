"""Who is asking, and what she may see and do.

A :class:`Principal` is the caller of an operation: an API key (the whole instance),
a user, an OAuth client, the subject of an external provider's token, or the local
command line (:func:`cli_principal`: the whole instance, as the operating-system user
who can read the data directory). What it sees
is :func:`org_scope`: the organizations it is a member of and all their descendants.
Objects of any other organization do not exist for it: :func:`authorize` answers
:class:`~imprint.errors.NotFound`, never "forbidden", so ids of others do not leak.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from imprint.errors import NotFound, PermissionDenied
from imprint.tenancy.orgs import OrgTree
from imprint.tenancy.roles import Role

__all__ = [
    "Principal",
    "PrincipalKind",
    "authorize",
    "cli_principal",
    "org_scope",
    "require_instance_admin",
    "role_in",
]

PrincipalKind = Literal["api-key", "user", "client", "external", "cli"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller.

    Attributes:
        kind: how it authenticated.
        subject: the key id, user id, client id or external ``sub``.
        name: what the audit log shows (key name, user name, client id).
        memberships: organization id -> role.
        instance_admin: an API key: every organization, every role.
        owner: the owner claim of the token, when there was one.
    """

    kind: PrincipalKind
    subject: str
    name: str
    memberships: Mapping[str, Role] = field(default_factory=dict)
    instance_admin: bool = False
    owner: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


def cli_principal() -> Principal:
    """The local command line: it holds the data directory and the CA key, so it acts for
    the whole instance; the audit log names the operating-system user (``cli:<user>``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. in a bare container)
        user = str(os.getuid())
    return Principal(kind="cli", subject=user, name=user, instance_admin=True)


def org_scope(principal: Principal, tree: OrgTree) -> set[str] | None:
    """The organization ids the principal sees (None: all, for an instance admin)."""
    if principal.instance_admin:
        return None
    visible: set[str] = set()
    for org_id in principal.memberships:
        visible |= tree.descendants(org_id)
    return visible


def role_in(principal: Principal, org_id: str, tree: OrgTree) -> Role | None:
    """The principal's role for objects of ``org_id``: the highest of its memberships
    in that organization or above it; None when the organization is not visible."""
    if principal.instance_admin:
        return Role.ADMIN
    reaching = [org_id, *tree.ancestors(org_id)]
    roles = [principal.memberships[o] for o in reaching if o in principal.memberships]
    return max(roles, key=lambda r: r.rank, default=None)


def authorize(
    principal: Principal, org_id: str | None, needed: Role, tree: OrgTree, *, what: str
) -> Role:
    """Require ``needed`` on objects of ``org_id``.

    Args:
        principal: the caller.
        org_id: the organization the object belongs to (None: instance-wide objects,
            which only an instance admin reaches).
        needed: the least role that may do this.
        tree: the organization tree.
        what: the object, for the not-found message (e.g. ``organization 'acme'``).

    Raises:
        NotFound: the object's organization is not visible to the principal.
        PermissionDenied: visible, but the role is too low.
    """
    role = role_in(principal, org_id, tree) if org_id is not None else None
    if role is None and not principal.instance_admin:
        raise NotFound(f"no {what}")
    role = role or Role.ADMIN
    if not role.allows(needed):
        raise PermissionDenied(
            f"this needs the {needed.value} role; you are {role.value}", code="role_insufficient"
        )
    return role


def require_instance_admin(principal: Principal, what: str) -> None:
    """Require the whole instance (an API key) for objects no organization owns: the
    deny-list, manufacturer CRLs, certificates of any name.

    Raises:
        PermissionDenied: any other caller (code ``instance_admin_required``).
    """
    if not principal.instance_admin:
        raise PermissionDenied(
            f"{what} belongs to the whole instance, not to an organization: "
            "it needs an admin API key",
            code="instance_admin_required",
        )
