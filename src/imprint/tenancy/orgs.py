"""Organizations: a customer and its sub-organizations, as a tree.

An organization's id is the *owner* value that enrollments and devices carry and that
tokens put in the owner claim, so it is chosen once and never changes. Give an id to
adopt enrollments that already name it as owner (``acme``, or the plgd seed's ``1``);
otherwise one is generated (``org-`` and 12 hex digits).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imprint.errors import InvalidValue, NotFound

__all__ = [
    "OrgTree",
    "Organization",
    "OrganizationStore",
    "create_organization",
    "new_org_id",
    "validate_org_id",
]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}")
MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    name: str
    parent_id: str | None
    created_at: datetime


class OrganizationStore(Protocol):
    def add(self, org: Organization) -> None:
        """Raises Conflict when the id is taken."""

    def get(self, org_id: str) -> Organization:
        """Raises NotFound."""

    def all(self) -> Sequence[Organization]: ...


class OrgTree:
    """The organizations as a tree: parents, children, descendants."""

    def __init__(self, orgs: Iterable[Organization]) -> None:
        self._orgs: dict[str, Organization] = {o.id: o for o in orgs}
        self._children: dict[str, list[str]] = {}
        for org in self._orgs.values():
            if org.parent_id is not None:
                self._children.setdefault(org.parent_id, []).append(org.id)
        for ids in self._children.values():
            ids.sort()

    def __contains__(self, org_id: object) -> bool:
        return org_id in self._orgs

    def get(self, org_id: str) -> Organization | None:
        return self._orgs.get(org_id)

    @property
    def orgs(self) -> Mapping[str, Organization]:
        return self._orgs

    def children(self, org_id: str) -> list[str]:
        return list(self._children.get(org_id, ()))

    def roots(self) -> list[str]:
        return sorted(o.id for o in self._orgs.values() if o.parent_id not in self._orgs)

    def descendants(self, org_id: str) -> set[str]:
        """``org_id`` and every organization below it (``org_id`` even when unknown:
        an owner value no organization claims yet still names its own objects)."""
        found = {org_id}
        pending = [org_id]
        while pending:
            for child in self._children.get(pending.pop(), ()):
                if child not in found:
                    found.add(child)
                    pending.append(child)
        return found

    def ancestors(self, org_id: str) -> list[str]:
        """The parents of ``org_id``, nearest first."""
        chain: list[str] = []
        current = self._orgs.get(org_id)
        while current is not None and current.parent_id is not None:
            if current.parent_id in chain or len(chain) > MAX_DEPTH:
                break
            chain.append(current.parent_id)
            current = self._orgs.get(current.parent_id)
        return chain


def new_org_id() -> str:
    return f"org-{secrets.token_hex(6)}"


def validate_org_id(org_id: str) -> str:
    """Raises InvalidValue unless 1 to 100 of ``A-Z a-z 0-9 . _ : @ -``."""
    if not _ID.fullmatch(org_id):
        raise InvalidValue(
            "id: 1 to 100 of letters, digits and . _ : @ - starting with a letter or digit"
        )
    return org_id


def create_organization(
    store: OrganizationStore,
    name: str,
    *,
    parent_id: str | None = None,
    org_id: str | None = None,
    at: datetime,
) -> Organization:
    """Create an organization, a root or below ``parent_id``.

    Raises:
        InvalidValue: a bad id or name, or the tree would grow too deep.
        NotFound: no such parent.
        Conflict: the id is taken.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidValue("name: 1 to 200 characters")
    if parent_id is not None:
        try:
            store.get(parent_id)
        except NotFound:
            raise NotFound(f"no organization {parent_id!r}") from None
        if len(OrgTree(store.all()).ancestors(parent_id)) + 2 > MAX_DEPTH:
            raise InvalidValue(f"parent: organizations nest at most {MAX_DEPTH} deep")
    org = Organization(
        id=validate_org_id(org_id) if org_id is not None else new_org_id(),
        name=name,
        parent_id=parent_id,
        created_at=at.replace(microsecond=0),
    )
    store.add(org)
    return org
