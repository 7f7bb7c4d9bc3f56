"""Certificates: every certificate the user's organizations were issued, by status
(issued, expiring within N days, revoked), searchable and sortable, with the public
certificate as a PEM download.

The list reads through ``CertificateOperations.page`` (the API's list, with its scope:
a foreign certificate is not listed, and its PEM URL is a 404 page).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.console import queries
from imprint.console.devices import org_names
from imprint.console.listing import Pager, csv_response
from imprint.console.pages import HEADERS, ConsoleRoute, ConsoleUser, redirect, render, runtime
from imprint.errors import NotFound
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.runtime import Runtime
from imprint.store.certificates import CERTIFICATE_SORT
from imprint.store.listing import Order
from imprint.tenancy.access import Principal

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute)

Text = Annotated[str | None, Query(max_length=200)]
TABS = {"": "All", "issued": "Issued", "expiring": "Expiring", "revoked": "Revoked"}
WINDOWS = ("7", "30", "90")
_EXPORT_CHUNK = 500


@dataclass(frozen=True, slots=True)
class CertificateQuery:
    """The list's filters as the query string gives them, and as the operation takes
    them."""

    params: dict[str, str]
    filters: dict[str, Any]


def _query(tab: str | None, days: str | None, q: str | None) -> CertificateQuery:
    chosen = tab if tab in TABS else ""
    window = days if days in WINDOWS else "30"
    text = (q or "").strip()
    filters: dict[str, Any] = {"text": text or None}
    if chosen == "issued":
        filters["status"] = CertificateStatus.ISSUED
    elif chosen == "revoked":
        filters["status"] = CertificateStatus.REVOKED
    elif chosen == "expiring":
        filters.update(
            status=CertificateStatus.ISSUED,
            expiring_within=timedelta(days=int(window)),
            unexpired=True,
        )
    params = {"tab": chosen, "days": window if chosen == "expiring" else "", "q": text}
    return CertificateQuery(params, filters)


@router.get("/certificates")
async def certificate_list(
    request: Request,
    user: ConsoleUser,
    tab: Text = None,
    days: Text = None,
    q: Text = None,
    sort: Text = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    rt = runtime(request)
    query = _query(tab, days, q)
    order = CERTIFICATE_SORT.known(Order.parse(sort, CERTIFICATE_SORT.default))

    def load() -> dict[str, Any]:
        pager = Pager("/console/certificates", {**query.params, "sort": sort or ""}, page, 0, order)
        found = rt.app.certificates.page(
            user, limit=pager.size, order=order, offset=pager.offset, **query.filters
        )
        refs = {c.device_ref for c in found.items if c.device_ref}
        return {
            "certificates": found.items,
            "pager": replace(pager, total=found.total, default_descending=("created",)),
            "device_names": queries.device_names(rt.engine, refs),
            "org_names": org_names(rt),
        }

    context = await run_in_threadpool(load)
    if context["pager"].beyond:
        return redirect(context["pager"].beyond)
    return render(
        request,
        "certificates.html",
        title="Certificates",
        active="/console/certificates",
        tabs=TABS,
        windows=WINDOWS,
        filters=query.params,
        tab_url=lambda name: Pager(
            "/console/certificates", {"q": query.params["q"]}, 1, 0, order
        ).url(tab=name or None),
        now=rt.clock.now(),
        **context,
    )


def _every(rt: Runtime, user: Principal, query: CertificateQuery) -> Iterator[CertificateRecord]:
    after: str | None = None
    while True:
        found = rt.app.certificates.page(user, limit=_EXPORT_CHUNK, after=after, **query.filters)
        yield from found.items
        if found.next is None:
            return
        after = found.next


@router.get("/certificates.csv")
async def certificate_export(
    request: Request,
    user: ConsoleUser,
    tab: Text = None,
    days: Text = None,
    q: Text = None,
) -> Response:
    rt = runtime(request)
    query = _query(tab, days, q)
    # The first page here, so a refusal is an error page, not a broken download.
    await run_in_threadpool(lambda: rt.app.certificates.page(user, limit=1, **query.filters))
    names = org_names(rt)

    def rows() -> Iterator[tuple[object, ...]]:
        batch: list[CertificateRecord] = []
        for record in _every(rt, user, query):
            batch.append(record)
            if len(batch) == _EXPORT_CHUNK:
                yield from _rows(rt, names, batch)
                batch = []
        yield from _rows(rt, names, batch)

    return csv_response(
        "certificates.csv",
        [
            "serial",
            "status",
            "subject",
            "device_id",
            "device_reference",
            "organization",
            "organization_name",
            "profile",
            "not_before",
            "not_after",
            "revoked_at",
            "revocation_reason",
            "sha256",
        ],
        rows(),
    )


def _rows(
    rt: Runtime, names: dict[str, str], batch: list[CertificateRecord]
) -> Iterator[tuple[object, ...]]:
    devices = queries.device_names(rt.engine, {c.device_ref for c in batch if c.device_ref})
    for c in batch:
        yield (
            c.serial,
            c.status.value,
            c.subject,
            devices.get(c.device_ref or "", ""),
            c.device_ref,
            c.owner,
            names.get(c.owner or "", ""),
            c.profile,
            c.not_before,
            None if c.status is CertificateStatus.REVOKED else c.not_after,
            c.revoked_at,
            c.revocation_reason,
            c.fingerprint_sha256,
        )


@router.get("/certificates/{serial}.pem")
async def certificate_pem(request: Request, user: ConsoleUser, serial: str) -> Response:
    """The public certificate (never a key) as PEM."""
    record = await run_in_threadpool(runtime(request).app.certificates.get, user, serial)
    if record.der is None:
        raise NotFound(f"certificate {record.serial} was never issued")
    pem = x509.load_der_x509_certificate(record.der).public_bytes(Encoding.PEM)
    return Response(
        pem,
        media_type="application/x-pem-file",
        headers={
            **HEADERS,
            "Content-Disposition": f'attachment; filename="{record.serial}.pem"',
        },
    )
