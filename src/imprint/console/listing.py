"""What the console's long lists share: page numbers with the true total, sortable
column headers, and CSV export streamed a chunk at a time.

A list page keeps its filters and sort in the query string; :class:`Pager` builds the
links of its pager and headers from them. Export cells that a spreadsheet would run as
a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) are
prefixed with ``'`` (OWASP's advice for CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from starlette.responses import StreamingResponse

from imprint.console.pages import HEADERS
from imprint.store.listing import Order

__all__ = ["PAGE_SIZE", "Pager", "csv_cell", "csv_response"]

PAGE_SIZE = 50
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ROWS_PER_CHUNK = 200


@dataclass(frozen=True)
class Pager:
    """A page of a list at ``path`` with the query ``params`` (filters, sort)."""

    path: str
    params: Mapping[str, str]
    page: int
    total: int
    order: Order
    size: int = PAGE_SIZE
    default_descending: Sequence[str] = field(default_factory=tuple)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.offset + self.size, self.total)

    @property
    def beyond(self) -> str | None:
        """The last page's URL when this page lies past it (an old link), else None."""
        return self.url(page=self.pages) if self.page > self.pages else None

    def url(self, **changes: str | int | None) -> str:
        """This list's URL with ``changes`` to its query (None removes a parameter)."""
        query = {**self.params, **{k: str(v) for k, v in changes.items() if v is not None}}
        for key, value in changes.items():
            if value is None:
                query.pop(key, None)
        query = {k: v for k, v in query.items() if v}
        return self.path + ("?" + urlencode(query) if query else "")

    @property
    def prev_url(self) -> str | None:
        return self.url(page=self.page - 1) if self.page > 1 else None

    @property
    def next_url(self) -> str | None:
        return self.url(page=self.page + 1) if self.page < self.pages else None

    @property
    def last_url(self) -> str | None:
        return self.url(page=self.pages) if self.page < self.pages else None

    @property
    def first_url(self) -> str | None:
        return self.url(page=None) if self.page > 1 else None

    def sort_url(self, key: str) -> str:
        """The header link of column ``key``: sort by it, or reverse it when it is the
        current sort; back to the first page."""
        if self.order.key == key:
            chosen = Order(key, not self.order.descending)
        else:
            chosen = Order(key, key in self.default_descending)
        return self.url(sort=str(chosen), page=None)

    def sorted_by(self, key: str) -> str:
        """``ascending``/``descending`` for the current sort column, else ``none``
        (the value of its ``aria-sort``)."""
        if self.order.key != key:
            return "none"
        return "descending" if self.order.descending else "ascending"

    def export_url(self, path: str) -> str:
        """The CSV export of this list with its filters (every page)."""
        query = {k: v for k, v in self.params.items() if v and k != "page"}
        return path + ("?" + urlencode(query) if query else "")


def csv_cell(value: object) -> str:
    """``value`` as a CSV cell that no spreadsheet runs as a formula."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _lines(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for count, row in enumerate(rows, start=1):
        writer.writerow([csv_cell(v) for v in row])
        if count % _ROWS_PER_CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_response(
    filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> StreamingResponse:
    """A CSV download streamed a few hundred rows at a time; ``rows`` is read lazily
    (in Starlette's thread pool, so it may query the database)."""
    headers = {
        **HEADERS,
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
    }
    return StreamingResponse(
        _lines(header, rows), media_type="text/csv; charset=utf-8", headers=headers
    )
