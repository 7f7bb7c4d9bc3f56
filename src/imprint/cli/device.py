"""``imprint device ...``: provision this machine as a device, renew, and show what it holds.

These commands are the device SDK (:mod:`imprint.device`) on a command line: they talk
to an imprint server over HTTPS and keep everything in one directory (see
docs/device-sdk.md). They read no imprint configuration. Exit status: 0 done, 1
refused or failed, 75 (EX_TEMPFAIL) worth trying again later (no connection, server
busy, still pending).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer

from imprint.device import (
    Bundle,
    DeviceError,
    DeviceStore,
    ImprintClient,
    PendingTimeout,
    RetryPolicy,
    ServiceUnavailable,
    WaitPolicy,
    connect,
    connect_to,
    due_at,
    load_certificates,
    load_private_key,
    provision_client_ca,
    provision_oob_secret,
    provision_registration_key,
    provision_symmetric_key,
    provision_x509,
    renew,
)
from imprint.device.discovery import dns_sd

app = typer.Typer(
    help="Be a device: provision with imprint, renew the certificate, show what is stored.",
    no_args_is_help=True,
)

EX_TEMPFAIL = 75
_ATTEMPTS = typer.Option(
    min=1, help="Tries in all when the server is unreachable, busy (429) or failing (5xx)"
)


class MechanismName(StrEnum):
    x509 = "x509"
    client_ca = "client-ca"
    oob_secret = "oob-secret"  # noqa: S105 (a mechanism name, not a secret)
    symmetric_key = "symmetric-key"
    registration_key = "registration-key"


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """One clear line and a non-zero exit for everything a user can cause."""
    try:
        yield
    except (ServiceUnavailable, PendingTimeout) as exc:
        _fail(exc.message, EX_TEMPFAIL)
    except DeviceError as exc:
        _fail(exc.message)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot use{where}: {exc.strerror or exc}")
    except ValueError as exc:
        _fail(str(exc))


def _log_progress() -> None:
    """Show the SDK's progress (waiting while pending, renewals) on stderr."""
    logger = logging.getLogger("imprint.device")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _secret(path: Path | None, prompt: str) -> str:
    """A secret from a file, typed at a hidden prompt, or piped in; never an argument."""
    if path is not None:
        text = path.read_text(encoding="utf-8").strip()
    elif sys.stdin.isatty():
        text = str(typer.prompt(prompt, hide_input=True)).strip()
    else:
        text = sys.stdin.readline().strip()
    if not text:
        _fail(f"the {prompt.lower()} is empty")
    return text


def _key_bytes(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        _fail(f"the {what} must be base64, as imprint shows it")


def _require(value: Any, option: str, mechanism: str) -> Any:
    if value is None:
        _fail(f"{mechanism} needs {option}")
    return value


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command("provision")
def provision(
    directory: Annotated[Path, typer.Option("--dir", help="Where to keep key and bundle")],
    mechanism: Annotated[MechanismName, typer.Option(help="How the device proves itself")],
    url: Annotated[
        str | None,
        typer.Option(
            help="The imprint server, e.g. https://imprint.local:8443 (default: find it by "
            "DNS-SD on the local network)"
        ),
    ] = None,
    discover_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to look for the server by DNS-SD")
    ] = 5.0,
    ca_file: Annotated[
        Path | None,
        typer.Option(help="CA certificate(s) the server's TLS must chain to (default: system)"),
    ] = None,
    device_id: Annotated[
        str | None,
        typer.Option(help="oob-secret, symmetric-key: the device id; registration-key: serial"),
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            help="oob-secret: the secret; registration-key: the key; symmetric-key: the "
            "device key (base64). Asked for when left out"
        ),
    ] = None,
    group_key_file: Annotated[
        Path | None,
        typer.Option(help="symmetric-key: derive the device key from this group key (base64)"),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(help="x509, client-ca: the device's certificate (PEM, then its CAs)"),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="x509, client-ca: that certificate's key")
    ] = None,
    signed: Annotated[
        bool, typer.Option(help="x509: send a signed request instead of using mutual TLS")
    ] = False,
    enrollment: Annotated[
        str | None, typer.Option(help="Name the enrollment when several could admit the device")
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to keep waiting while pending (approval, secret)")
    ] = 300.0,
    force: Annotated[
        bool, typer.Option(help="Provision anew although the directory holds a device")
    ] = False,
    attempts: Annotated[int, _ATTEMPTS] = 6,
) -> None:
    """Provision this device with imprint and store its key, certificate and bundle."""
    _log_progress()
    store = DeviceStore(directory)
    with _errors():
        if store.exists() and not force:
            _fail(
                f"{directory} already holds device {store.load().device_id!r}; "
                "renew it with 'imprint device renew', or pass --force to provision anew"
            )
        run = _provisioner(mechanism, device_id, secret_file, group_key_file, cert, key, signed)
        with connect_to(
            url,
            discover=dns_sd(),
            timeout=discover_timeout,
            ca_file=ca_file,
            retry=RetryPolicy(max_attempts=attempts),
            wait=WaitPolicy(max_total=wait, max_interval=min(wait, 300) or 1),
        ) as client:
            bundle = run(client, store, enrollment)
            store.save(bundle, server=client)
    typer.echo(
        f"provisioned device {bundle.device_id} (owner {bundle.owner}, enrollment "
        f"{bundle.enrollment_id}, {bundle.mechanism})"
    )
    typer.echo(f"certificate serial {bundle.serial}, valid until {_when(bundle.not_after)}")
    typer.echo(f"renewal due {_when(due_at(bundle))}")
    typer.echo(f"stored in {directory}")


