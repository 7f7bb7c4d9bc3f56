"""The console over plain HTTP (httpx, no browser), and fleets seeded in bulk.

Large lists are seeded through the stores in one transaction (a device row per device,
a certificate issued by the real CA for each), not through thousands of requests.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import timedelta

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from imprint.pki.authority import IssuanceRequest
from imprint.provisioning.devices import Device, DeviceStatus
from imprint.provisioning.oob_secrets import OobSecret
from imprint.runtime import Runtime
from imprint.tenancy.roles import Role
from imprint.tenancy.users import create_user
from tests.integration.conftest import Service

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the (first) form of a console page."""
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


def add_user(service: Service, username: str, org: str, role: Role = Role.ADMIN) -> str:
    runtime = service.runtime
    create_user(runtime.users, username, PASSWORD, org_id=org, role=role, at=runtime.clock.now())
    return username


def console_client(service: Service, username: str) -> httpx.Client:
    """An HTTPS client signed in to the console as ``username`` (through the form)."""
    client = service.client(follow_redirects=False)
    form = client.get("/console/login")
    signed_in = client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD, "csrf": csrf_of(form.text)},
    )
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["location"].endswith("/console/"), signed_in.headers
    return client


def oob_enrollment(service: Service, enrollment_id: str, owner: str) -> None:
    with service.admin() as admin:
        made = admin.post(
            "/api/v1/enrollments",
            json={"id": enrollment_id, "mechanism": "oob-secret", "owner": owner},
        )
    assert made.status_code == 201, made.text


def seed_secrets(runtime: Runtime, enrollment_id: str, count: int, prefix: str = "unit") -> None:
    """``count`` registered secrets, written by the store in one bulk insert."""
    now = runtime.clock.now()
    runtime.oob_secrets.write(
        [
            OobSecret(
                enrollment_id=enrollment_id,
                device_id=f"{prefix}-{n:05d}",
                secret=f"label-secret-{n:05d}",
                valid_until=now + timedelta(days=3),
                created_at=now,
            )
            for n in range(count)
        ],
        [],
    )


def seed_devices(
    runtime: Runtime,
    owner: str,
    enrollment_id: str,
    count: int,
    *,
    prefix: str,
    status: DeviceStatus = DeviceStatus.PROVISIONED,
    certified: bool = True,
    device_ids: Sequence[str] = (),
) -> list[Device]:
    """``count`` devices of ``owner`` (ids ``<prefix>-0000``...), each with a certificate
    the CA issued for it unless ``certified`` is false; one transaction."""
    now = runtime.clock.now()
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    made = []
    names = list(device_ids) or [f"{prefix}-{n:04d}" for n in range(count)]
    with runtime.transaction():
        for name in names:
            ref = str(uuid.uuid4())
            serial = None
            if certified:
                issued = runtime.authority.issue(
                    IssuanceRequest(
                        public_key=key,
                        profile="device",
                        common_name=name,
                        owner=owner,
                        device_ref=ref,
                    )
                )
                serial = issued.record.serial
            device = Device(
                id=ref,
                owner=owner,
                device_id=name,
                enrollment_id=enrollment_id,
                mechanism="oob-secret",
                status=status,
                created_at=now,
                updated_at=now,
                certificate_serial=serial,
                provisioned_at=now if certified else None,
            )
            runtime.devices.save(device)
            made.append(device)
    return made
