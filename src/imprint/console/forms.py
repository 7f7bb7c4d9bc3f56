"""Small helpers for the admin pages K2 added: API models from form fields, org lists.

The console pages call the admin API's own route functions (they are plain functions of
a validated body, the runtime and the principal), so a page and the API share every
check, role rule and audit entry. :func:`model_of` turns form fields into that body and
a validation failure into an :class:`~imprint.errors.InvalidValue` (a 400 page).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from imprint.errors import InvalidValue
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, org_scope, role_in
from imprint.tenancy.orgs import OrgTree
from imprint.tenancy.roles import Role

__all__ = ["model_of", "org_rows", "orgs_with_role"]

M = TypeVar("M", bound=BaseModel)


def model_of(model: type[M], data: dict[str, Any]) -> M:
    """``model`` validated from ``data``.

    Raises:
        InvalidValue: a field is missing or wrong; the message names the field.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "form"
        raise InvalidValue(f"{where}: {first.get('msg', 'invalid')}") from None


def org_rows(tree: OrgTree, scope: set[str] | None) -> list[tuple[int, str]]:
    """(depth, org id) of the visible organizations, depth first (the tree view)."""
    visible = set(tree.orgs) if scope is None else {o for o in scope if o in tree}
    tops = sorted(o for o in visible if tree.orgs[o].parent_id not in visible)
    rows: list[tuple[int, str]] = []
    pending = [(0, o) for o in reversed(tops)]
    while pending:
        depth, org_id = pending.pop()
        rows.append((depth, org_id))
        kids = [c for c in tree.children(org_id) if c in visible]
        pending.extend((depth + 1, c) for c in reversed(kids))
    return rows


def orgs_with_role(runtime: Runtime, principal: Principal, needed: Role) -> list[str]:
    """The visible organizations where the principal holds at least ``needed``."""
    tree = runtime.org_tree()
    scope = org_scope(principal, tree)
    found = []
    for _, org_id in org_rows(tree, scope):
        role = role_in(principal, org_id, tree)
        if role is not None and role.allows(needed):
            found.append(org_id)
    return found
