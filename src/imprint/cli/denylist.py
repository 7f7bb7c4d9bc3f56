"""``imprint denylist ...``: the certificate deny-list and manufacturer CRLs.

Both are read from the database on every attestation, so a change made here reaches a
running server at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from rich.table import Table

from imprint.attestation.revocation import certificate_fingerprint, normalize_fingerprint
from imprint.cli import _errors, _fail, _runtime, out
from imprint.tenancy.access import cli_principal

app = typer.Typer(
    help="Refuse certificates: the deny-list and manufacturer CRLs (x509 attestation).",
    no_args_is_help=True,
)


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
) -> None:
    """Refuse a certificate (device or CA) in every attestation."""
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
    with _runtime() as runtime:
        runtime.app.deny_list.deny(cli_principal(), value, reason)
    out.print(f"denied {value}")


@app.command("list")
def list_denied(limit: Annotated[int, typer.Option(help="At most this many")] = 1000) -> None:
    """List the deny-list."""
    with _runtime() as runtime:
        entries = runtime.app.deny_list.search(cli_principal(), limit=limit)
    table = Table(title=f"{len(entries)} denied certificate(s)")
    for column in ("SHA-256 fingerprint", "reason", "since"):
        table.add_column(column)
    for entry in entries:
        since = entry.created_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(entry.fingerprint_sha256, entry.reason, since)
    out.print(table)


@app.command("remove")
def remove(fingerprint: Annotated[str, typer.Argument(help="SHA-256 fingerprint, hex")]) -> None:
    """Accept a denied certificate again."""
    with _runtime() as runtime:
        value = runtime.app.deny_list.undeny(cli_principal(), fingerprint)
    out.print(f"removed {value} from the deny-list")


@app.command("crl-upload")
def crl_upload(crl: Annotated[Path, typer.Argument(help="CRL file, PEM or DER")]) -> None:
    """Store a manufacturer CA's CRL; it must be signed by a CA of an x509 enrollment."""
    data = _read(crl)
    with _runtime() as runtime:
        stored = runtime.app.deny_list.upload_crl(cli_principal(), data)
    out.print(
        f"stored the CRL of {stored.issuer} ({stored.revoked_count} revoked), "
        f"issuer key {stored.issuer_key_sha256}"
    )


@app.command("crl-list")
def crl_list() -> None:
    """List the uploaded manufacturer CRLs."""
    with _runtime() as runtime:
        crls = runtime.app.deny_list.search_crls(cli_principal(), limit=1000)
        now = runtime.clock.now()
    table = Table(title=f"{len(crls)} manufacturer CRL(s)")
    for column in ("issuer", "issuer key SHA-256", "revoked", "next update", "stale"):
        table.add_column(column)
    for crl in crls:
        table.add_row(
            crl.issuer,
            crl.issuer_key_sha256,
            str(crl.revoked_count),
            crl.next_update.strftime("%Y-%m-%d %H:%M") if crl.next_update else "-",
            "yes" if crl.is_stale(now) else "no",
        )
    out.print(table)


@app.command("crl-remove")
def crl_remove(
    issuer_key: Annotated[str, typer.Argument(help="The issuer key SHA-256 from crl-list")],
) -> None:
    """Forget a manufacturer CRL; that CA's certificates are no longer checked."""
    with _runtime() as runtime:
        runtime.app.deny_list.remove_crl(cli_principal(), issuer_key)
    out.print("removed")
