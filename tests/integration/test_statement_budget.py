"""The SQL one registration costs: statements, commits and pool checkouts, counted with
SQLAlchemy's engine events around real requests. The counts are upper bounds, so a
change that adds a statement to the device plane fails here instead of slipping into a
benchmark nobody reads.

x509 signed request, new device, warm caches (SQLite, PostgreSQL):

- its own commit: the nonce (a spent nonce stays spent whatever the request does next);
- the unit of work: the device lock, the device under it, the key's other holders,
  the certificate's record and issued mark, the device (one upsert), the audit
  entry (lock, last hash, insert, hash), the step records: one commit.

The attestor's early look at the device (before the nonce is spent, so a refused
request spends none) is the one read left that the use case repeats under the lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event

from tests.integration.conftest import Service
from tests.integration.test_x509_attestation import (
    Manufacturer,
    enroll,
    provisioned,
    signed_body,
)
from tests.integration.test_x509_attestation import (  # the fixtures
    acme as acme,
)
from tests.integration.test_x509_attestation import (
    service as service,
)

pytestmark = pytest.mark.both_databases


@dataclass
class Tally:
    statements: list[str] = field(default_factory=list)
    commits: int = 0
    checkouts: int = 0

    def sql(self, verb: str) -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(verb))


@contextmanager
def counted(service: Service) -> Iterator[Tally]:
    engine = service.runtime.engine
    tally = Tally()

    def statement(_c: Any, _cur: Any, sql: str, _p: Any, _ctx: Any, _many: bool) -> None:
        tally.statements.append(sql)

    def commit(_conn: Any) -> None:
        tally.commits += 1

    def checkout(*_args: Any) -> None:
        tally.checkouts += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    event.listen(engine.pool, "checkout", checkout)
    try:
        yield tally
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)
        event.remove(engine.pool, "checkout", checkout)


def test_a_signed_x509_registration_makes_few_statements(
    service: Service, acme: Manufacturer, backend: str
) -> None:
    enroll(service, acme.chain())
    for warm in ("meter-warm-1", "meter-warm-2"):  # caches filled, statements prepared
        leaf, key = acme.line.idevid(warm)
        provisioned(service, signed_body(service, leaf, key, [acme.line.certificate]))
    leaf, key = acme.line.idevid("meter-counted")
    body = signed_body(service, leaf, key, [acme.line.certificate])

    with counted(service) as tally:
        answer = provisioned(service, body)

    assert answer["device_id"] == "meter-counted"
    # Without the savepoints PostgreSQL puts around the statements that may hit a
    # constraint (SAVEPOINT / RELEASE are statements of their own there).
    counted_sql = [s for s in tally.statements if "SAVEPOINT" not in s.upper()]
    assert len(counted_sql) <= 13, "\n".join(counted_sql)
    # One SELECT of the device by the attestor, one under the lock; no UPDATE-then-INSERT.
    assert sum(1 for s in counted_sql if "FROM devices" in s and "public_key" not in s) <= 3
    assert tally.sql("UPDATE DEVICES") == 0
    assert tally.sql("INSERT INTO DEVICES") == 1
    assert tally.commits <= 2  # the nonce, then the unit of work
    assert tally.checkouts <= 3
    # No pre-ping: no statement but the registration's own.
    assert not any(s.strip().upper() == "SELECT 1" for s in tally.statements)


def test_an_api_key_is_looked_up_once_and_forgotten_when_revoked(
    service: Service, backend: str
) -> None:
    with service.admin() as admin:
        made = admin.post("/api/v1/api-keys", json={"name": "counted"})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        with service.client(headers=headers) as client:
            for _ in range(2):  # the first use is written down (last_used_at), then read
                assert client.get("/api/v1/certificates").status_code == 200
            with counted(service) as tally:
                for _ in range(3):
                    assert client.get("/api/v1/certificates").status_code == 200
            assert not any("FROM api_keys" in s for s in tally.statements)
            assert admin.delete("/api/v1/api-keys/counted").status_code == 204
            # The next request of the revoked key is refused at once, not after a TTL.
            assert client.get("/api/v1/certificates").status_code == 401
