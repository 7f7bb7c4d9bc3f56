"""The ``imprint`` command line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from imprint.cli.calls import AllOption, CursorOption, LimitOption
from imprint.cli.output import (
    Column,
    Format,
    OutputOption,
    render_done,
    render_item,
    render_page,
    set_default_format,
)
from imprint.errors import ConfigurationError, ImprintError
from imprint.settings import KeyType, Settings, describe_validation_error, load_settings

if TYPE_CHECKING:
    from imprint.runtime import Database, Runtime
    from imprint.tenancy.access import Principal

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
admin_app = typer.Typer(
    help="Manage admin API keys: create, list, rotate, revoke.", no_args_is_help=True
)
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


def _local_only() -> None:
    """Refuse a command that has no remote form while a login profile is chosen, rather
    than quietly run it on this machine's data directory."""
    from imprint.cli.calls import remote_profile

    try:
        profile = remote_profile()
    except ConfigurationError as exc:
        _fail(exc.message, 2)
    if profile is not None:
        _fail(
            f"this command runs on the server's own data directory, not through profile "
            f"{profile.name!r}; on the server, add --local",
            2,
        )


@contextmanager
def _runtime() -> Iterator[Runtime]:
    """An open runtime for one command; errors become one line and an exit code."""
    from imprint.runtime import open_runtime

    _local_only()
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

    _local_only()
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


