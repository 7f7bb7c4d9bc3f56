"""Devices for the browser tests, provisioned with the device SDK over real TLS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from imprint.device import Bundle, DeviceStore, ImprintClient, WaitPolicy, provision_oob_secret
from imprint.provisioning.devices import Device
from tests.integration.conftest import Service


def oob_enrollment(service: Service, enrollment_id: str, owner: str, **policy: Any) -> None:
    with service.admin() as admin:
        created = admin.post(
            "/api/v1/enrollments",
            json={"id": enrollment_id, "mechanism": "oob-secret", "owner": owner, **policy},
        )
    assert created.status_code == 201, created.text


def register(service: Service, enrollment_id: str, device_id: str, secret: str) -> None:
    with service.admin() as admin:
        registered = admin.post(
            f"/api/v1/enrollments/{enrollment_id}/oob-secrets",
            json={"device_id": device_id, "secret": secret},
        )
    assert registered.status_code == 201, registered.text


def provision(
    service: Service, workdir: Path, device_id: str, secret: str, *, wait: float = 0
) -> Bundle:
    """What the device does: the SDK's OOB-secret provisioning, waiting while pending."""
    store = DeviceStore(workdir / device_id)
    policy = WaitPolicy(max_total=wait, max_interval=1) if wait else WaitPolicy(max_total=0)
    with ImprintClient(service.base_url, ca_file=service.root_cert, wait=policy) as client:
        bundle = provision_oob_secret(client, device_id, secret, key=store.pending_key())
        store.save(bundle, server=client)
    return bundle


def device(service: Service, device_id: str, timeout: float = 10) -> Device:
    """The device row, once the server has one (waits for a device still in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in service.runtime.devices.search(limit=1000) if d.device_id == device_id]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"device {device_id} never appeared"
        time.sleep(0.1)
