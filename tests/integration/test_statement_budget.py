"""The SQL one registration costs: statements, commits and pool checkouts, counted with
SQLAlchemy's engine events around real requests. The counts are upper bounds, so a
change that adds a statement to the device plane fails here instead of slipping into a
benchmark nobody reads.

x509 signed request, new device, warm caches (SQLite, PostgreSQL):

- the unit of work: the nonce (spent again with the journal if the unit is refused)
  and the device's lock (one statement on PostgreSQL; on SQLite the nonce's INSERT
  takes the writer lock, which is the device's lock there), the device under it (read
  once: a certificate pinned to another device is refused there, before anything is
  signed; another holder of the CSR's key comes in the same read), the certificate's
  record (one INSERT after the signature, committed with the unit), the device (one
  upsert), the audit entry (the tail's hash with the new id, then one insert holding
  its own hash; on SQLite the unit holds the write lock already, on PostgreSQL the
  chain's advisory lock comes with the tail from one function call), the step records:
  one commit.

Where it runs: inline on the event loop on SQLite, as a member of a commit group
(decision 0018: the group's BEGIN is counted with the registration, alone in its group
here, and its unit of work is a savepoint of the group's transaction); on PostgreSQL on
the event loop too, every statement through psycopg's async connection (decision 0016),
never in a thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from imprint.store.cache import heard_everything
from imprint.store.db import engines
from tests.integration import test_oob_secret as oob
from tests.integration.conftest import Service
from tests.integration.test_channel_data import Device as ChannelDevice
from tests.integration.test_channels_provisioning import channel_enrollment
from tests.integration.test_channels_provisioning import make_csr as channel_csr
from tests.integration.test_channels_provisioning import provision as channel_provision
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
    """What each thread did (the server's background rounds run in threads of their
    own and may write meanwhile)."""

    events: list[tuple[int, str]] = field(default_factory=list)
    #: (thread, thread name, whether the driver is async) of each statement.
    drivers: list[tuple[int, str, bool]] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.events.append((threading.get_ident(), what))

    def of_request(self, marker: str) -> Tally:
        """The events of the thread that ran a statement containing ``marker``."""
        threads = {t for t, what in self.events if marker in what}
        assert len(threads) == 1, threads
        return Tally(
            [(t, what) for t, what in self.events if t in threads],
            [driver for driver in self.drivers if driver[0] in threads],
        )

    @property
    def statements(self) -> list[str]:
        return [what for _, what in self.events if not what.startswith("--")]

    @property
    def commits(self) -> int:
        return sum(1 for _, what in self.events if what == "-- commit")

    @property
    def checkouts(self) -> int:
        return sum(1 for _, what in self.events if what == "-- checkout")

    def sql(self, verb: str) -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(verb))


@contextmanager
def counted(service: Service) -> Iterator[Tally]:
    """Events of every connection the stores use: the engine's and, on PostgreSQL, its
    event loop's twin's."""
    tally = Tally()

    def statement(conn: Any, _cur: Any, sql: str, _p: Any, _ctx: Any, _many: bool) -> None:
        tally.add(sql)
        thread = threading.current_thread()
        tally.drivers.append((thread.ident or 0, thread.name, conn.dialect.is_async))

    def commit(_conn: Any) -> None:
        tally.add("-- commit")

    def checkout(*_args: Any) -> None:
        tally.add("-- checkout")

    listened = engines(service.runtime.engine)
    for engine in listened:
        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "commit", commit)
        event.listen(engine.pool, "checkout", checkout)
    try:
        yield tally
    finally:
        for engine in listened:
            event.remove(engine, "before_cursor_execute", statement)
            event.remove(engine, "commit", commit)
            event.remove(engine.pool, "checkout", checkout)


def test_a_signed_x509_registration_makes_few_statements(
    service: Service, acme: Manufacturer, backend: str
) -> None:
    enroll(service, acme.chain())
    # The enrollment's write heard of (on SQLite again, up to 50 ms later, forgetting the
    # enrollments once more) before the caches are filled.
    assert heard_everything(service.runtime.engine)
    for warm in ("meter-warm-1", "meter-warm-2"):  # caches filled, statements prepared
        leaf, key = acme.line.idevid(warm)
        provisioned(service, signed_body(service, leaf, key, [acme.line.certificate]))
    leaf, key = acme.line.idevid("meter-counted")
    body = signed_body(service, leaf, key, [acme.line.certificate])

    with counted(service) as everything:
        answer = provisioned(service, body)
    # One thread ran the whole registration, the event loop's: no thread-pool worker, and
    # on PostgreSQL every statement through the async driver.
    tally = everything.of_request("INSERT INTO devices")
    assert not [name for _, name, _ in tally.drivers if name.startswith("AnyIO worker")]
    assert {is_async for _, _, is_async in tally.drivers} == {backend == "postgresql"}

    assert answer["device_id"] == "meter-counted"
    # Without the unit's own savepoint in its commit group (SQLite).
    counted_sql = [s for s in tally.statements if "SAVEPOINT" not in s.upper()]
    # SQLite counts its group's BEGIN IMMEDIATE; psycopg's BEGIN is no cursor statement.
    budget = 8 if backend == "sqlite" else 6
    assert len(counted_sql) <= budget, "\n".join(counted_sql)
    # No advisory lock of its own on PostgreSQL: the device's comes with the nonce, the
    # audit chain's with the append.
    assert not [s for s in counted_sql if s.startswith("SELECT pg_advisory_xact_lock")]
    # No savepoint around a single statement on PostgreSQL: the certificate's record and
    # the device's upsert report a clash by writing nothing (ON CONFLICT), so neither can
    # abort the transaction.
    savepoints = [s for s in tally.statements if s.upper().startswith("SAVEPOINT")]
    assert len(savepoints) == (1 if backend == "sqlite" else 0), savepoints
    # The audit entry: on SQLite the chain's tail (and the new id), then one INSERT with
    # its hash; on PostgreSQL one call that does both, the unit's last statement.
    if backend == "sqlite":
        assert tally.sql("INSERT INTO AUDIT_LOG") == 1
    else:
        assert tally.sql("INSERT INTO AUDIT_LOG") == 0
        assert counted_sql[-1].startswith("SELECT imprint_audit_append("), counted_sql
    assert tally.sql("UPDATE AUDIT_LOG") == 0
    # The device read once, under its lock, with another holder of the CSR's key in the
    # same statement; saved with one upsert, not UPDATE-then-INSERT.
    reads = [s for s in counted_sql if "FROM devices" in s]
    assert len(reads) == 1, reads
    assert tally.sql("UPDATE DEVICES") == 0
    assert tally.sql("INSERT INTO DEVICES") == 1
    assert tally.commits <= 1  # the unit of work (on SQLite its group), the nonce in it
    assert tally.checkouts <= 1  # the unit's connection, nothing before it
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
            assert client.get("/api/v1/certificates").status_code == 200
            # The first use is written down (last_used_at): heard of (on SQLite again, up
            # to 50 ms later), then the key is read once more and kept.
            assert heard_everything(service.runtime.engine)
            assert client.get("/api/v1/certificates").status_code == 200
            with counted(service) as tally:
                for _ in range(3):
                    assert client.get("/api/v1/certificates").status_code == 200
            assert not any("FROM api_keys" in s for s in tally.statements)
            assert admin.delete("/api/v1/api-keys/counted").status_code == 204
            # The next request of the revoked key is refused at once, not after a TTL.
            assert client.get("/api/v1/certificates").status_code == 401


def test_an_oob_secret_registration_reads_the_secret_without_searching_enrollments(
    service: Service,
) -> None:
    """oob-secret, new device, warm caches: the device's secrets by its id (one indexed
    read; the enrollments that may hold them come from their cache), the secret again
    under the device's lock, one UPDATE to spend it; no enrollment query."""
    with service.admin() as admin:
        enrollment = oob.create_enrollment(admin)
        for device_id in ("oob-warm-1", "oob-warm-2", "oob-counted"):
            assert oob.register(admin, enrollment, device_id).status_code == 201
    assert heard_everything(service.runtime.engine)  # before the caches are filled
    with service.client() as client:
        for warm in ("oob-warm-1", "oob-warm-2"):
            warmed = client.post("/api/v1/provision", json=oob.request_body(oob.SECRET, warm))
            assert warmed.status_code == 200, warmed.text
        body = oob.request_body(oob.SECRET, "oob-counted")
        with counted(service) as everything:
            answer = client.post("/api/v1/provision", json=body)
    assert answer.status_code == 200, answer.text
    reads = [s for s in everything.statements if "FROM oob_secrets" in s]
    assert len(reads) == 2, reads
    assert all("IN (" not in s.upper() for s in reads), reads
    assert everything.sql("UPDATE OOB_SECRETS") == 1
    assert not [s for s in everything.statements if "FROM enrollments" in s]


