"""What the admin lists share: a text search and an order chosen from a whitelist.

A list names the columns it may be sorted by (:class:`SortKeys`); a request's sort is
looked up there and anything else falls back to the list's default, so no text from a
request ever reaches the SQL but as a bound value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_

__all__ = ["Order", "SortKeys", "contains"]


@dataclass(frozen=True, slots=True)
class Order:
    """A list's order: a key of its :class:`SortKeys`, ascending unless ``descending``."""

    key: str
    descending: bool = False

    @classmethod
    def parse(cls, value: str | None, default: Order) -> Order:
        """``name`` or ``-name`` (descending); empty: ``default``."""
        if not value:
            return default
        return cls(value.removeprefix("-"), value.startswith("-"))

    def __str__(self) -> str:
        return ("-" if self.descending else "") + self.key


@dataclass(frozen=True, slots=True)
class SortKeys:
    """The columns a list may be sorted by, and its tie-breaker (a unique column), so
    every page of an offset-paged list is well defined."""

    columns: Mapping[str, Any]
    tie_breaker: Any
    default: Order

    def clauses(self, order: Order | None) -> list[Any]:
        """ORDER BY clauses for ``order`` (the default when it names no known key)."""
        chosen = order if order is not None and order.key in self.columns else self.default
        column = self.columns[chosen.key]
        first = column.desc() if chosen.descending else column.asc()
        tie = self.tie_breaker.desc() if chosen.descending else self.tie_breaker.asc()
        return [first, tie] if column is not self.tie_breaker else [first]

    def after(self, order: Order | None, last: tuple[Any, Any], *, nulls_largest: bool) -> Any:
        """The WHERE of the rows that follow ``last`` (a row's sort value and tie-breaker)
        in ``order``: a keyset, so rows added or changed meanwhile shift nothing still to
        come, as an offset would. ``nulls_largest``: the database sorts NULL as the
        largest value (PostgreSQL), else as the smallest (SQLite)."""
        chosen = self.known(order)
        column = self.columns[chosen.key]
        value, tie = last
        descending = chosen.descending
        past_tie = self.tie_breaker < tie if descending else self.tie_breaker > tie
        if column is self.tie_breaker:
            return past_tie
        nulls_after = nulls_largest != descending
        if value is None:
            if nulls_after:
                return and_(column.is_(None), past_tie)
            return or_(and_(column.is_(None), past_tie), column.is_not(None))
        further = column < value if descending else column > value
        tied = and_(column == value, past_tie)
        return or_(further, tied, column.is_(None)) if nulls_after else or_(further, tied)

    def known(self, order: Order | None) -> Order:
        """``order`` if it names a key of this list, else the default."""
        return order if order is not None and order.key in self.columns else self.default


def contains(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere (``\\`` is the escape character)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
