"""``imprint mqtt ...``: a Mosquitto broker that trusts imprint's device certificates.

Both commands run on the server's own host only (never through a login profile): they
write the broker's configuration, its private key, the ACL and the CRL into a directory
of that host, and ``sync`` signals the Mosquitto process running there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imprint.cli import _errors, _fail, _local_only, _runtime, _settings, out

app = typer.Typer(
    help="Run Mosquitto with imprint's certificates, ACLs and revocations.",
    no_args_is_help=True,
)


@app.command("config")
def config(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Directory to write (default: mqtt.dir, else DATA_DIR/mqtt)"),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Broker TLS port (default: mqtt.port)")] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: mqtt.host)")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(help="User the broker switches to when started as root (mosquitto's 'user')"),
    ] = None,
) -> None:
    """Write mosquitto.conf, the ACL file, the CRL, our CA chain and a broker certificate."""
    _local_only()
    from imprint.mqtt.broker import write_broker_setup

    overrides: dict[str, object] = {"mqtt.dir": out_dir, "mqtt.port": port, "mqtt.host": host}
    settings = _settings(**{k: v for k, v in overrides.items() if v is not None})
    with _runtime() as runtime, _errors():
        files = write_broker_setup(settings, runtime.authority, run_as=user, clock=runtime.clock)
    out.print(f"wrote {files.config}")
    for path in (files.acl, files.crl, files.ca, files.certificate, files.key):
        out.print(f"      {path}")
    out.print(f"run: mosquitto -c {files.config}")
    if not settings.mqtt.enabled or (out_dir is not None and settings.mqtt.dir != out_dir):
        out.print(
            f"then set mqtt.enabled: true and mqtt.dir: {files.directory} so that imprint "
            "keeps its CRL and ACL current"
        )


@app.command("sync")
def sync() -> None:
    """Rewrite the CRL and ACL now and make the broker reload them (run it from cron too:
    the CRL must be renewed before it expires)."""
    from imprint.mqtt.broker import BrokerFiles, BrokerSync

    _local_only()
    settings = _settings()
    files = BrokerFiles(settings.mqtt_dir())
    if not files.config.is_file():
        _fail(f"no {files.config}: run 'imprint mqtt config' first")
    with _runtime() as runtime, _errors():
        result = BrokerSync(settings.mqtt, files, runtime.authority, runtime.clock).sync()
    out.print(f"{result.users} broker user(s) in {files.acl}; CRL {files.crl}")
    for reason in result.skipped:
        out.print(f"  left out: {reason}")
    out.print("broker reloaded" if result.reloaded else "no running broker found to reload")
