"""The provisioning path's storage shortcuts, on SQLite and PostgreSQL: the unit of work
that puts a request's writes in one transaction, and the per-process read caches."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from imprint.attestation.revocation import DeniedCertificate
from imprint.errors import Conflict, NotFound
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.provisioning.devices import Device, DeviceStatus, ProvisioningStep, StepRecord
from imprint.provisioning.enrollments import Enrollment, EnrollmentKind, Mechanism
from imprint.sealing import SecretBox
from imprint.store import db
from imprint.store.cache import TTL_SECONDS
from imprint.store.certificates import SqlCertificateLedger
from imprint.store.deny_list import SqlDenyList
from imprint.store.devices import SqlDeviceStore, SqlStepRecorder
from imprint.store.enrollments import SqlEnrollmentStore
from imprint.store.tables import denied_certificates, devices, provisioning_records
from tests.integration.conftest import ServerClock

# Storage: every test here runs on PostgreSQL too (see tests/conftest.py).
pytestmark = pytest.mark.both_databases

NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)


def device(ref: str, device_id: str = "sensor-1") -> Device:
    return Device(
        id=ref,
        owner="acme",
        device_id=device_id,
        enrollment_id="line-1",
        mechanism="x509",
        status=DeviceStatus.PROVISIONED,
        created_at=NOW,
        updated_at=NOW,
    )


def step(request_id: str) -> StepRecord:
    return StepRecord(
        request_id=request_id, mechanism="x509", step=ProvisioningStep.ISSUE, status="ok", at=NOW
    )


def stored_devices(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(devices.c.id)).scalars())


def stored_steps(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(provisioning_records.c.request_id)).scalars())


def test_unit_of_work_writes_in_one_transaction(engine: Engine) -> None:
    store, recorder = SqlDeviceStore(engine), SqlStepRecorder(engine)
    with db.unit_of_work(engine):
        store.save(device("d-1"))
        recorder.record([step("r-1")])
        assert store.get("d-1").device_id == "sensor-1"  # the unit reads its own writes
        assert stored_devices(engine) == []  # another connection sees nothing yet
        assert stored_steps(engine) == []
    assert stored_devices(engine) == ["d-1"]
    assert stored_steps(engine) == ["r-1"]


@pytest.mark.parametrize("count", [1, 4, 17])
def test_step_records_written_together_read_back_whole(engine: Engine, count: int) -> None:
    """Steps recorded together are one INSERT of them all on PostgreSQL (up to 16; more
    go through the driver's executemany): each row keeps its own values."""
    steps = [
        StepRecord(
            request_id=f"r-{count}-{i}",
            mechanism="x509",
            step=ProvisioningStep.ISSUE if i % 2 else ProvisioningStep.ATTEST,
            status="ok" if i % 3 else "failed",
            at=NOW + timedelta(seconds=i),
            device_ref="d-1",
            enrollment_id="line-1",
            code=None if i % 3 else f"code-{i}",
            detail=f"detail {i}",
        )
        for i in range(count)
    ]
    SqlStepRecorder(engine).record(steps)
    read = sorted(SqlStepRecorder(engine).for_device("d-1"), key=lambda s: s.at)
    assert [(s.request_id, s.step, s.status, s.at, s.code, s.detail) for s in read] == [
        (s.request_id, s.step, s.status, s.at, s.code, s.detail) for s in steps
    ]


def test_unit_of_work_keeps_nothing_when_it_fails(engine: Engine) -> None:
    store, recorder = SqlDeviceStore(engine), SqlStepRecorder(engine)

    def request() -> None:
        with db.unit_of_work(engine):
            store.save(device("d-1"))
            recorder.record([step("r-1")])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        request()
    assert stored_devices(engine) == []
    assert stored_steps(engine) == []


def _reservation(serial: str) -> CertificateRecord:
    return CertificateRecord(
        serial=serial,
        issuer="ab" * 20,
        profile="device",
        subject="CN=sensor-1",
        sans=(),
        status=CertificateStatus.PENDING,
        not_before=NOW,
        not_after=NOW + timedelta(days=30),
        requested_by="x509:sensor-1",
        created_at=NOW,
    )


def test_reserve_outside_a_unit_commits_before_the_signature(engine: Engine) -> None:
    """Record before sign: a reservation made on its own is durable at once."""
    ledger = SqlCertificateLedger(engine)
    ledger.reserve(_reservation("0a1b"))
    kept = SqlCertificateLedger(engine).get("0a1b")
    assert kept.status is CertificateStatus.PENDING
    assert kept.der is None


def test_reserve_inside_a_unit_commits_or_rolls_back_with_it(engine: Engine) -> None:
    """Inside a unit of work the record and its issued mark commit together with the
    rest of the request, before any answer carries the certificate, or not at all."""
    ledger = SqlCertificateLedger(engine)

    def request(serial: str, fail: bool) -> None:
        with db.unit_of_work(engine):
            record = _reservation(serial)
            assert not ledger.reserve(record)  # written whole once signed
            ledger.mark_issued(serial, b"\x30\x00", "cd" * 32, NOW, unreserved=record)
            if fail:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        request("0a1b", fail=True)
    with pytest.raises(NotFound):
        ledger.get("0a1b")
    request("0a1c", fail=False)
    assert ledger.get("0a1c").status is CertificateStatus.ISSUED


def test_abandon_pending_resolves_old_reservations_only(engine: Engine) -> None:
    ledger = SqlCertificateLedger(engine)
    ledger.reserve(_reservation("0a01"))
    ledger.reserve(replace(_reservation("0a02"), created_at=NOW + timedelta(minutes=5)))
    ledger.reserve(_reservation("0a03"))
    ledger.mark_issued("0a03", b"\x30\x00", "cd" * 32, NOW)
    assert ledger.abandon_pending(NOW + timedelta(minutes=1)) == ["0a01"]
    assert ledger.get("0a01").status is CertificateStatus.ABANDONED
    assert ledger.get("0a02").status is CertificateStatus.PENDING
    assert ledger.get("0a03").status is CertificateStatus.ISSUED
    assert ledger.abandon_pending(NOW + timedelta(minutes=1)) == []


def test_a_conflict_inside_a_unit_leaves_the_rest_of_it_intact(engine: Engine) -> None:
    """A device saved twice under one name fails alone; on PostgreSQL a failed statement
    would otherwise abort the whole transaction."""
    store, recorder = SqlDeviceStore(engine), SqlStepRecorder(engine)
    store.save(device("d-1"))
    with db.unit_of_work(engine):
        store.save(replace(device("d-2", device_id="sensor-2")))
        with pytest.raises(Conflict):
            store.save(device("d-3"))  # sensor-1 exists already as d-1
        recorder.record([step("r-1")])
    assert stored_devices(engine) == ["d-1", "d-2"]
    assert stored_steps(engine) == ["r-1"]


def denied(fingerprint: str) -> DeniedCertificate:
    return DeniedCertificate(fingerprint_sha256=fingerprint, reason="stolen", created_at=NOW)


def test_deny_list_changes_are_seen_at_once_by_every_store_in_the_process(
    engine: Engine,
) -> None:
    writer, reader = SqlDenyList(engine), SqlDenyList(engine)
    assert reader.first_of(["aa" * 32]) is None  # now cached as empty
    writer.add(denied("aa" * 32))
    found = reader.first_of(["bb" * 32, "aa" * 32])
    assert found is not None
    assert found.fingerprint_sha256 == "aa" * 32
    writer.remove("aa" * 32)
    assert reader.first_of(["aa" * 32]) is None


def test_another_process_deny_list_change_is_seen_within_the_bound(engine: Engine) -> None:
    """A row written behind this process's back (another node) is seen within the TTL
    of the reader's clock, and not before: the cache is what answers until then."""
    clock = ServerClock()
    reader = SqlDenyList(engine, clock)
    assert reader.first_of(["cc" * 32]) is None
    with engine.begin() as conn:
        conn.execute(
            insert(denied_certificates).values(
                fingerprint_sha256="cc" * 32, reason="stolen", created_at=NOW
            )
        )
    clock.advance(timedelta(seconds=TTL_SECONDS / 2))
    assert reader.first_of(["cc" * 32]) is None  # still the cached answer
    clock.advance(timedelta(seconds=TTL_SECONDS / 2))
    found = reader.first_of(["cc" * 32])
    assert found is not None, "not seen within the TTL"
    assert found.reason == "stolen"


def test_enrollment_changes_are_seen_at_once(engine: Engine) -> None:
    box = SecretBox(os.urandom(32))
    writer, reader = SqlEnrollmentStore(engine, box), SqlEnrollmentStore(engine, box)
    enrollment = Enrollment(
        id="line-1",
        kind=EnrollmentKind.GROUP,
        mechanism=Mechanism.SYMMETRIC_KEY,
        owner="acme",
        created_at=NOW,
        updated_at=NOW,
        group_key=os.urandom(32),
    )
    assert reader.search(mechanism=Mechanism.SYMMETRIC_KEY) == ()
    writer.add(enrollment)
    assert [e.id for e in reader.search(mechanism=Mechanism.SYMMETRIC_KEY)] == ["line-1"]
    assert reader.get("line-1").enabled
    writer.replace(replace(enrollment, enabled=False))
    assert not reader.get("line-1").enabled
    assert not reader.search(mechanism=Mechanism.SYMMETRIC_KEY)[0].enabled
    writer.remove("line-1")
    assert reader.search(mechanism=Mechanism.SYMMETRIC_KEY) == ()


def test_a_devices_own_enrollments_by_one_indexed_query(engine: Engine) -> None:
    box = SecretBox(os.urandom(32))
    store = SqlEnrollmentStore(engine, box)

    def enrollment(id_: str, **fields: object) -> Enrollment:
        values: dict[str, object] = {
            "kind": EnrollmentKind.INDIVIDUAL,
            "mechanism": Mechanism.SYMMETRIC_KEY,
            "registration_id": "gw-7",
            "group_key": os.urandom(32),
        }
        values.update(fields)
        return Enrollment(id=id_, owner="acme", created_at=NOW, updated_at=NOW, **values)  # type: ignore[arg-type]

    own_key = os.urandom(32)
    store.add(enrollment("own-b", group_key=own_key))
    store.add(enrollment("own-a", enabled=False))  # disabled: still the device's own
    store.add(enrollment("other-device", registration_id="gw-8"))
    store.add(enrollment("other-mechanism", mechanism=Mechanism.OOB_SECRET, group_key=None))
    store.add(enrollment("line", kind=EnrollmentKind.GROUP, registration_id=None))
    # Refused by validation before it reaches a store; the query's own filter holds too.
    store.add(enrollment("stray-group", kind=EnrollmentKind.GROUP))

    ran: list[tuple[str, object]] = []

    def seen(_c: object, _cur: object, sql: str, params: object, *_: object) -> None:
        ran.append((sql, params))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        found = store.naming(Mechanism.SYMMETRIC_KEY, "gw-7")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [(e.id, e.enabled) for e in found] == [("own-a", False), ("own-b", True)]
    assert found[1].group_key == own_key  # unsealed, as every read gives it
    assert [e.id for e in store.naming(Mechanism.OOB_SECRET, "gw-7")] == ["other-mechanism"]
    assert store.naming(Mechanism.SYMMETRIC_KEY, "gw-9") == ()
    ((sql, params),) = ran  # one statement
    if engine.dialect.name == "sqlite":  # not a scan of every enrollment of the mechanism
        with engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()  # type: ignore[arg-type]
        steps = [row[-1] for row in plan]
        index = "ix_enrollments_registration_id_mechanism"
        assert any(s.startswith(f"SEARCH enrollments USING INDEX {index}") for s in steps), steps
        assert not any(step.startswith("SCAN enrollments") for step in steps), steps


# SQLite's writers queue on a lock of the process ------------------------------------------


def _sqlite_engine(tmp_path: os.PathLike[str]) -> Engine:
    engine = db.create_engine(f"sqlite:///{tmp_path}/writers.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY)"))
    return engine