def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """A secret from the terminal (not echoed), or the first line of standard input when
    that is not a terminal (``echo "$PASSWORD" | imprint ...``), without a warning."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    try:
        value = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"Repeat the {prompt.lower()}: ") != value:
            _fail("the two entries differ")
    except (EOFError, KeyboardInterrupt):
        err.print()
        raise typer.Exit(1) from None
    return value


def _version(value: bool) -> None:
    if value:
        from imprint import __version__

        sys.stdout.write(f"imprint {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML configuration file (or $IMPRINT_CONFIG)"),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", "-p", help="Run against this server profile (or $IMPRINT_PROFILE)"
        ),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Use this machine's data directory, not a profile")
    ] = False,
    output: OutputOption = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version"),
    ] = False,
) -> None:
    global _config_path
    from imprint.cli.calls import selection
    from imprint.logs import configure_logging

    # A command's own output is on stdout; the service's log lines (a cache listener
    # connecting, a retry) are not part of it: warnings and worse only, on stderr.
    # `imprint serve` configures the log as the settings say.
    configure_logging("warning")

    _config_path = config
    selection.profile = profile
    selection.local = local
    set_default_format(output)


@app.command("login")
def login_command(
    server: Annotated[str, typer.Option(help="The server's URL, e.g. https://imprint.example")],
    profile: Annotated[
        str | None,
        typer.Option(help="Save as this profile (default: the global --profile, or 'default')"),
    ] = None,
    username: Annotated[
        str | None, typer.Option(help="Sign in as this user (password asked for, or on stdin)")
    ] = None,
    organization: Annotated[
        str | None, typer.Option(help="With --username: the organization to act for")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA certificate (PEM) to trust the server with")
    ] = None,
    device: Annotated[
        bool,
        typer.Option(
            "--device",
            help="Sign in as a user in a browser: approve the code shown here in the console",
        ),
    ] = False,
) -> None:
    """Log in to a server and save it as a profile (then the default for every command).

    Without --username or --device, an API key (or another bearer token) is asked for,
    or read from standard input or $IMPRINT_TOKEN.
    """
    from imprint.cli.login import login

    login(server, profile, username, organization, ca_file, device=device)


@app.command("logout")
def logout_command(
    profile: Annotated[
        str | None, typer.Option(help="The profile to remove (default: the current one)")
    ] = None,
) -> None:
    """Forget a profile and its credential (an API key stays valid: revoke it there)."""
    from imprint.cli.login import logout

    logout(profile)


@app.command()
def serve() -> None:
    """Run the HTTPS service (sets up data directory, database and CA on first start)."""
    from imprint.logs import configure_logging
    from imprint.runtime import prepare
    from imprint.server import bind_sockets, build_server, run_workers, settle_heap

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
    workers = settings.worker_count()
    out.print(f"  Workers: {workers} process{'es' if workers > 1 else ''}\n")
    if workers > 1:
        runtime.close()  # each worker opens its own after the fork
        try:
            sockets = bind_sockets(settings.server.host, settings.server.port, workers)
        except OSError as exc:
            _fail(
                f"the server could not start on {settings.server.host}:{settings.server.port}: "
                f"{exc.strerror}"
            )
        try:
            status = run_workers(settings, sockets)
        finally:
            for sock in sockets:
                sock.close()
        if status:
            _fail("a worker process could not start; see the log above")
        return
    server = build_server(runtime)
    settle_heap()
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


API_KEY_COLUMNS = [
    Column("name", "name", key=True),
    Column("key id", "key_id", key=True),
    Column("role", "role"),
    Column("created", "created_at"),
    Column("last used", "last_used_at"),
    Column("expires", "expires_at"),
]


def _key_json(key: object, token: str | None = None) -> dict[str, object]:
    from imprint.api.routes.api_keys import ApiKeyOut, IssuedApiKeyOut
    from imprint.auth.api_keys import ApiKey

    assert isinstance(key, ApiKey)
    shown = ApiKeyOut.of(key)
    if token is not None:
        return IssuedApiKeyOut(**shown.model_dump(), token=token).model_dump(mode="json")
    return shown.model_dump(mode="json")


def _print_token(issued: dict[str, object], output: Format | None, what: str) -> None:
    if (output or _default_format()) is Format.table:
        err.print(f"{what} Its token is shown once; store it now:")
        sys.stdout.write(f"{issued['token']}\n")
    else:
        render_item(issued, output, fields=[*API_KEY_COLUMNS, Column("token", "token")])


def _default_format() -> Format:
    from imprint.cli.output import default_format

    return default_format()


ExpiresOption = Annotated[
    int | None, typer.Option("--expires-in-days", help="The key stops working after this")
]


@admin_app.command("create")
def admin_create(
    name: Annotated[str, typer.Argument(help="A name for the key")],
    expires_in_days: ExpiresOption = None,
    output: OutputOption = None,
) -> None:
    """Create an admin API key and print its token once."""
    from datetime import timedelta

    from imprint.cli.calls import perform

    lifetime = None if expires_in_days is None else timedelta(days=expires_in_days)

    def local(db: Database, principal: Principal) -> dict[str, object]:
        made = db.app.api_keys.create(principal, name, expires_in=lifetime)
        return _key_json(made.key, made.token)

    issued = perform(
        local=None,
        database=local,
        remote=lambda api: api.post(
            "/api/v1/api-keys", {"name": name, "expires_in_days": expires_in_days}
        ),
    )
    _print_token(issued, output, f"API key {name!r} created.")


@admin_app.command("list")
def admin_list(
    limit: LimitOption = 100,
    cursor: CursorOption = None,
    every: AllOption = False,
    output: OutputOption = None,
) -> None:
    """List API keys (never their secrets), with their last use and expiry."""
    from imprint.cli.calls import Paging, paged

    found = paged(
        lambda db, principal, after: db.app.api_keys.page(principal, limit=limit, after=after),
        "/api/v1/api-keys",
        item=_key_json,
        paging=Paging(limit, cursor, every),
        database=True,
    )
    render_page(found, API_KEY_COLUMNS, output, noun="API key(s)")


@admin_app.command("rotate")
def admin_rotate(
    name: Annotated[str, typer.Argument(help="The key's name")],
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", help="A new expiry (default: keep it)")
    ] = None,
    output: OutputOption = None,
) -> None:
    """Give a key a new token (printed once); the old token stops working at once."""
    from datetime import timedelta

    from imprint.cli.calls import perform

    lifetime = None if expires_in_days is None else timedelta(days=expires_in_days)

    def local(db: Database, principal: Principal) -> dict[str, object]:
        made = db.app.api_keys.rotate(principal, name, expires_in=lifetime)
        return _key_json(made.key, made.token)

    issued = perform(
        local=None,
        database=local,
        remote=lambda api: api.post(
            f"/api/v1/api-keys/{_path(name)}/rotate", {"expires_in_days": expires_in_days}
        ),
    )
    _print_token(issued, output, f"API key {name!r} rotated.")


@admin_app.command("revoke")
def admin_revoke(
    name: Annotated[str, typer.Argument(help="The key's name")],
    output: OutputOption = None,
) -> None:
    """Revoke a key: refused from the next request on."""
    from imprint.cli.calls import perform

    perform(
        local=None,
        database=lambda db, p: db.app.api_keys.revoke(p, name),
        remote=lambda api: api.delete(f"/api/v1/api-keys/{_path(name)}"),
    )
    render_done({"name": name, "revoked": True}, output, f"API key {name!r} revoked")


def _path(segment: str) -> str:
    """One path segment, escaped."""
    from urllib.parse import quote

    return quote(segment, safe="")


class Profile(StrEnum):
    device = "device"
    client = "client"
    server = "server"


CERTIFICATE_COLUMNS = [
    Column("serial", "serial", key=True),
    Column("profile", "profile"),
    Column("subject", "subject"),
    Column("owner", "owner"),
    Column("status", "status"),
    Column("not after", "not_after"),
]


def _certificate_json(record: object) -> dict[str, object]:
    from imprint.api.routes.certificates import CertificateOut
    from imprint.pki.records import CertificateRecord

    assert isinstance(record, CertificateRecord)
    return CertificateOut.of(record).model_dump(mode="json")


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
    output: OutputOption = None,
) -> None:
    """Issue a certificate from a CSR; only the CSR's key and common name are used."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from imprint.cli.calls import perform

    try:
        data = csr.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {csr}: {exc.strerror}")

    def local(runtime: Runtime, principal: Principal) -> dict[str, object]:
        issued = runtime.app.certificates.issue(
            principal,
            data,
            profile=profile.value,
            common_name=cn,
            sans=san or [],
            validity_days=days,
        )
        return {**_certificate_json(issued.record), "chain": issued.chain_pem()}

    def remote(api: Any) -> dict[str, object]:
        pem = data.decode("ascii", "replace")
        if "-----BEGIN" not in pem:
            try:
                request = x509.load_der_x509_csr(data)
            except ValueError:
                _fail(f"{csr}: not a CSR in PEM or DER")
            pem = request.public_bytes(serialization.Encoding.PEM).decode("ascii")
        body = {
            "csr": pem,
            "profile": profile.value,
            "common_name": cn,
            "sans": san or [],
            "validity_days": days,
        }
        answer: dict[str, object] = api.post("/api/v1/certificates", body)
        return answer

    issued = perform(local=local, remote=remote)
    chain = str(issued["chain"])
    if (output or _default_format()) is not Format.table:
        render_item(issued, output, fields=[*CERTIFICATE_COLUMNS, Column("chain", "chain")])
    elif out_file:
        out_file.write_text(chain, encoding="ascii")
    else:
        sys.stdout.write(chain)
    err.print(f"issued serial {issued['serial']}, valid until {issued['not_after']}")


