"""Mosquitto's files, kept by imprint: configuration, certificates, CRL and ACL.

``imprint mqtt config`` writes everything into one directory (:func:`write_broker_setup`).
From then on, with ``mqtt.enabled``, every issuance and revocation rewrites the CRL and
the ACL there and makes the running broker reload them (:class:`BrokerSync`): SIGHUP to
the pid in the broker's pid file, or the configured ``mqtt.reload_command``. Mosquitto
re-reads ``crlfile`` and ``acl_file`` on SIGHUP, so a revoked device's next TLS
handshake is refused without a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imprint.audit import StateChange
from imprint.clock import Clock, SystemClock
from imprint.errors import ConfigurationError
from imprint.locks import Lock
from imprint.logs import get_logger
from imprint.mqtt.acl import acl_entries, current_certificates, render_acl
from imprint.pki.authority import CertificateAuthority, IssuanceRequest
from imprint.pki.records import CertificateRecord
from imprint.settings import MqttSettings, Settings

__all__ = ["BrokerFiles", "BrokerSync", "SyncResult", "render_config", "write_broker_setup"]

log = get_logger(__name__)

SIGHUP_WAIT_SECONDS = 5.0
"""How long a reload waits for a starting broker to install its SIGHUP handler."""
_PROC_SELF = Path("/proc/self")


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the broker's files live (all in one directory)."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def acl(self) -> Path:
        return self.directory / "acl"

    @property
    def crl(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def certificate(self) -> Path:
        return self.directory / "broker.crt"

    @property
    def key(self) -> Path:
        return self.directory / "broker.key"

    @property
    def default_pid_file(self) -> Path:
        return self.directory / "mosquitto.pid"


def render_config(files: BrokerFiles, settings: MqttSettings, *, run_as: str | None = None) -> str:
    """The text of mosquitto.conf for these files and settings."""
    pid_file = settings.pid_file or files.default_pid_file
    lines = [
        "# Mosquitto configuration written by 'imprint mqtt config'.",
        "# Devices connect with the certificate imprint issued them; its common name (the",
        "# device id) is their user name. imprint rewrites crl.pem and acl on every",
        "# issuance and revocation and sends this broker SIGHUP to reload them.",
        "per_listener_settings false",
        "allow_anonymous false",
        "persistence false",
        f"pid_file {pid_file.resolve()}",
        f"acl_file {files.acl.resolve()}",
    ]
    if run_as:
        lines.append(f"user {run_as}")
    lines += [
        "",
        f"listener {settings.port} {settings.host}",
        "protocol mqtt",
        f"cafile {files.ca.resolve()}",
        f"certfile {files.certificate.resolve()}",
        f"keyfile {files.key.resolve()}",
        f"crlfile {files.crl.resolve()}",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    return "\n".join(lines) + "\n"


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically: the broker never reads half a file. Each writer has a temporary
    file of its own (two deliveries may rewrite the CRL at once), removed if it fails."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _revoked_serials(crl_pem: bytes) -> frozenset[int] | None:
    """The serials a CRL lists (None: no readable CRL). A CRL made again with the same
    list differs in its dates only: the broker refuses nobody new."""
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError:
        return None
    return frozenset(r.serial_number for r in crl)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one sync did: ACL users written, names left out, whether the broker reloaded,
    and whether the revocations or the ACL the broker enforces changed."""

    users: int
    skipped: tuple[str, ...]
    reloaded: bool
    revoked: int = 0
    crl_changed: bool = False
    acl_changed: bool = False

    @property
    def changed(self) -> bool:
        return self.crl_changed or self.acl_changed


