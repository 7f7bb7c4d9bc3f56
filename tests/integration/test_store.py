"""Storage on SQLite and PostgreSQL: migrations, the certificate ledger, API keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError

from imprint.auth.api_keys import authenticate, create_api_key
from imprint.errors import AuthenticationRequired, Conflict, InvalidValue, NotFound
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.provisioning.devices import Device, DeviceStatus, ProvisioningStep, StepRecord
from imprint.store import db
from imprint.store.api_keys import SqlApiKeyStore
from imprint.store.certificates import SqlCertificateLedger
from imprint.store.console_sessions import SqlEndedSessions
from imprint.store.devices import SqlDeviceStore, SqlStepRecorder
from imprint.store.tables import metadata

# Storage: every test here runs on PostgreSQL too (see tests/conftest.py).
pytestmark = pytest.mark.both_databases

NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)
ISSUER = "ab" * 20


def record(serial: str, **changes: object) -> CertificateRecord:
    base = CertificateRecord(
        serial=serial,
        issuer=ISSUER,
        profile="device",
        subject="CN=sensor-1",
        sans=("sensor-1.example.com", "192.0.2.1"),
        status=CertificateStatus.PENDING,
        not_before=NOW - timedelta(minutes=5),
        not_after=NOW + timedelta(days=90),
        requested_by="api-key:ops",
        created_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def ledger(engine: Engine) -> SqlCertificateLedger:
    return SqlCertificateLedger(engine)


# --- migrations ---------------------------------------------------------------------------


def test_migrations_reach_head_and_can_run_again(engine: Engine) -> None:
    head = db.head_revision()
    assert head is not None
    assert db.current_revision(engine) == head
    db.upgrade(engine)  # a second start must not fail or change anything
    db.upgrade(engine)
    assert db.current_revision(engine) == head


def test_migrations_keep_sqlites_temporary_files_on_disk(tmp_path: Path) -> None:
    """The server's connections keep SQLite's temporary data in memory (a commit group's
    savepoint journals, step 31 of bench/README.md); a migration, which copies whole
    tables and builds their indexes, has it in files as SQLite's default does, and its
    connection does not go back to the pool with that setting."""
    engine = db.create_engine(f"sqlite:///{tmp_path}/imprint.db")
    seen: list[int] = []

    def temp_store(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE INDEX"):
            seen.append(cursor.connection.execute("PRAGMA temp_store").fetchone()[0])

    event.listen(engine, "before_cursor_execute", temp_store)
    try:
        db.upgrade(engine)
        assert seen
        assert set(seen) == {0}  # every index built with the default
        with db.reading(engine) as conn:
            assert conn.exec_driver_sql("PRAGMA temp_store").scalar_one() == 2  # memory
    finally:
        engine.dispose()


def test_empty_database_has_no_revision(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        assert db.current_revision(engine) is None
    finally:
        engine.dispose()


def test_migrated_schema_matches_table_definitions(engine: Engine) -> None:
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) - {"alembic_version"} == set(metadata.tables)
    for name, table in metadata.tables.items():
        migrated = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
        defined = {c.name: c.nullable for c in table.columns}
        assert migrated == defined, f"columns of {name} differ"
        assert inspector.get_pk_constraint(name)["constrained_columns"] == [
            c.name for c in table.primary_key.columns
        ]
        migrated_indexes = {  # PostgreSQL lists a unique constraint's index too
            (i["name"], tuple(i["column_names"]))
            for i in inspector.get_indexes(name)
            if not i.get("duplicates_constraint")
        }
        defined_indexes = {(i.name, tuple(c.name for c in i.columns)) for i in table.indexes}
        assert defined_indexes == migrated_indexes, f"indexes of {name} differ"


def test_unknown_database_driver_is_a_configuration_error() -> None:
    from imprint.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"database\.url"):
        db.create_engine("not a url")


# --- certificate ledger -------------------------------------------------------------------


def test_reserved_record_reads_back_as_pending(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01"))
    stored = ledger.get("01")
    assert stored == record("01")
    assert stored.sans == ("sensor-1.example.com", "192.0.2.1")
    assert stored.der is None
    assert stored.issued_at is None


def test_reserving_a_serial_twice_is_a_conflict(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01"))
    with pytest.raises(Conflict):
        ledger.reserve(record("01", subject="CN=other"))


def test_mark_issued_stores_the_certificate(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01"))
    ledger.mark_issued("01", b"\x30\x82der", "f" * 64, NOW + timedelta(seconds=1))
    stored = ledger.get("01")
    assert stored.status is CertificateStatus.ISSUED
    assert stored.der == b"\x30\x82der"
    assert stored.fingerprint_sha256 == "f" * 64
    assert stored.issued_at == NOW + timedelta(seconds=1)


def test_in_a_unit_of_work_the_record_is_written_once_signed(
    engine: Engine, ledger: SqlCertificateLedger
) -> None:
    """In a unit of work the reservation and the signed certificate commit together, so
    the ledger writes the record whole, issued, after the signature: one INSERT."""
    with db.unit_of_work(engine):
        assert ledger.reserve(record("01")) is False
        with pytest.raises(NotFound):
            ledger.get("01")  # nothing written before the signature
        ledger.mark_issued("01", b"\x30\x82der", "f" * 64, NOW, unreserved=record("01"))
    stored = ledger.get("01")
    assert stored.status is CertificateStatus.ISSUED
    assert (stored.der, stored.fingerprint_sha256, stored.issued_at) == (
        b"\x30\x82der",
        "f" * 64,
        NOW,
    )
    assert ledger.reserve(record("02")) is True  # outside one: committed before signing
    assert ledger.get("02").status is CertificateStatus.PENDING
    with db.unit_of_work(engine), pytest.raises(Conflict):  # a serial recorded already
        ledger.mark_issued("01", b"der", "e" * 64, NOW, unreserved=record("01"))

    def fails_after_signing() -> None:
        with db.unit_of_work(engine):
            ledger.reserve(record("03"))
            ledger.mark_issued("03", b"der", "e" * 64, NOW, unreserved=record("03"))
            raise RuntimeError("the request failed after signing")

    with pytest.raises(RuntimeError):
        fails_after_signing()
    with pytest.raises(NotFound):  # rolled back: nothing
        ledger.get("03")


def test_mark_failed_keeps_the_record_for_the_audit_trail(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01"))
    ledger.mark_failed("01")
    assert ledger.get("01").status is CertificateStatus.FAILED
    with pytest.raises(Conflict) as caught:
        ledger.revoke("01", "keyCompromise", NOW)
    assert caught.value.code == "not_issued"


def test_mark_failed_does_not_touch_an_issued_record(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01"))
    ledger.mark_issued("01", b"der", "f" * 64, NOW)
    ledger.mark_failed("01")
    assert ledger.get("01").status is CertificateStatus.ISSUED


def test_revoke_records_reason_and_time(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01"))
    ledger.mark_issued("01", b"der", "f" * 64, NOW)
    revoked = ledger.revoke("01", "keyCompromise", NOW + timedelta(hours=1))
    assert revoked.status is CertificateStatus.REVOKED
    assert revoked.revocation_reason == "keyCompromise"
    assert revoked.revoked_at == NOW + timedelta(hours=1)
    assert ledger.get("01") == revoked


def test_revoking_twice_is_a_conflict(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01"))
    ledger.mark_issued("01", b"der", "f" * 64, NOW)
    ledger.revoke("01", "keyCompromise", NOW)
    with pytest.raises(Conflict) as caught:
        ledger.revoke("01", "superseded", NOW)
    assert caught.value.code == "already_revoked"
    assert ledger.get("01").revocation_reason == "keyCompromise"


def test_revoking_an_unknown_serial_is_not_found(ledger: SqlCertificateLedger) -> None:
    with pytest.raises(NotFound):
        ledger.revoke("deadbeef", "keyCompromise", NOW)
    with pytest.raises(NotFound):
        ledger.get("deadbeef")


def test_revoked_while_pending_stays_revoked_after_signing(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01"))
    ledger.revoke("01", "cessationOfOperation", NOW)
    ledger.mark_issued("01", b"der", "f" * 64, NOW + timedelta(seconds=1))
    stored = ledger.get("01")
    assert stored.status is CertificateStatus.REVOKED
    assert stored.der == b"der"  # the certificate is still kept
    assert [entry.serial for entry in ledger.revoked(ISSUER)] == ["01"]


def test_search_filters_by_status(ledger: SqlCertificateLedger) -> None:
    for serial in ("01", "02", "03"):
        ledger.reserve(record(serial))
    ledger.mark_issued("01", b"der", "f" * 64, NOW)
    ledger.mark_issued("02", b"der", "f" * 64, NOW)
    ledger.revoke("02", "superseded", NOW)
    assert [r.serial for r in ledger.search()] == ["01", "02", "03"]
    assert [r.serial for r in ledger.search(status=CertificateStatus.ISSUED)] == ["01"]
    assert [r.serial for r in ledger.search(status=CertificateStatus.REVOKED)] == ["02"]
    assert [r.serial for r in ledger.search(status=CertificateStatus.PENDING)] == ["03"]
    assert ledger.search(status=CertificateStatus.FAILED) == []


def test_search_finds_certificates_expiring_before_a_date(ledger: SqlCertificateLedger) -> None:
    ledger.reserve(record("01", not_after=NOW + timedelta(days=5)))
    ledger.reserve(record("02", not_after=NOW + timedelta(days=50)))
    ledger.reserve(record("03", not_after=NOW + timedelta(days=500)))
    soon = ledger.search(expiring_before=NOW + timedelta(days=60))
    assert [r.serial for r in soon] == ["01", "02"]
    in_other_zone = NOW.astimezone(timezone(timedelta(hours=-8))) + timedelta(days=6)
    assert [r.serial for r in ledger.search(expiring_before=in_other_zone)] == ["01"]


def test_search_pages_through_records_in_serial_order(ledger: SqlCertificateLedger) -> None:
    serials = [f"{n:02x}" for n in range(1, 8)]
    for serial in reversed(serials):
        ledger.reserve(record(serial))
    pages, after = [], None
    while page := ledger.search(limit=3, after_serial=after):
        pages.append([r.serial for r in page])
        after = page[-1].serial
    assert pages == [serials[0:3], serials[3:6], serials[6:7]]


def test_revoked_lists_only_revoked_records_of_that_issuer(ledger: SqlCertificateLedger) -> None:
    other = "cd" * 20
    ledger.reserve(record("01"))
    ledger.reserve(record("02"))
    ledger.reserve(record("03", issuer=other))
    for serial in ("01", "02", "03"):
        ledger.mark_issued(serial, b"der", "f" * 64, NOW)
    ledger.revoke("02", "keyCompromise", NOW + timedelta(minutes=1))
    ledger.revoke("03", "superseded", NOW)
    entries = ledger.revoked(ISSUER)
    assert [(e.serial, e.reason, e.revoked_at) for e in entries] == [
        ("02", "keyCompromise", NOW + timedelta(minutes=1))
    ]
    assert [e.serial for e in ledger.revoked(other)] == ["03"]
    assert ledger.revoked("ef" * 20) == []


def test_crl_numbers_increase_per_issuer(ledger: SqlCertificateLedger) -> None:
    assert [ledger.next_crl_number(ISSUER, NOW) for _ in range(4)] == [1, 2, 3, 4]
    assert ledger.next_crl_number("cd" * 20, NOW) == 1
    assert ledger.next_crl_number(ISSUER, NOW) == 5


def test_crl_numbers_survive_a_new_engine(engine: Engine, migrated_database_url: str) -> None:
    SqlCertificateLedger(engine).next_crl_number(ISSUER, NOW)
    second = db.create_engine(migrated_database_url)
    try:
        assert SqlCertificateLedger(second).next_crl_number(ISSUER, NOW) == 2
    finally:
        second.dispose()


def test_timestamps_come_back_as_aware_utc(ledger: SqlCertificateLedger) -> None:
    berlin_summer = timezone(timedelta(hours=2))
    local = datetime(2030, 7, 1, 14, 30, 15, tzinfo=berlin_summer)
    ledger.reserve(record("01", created_at=local, not_before=local, not_after=local))
    ledger.mark_issued("01", b"der", "f" * 64, local)
    ledger.revoke("01", "superseded", local)
    stored = ledger.get("01")
    expected = datetime(2030, 7, 1, 12, 30, 15, tzinfo=UTC)
    for value in (
        stored.created_at,
        stored.not_before,
        stored.not_after,
        stored.issued_at,
        stored.revoked_at,
    ):
        assert value == expected
        assert value is not None
        assert value.tzinfo is UTC
    assert ledger.revoked(ISSUER)[0].revoked_at.tzinfo is UTC


def test_naive_timestamps_are_refused(ledger: SqlCertificateLedger) -> None:
    with pytest.raises(StatementError, match="naive datetimes"):
        ledger.reserve(record("01", created_at=datetime(2030, 1, 1, 12, 0)))


# --- API keys -----------------------------------------------------------------------------


@pytest.fixture
def key_store(engine: Engine) -> SqlApiKeyStore:
    return SqlApiKeyStore(engine)


def test_api_key_token_authenticates(key_store: SqlApiKeyStore) -> None:
    issued = create_api_key(key_store, "ops@example", now=NOW)
    assert issued.token.startswith(f"imp_{issued.key.key_id}_")
    assert issued.token.split("_", 2)[2] not in issued.key.secret_sha256
    found = authenticate(key_store, issued.token)
    assert found.key_id == issued.key.key_id
    assert found.name == "ops@example"
    assert found.role == "admin"
    assert found.created_at.tzinfo is UTC
    assert key_store.count() == 1
    assert [k.name for k in key_store.all()] == ["ops@example"]


def test_api_key_with_wrong_secret_is_refused(key_store: SqlApiKeyStore) -> None:
    token = create_api_key(key_store, "ops", now=NOW).token
    last = "A" if token[-1] != "A" else "B"
    with pytest.raises(AuthenticationRequired):
        authenticate(key_store, token[:-1] + last)


@pytest.mark.parametrize(
    "token", ["", "garbage", "Bearer imp_x", "imp_0123456789abcdef_short", "imp__" + "a" * 43]
)
def test_malformed_api_key_is_refused(key_store: SqlApiKeyStore, token: str) -> None:
    create_api_key(key_store, "ops", now=NOW)
    with pytest.raises(AuthenticationRequired):
        authenticate(key_store, token)


def test_api_key_with_unknown_id_is_refused(key_store: SqlApiKeyStore) -> None:
    token = create_api_key(key_store, "ops", now=NOW).token
    secret = token.split("_", 2)[2]
    with pytest.raises(AuthenticationRequired):
        authenticate(key_store, f"imp_{'0' * 16}_{secret}")


def test_api_key_name_must_be_unique(key_store: SqlApiKeyStore) -> None:
    create_api_key(key_store, "ops", now=NOW)
    with pytest.raises(Conflict):
        create_api_key(key_store, "ops", now=NOW)
    assert key_store.count() == 1


def test_api_key_name_and_role_are_checked(key_store: SqlApiKeyStore) -> None:
    with pytest.raises(InvalidValue):
        create_api_key(key_store, "has space", now=NOW)
    with pytest.raises(InvalidValue):
        create_api_key(key_store, "ops", role="superuser", now=NOW)
    assert key_store.count() == 0


def test_api_key_last_use_and_removal(key_store: SqlApiKeyStore) -> None:
    issued = create_api_key(key_store, "ops", now=NOW)
    key_store.touch(issued.key.key_id, NOW)
    found = key_store.find(issued.key.key_id)
    assert found is not None
    assert found.last_used_at == NOW
    key_store.remove("ops")
    assert key_store.find(issued.key.key_id) is None
    with pytest.raises(AuthenticationRequired):
        authenticate(key_store, issued.token)
    with pytest.raises(NotFound):
        key_store.remove("ops")


# --- ended console sessions ---------------------------------------------------------------


def test_an_ended_session_stays_ended_until_it_would_have_expired(engine: Engine) -> None:
    ended = SqlEndedSessions(engine)
    assert not ended.is_ended("a" * 64)
    ended.end("a" * 64, NOW + timedelta(hours=1), NOW)
    ended.end("a" * 64, NOW + timedelta(hours=1), NOW)  # a second sign-out is no error
    assert ended.is_ended("a" * 64)
    assert not ended.is_ended("b" * 64)
    # Once expired, the cookie is refused for its expiry: the next sign-out forgets it.
    ended.end("b" * 64, NOW + timedelta(hours=3), NOW + timedelta(hours=2))
    assert not ended.is_ended("a" * 64)
    assert ended.is_ended("b" * 64)


def test_the_head_known_without_alembic_is_alembics_head() -> None:
    # upgrade() skips Alembic when the database is at known_head(): the two must agree.
    assert db.known_head() == db.head_revision()


def test_upgrade_migrates_a_database_behind_the_head(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        db.upgrade(engine)
        head = db.head_revision()
        with engine.begin() as connection:
            command.downgrade(db._alembic_config(connection), "-1")
        assert db.current_revision(engine) != head
        db.upgrade(engine)  # behind the head: Alembic runs the last migration again
        assert db.current_revision(engine) == head
    finally:
        engine.dispose()


# --- devices --------------------------------------------------------------------------------


def _device(ref: str, owner: str, device_id: str, status: DeviceStatus, key: str) -> Device:
    return Device(
        id=ref,
        owner=owner,
        device_id=device_id,
        enrollment_id="e",
        mechanism="x509",
        status=status,
        created_at=NOW,
        updated_at=NOW,
        public_key_sha256=key,
    )


def test_a_device_and_another_holder_of_its_key_come_in_one_read(engine: Engine) -> None:
    devices = SqlDeviceStore(engine)
    key, other_key = "k" * 64, "o" * 64
    assert devices.find_with_holder("acme", "meter-1", key) == (None, None)
    mine = _device("r1", "acme", "meter-1", DeviceStatus.PROVISIONED, key)
    devices.save(mine)
    # The device's own key is no other device's.
    assert devices.find_with_holder("acme", "meter-1", key) == (mine, None)
    # Devices that hold nothing (reset, disabled) or another key do not count.
    for n, status in enumerate((DeviceStatus.RESET, DeviceStatus.DISABLED)):
        devices.save(_device(f"r{n + 2}", "acme", f"old-{n}", status, other_key))
    devices.save(_device("r4", "acme", "meter-4", DeviceStatus.PROVISIONED, "z" * 64))
    assert devices.find_with_holder("acme", "meter-1", other_key) == (mine, None)
    # A holder in any organization counts, pending and approved ones too, and comes
    # without the device when there is none yet.
    for status in (DeviceStatus.PENDING, DeviceStatus.APPROVED, DeviceStatus.PROVISIONED):
        holder = _device("r5", "globex", "meter-1", status, other_key)
        devices.save(holder)
        assert devices.find_with_holder("acme", "meter-1", other_key) == (mine, holder)
        assert devices.find_with_holder("acme", "new-one", other_key) == (None, holder)


def test_a_device_id_taken_by_another_row_is_a_conflict_the_unit_outlives(
    engine: Engine,
) -> None:
    """Saving a device whose id within its owner another row holds is a Conflict; the
    unit of work it happened in goes on and commits its other writes (on PostgreSQL a
    failed statement would have aborted the whole transaction)."""
    devices = SqlDeviceStore(engine)
    first = _device("r1", "acme", "meter-1", DeviceStatus.PROVISIONED, "k" * 64)
    devices.save(first)
    later = replace(first, status=DeviceStatus.DISABLED, updated_at=NOW + timedelta(hours=1))
    with db.unit_of_work(engine):
        with pytest.raises(Conflict) as clash:
            devices.save(_device("r2", "acme", "meter-1", DeviceStatus.PENDING, "o" * 64))
        assert clash.value.code == "device_exists"
        devices.save(later)  # the same row: updated
        devices.save(_device("r3", "globex", "meter-1", DeviceStatus.PENDING, "o" * 64))
    assert devices.get("r1") == later
    assert devices.get("r3").owner == "globex"
    with pytest.raises(NotFound):
        devices.get("r2")
    # Outside a unit of work, too.
    with pytest.raises(Conflict):
        devices.save(_device("r4", "globex", "meter-1", DeviceStatus.PENDING, "o" * 64))
    assert devices.get("r3").status is DeviceStatus.PENDING


def test_a_requests_steps_are_recorded_whole_however_many(engine: Engine) -> None:
    """One step, or several in one statement (PostgreSQL: one multi-row INSERT per
    count), each read back as written, in order."""
    recorder = SqlStepRecorder(engine)
    for round_, count in enumerate((1, 2, 5, 2)):
        steps = [
            StepRecord(
                request_id=f"req-{count}",
                mechanism="x509",
                step=list(ProvisioningStep)[n % len(ProvisioningStep)],
                status="failed" if n == count - 1 else "ok",
                at=NOW + timedelta(seconds=n),
                device_ref=f"dev-{round_}",
                enrollment_id="e" if n else None,
                registration_id=f"meter-{n}",
                code="policy_denied" if n == count - 1 else None,
                detail=f"step {n} of {count}",
                source="198.51.100.7",
            )
            for n in range(count)
        ]
        recorder.record(steps)
        assert list(recorder.for_device(f"dev-{round_}")) == steps