@cert_app.command("revoke")
def cert_revoke(
    serial: Annotated[str, typer.Argument(help="Serial in hex")],
    reason: Annotated[
        str, typer.Option(help="RFC 5280 reason, e.g. keyCompromise")
    ] = "unspecified",
    output: OutputOption = None,
) -> None:
    """Revoke a certificate; the issuer's CRL lists it from now on."""
    from imprint.cli.calls import perform

    record = perform(
        local=lambda rt, p: _certificate_json(rt.app.certificates.revoke(p, serial, reason)),
        remote=lambda api: api.post(
            f"/api/v1/certificates/{_path(serial)}/revoke", {"reason": reason}
        ),
    )
    render_done(
        record,
        output,
        f"revoked {record['serial']} ({record['subject']}) reason {record['revocation_reason']}",
        fields=CERTIFICATE_COLUMNS,
    )


@cert_app.command("list")
def cert_list(
    expiring: Annotated[
        str | None, typer.Option(help="Only those that expire within this, e.g. 30d")
    ] = None,
    status: Annotated[str | None, typer.Option(help="pending, issued, failed or revoked")] = None,
    limit: LimitOption = 100,
    cursor: CursorOption = None,
    every: AllOption = False,
    output: OutputOption = None,
) -> None:
    """List certificates."""
    from imprint.cli.calls import Paging, paged
    from imprint.durations import parse_duration
    from imprint.pki.records import CertificateStatus

    with _errors():
        within = parse_duration(expiring) if expiring else None
        try:
            wanted = CertificateStatus(status) if status else None
        except ValueError:
            _fail("status must be pending, issued, failed or revoked")
    found = paged(
        lambda rt, principal, after: rt.app.certificates.page(
            principal, status=wanted, expiring_within=within, limit=limit, after=after
        ),
        "/api/v1/certificates",
        item=_certificate_json,
        params={"status": status, "expiring_within": expiring},
        paging=Paging(limit, cursor, every),
    )
    render_page(found, CERTIFICATE_COLUMNS, output, noun="certificate(s)")


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
    "profile": "imprint.cli.login:profile_app",
    "webhook": "imprint.cli.webhook",
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
        module_name, _, attribute = _EXTENSIONS[name].partition(":")
        module = importlib.import_module(module_name)
        app.add_typer(getattr(module, attribute or "app"), name=name)


def main() -> None:
    _register_extensions(sys.argv[1:])
    app()
