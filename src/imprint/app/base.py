"""What every aggregate's operations share: the runtime, one transaction, the audit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from imprint.app.auditing import audit
from imprint.audit import Outcome
from imprint.tenancy.access import Principal

if TYPE_CHECKING:
    from imprint.runtime import Runtime

__all__ = ["Operations", "Page", "page_of"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its items, how many match in all, and the cursor of the next
    page (None: this is the last)."""

    items: Sequence[T]
    total: int
    next: str | None = None


def page_of(
    items: Sequence[T], key: Callable[[T], str], *, limit: int, after: str | None
) -> Page[T]:
    """One page of a list held whole (a short one: organizations, API keys, OAuth
    clients): the items whose ``key`` follows ``after``, in key order, and the total."""
    ordered = sorted(items, key=key)
    rest = [i for i in ordered if after is None or key(i) > after]
    chosen = rest[:limit]
    return Page(chosen, len(ordered), key(chosen[-1]) if len(rest) > limit else None)


class Operations:
    """Base of one aggregate's operations."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _now(self) -> datetime:
        """The runtime clock's time: what every operation decides and stamps by."""
        return self._rt.clock.now()

    def _transaction(self) -> AbstractContextManager[None]:
        """One unit of work: the change, its audit entry and its outbox messages commit
        together or not at all."""
        return self._rt.transaction()

    def _audit(
        self,
        principal: Principal | str,
        action: str,
        target_type: str,
        target_id: str | None = None,
        *,
        org_id: str | None = None,
        outcome: Outcome = "success",
        **details: Any,
    ) -> None:
        audit(
            self._rt,
            principal,
            action,
            target_type,
            target_id,
            org_id=org_id,
            outcome=outcome,
            **details,
        )