Provisioner = Callable[[ImprintClient, DeviceStore, str | None], Bundle]


def _provisioner(
    mechanism: MechanismName,
    device_id: str | None,
    secret_file: Path | None,
    group_key_file: Path | None,
    cert: Path | None,
    key: Path | None,
    signed: bool,
) -> Provisioner:
    """Check the options of one mechanism and read its secrets, before any connection."""
    name = mechanism.value
    if mechanism in (MechanismName.x509, MechanismName.client_ca):
        chain = load_certificates(_require(cert, "--cert", name))
        own_key = load_private_key(_require(key, "--key", name))
        if mechanism is MechanismName.client_ca:
            return lambda client, store, enrollment: provision_client_ca(
                client, chain, own_key, key=store.pending_key(), enrollment_id=enrollment
            )
        way: Literal["mtls", "signed"] = "signed" if signed else "mtls"
        return lambda client, store, enrollment: provision_x509(
            client, chain, own_key, mode=way, key=store.pending_key(), enrollment_id=enrollment
        )
    identity: str = _require(device_id, "--device-id", name)
    if mechanism is MechanismName.oob_secret:
        secret = _secret(secret_file, "Secret")
        return lambda client, store, enrollment: provision_oob_secret(
            client, identity, secret, key=store.pending_key(), enrollment_id=enrollment
        )
    if mechanism is MechanismName.registration_key:
        registration_key = _secret(secret_file, "Registration key")
        return lambda client, store, enrollment: provision_registration_key(
            client, identity, registration_key, key=store.pending_key(), enrollment_id=enrollment
        )
    if group_key_file is not None:
        if secret_file is not None:
            _fail("give --secret-file (the device key) or --group-key-file, not both")
        group_key = _key_bytes(_secret(group_key_file, "Group key"), "group key")
        return lambda client, store, enrollment: provision_symmetric_key(
            client, identity, group_key=group_key, key=store.pending_key(), enrollment_id=enrollment
        )
    device_key = _key_bytes(_secret(secret_file, "Device key"), "device key")
    return lambda client, store, enrollment: provision_symmetric_key(
        client, identity, device_key=device_key, key=store.pending_key(), enrollment_id=enrollment
    )


@app.command("renew")
def renew_command(
    directory: Annotated[Path, typer.Option("--dir", help="The device directory")],
    force: Annotated[bool, typer.Option(help="Renew even if renewal is not due yet")] = False,
    keep_key: Annotated[
        bool, typer.Option(help="Keep the current key instead of making a new one")
    ] = False,
    signed: Annotated[
        bool, typer.Option(help="Send a signed request instead of using mutual TLS")
    ] = False,
    attempts: Annotated[int, _ATTEMPTS] = 6,
) -> None:
    """Renew the certificate once it is due (two thirds of its lifetime), or now with --force."""
    _log_progress()
    store = DeviceStore(directory)
    with _errors():
        current = store.load()
        due = due_at(current)
        if not force and datetime.now(UTC) < due:
            typer.echo(f"device {current.device_id}: renewal not due until {_when(due)}")
            return
        with connect(store, retry=RetryPolicy(max_attempts=attempts)) as client:
            renewed = renew(
                client, store, new_key=not keep_key, mode="signed" if signed else "auto"
            )
    typer.echo(
        f"renewed device {renewed.device_id}: serial {renewed.serial} (was {current.serial}), "
        f"valid until {_when(renewed.not_after)}"
    )
    typer.echo(f"next renewal due {_when(due_at(renewed))}")


@app.command("show")
def show(
    directory: Annotated[Path, typer.Option("--dir", help="The device directory")],
    show_secrets: Annotated[
        bool, typer.Option(help="Also print the pre-shared key and tokens")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show the stored device: ids, certificate, renewal time, services (secrets hidden)."""
    store = DeviceStore(directory)
    with _errors():
        bundle = store.load()
        server = store.server()
    certificate = bundle.certificate
    due = due_at(bundle)
    hidden = "(hidden; --show-secrets prints it)"
    psk = bundle.pre_shared_key
    shown: dict[str, Any] = {
        "device_id": bundle.device_id,
        "owner": bundle.owner,
        "enrollment_id": bundle.enrollment_id,
        "mechanism": bundle.mechanism,
        "server": server.url,
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": bundle.serial,
        "not_before": _when(certificate.not_valid_before_utc),
        "not_after": _when(certificate.not_valid_after_utc),
        "renew_due": _when(due),
        "renewal_due_now": datetime.now(UTC) >= due,
        "services": dict(bundle.services),
        "pre_shared_key": (psk if show_secrets else hidden) if psk is not None else None,
        "tokens": dict(bundle.tokens) if show_secrets else sorted(bundle.tokens),
        "key_file": str(store.key_path),
        "certificate_file": str(store.cert_path),
        "chain_file": str(store.chain_path),
        "trust_anchors_file": str(store.ca_path),
    }
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        if name == "renewal_due_now":
            continue
        if name == "renew_due" and shown["renewal_due_now"]:
            value = f"{value} (due now)"
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(f"{k} {hidden}" for k in value) or "-"
        elif value is None:
            value = "-"
        typer.echo(f"{name.replace('_', ' '):<{width}}  {value}")