def _writer_lock(conn: Connection) -> threading.Lock:
    lock: threading.Lock = conn.connection.driver_connection.writer_lock  # type: ignore[union-attr]
    return lock


def _put(conn: Connection, key: str) -> None:
    conn.execute(text("INSERT INTO t (k) VALUES (:k)"), {"k": key})


def test_sqlite_writers_of_one_process_wait_in_turn_instead_of_failing(
    tmp_path: os.PathLike[str],
) -> None:
    """Sixteen threads writing at once all succeed, and a second writer's insert starts
    only when the first one's transaction ends."""
    engine = _sqlite_engine(tmp_path)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(25):
                with engine.begin() as conn:
                    _put(conn, f"{worker}-{n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 400

    with engine.connect() as first:
        _put(first, "first")
        lock = _writer_lock(first)
        assert lock.locked()  # held from the first write to the end of the transaction
        done = threading.Event()

        def second() -> None:
            with engine.begin() as conn:
                _put(conn, "second")
            done.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not done.wait(0.3)  # queued behind the open write transaction
        first.commit()
        assert done.wait(5)
        thread.join()
        assert not lock.locked()
    engine.dispose()


def test_sqlite_writer_lock_is_given_back_after_a_failed_write(
    tmp_path: os.PathLike[str],
) -> None:
    engine = _sqlite_engine(tmp_path)
    with engine.begin() as conn:
        _put(conn, "a")
        lock = _writer_lock(conn)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _put(conn, "a")  # the same key
    assert not lock.locked()
    started = time.monotonic()
    with engine.begin() as conn:
        _put(conn, "b")
    assert time.monotonic() - started < 1.0  # not the 5 s lock timeout
    engine.dispose()
