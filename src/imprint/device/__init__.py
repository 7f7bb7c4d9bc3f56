"""The imprint device SDK: provision a device, keep its files, renew its certificate.

It needs only ``cryptography`` and ``httpx``, never imprint's server code::

    from imprint.device import DeviceStore, ImprintClient, provision_oob_secret

    store = DeviceStore("/var/lib/sensor")
    with ImprintClient("https://imprint.local:8443", ca_file="root.crt") as client:
        bundle = provision_oob_secret(client, "sensor-17", secret, key=store.pending_key())
        store.save(bundle, server=client)

Later, :func:`renew` (or the :func:`maintain` loop) keeps the certificate fresh. See
docs/device-sdk.md.
"""

from __future__ import annotations

from imprint.device.bundle import Bundle, verify_bundle, verify_chain
from imprint.device.client import ClientIdentity, Directory, ImprintClient, WaitPolicy
from imprint.device.discovery import Discoverer, connect_to, locate
from imprint.device.errors import (
    DeviceError,
    PendingTimeout,
    ProtocolError,
    RequestRefused,
    ServerNotFound,
    ServiceUnavailable,
    StoreError,
    VerificationFailed,
)
from imprint.device.evidence import derive_device_key
from imprint.device.keys import generate_key, load_certificates, load_private_key, make_csr
from imprint.device.provision import (
    provision_client_ca,
    provision_oob_secret,
    provision_registration_key,
    provision_symmetric_key,
    provision_x509,
)
from imprint.device.renewal import connect, due, due_at, maintain, renew
from imprint.device.retry import Clock, RetryPolicy, SystemClock
from imprint.device.store import DeviceStore, ServerInfo

__all__ = [
    "Bundle",
    "ClientIdentity",
    "Clock",
    "DeviceError",
    "DeviceStore",
    "Directory",
    "Discoverer",
    "ImprintClient",
    "PendingTimeout",
    "ProtocolError",
    "RequestRefused",
    "RetryPolicy",
    "ServerInfo",
    "ServerNotFound",
    "ServiceUnavailable",
    "StoreError",
    "SystemClock",
    "VerificationFailed",
    "WaitPolicy",
    "connect",
    "connect_to",
    "derive_device_key",
    "due",
    "due_at",
    "generate_key",
    "load_certificates",
    "load_private_key",
    "locate",
    "maintain",
    "make_csr",
    "provision_client_ca",
    "provision_oob_secret",
    "provision_registration_key",
    "provision_symmetric_key",
    "provision_x509",
    "renew",
    "verify_bundle",
    "verify_chain",
]