_ON_CHANNEL_TABLES = re.compile(r"\b(FROM|INTO|UPDATE)\s+channel(s|_keys|_entries)\b", re.I)


_CATCHING_UP = re.compile(r"\bFROM\s+(enrollments|provisioning_hooks|cache_changes)\b", re.I)


def on_channel_tables(tally: Tally) -> list[str]:
    """The statements of ``tally`` that read or write a channel, its keys or its entries."""
    return [s for s in tally.statements if _ON_CHANNEL_TABLES.search(s)]


def verb(sql: str) -> str:
    return sql.split()[0].upper()


def test_a_thingspeak_update_makes_three_statements(service: Service) -> None:
    """ThingSpeak's ``/update`` with a write key, on the event loop like a registration:
    the key's channel with its keys (one read), the channel's counter bumped, returning
    when the entry before came in (for the rate limit), the entry. A write within the
    limit is refused with the counter's bump undone, and nothing written."""
    warm, counted_device = (
        ChannelDevice(service, serial="1001"),
        ChannelDevice(service, serial="1002"),
    )
    with service.client() as client:
        warmed = client.post("/update", data={"api_key": warm.write_key, "field1": "20"})
        assert (warmed.status_code, warmed.text) == (200, "1")
        form = {"api_key": counted_device.write_key, "field1": "21"}
        with counted(service) as everything:
            written = client.post("/update", data=form)
        with counted(service) as refusal:
            refused = client.post("/update", data=form)  # within the limit's second
        service.clock.advance(timedelta(seconds=1))
        later = client.post("/update", data=form)
    assert (written.status_code, written.text) == (200, "1")
    assert (refused.status_code, refused.text) == (200, "0")
    assert (later.status_code, later.text) == (200, "2")  # the refusal's bump was undone
    first, second = everything.of_request("UPDATE channels"), refusal.of_request("UPDATE channels")
    for tally in (first, second):
        assert not [name for _, name, _ in tally.drivers if name.startswith("AnyIO worker")]
    # The statements on the channel tables, and nothing else but a cache catching up (an
    # enrollment or hook read after its time to live) and, on SQLite, the group's own.
    written_sql, refused_sql = on_channel_tables(first), on_channel_tables(second)
    assert [verb(s) for s in written_sql] == ["SELECT", "UPDATE", "INSERT"], written_sql
    assert [verb(s) for s in refused_sql] == ["SELECT", "UPDATE", "UPDATE"], refused_sql
    assert "JOIN channels" in written_sql[0], written_sql
    for tally in (first, second):
        others = [
            s
            for s in tally.statements
            if not _ON_CHANNEL_TABLES.search(s)
            and not _CATCHING_UP.search(s)
            and "SAVEPOINT" not in s.upper()
            and not s.startswith("BEGIN")
        ]
        assert others == [], others


def test_a_registration_that_makes_a_channel_reads_it_once(service: Service) -> None:
    """A registration-key device its enrollment gives a channel: the device's channel
    looked for with its keys (one read), made with one INSERT of the channel and one of
    its two keys, and not read back."""
    with service.admin() as admin:
        key = channel_enrollment(admin, "thermo-counted", "the-simpsons")
    half = key.split("-")[0]
    with service.client() as client:
        warmed = channel_provision(client, "2001", half, channel_csr())
        assert warmed.status_code == 200, warmed.text
        with counted(service) as tally:
            answer = channel_provision(client, "2002", half, channel_csr())
    assert answer.status_code == 200, answer.text
    assert answer.json()["bundle"]["channel"]["id"]
    touching = on_channel_tables(tally)
    assert [verb(s) for s in touching] == ["SELECT", "INSERT", "INSERT"], touching
    assert "JOIN channel_keys" in touching[0], touching
