"""The ``imprint`` command line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from imprint.errors import ConfigurationError, ImprintError
from imprint.settings import KeyType, Settings, describe_validation_error, load_settings

if TYPE_CHECKING:
    from imprint.runtime import Database, Runtime

app = typer.Typer(
    help="imprint: self-hosted IoT device provisioning and certificate authority.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
ca_app = typer.Typer(
    help="Create, import and inspect the certificate authority.", no_args_is_help=True
)
admin_app = typer.Typer(help="Manage admin API keys.", no_args_is_help=True)
cert_app = typer.Typer(help="Issue, revoke and list certificates.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(ca_app, name="ca")
app.add_typer(admin_app, name="admin")
app.add_typer(cert_app, name="cert")

# Emoji codes off: fingerprints such as ":AB:" must print as they are. Off a terminal,
# a wide console keeps serials in tables whole so they can be copied.
out = Console(
    highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 200
)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

_config_path: Path | None = None


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ConfigurationError as exc:
        _fail(exc.message, 2)
    except ImprintError as exc:
        _fail(exc.message)


@contextmanager
def _runtime() -> Iterator[Runtime]:
    """An open runtime for one command; errors become one line and an exit code."""
    from imprint.runtime import open_runtime

    settings = _settings()
    with _errors():
        runtime = open_runtime(settings)
    try:
        with _errors():
            yield runtime
    finally:
        runtime.close()


@contextmanager
def _database() -> Iterator[Database]:
    """The database alone (no CA) for one command; errors become one line and an exit
    code."""
    from imprint.runtime import open_database

    settings = _settings()
    with _errors():
        database = open_database(settings)
    try:
        with _errors():
            yield database
    finally:
        database.close()


def _settings(**overrides: object) -> Settings:
    with _errors():
        settings = load_settings(_config_path)
    if overrides:
        data = settings.model_dump()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            data[section][key] = value
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            _fail(describe_validation_error(exc, "command-line options"), 2)
    return settings


@app.callback()
def _main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML configuration file (or $IMPRINT_CONFIG)"),
    ] = None,
) -> None:
    global _config_path
    _config_path = config


@app.command()
def serve() -> None:
    """Run the HTTPS service (sets up data directory, database and CA on first start)."""
    from imprint.logs import configure_logging
    from imprint.runtime import prepare
    from imprint.server import bind_socket, build_server, run_workers

    settings = _settings()
    configure_logging(settings.logging.level, json_format=settings.logging.json_format)
    with _errors():
        runtime, first = prepare(settings)
    url = settings.server.base_url()
    out.print(f"\n[bold]imprint[/] is starting at [bold]{url}[/]")
    out.print(f"  CA certificate: {runtime.root_certfile.resolve()}")
    out.print(f"  SHA-256 fingerprint: {runtime.root_fingerprint()}")
    out.print(f"  Try: curl --cacert {runtime.root_certfile} {url}/healthz")
    if first.admin_token_file is not None:
        token = first.admin_token_file
        out.print("\n  An admin API key was created. Its token is in (keep it secret):")
        out.print(f"    {token.resolve()}")
        out.print("  Log in by sending it as a bearer token, e.g.:")
        out.print(f'    export IMPRINT_TOKEN="$(cat {token})"')
        out.print(
            f'    curl --cacert {runtime.root_certfile} -H "Authorization: Bearer $IMPRINT_TOKEN" '
            f"{url}/api/v1/whoami"
        )
    else:
        out.print(
            "  Admin: use your API key as a bearer token ('imprint admin create NAME' makes one)"
        )
    out.print(f"  API docs: {url}/docs")
    out.print(f"  Web console: {url}/console/ (for users: imprint user create --help)")
    workers = settings.server.workers
    out.print(f"  Workers: {workers} process{'es' if workers > 1 else ''}\n")
    if workers > 1:
        runtime.close()  # each worker opens its own after the fork
        try:
            sock = bind_socket(settings.server.host, settings.server.port)
        except OSError as exc:
            _fail(
                f"the server could not start on {settings.server.host}:{settings.server.port}: "
                f"{exc.strerror}"
            )
        with sock:
            status = run_workers(settings, sock, workers)
        if status:
            _fail("a worker process could not start; see the log above")
        return
    server = build_server(runtime)
    try:
        server.run()
    finally:
        runtime.close()
    if not server.started:
        _fail(f"the server could not start on {settings.server.host}:{settings.server.port}")


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked) as YAML."""
    settings = _settings()
    sys.stdout.write(yaml.safe_dump(settings.masked(), sort_keys=False))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending database migrations."""
    from imprint.store.db import create_engine, current_revision, upgrade

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _errors():
        engine = create_engine(settings.database_url())
        try:
            upgrade(engine)
            out.print(f"database at revision {current_revision(engine)}")
        finally:
            engine.dispose()


@ca_app.command("init")
def ca_init(
    key_type: Annotated[KeyType | None, typer.Option(help="Key algorithm of both CAs")] = None,
    root_name: Annotated[str | None, typer.Option(help="Root CA common name")] = None,
    issuing_name: Annotated[str | None, typer.Option(help="Issuing CA common name")] = None,
    organization: Annotated[str | None, typer.Option(help="Organization (O) of both CAs")] = None,
    root_days: Annotated[int | None, typer.Option(help="Root validity in days")] = None,
    issuing_days: Annotated[int | None, typer.Option(help="Issuing CA validity in days")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing CA")] = False,
) -> None:
    """Create a root CA and an issuing intermediate CA."""
    from imprint.pki.material import init_ca

    overrides = {
        "ca.key_type": key_type,
        "ca.root_name": root_name,
        "ca.issuing_name": issuing_name,
        "ca.organization": organization,
        "ca.root_validity_days": root_days,
        "ca.issuing_validity_days": issuing_days,
    }
    settings = _settings(**{k: v for k, v in overrides.items() if v is not None})
    with _errors():
        material = init_ca(settings, force=force)
    _print_ca(settings, material.root, material.issuing)


@ca_app.command("import")
def ca_import(
    cert: Annotated[Path, typer.Option(help="Issuing CA certificate (PEM or DER)")],
    key: Annotated[
        Path | None,
        typer.Option(
            help="Issuing CA private key (PEM); with ca.pkcs11 it is put into the token, "
            "and without it the token's key under ca.pkcs11.issuing_key_label is used"
        ),
    ] = None,
    chain: Annotated[
        Path | None, typer.Option(help="CA certificates above it, root last (PEM)")
    ] = None,
    key_password_file: Annotated[
        Path | None, typer.Option(help="File with the password of an encrypted key")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing CA")] = False,
) -> None:
    """Bring your own CA: its key is re-encrypted with imprint's CA passphrase, or kept in
    the PKCS#11 token (ca.pkcs11)."""
    from imprint.pki.material import import_ca

    settings = _settings()
    try:
        password = key_password_file.read_bytes().strip() if key_password_file else None
        cert_bytes = cert.read_bytes()
        key_bytes = key.read_bytes() if key else None
        chain_bytes = chain.read_bytes() if chain else None
    except OSError as exc:
        _fail(f"cannot read {exc.filename}: {exc.strerror}")
    with _errors():
        material = import_ca(
            settings,
            certificate=cert_bytes,
            key=key_bytes,
            chain=chain_bytes,
            key_password=password,
            force=force,
        )
    _print_ca(settings, material.root, material.issuing)


