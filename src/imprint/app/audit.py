"""Reading the audit log: entries for admins (of their organizations), the chain's
verification and the export for the whole instance."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from imprint.app.base import Operations, Page
from imprint.audit import AuditEntry, AuditQuery, AuditRecord, ChainReport, records, verify_chain
from imprint.errors import NotFound, PermissionDenied
from imprint.store.audit import AUDIT_SORT as AUDIT_ORDER
from imprint.tenancy.access import Principal, require_instance_admin
from imprint.tenancy.roles import Role

__all__ = ["AuditOperations"]


class AuditOperations(Operations):
    def scope(self, principal: Principal) -> set[str] | None:
        """Organizations whose log the principal reads: where she is admin, and below
        (None: every organization, for the whole instance).

        Raises:
            PermissionDenied: she is admin nowhere.
        """
        if principal.instance_admin:
            return None
        tree = self._rt.org_tree()
        scope: set[str] = set()
        for org_id, role in principal.memberships.items():
            if role is Role.ADMIN:
                scope |= tree.descendants(org_id)
        if not scope:
            raise PermissionDenied("the audit log is for admins", code="role_insufficient")
        return scope

    def search(
        self, principal: Principal, query: AuditQuery, org: str | None = None
    ) -> Sequence[AuditEntry]:
        """Entries newest first, of the organizations the principal administers (only
        ``org``'s, when given).

        Raises:
            PermissionDenied: she is admin nowhere.
            NotFound: ``org`` is not one of hers.
        """
        return self._rt.audit.search(replace(query, org_ids=self._org_ids(principal, org)))

    def _org_ids(self, principal: Principal, org: str | None) -> set[str] | None:
        scope = self.scope(principal)
        if org is not None:
            if scope is not None and org not in scope:
                raise NotFound(f"no organization {org!r}")
            scope = {org}
        return scope

    def page(
        self, principal: Principal, query: AuditQuery, org: str | None = None
    ) -> Page[AuditEntry]:
        """One page of :meth:`search` with how many entries match in all (the cursor is
        the id to pass as ``before_id`` for the next, older, page)."""
        scoped = replace(query, org_ids=self._org_ids(principal, org), limit=query.limit + 1)
        found = list(self._rt.audit.search(scoped))
        items = found[: query.limit]
        following = str(items[-1].id) if len(found) > query.limit else None
        return Page(items, self._rt.audit.count(scoped), following)

    def each(
        self, principal: Principal, query: AuditQuery, org: str | None = None, chunk: int = 500
    ) -> Iterator[AuditEntry]:
        """Every entry that matches ``query``'s filters, in its order (newest first
        without one), read ``chunk`` entries at a time, each chunk after the previous
        chunk's last entry (its sort value and id): an entry written meanwhile never
        repeats or hides the entries still to come, as an offset would.

        The principal's scope is checked here, before the first entry is read.

        Raises:
            PermissionDenied: she is admin nowhere.
            NotFound: ``org`` is not one of hers.
        """
        order = AUDIT_ORDER.known(query.order)
        scoped = replace(query, org_ids=self._org_ids(principal, org), order=order, limit=chunk)

        def read() -> Iterator[AuditEntry]:
            step = scoped
            while True:
                found = list(self._rt.audit.search(step))
                yield from found
                if len(found) < chunk:
                    return
                last = found[-1]
                assert last.id is not None
                step = replace(step, after=(last.sort_value(order.key), last.id))

        return read()

    def verify(self, principal: Principal) -> ChainReport:
        """Check the hash chain. It spans every organization: the whole instance only.

        Raises:
            PermissionDenied: not the whole instance.
        """
        require_instance_admin(principal, "the audit log's hash chain")
        return verify_chain(self._rt.audit)

    def export(self, principal: Principal) -> Iterator[AuditRecord]:
        """Every entry with its hashes, oldest first, a page at a time."""
        require_instance_admin(principal, "the whole audit log")
        return records(self._rt.audit)
