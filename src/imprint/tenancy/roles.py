"""Roles a member holds in an organization, ordered by what they allow."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role", "highest"]


class Role(StrEnum):
    """``viewer`` reads; ``operator`` also runs devices, enrollments, keys and machine
    clients; ``admin`` also manages the organization: sub-organizations and members."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """True when this role covers everything ``needed`` may do."""
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


def highest(roles: object) -> Role | None:
    """The highest known role among ``roles`` (names of any case; others ignored)."""
    values: list[str]
    if isinstance(roles, str):
        values = roles.replace(",", " ").split()
    elif isinstance(roles, list | tuple | set | frozenset):
        values = [r for r in roles if isinstance(r, str)]
    else:
        return None
    known = [Role(v.lower()) for v in values if v.lower() in Role._value2member_map_]
    return max(known, key=lambda r: r.rank, default=None)