@ca_app.command("show")
def ca_show() -> None:
    """Show the CA certificates."""
    from imprint.pki.material import load_ca

    settings = _settings()
    with _errors():
        material = load_ca(settings)
    _print_ca(settings, material.root, material.issuing)


def _print_ca(settings: Settings, root: object, issuing: object) -> None:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from imprint.pki.keys import key_description

    pkcs11 = settings.ca.pkcs11
    where = (
        f"PKCS#11 token {pkcs11.token_label!r}" if pkcs11.library is not None else settings.ca_dir
    )
    table = Table(title=f"CA in {where}")
    for column in ("role", "subject", "key", "not after", "SHA-256 fingerprint"):
        table.add_column(column)
    for role, certificate in (("root", root), ("issuing", issuing)):
        assert isinstance(certificate, x509.Certificate)
        der = certificate.public_bytes(serialization.Encoding.DER)
        table.add_row(
            role,
            certificate.subject.rfc4514_string(),
            key_description(certificate.public_key()),
            certificate.not_valid_after_utc.strftime("%Y-%m-%d"),
            hashlib.sha256(der).hexdigest(),
        )
    out.print(table)


@admin_app.command("create")
def admin_create(name: Annotated[str, typer.Argument(help="A name for the key")]) -> None:
    """Create an admin API key and print its token once."""
    from imprint.tenancy.access import cli_principal

    with _database() as database:
        issued = database.app.api_keys.create(cli_principal(), name)
    err.print(f"API key {name!r} created. Its token is shown once; store it now:")
    sys.stdout.write(issued.token + "\n")


@admin_app.command("list")
def admin_list() -> None:
    """List API keys (never their secrets)."""
    from imprint.tenancy.access import cli_principal

    with _database() as database:
        keys = database.app.api_keys.list(cli_principal())
    table = Table()
    for column in ("name", "role", "created", "last used"):
        table.add_column(column)
    for key in keys:
        last = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never"
        table.add_row(key.name, key.role, key.created_at.strftime("%Y-%m-%d %H:%M"), last)
    out.print(table)


