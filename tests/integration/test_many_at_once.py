"""Many registrations at once: twice as many as the device plane's PostgreSQL pool has
connections, all from one address. A registration holds one connection at a time (its
unit of work's, the certificate's record included); the others wait for the pool
without stopping the event loop, and none waits out the pool's timeout or fails."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.integration.conftest import Service
from tests.integration.test_x509_attestation import Manufacturer, enroll, signed_body
from tests.integration.test_x509_attestation import (  # the fixtures
    acme as acme,
)
from tests.integration.test_x509_attestation import (
    service as service,
)

pytestmark = pytest.mark.both_databases

AT_ONCE = 60  # the device plane's pool holds 30; a client address may open 64


def test_more_registrations_at_once_than_connections_all_succeed(
    service: Service, acme: Manufacturer
) -> None:
    enroll(service, acme.chain())
    bodies = []
    for n in range(AT_ONCE):
        leaf, key = acme.line.idevid(f"crowd-{n:03}")
        bodies.append(signed_body(service, leaf, key, [acme.line.certificate]))
    answers: list[int] = []
    start = threading.Barrier(AT_ONCE)

    def register(body: dict[str, object]) -> None:
        with service.client() as http:
            start.wait(10)
            try:
                answers.append(http.post("/api/v1/provision", json=body).status_code)
            except httpx.HTTPError as exc:
                answers.append(-1)
                raise AssertionError(exc) from None

    threads = [threading.Thread(target=register, args=(b,)) for b in bodies]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert sorted(answers) == [200] * AT_ONCE
    assert time.monotonic() - began < 30  # no request waited out a pool timeout