class BrokerSync:
    """Keeps the CRL and ACL files current and makes the broker reload them.

    Registered as a :class:`~imprint.pki.authority.CertificateListener` when
    ``mqtt.enabled``; does nothing until ``imprint mqtt config`` has written the setup.
    """

    def __init__(
        self,
        settings: MqttSettings,
        files: BrokerFiles,
        authority: CertificateAuthority,
        clock: Clock | None = None,
    ):
        self._settings = settings
        self._files = files
        self._authority = authority
        self._clock = clock or SystemClock()
        self._lock = Lock()  # held across statements: see imprint.locks

    def certificate_changed(self, record: CertificateRecord) -> StateChange | None:
        """Sync the broker's files; the change, when the CRL's revocations or the ACL
        differ from what the broker had (a renewal that changes neither is no change)."""
        if record.profile == "server" or not self._files.config.is_file():
            return None
        result = self.sync()
        log.info(
            "mqtt_broker_synced",
            serial=record.serial,
            status=record.status.value,
            users=result.users,
            reloaded=result.reloaded,
        )
        if not result.changed:
            return None
        return StateChange(
            action="mqtt.broker.sync",
            target_type="mqtt_broker",
            target_id=str(self._files.directory),
            details={
                "serial": record.serial,
                "status": record.status.value,
                "crl_changed": result.crl_changed,
                "acl_changed": result.acl_changed,
                "revoked": result.revoked,
                "users": result.users,
                "reloaded": result.reloaded,
            },
        )

    def sync(self, *, reload: bool = True) -> SyncResult:
        """Rewrite crl.pem and acl from the ledger, then reload the broker.

        Raises:
            ConfigurationError: the reload command failed.
        """
        with self._lock:
            crl = self._authority.crl("issuing").public_bytes(serialization.Encoding.PEM)
            records = current_certificates(self._authority.ledger, self._clock.now())
            entries, skipped = acl_entries(records)
            acl = render_acl(entries, skipped).encode("utf-8")
            revoked = _revoked_serials(crl) or frozenset()
            before_crl, before_acl = _read(self._files.crl), _read(self._files.acl)
            crl_changed = before_crl is None or _revoked_serials(before_crl) != revoked
            _write(self._files.crl, crl)
            _write(self._files.acl, acl)
            reloaded = self.reload() if reload else False
        return SyncResult(
            len(entries),
            tuple(skipped),
            reloaded,
            revoked=len(revoked),
            crl_changed=crl_changed,
            acl_changed=before_acl != acl,
        )

    def reload(self) -> bool:
        """Make the broker re-read its files; False when no broker is running (the pid
        file names no process, or one that never handles SIGHUP).

        Raises:
            ConfigurationError: the reload command failed.
        """
        if self._settings.reload_command:
            try:
                done = subprocess.run(
                    self._settings.reload_command,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConfigurationError(f"mqtt.reload_command failed: {exc}") from None
            if done.returncode != 0:
                raise ConfigurationError(
                    f"mqtt.reload_command exited with status {done.returncode}"
                )
            return True
        pid_file = self._settings.pid_file or self._files.default_pid_file
        try:
            pid = int(pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return False
        if pid <= 1:
            return False  # 0, -1 would signal a process group or everyone; 1 is init
        if not _catches_sighup(pid):
            log.warning("mqtt_broker_not_reloaded", pid=pid, pid_file=str(pid_file))
            return False
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return False
        return True


def _catches_sighup(pid: int) -> bool:
    """Whether ``pid`` handles SIGHUP; for a process started less than
    :data:`SIGHUP_WAIT_SECONDS` ago, waiting until it does or is that old.

    Mosquitto writes its pid file before it opens its listeners and installs its signal
    handlers only after: a SIGHUP in between ends the broker. So the signal waits for the
    handler (Linux: the caught signals, ``SigCgt``, in ``/proc/PID/status``). An older
    process that does not catch SIGHUP (a stale pid file's pid, now another program's)
    gets none, at once. Where ``/proc`` cannot tell (another system, a ``/proc``
    mounted ``hidepid``): True, as before this check.
    """
    if not _PROC_SELF.is_dir():
        return True
    deadline: float | None = None
    while True:
        try:
            status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False  # no such process (any more)
        except OSError:
            return True  # not ours to read: signal as without the check
        caught = next((line for line in status.splitlines() if line.startswith("SigCgt:")), None)
        if caught is None:
            return True
        if int(caught.partition(":")[2].strip() or "0", 16) & (1 << (signal.SIGHUP - 1)):
            return True
        if deadline is None:
            age = _age(pid)
            if age is None or age >= SIGHUP_WAIT_SECONDS:
                return False
            deadline = time.monotonic() + SIGHUP_WAIT_SECONDS - age
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _age(pid: int) -> float | None:
    """Seconds since ``pid`` started (Linux), None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
        # The name (field 2) is in parentheses and may hold spaces: count after it.
        started = int(stat.rpartition(")")[2].split()[19])  # field 22, clock ticks
    except (OSError, ValueError, IndexError):
        return None
    return uptime - started / os.sysconf("SC_CLK_TCK")


def write_broker_setup(
    settings: Settings,
    authority: CertificateAuthority,
    *,
    run_as: str | None = None,
    clock: Clock | None = None,
) -> BrokerFiles:
    """Write mosquitto.conf, the broker's certificate and key, our CA chain, CRL and ACL.

    The broker's certificate (server profile, names from ``mqtt.san``) is issued anew
    each time; its key never leaves the directory (0600).
    """
    files = BrokerFiles(settings.mqtt_dir())
    files.directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = authority.issue(
        IssuanceRequest(
            public_key=key.public_key(),
            profile="server",
            common_name=settings.mqtt.san[0],
            sans=list(settings.mqtt.san),
            requested_by="imprint:mqtt",
        )
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(files.key, key_pem, 0o600)
    _write(files.certificate, _pem((issued.certificate, *authority.chain[:-1])))
    _write(files.ca, _pem(authority.chain))
    _write(files.config, render_config(files, settings.mqtt, run_as=run_as).encode("utf-8"))
    BrokerSync(settings.mqtt, files, authority, clock).sync(reload=False)
    return files
