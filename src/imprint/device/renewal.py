"""Renewal: a new certificate (for a new key, by default) before the current one expires.

A device renews once the server's ``renew_after`` has passed (two thirds of the
certificate's lifetime), authenticated by its current certificate: over mutual TLS,
or with a signed request (a JWS over the new CSR with the current certificate in
``x5c``) when mutual TLS is not possible, e.g. behind a TLS-terminating proxy or once
the certificate has expired (imprint then renews only within the enrollment's grace
period). The renewed bundle is verified like the first one and stored atomically.

:func:`maintain` is the loop a device runs: sleep until due, renew, and when the
server cannot be reached back off with jitter (or as long as Retry-After says).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization

from imprint.device.bundle import Bundle, verify_bundle
from imprint.device.client import RENEW_PATH, ImprintClient
from imprint.device.errors import PendingTimeout, ServiceUnavailable
from imprint.device.evidence import signed_request
from imprint.device.keys import make_csr
from imprint.device.provision import exchange
from imprint.device.store import DeviceStore

__all__ = ["RenewMode", "connect", "due", "due_at", "maintain", "renew"]

log = logging.getLogger("imprint.device")

RenewMode = Literal["auto", "mtls", "signed"]
MAX_NAP = 3600.0  # seconds: look at the clock again at least hourly (suspend, clock steps)


def due_at(bundle: Bundle) -> datetime:
    """When renewal is due: the server's ``renew_after``, or two thirds of the lifetime
    when that is missing or outside the certificate's validity."""
    certificate = bundle.certificate
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if start <= bundle.renew_after <= end:
        return bundle.renew_after
    return start + (end - start) * 2 / 3


def due(store: DeviceStore | Bundle, now: datetime | None = None) -> bool:
    """Whether the stored certificate should be renewed at ``now`` (default now).

    Raises:
        StoreError: the store cannot be loaded.
    """
    bundle = store.load() if isinstance(store, DeviceStore) else store
    return (now or datetime.now(UTC)) >= due_at(bundle)


def renew(
    client: ImprintClient,
    store: DeviceStore,
    *,
    new_key: bool = True,
    mode: RenewMode = "auto",
    now: datetime | None = None,
) -> Bundle:
    """Renew the stored certificate and store the new bundle.

    Args:
        client: the connection to imprint (no client certificate needed: the stored
            one is used).
        store: the device directory.
        new_key: a new key for the new certificate (default); False keeps the key.
        mode: ``mtls`` shows the current certificate in the TLS handshake, ``signed``
            sends a signed request, ``auto`` (default) uses mutual TLS unless the
            certificate has expired.
        now: the time to judge expiry by (default now).

    Returns:
        The new, verified bundle (also stored).

    Raises:
        StoreError: nothing (usable) stored.
        RequestRefused: e.g. ``certificate_revoked``, ``certificate_expired`` (past the
            grace period), ``device_disabled``.
        ServiceUnavailable, PendingTimeout, VerificationFailed, ProtocolError.
    """
    if mode not in ("auto", "mtls", "signed"):
        raise ValueError("mode must be 'auto', 'mtls' or 'signed'")
    current = store.load()
    key = store.pending_key() if new_key else current.private_key
    csr = make_csr(key, current.device_id)
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
    expired = (now or datetime.now(UTC)) > current.certificate.not_valid_after_utc
    signed = mode == "signed" or (mode == "auto" and expired)

    if signed:
        audience = client.endpoint("renew", RENEW_PATH)

        def build() -> tuple[Mapping[str, Any], Mapping[str, str]]:
            jws = signed_request(csr, current.private_key, current.chain[:1], audience)
            return {"csr": csr_pem, "evidence": {"jws": jws}}, {}

        data, request_id = exchange(client, RENEW_PATH, build)
    else:
        with client.with_client_certificate(current.chain, current.private_key) as mtls:
            data, request_id = exchange(
                mtls, RENEW_PATH, lambda: ({"csr": csr_pem, "evidence": {}}, {})
            )
    renewed = verify_bundle(
        data,
        key,
        mechanism=current.mechanism,
        device_id=current.device_id,
        request_id=request_id,
    )
    store.save(renewed, server=client)
    return renewed


def connect(store: DeviceStore, **options: Any) -> ImprintClient:
    """A client for the server the device was provisioned by, trusting what it trusted.

    Args:
        store: the device directory.
        **options: as for :class:`~imprint.device.client.ImprintClient` (retry, wait, ...).

    Raises:
        StoreError: the store names no server.
    """
    server = store.server()
    return ImprintClient(server.url, trust_anchors=server.ca_pem, **options)


def maintain(
    client: ImprintClient,
    store: DeviceStore,
    *,
    renewals: int | None = None,
    new_key: bool = True,
    mode: RenewMode = "auto",
    wall: Callable[[], datetime] | None = None,
) -> Bundle:
    """Keep the device's certificate fresh: sleep until due, renew, repeat.

    Sleeps use ``client.clock`` (at most an hour at a time, so a suspended device or a
    stepped clock is noticed). When renewal fails for a reason that may pass (no
    connection, 5xx, 429, still pending) it waits what the server asked (Retry-After)
    or a jittered, exponentially growing time and tries again; a refusal is final.

    Args:
        client: the connection to imprint.
        store: the device directory.
        renewals: return after this many renewals; None runs until an error.
        new_key, mode: as for :func:`renew`.
        wall: the wall clock (default ``datetime.now(UTC)``); tests pass a fake.

    Returns:
        The bundle of the last renewal.

    Raises:
        RequestRefused: the server refused renewal (e.g. the device was revoked).
        StoreError, VerificationFailed, ProtocolError: as for :func:`renew`.
    """
    now = wall or (lambda: datetime.now(UTC))
    clock, policy = client.clock, client.retry
    done = 0
    failures = 0
    bundle = store.load()
    while renewals is None or done < renewals:
        wait = (due_at(bundle) - now()).total_seconds()
        if wait > 0:
            clock.sleep(min(wait, MAX_NAP))
            continue
        try:
            bundle = renew(client, store, new_key=new_key, mode=mode, now=now())
        except (ServiceUnavailable, PendingTimeout) as exc:
            failures += 1
            asked = exc.retry_after if isinstance(exc, ServiceUnavailable) else None
            pause = policy.delay(failures, client.rng, asked)
            log.warning("renewal failed (%s); trying again in %.0f s", exc.message, pause)
            clock.sleep(pause)
            continue
        log.info("renewed device %s: serial %s", bundle.device_id, bundle.serial)
        failures = 0
        done += 1
    return bundle