class Profile(StrEnum):
    device = "device"
    client = "client"
    server = "server"


@cert_app.command("issue")
def cert_issue(
    csr: Annotated[Path, typer.Option(help="CSR file (PEM or DER)")],
    profile: Annotated[Profile, typer.Option(help="Certificate profile")] = Profile.device,
    cn: Annotated[str | None, typer.Option(help="Common name (default: the CSR's)")] = None,
    san: Annotated[
        list[str] | None, typer.Option(help="DNS name, IP address or URI; repeat for more")
    ] = None,
    days: Annotated[
        int | None, typer.Option(help="Validity in days (default: the profile's)")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the chain (PEM) here instead of stdout")
    ] = None,
) -> None:
    """Issue a certificate from a CSR; only the CSR's key and common name are used."""
    from imprint.tenancy.access import cli_principal

    try:
        data = csr.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {csr}: {exc.strerror}")
    with _runtime() as runtime:
        issued = runtime.app.certificates.issue(
            cli_principal(),
            data,
            profile=profile.value,
            common_name=cn,
            sans=san or [],
            validity_days=days,
        )
    if out_file:
        out_file.write_text(issued.chain_pem(), encoding="ascii")
    else:
        sys.stdout.write(issued.chain_pem())
    until = issued.record.not_after.strftime("%Y-%m-%d %H:%M")
    err.print(f"issued serial {issued.record.serial}, valid until {until} UTC")


@cert_app.command("revoke")
def cert_revoke(
    serial: Annotated[str, typer.Argument(help="Serial in hex")],
    reason: Annotated[
        str, typer.Option(help="RFC 5280 reason, e.g. keyCompromise")
    ] = "unspecified",
) -> None:
    """Revoke a certificate; the issuer's CRL lists it from now on."""
    from imprint.tenancy.access import cli_principal

    with _runtime() as runtime:
        record = runtime.app.certificates.revoke(cli_principal(), serial, reason)
    out.print(f"revoked {record.serial} ({record.subject}) reason {record.revocation_reason}")


@cert_app.command("list")
def cert_list(
    expiring: Annotated[
        str | None, typer.Option(help="Only those that expire within this, e.g. 30d")
    ] = None,
    status: Annotated[str | None, typer.Option(help="pending, issued, failed or revoked")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows")] = 100,
) -> None:
    """List certificates as a table."""
    from imprint.durations import parse_duration
    from imprint.pki.records import CertificateStatus
    from imprint.tenancy.access import cli_principal

    with _errors():
        within = parse_duration(expiring) if expiring else None
        try:
            wanted = CertificateStatus(status) if status else None
        except ValueError:
            _fail("status must be pending, issued, failed or revoked")
    with _runtime() as runtime:
        records = runtime.app.certificates.search(
            cli_principal(), status=wanted, expiring_within=within, limit=limit
        )
    table = Table(title=f"{len(records)} certificate(s)")
    for column in ("serial", "profile", "subject", "status", "not after"):
        table.add_column(column)
    for record in records:
        table.add_row(
            record.serial,
            record.profile,
            record.subject,
            record.status.value,
            record.not_after.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


#: Command groups that live in their own modules (one per area), by command name.
_EXTENSIONS = {
    "enrollment": "imprint.cli.enrollment",
    "devices": "imprint.cli.devices",
    "regkey": "imprint.cli.regkey",
    "oob": "imprint.cli.oob",
    "denylist": "imprint.cli.denylist",
    "org": "imprint.cli.org",
    "user": "imprint.cli.user",
    "client": "imprint.cli.client",
    "device": "imprint.cli.device",
    "mqtt": "imprint.cli.mqtt",
    "import": "imprint.cli.importer",
    "backup": "imprint.cli.backup",
    "audit": "imprint.cli.audit",
}


def _register_extensions(argv: list[str] | None = None) -> None:
    """Add the command groups ``argv`` names, or all of them when it names none.

    Importing a group pulls in the storage and server modules (about two seconds), so a
    command such as ``imprint device show`` loads only its own group, and a core command
    such as ``imprint cert list`` none. Anything else (``--help``, a typo) gets every
    group, so that the listing of commands is complete.
    """
    import importlib

    words = set(argv or ())
    named = [name for name in _EXTENSIONS if name in words]
    if not named:
        core = words & {command.name or "" for command in app.registered_commands}
        core |= words & {group.name or "" for group in app.registered_groups}
        named = [] if core else list(_EXTENSIONS)
    for name in named:
        module = importlib.import_module(_EXTENSIONS[name])
        app.add_typer(module.app, name=name)


def main() -> None:
    _register_extensions(sys.argv[1:])
    app()
