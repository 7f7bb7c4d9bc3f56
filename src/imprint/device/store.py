"""The device directory: its key, certificates and bundle, written so a crash loses nothing.

::

    DIR/                  mode 0700
      key.pem             0600  the device's private key (PKCS#8 PEM)
      next-key.pem        0600  a key waiting for its certificate (provisioning, renewal)
      bundle.json         0600  the bundle: ids, owner, times, services, PSK, tokens,
                                the certificate chain, trust anchors and the server
      cert.pem            0644  the device certificate          } copies of what
      chain.pem           0644  the certificate, then its CA(s) } bundle.json holds,
      ca.pem              0644  imprint's root(s)               } for other programs
      server-ca.pem       0644  what the server's TLS certificate is checked with

Each file is written to a temporary file in the same directory, flushed, and renamed
over the old one (``os.replace``), so a reader sees the old file or the new one, never
half of one. ``bundle.json`` is the commit point: a new key is first written to
``next-key.pem``, then ``bundle.json`` is replaced, then ``next-key.pem`` becomes
``key.pem``. Loading finishes a save that a crash interrupted after the commit, and
rewrites the PEM copies when they differ from ``bundle.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imprint.device.bundle import Bundle, verify_chain
from imprint.device.client import ImprintClient
from imprint.device.errors import StoreError, VerificationFailed
from imprint.device.keys import (
    PrivateKey,
    chain_pem,
    generate_key,
    private_key_pem,
    public_key_der,
)

__all__ = ["STORE_FORMAT", "DeviceStore", "ServerInfo"]

STORE_FORMAT = 1
log = logging.getLogger("imprint.device")

KEY = "key.pem"
NEXT_KEY = "next-key.pem"
BUNDLE = "bundle.json"
CERT = "cert.pem"
CHAIN = "chain.pem"
CA = "ca.pem"
SERVER_CA = "server-ca.pem"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Where the device was provisioned: the server's URL and what its TLS is checked with.

    Attributes:
        url: ``https://host[:port][/prefix]``.
        ca_pem: the CA certificate(s) the server's certificate must chain to; None
            means the system's trust store.
    """

    url: str
    ca_pem: str | None = None

    @classmethod
    def of(cls, client: ImprintClient) -> ServerInfo:
        """The server a client talks to, and what it trusts for that server's TLS."""
        return cls(client.base_url, client.trust_pem)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` in one step, the file created with ``mode``."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise StoreError(f"bundle.json has no {name}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise StoreError(f"bundle.json: {name} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise StoreError(f"bundle.json has no {name}")
    return value


def _strings(data: Mapping[str, Any], name: str) -> dict[str, str]:
    value = data.get(name, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise StoreError(f"bundle.json: {name} is not an object of strings")
    return {str(k): v for k, v in value.items()}


def _tokens(data: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    value = data.get("tokens", {})
    if not isinstance(value, dict):
        raise StoreError("bundle.json: tokens is not an object")
    return {str(name): _strings(value, str(name)) for name in value}


def _certificates(value: object, name: str) -> tuple[x509.Certificate, ...]:
    try:
        if not isinstance(value, str):
            raise ValueError
        found = tuple(x509.load_pem_x509_certificates(value.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        raise StoreError(f"bundle.json: {name} is not PEM certificates") from None
    return found


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class DeviceStore:
    """A provisioned device's files in one directory.

    Example::

        store = DeviceStore("/var/lib/sensor")
        key = store.pending_key()                  # kept across a crash and a retry
        bundle = provision_oob_secret(client, "sensor-17", secret, key=key)
        store.save(bundle, server=client)
        store.load().certificate                   # later, and after a restart

    Args:
        directory: created (mode 0700) on the first save.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"DeviceStore({str(self.directory)!r})"

    # -- paths -------------------------------------------------------------------------

    @property
    def key_path(self) -> Path:
        return self.directory / KEY

    @property
    def bundle_path(self) -> Path:
        return self.directory / BUNDLE

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT

    @property
    def chain_path(self) -> Path:
        return self.directory / CHAIN

    @property
    def ca_path(self) -> Path:
        return self.directory / CA

    @property
    def server_ca_path(self) -> Path:
        return self.directory / SERVER_CA

    def exists(self) -> bool:
        """Whether the directory holds a provisioned device (a bundle)."""
        return self.bundle_path.is_file()

    # -- keys --------------------------------------------------------------------------

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if _mode(self.directory) & 0o077:
                self.directory.chmod(0o700)
        except OSError as exc:
            raise StoreError(f"cannot use {self.directory}: {exc.strerror}") from None

    def _read_key(self, path: Path) -> PrivateKey:
        if _mode(path) & 0o077:
            raise StoreError(
                f"{path} can be read by others (mode {_mode(path):04o}); "
                f"run 'chmod 600 {path}' if the key was not exposed, else provision anew"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        except (ValueError, TypeError):
            raise StoreError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(key, PrivateKey):
            raise StoreError(f"{path} holds a key type the SDK cannot use")
        return key

    def pending_key(self) -> PrivateKey:
        """The key for the next certificate: ``next-key.pem``, made (P-256) when absent.

        Provision or renew with this key and then :meth:`save`: if the device crashes
        in between, the next attempt asks again with the same key, and imprint answers
        with the certificate it already issued for it.

        Raises:
            StoreError: the directory cannot be written or the file is unusable.
        """
        self._ensure_directory()
        path = self.directory / NEXT_KEY
        if path.exists():
            return self._read_key(path)
        key = generate_key()
        try:
            _write_atomic(path, private_key_pem(key), 0o600)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror}") from None
        return key

    def discard_pending_key(self) -> None:
        """Forget ``next-key.pem`` (e.g. after the server refused it for good)."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / NEXT_KEY).unlink()

    # -- saving ------------------------------------------------------------------------

    def save(self, bundle: Bundle, *, server: ServerInfo | ImprintClient) -> None:
        """Store a verified bundle and its key, replacing what was there.

        Args:
            bundle: what a ``provision_*`` function or :func:`renew` returned.
            server: where it came from: the client used, or a :class:`ServerInfo`.

        Raises:
            StoreError: the directory or a file cannot be written.
        """
        if isinstance(server, ImprintClient):
            server = ServerInfo.of(server)
        self._ensure_directory()
        record = {
            "format": STORE_FORMAT,
            "device_id": bundle.device_id,
            "owner": bundle.owner,
            "enrollment_id": bundle.enrollment_id,
            "mechanism": bundle.mechanism,
            "serial": bundle.serial,
            "not_after": bundle.not_after.isoformat(),
            "renew_after": bundle.renew_after.isoformat(),
            "services": dict(bundle.services),
            "pre_shared_key": bundle.pre_shared_key,
            "tokens": {name: dict(token) for name, token in bundle.tokens.items()},
            "request_id": bundle.request_id,
            "certificate_chain": bundle.chain_pem,
            "trust_anchors": bundle.trust_anchors_pem,
            "server": {"url": server.url, "ca": server.ca_pem},
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        key_pem = private_key_pem(bundle.private_key)
        next_path = self.directory / NEXT_KEY
        try:
            if not next_path.exists() or next_path.read_bytes() != key_pem:
                _write_atomic(next_path, key_pem, 0o600)
            _write_atomic(self.bundle_path, (json.dumps(record, indent=2) + "\n").encode(), 0o600)
            os.replace(next_path, self.key_path)
            _sync_directory(self.directory)
            self._write_copies(bundle.chain, bundle.trust_anchors, server.ca_pem)
        except OSError as exc:
            raise StoreError(f"cannot write to {self.directory}: {exc.strerror}") from None

    def _write_copies(
        self,
        chain: tuple[x509.Certificate, ...],
        anchors: tuple[x509.Certificate, ...],
        server_ca: str | None,
    ) -> None:
        wanted = {CERT: chain_pem(chain[:1]), CHAIN: chain_pem(chain), CA: chain_pem(anchors)}
        if server_ca is not None:
            wanted[SERVER_CA] = server_ca
        for name, text in wanted.items():
            path = self.directory / name
            if not path.exists() or path.read_text(encoding="ascii") != text:
                _write_atomic(path, text.encode("ascii"), 0o644)
        if server_ca is None:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / SERVER_CA).unlink()

    # -- loading -----------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        if not self.bundle_path.is_file():
            raise StoreError(f"{self.directory} holds no provisioned device (no {BUNDLE})")
        try:
            record = json.loads(self.bundle_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {self.bundle_path}: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.bundle_path} is not a device bundle of format {STORE_FORMAT}")
        return record

    def _matching_key(self, certificate: x509.Certificate) -> PrivateKey:
        """The key that the certificate certifies, finishing an interrupted save."""
        wanted = public_key_der(certificate.public_key())
        if self.key_path.exists():
            key = self._read_key(self.key_path)
            if public_key_der(key) == wanted:
                return key
        pending = self.directory / NEXT_KEY
        if pending.exists():
            key = self._read_key(pending)
            if public_key_der(key) == wanted:
                os.replace(pending, self.key_path)
                _sync_directory(self.directory)
                log.info("finished an interrupted save in %s", self.directory)
                return key
        if not self.key_path.exists():
            raise StoreError(f"{self.key_path} is missing")
        raise StoreError(f"{self.key_path} is not the key of the stored certificate")

    def server(self) -> ServerInfo:
        """The server the device was provisioned by.

        Raises:
            StoreError: no bundle, or it names no server.
        """
        server = self._record().get("server")
        if not isinstance(server, dict) or not isinstance(server.get("url"), str):
            raise StoreError(f"{self.bundle_path} names no server")
        ca = server.get("ca")
        return ServerInfo(server["url"], ca if isinstance(ca, str) else None)

    def load(self, *, at: datetime | None = None) -> Bundle:
        """Read the stored bundle and check that its files belong together.

        The key must be private to its owner and certified by the certificate, the
        chain must verify up to the stored trust anchors (at ``at``, default now, or at
        the certificate's last valid second once it has expired: an expired device
        certificate still loads, to be renewed in its grace period).

        Raises:
            StoreError: a file is missing, unreadable, too open, or does not match.
        """
        record = self._record()
        chain = _certificates(record.get("certificate_chain"), "certificate_chain")
        anchors = _certificates(record.get("trust_anchors"), "trust_anchors")
        serial = _text(record, "serial")
        if format(chain[0].serial_number, "x") != serial:
            raise StoreError("bundle.json: the serial is not the certificate's")
        when = min(at or datetime.now(UTC), chain[0].not_valid_after_utc)
        try:
            verify_chain(chain, anchors, at=when)
        except VerificationFailed as exc:
            raise StoreError(f"{self.bundle_path}: {exc.message}") from None
        try:
            key = self._matching_key(chain[0])
        except OSError as exc:
            raise StoreError(f"cannot read the key in {self.directory}: {exc.strerror}") from None
        psk = record.get("pre_shared_key")
        request_id = record.get("request_id")
        bundle = Bundle(
            device_id=_text(record, "device_id"),
            owner=_text(record, "owner"),
            enrollment_id=_text(record, "enrollment_id"),
            serial=serial,
            chain=chain,
            trust_anchors=anchors,
            not_after=_time(record.get("not_after"), "not_after"),
            renew_after=_time(record.get("renew_after"), "renew_after"),
            private_key=key,
            mechanism=_text(record, "mechanism"),
            services=_strings(record, "services"),
            pre_shared_key=psk if isinstance(psk, str) else None,
            tokens=_tokens(record),
            request_id=request_id if isinstance(request_id, str) else None,
        )
        server = record.get("server")
        server_ca = server.get("ca") if isinstance(server, dict) else None
        try:
            self._write_copies(chain, anchors, server_ca if isinstance(server_ca, str) else None)
        except OSError as exc:
            log.warning("cannot refresh the PEM copies in %s: %s", self.directory, exc.strerror)
        return bundle
