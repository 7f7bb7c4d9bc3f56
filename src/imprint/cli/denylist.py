"""``imprint denylist ...``: the certificate deny-list and manufacturer CRLs.

Both are read from the database on every attestation, so a change made here reaches a
running server at once. Both belong to the whole instance: remotely, an API key.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509

from imprint.attestation.revocation import certificate_fingerprint, normalize_fingerprint
from imprint.cli import _errors, _fail
from imprint.cli.calls import Api, perform
from imprint.cli.output import Column, OutputOption, render_done, render_page
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

app = typer.Typer(
    help="Refuse certificates: the deny-list and manufacturer CRLs (x509 attestation).",
    no_args_is_help=True,
)

DENIED = "/api/v1/denied-certificates"
CRLS = "/api/v1/manufacturer-crls"
_PAGE = 1000

DENIED_COLUMNS = [
    Column("SHA-256 fingerprint", "fingerprint_sha256", key=True),
    Column("reason", "reason"),
    Column("since", "created_at"),
]
CRL_COLUMNS = [
    Column("issuer", "issuer"),
    Column("issuer key SHA-256", "issuer_key_sha256", key=True),
    Column("revoked", "revoked_count"),
    Column("next update", "next_update"),
    Column("stale", "stale"),
]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")


@app.command("add")
def add(
    reason: Annotated[str, typer.Option(help="Why, for the record (1 to 200 characters)")],
    fingerprint: Annotated[
        str | None, typer.Option(help="SHA-256 fingerprint of the certificate, hex")
    ] = None,
    cert: Annotated[Path | None, typer.Option(help="Or the certificate file (PEM)")] = None,
    output: OutputOption = None,
) -> None:
    """Refuse a certificate (device or CA) in every attestation."""
    from imprint.api.routes.deny_list import DeniedOut

    if (fingerprint is None) == (cert is None):
        _fail("give --fingerprint or --cert, exactly one")
    if not 1 <= len(reason) <= 200:
        _fail("--reason: 1 to 200 characters")
    with _errors():
        if cert is not None:
            try:
                value = certificate_fingerprint(x509.load_pem_x509_certificate(_read(cert)))
            except ValueError:
                _fail(f"{cert} is not a PEM certificate")
        else:
            assert fingerprint is not None
            value = normalize_fingerprint(fingerprint)

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        entry = runtime.app.deny_list.deny(principal, value, reason)
        return DeniedOut.of(entry).model_dump(mode="json")

    def remote(api: Api) -> dict[str, Any]:
        answer: dict[str, Any] = api.post(DENIED, {"fingerprint_sha256": value, "reason": reason})
        return answer

    entry = perform(local=local, remote=remote)
    render_done(entry, output, f"denied {entry['fingerprint_sha256']}", fields=DENIED_COLUMNS)


@app.command("list")
def list_denied(output: OutputOption = None) -> None:
    """List the whole deny-list."""
    from imprint.api.routes.deny_list import DeniedOut

    def local(runtime: Runtime, principal: Principal) -> list[dict[str, Any]]:
        def page(after: str | None) -> list[dict[str, Any]]:
            found = runtime.app.deny_list.search(principal, limit=_PAGE, after=after)
            return [DeniedOut.of(e).model_dump(mode="json") for e in found]

        return _every(page)

    def remote(api: Api) -> list[dict[str, Any]]:
        def page(after: str | None) -> list[dict[str, Any]]:
            answer: dict[str, Any] = api.get(DENIED, limit=_PAGE, after=after)
            return list(answer["items"])

        return _every(page)

    entries = perform(local=local, remote=remote)
    render_page(
        {"items": entries, "total": len(entries), "next": None},
        DENIED_COLUMNS,
        output,
        noun="denied certificate(s)",
    )


def _every(page: Any) -> list[dict[str, Any]]:
    """Every entry, a page of 1000 at a time (the deny-list pages by fingerprint)."""
    entries: list[dict[str, Any]] = []
    after = None
    while True:
        found = page(after)
        entries.extend(found)
        if len(found) < _PAGE:
            return entries
        after = found[-1]["fingerprint_sha256"]


@app.command("remove")
def remove(
    fingerprint: Annotated[str, typer.Argument(help="SHA-256 fingerprint, hex")],
    output: OutputOption = None,
) -> None:
    """Accept a denied certificate again."""
    with _errors():
        value = normalize_fingerprint(fingerprint)
    perform(
        local=lambda rt, p: rt.app.deny_list.undeny(p, value),
        remote=lambda api: api.delete(f"{DENIED}/{value}"),
    )
    render_done(
        {"fingerprint_sha256": value, "removed": True},
        output,
        f"removed {value} from the deny-list",
    )


@app.command("crl-upload")
def crl_upload(
    crl: Annotated[Path, typer.Argument(help="CRL file, PEM or DER")],
    output: OutputOption = None,
) -> None:
    """Store a manufacturer CA's CRL; it must be signed by a CA of an x509 enrollment."""
    from imprint.api.routes.deny_list import CrlOut

    data = _read(crl)

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        stored = runtime.app.deny_list.upload_crl(principal, data)
        return CrlOut.of(stored, stored.uploaded_at).model_dump(mode="json")

    def remote(api: Api) -> dict[str, Any]:
        text = (
            data.decode("ascii", "replace")
            if data.lstrip().startswith(b"-----BEGIN")
            else base64.b64encode(data).decode("ascii")
        )
        answer: dict[str, Any] = api.post(CRLS, {"crl": text})
        return answer

    stored = perform(local=local, remote=remote)
    render_done(
        stored,
        output,
        f"stored the CRL of {stored['issuer']} ({stored['revoked_count']} revoked), "
        f"issuer key {stored['issuer_key_sha256']}",
        fields=CRL_COLUMNS,
    )


@app.command("crl-list")
def crl_list(output: OutputOption = None) -> None:
    """List the uploaded manufacturer CRLs."""
    from imprint.api.routes.deny_list import CrlOut

    def local(runtime: Runtime, principal: Principal) -> list[dict[str, Any]]:
        now = runtime.clock.now()
        found = runtime.app.deny_list.search_crls(principal, limit=1000)
        return [CrlOut.of(c, now).model_dump(mode="json") for c in found]

    def remote(api: Api) -> list[dict[str, Any]]:
        return list(api.get(CRLS, limit=1000)["items"])

    crls = perform(local=local, remote=remote)
    render_page(
        {"items": crls, "total": len(crls), "next": None},
        CRL_COLUMNS,
        output,
        noun="manufacturer CRL(s)",
    )


@app.command("crl-remove")
def crl_remove(
    issuer_key: Annotated[str, typer.Argument(help="The issuer key SHA-256 from crl-list")],
    output: OutputOption = None,
) -> None:
    """Forget a manufacturer CRL; that CA's certificates are no longer checked."""
    with _errors():
        value = normalize_fingerprint(issuer_key)
    perform(
        local=lambda rt, p: rt.app.deny_list.remove_crl(p, value),
        remote=lambda api: api.delete(f"{CRLS}/{value}"),
    )
    render_done({"issuer_key_sha256": value, "removed": True}, output, "removed")
