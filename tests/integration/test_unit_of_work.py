"""Every store an administrator's change goes through joins the caller's unit of work, on
SQLite and PostgreSQL: its write commits with the audit entry that records it, or not at
all, and a constraint failure it catches fails alone."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Table, func, select, text
from sqlalchemy.engine import Engine

from imprint.attestation.revocation import DeniedCertificate
from imprint.audit import AuditEntry
from imprint.auth.api_keys import ApiKey
from imprint.auth.clients import OAuthClient
from imprint.channels.entries import ChannelRateLimited, EntryDraft
from imprint.errors import Conflict, NotFound
from imprint.identities.psk import ClientPsk, PskOrigin
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.provisioning.channels import ChannelDraft, ChannelKey, KeyKind
from imprint.provisioning.client_cas import ClientCA
from imprint.provisioning.enrollments import Enrollment, EnrollmentKind, Mechanism
from imprint.provisioning.oob_secrets import OobSecret
from imprint.provisioning.registration_keys import KeyState, RegistrationKey
from imprint.sealing import SecretBox
from imprint.store import tables
from imprint.store.api_keys import SqlApiKeyStore
from imprint.store.audit import SqlAuditLog
from imprint.store.certificates import SqlCertificateLedger
from imprint.store.channel_entries import SqlEntryStore
from imprint.store.channels import SqlChannelStore
from imprint.store.client_cas import SqlClientCAStore
from imprint.store.db import own_transaction, reading, unit_of_work, writing
from imprint.store.deny_list import SqlDenyList
from imprint.store.enrollments import SqlEnrollmentStore
from imprint.store.identities import SqlPskStore
from imprint.store.oauth import SqlOAuthClientStore
from imprint.store.oob_secrets import SqlOobSecretStore
from imprint.store.orgs import SqlOrganizationStore
from imprint.store.registration_keys import SqlRegistrationKeyStore
from imprint.store.users import SqlUserStore
from imprint.tenancy.orgs import Organization
from imprint.tenancy.roles import Role
from imprint.tenancy.users import Membership, User

# Storage (units of work, constraint failures): every test here runs on PostgreSQL too (see
# tests/conftest.py).
pytestmark = pytest.mark.both_databases


NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)

Write = Callable[[Engine, SecretBox, int], object]


class Boom(Exception):
    """What the caller raises after the store's write, inside the unit."""


def enrollment(n: int) -> Enrollment:
    return Enrollment(
        id=f"line-{n}",
        kind=EnrollmentKind.GROUP,
        mechanism=Mechanism.X509,
        owner="acme",
        created_at=NOW,
        updated_at=NOW,
    )


def add_enrollment(engine: Engine, box: SecretBox, n: int) -> None:
    SqlEnrollmentStore(engine, box).add(enrollment(n))


def install_registration_key(engine: Engine, box: SecretBox, n: int) -> None:
    key = RegistrationKey(
        id=f"rk-{n}",
        enrollment_id=f"line-{n}",
        key=f"first{n}-second",
        state=KeyState.CURRENT,
        created_at=NOW,
    )
    SqlRegistrationKeyStore(engine, box).install(key, replacing=None, previous_expires_at=NOW)


def take_registration_key(engine: Engine, box: SecretBox, n: int) -> None:
    """A key whose first half item ``n`` holds already: the lookup hash is taken."""
    key = RegistrationKey(
        id="rk-other",
        enrollment_id="line-other",
        key=f"first{n}-other",
        state=KeyState.CURRENT,
        created_at=NOW,
    )
    SqlRegistrationKeyStore(engine, box).install(key, replacing=None, previous_expires_at=NOW)


def write_oob_secret(engine: Engine, box: SecretBox, n: int) -> None:
    secret = OobSecret(
        enrollment_id="line-1",
        device_id=f"dev-{n}",
        secret="correct horse battery staple",
        valid_until=NOW + timedelta(days=1),
        created_at=NOW,
    )
    SqlOobSecretStore(engine, box).write([secret], [])


def add_client_ca(engine: Engine, _box: SecretBox, n: int) -> None:
    ca = ClientCA(
        id=f"ca-{n}",
        enrollment_id="line-1",
        fingerprint_sha256=f"{n:064x}",
        subject=f"CN=CA {n}",
        pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        created_at=NOW,
    )
    SqlClientCAStore(engine).add([ca])


def deny(engine: Engine, _box: SecretBox, n: int) -> None:
    SqlDenyList(engine).add(DeniedCertificate(f"{n:064x}", "test", NOW))


def add_org(engine: Engine, _box: SecretBox, n: int) -> None:
    SqlOrganizationStore(engine).add(Organization(f"org-{n}", f"Org {n}", None, NOW))


def add_user(engine: Engine, _box: SecretBox, n: int) -> None:
    user = User(id=f"u-{n}", username=f"user-{n}", created_at=NOW)
    SqlUserStore(engine).add(user, [Membership(user.id, "acme", Role.ADMIN)])


def add_api_key(engine: Engine, _box: SecretBox, n: int) -> None:
    key = ApiKey(f"k{n}", f"key-{n}", f"{n:064x}", "admin", NOW)
    SqlApiKeyStore(engine).add(key)


def add_oauth_client(engine: Engine, _box: SecretBox, n: int) -> None:
    client = OAuthClient(
        client_id=f"c-{n}",
        name=f"client-{n}",
        secret_sha256=None,
        grant_types=("client_credentials",),
        created_at=NOW,
    )
    SqlOAuthClientStore(engine).add(client)


def create_channel(engine: Engine, box: SecretBox, n: int) -> None:
    draft = ChannelDraft(
        owner="acme",
        device_ref=f"d-{n}",
        device_id=f"sensor-{n}",
        enrollment_id="line-1",
        name=f"channel {n}",
        fields={"field1": "temperature"},
        created_at=NOW,
    )
    key = ChannelKey(id=f"ck-{n}", kind=KeyKind.WRITE, key=f"WRITEKEY{n:08d}", created_at=NOW)
    SqlChannelStore(engine, box).create(draft, [key])


def add_psk(engine: Engine, box: SecretBox, n: int) -> None:
    psk = ClientPsk(
        id=f"psk-{n}",
        org_id="acme",
        subject=f"client-{n}",
        origin=PskOrigin.ISSUED,
        created_by="admin",
        created_at=NOW,
        key=os.urandom(32),
    )
    SqlPskStore(engine, box).add(psk)


def reserve_certificate(engine: Engine, _box: SecretBox, n: int) -> None:
    """A certificate's record as issuance writes it: reserved before the signature and
    marked issued after it (in a unit of work, one INSERT of the issued record); item
    ``n``'s serial is ``n``."""
    record = CertificateRecord(
        serial=f"{n:040x}",
        issuer="issuing",
        profile="device",
        subject=f"CN=dev-{n}",
        sans=(),
        status=CertificateStatus.PENDING,
        not_before=NOW,
        not_after=NOW + timedelta(days=1),
        requested_by="test",
        created_at=NOW,
    )
    ledger = SqlCertificateLedger(engine)
    reserved = ledger.reserve(record)
    unreserved = None if reserved else record
    ledger.mark_issued(record.serial, b"\x30\x00", "ab" * 32, NOW, unreserved=unreserved)


@dataclass(frozen=True)
class Case:
    write: Write
    table: Table
    #: A write that fails on a constraint once ``write(.., 1)`` is in (None: none can).
    clash: Write | None = None


CASES = {
    "enrollments": Case(add_enrollment, tables.enrollments, add_enrollment),
    "registration_keys": Case(
        install_registration_key, tables.registration_keys, take_registration_key
    ),
    "oob_secrets": Case(write_oob_secret, tables.oob_secrets, write_oob_secret),
    "client_cas": Case(add_client_ca, tables.client_cas),
    "deny_list": Case(deny, tables.denied_certificates, deny),
    "orgs": Case(add_org, tables.organizations, add_org),
    "users": Case(add_user, tables.users, add_user),
    "api_keys": Case(add_api_key, tables.api_keys, add_api_key),
    "oauth_clients": Case(add_oauth_client, tables.oauth_clients, add_oauth_client),
    "channels": Case(create_channel, tables.channels, create_channel),
    "psks": Case(add_psk, tables.client_psks, add_psk),
    "certificates": Case(reserve_certificate, tables.certificates, reserve_certificate),
}
CLASHING = {name: case for name, case in CASES.items() if case.clash is not None}


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(os.urandom(32))


def count(engine: Engine, table: Table) -> int:
    """Rows committed in ``table`` (read on a connection of its own)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def audit(engine: Engine, action: str = "test.change") -> None:
    SqlAuditLog(engine).write(AuditEntry(actor="admin", action=action, target_type="test"))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_failing_unit_keeps_nothing_of_the_store_write(
    engine: Engine, box: SecretBox, case: Case
) -> None:
    def change() -> None:
        with unit_of_work(engine):
            case.write(engine, box, 1)
            audit(engine)
            raise Boom

    with pytest.raises(Boom):
        change()
    assert count(engine, case.table) == 0
    assert count(engine, tables.audit_log) == 0


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_store_write_commits_with_its_audit_entry(
    engine: Engine, box: SecretBox, case: Case
) -> None:
    with unit_of_work(engine):
        case.write(engine, box, 1)
        audit(engine)
        assert count(engine, case.table) == 0  # not committed yet: the unit holds both
        assert count(engine, tables.audit_log) == 0
    assert count(engine, case.table) == 1
    assert count(engine, tables.audit_log) == 1


@pytest.mark.parametrize("case", CLASHING.values(), ids=CLASHING.keys())
def test_a_caught_constraint_failure_fails_alone(
    engine: Engine, box: SecretBox, case: Case
) -> None:
    assert case.clash is not None
    case.write(engine, box, 1)
    before = count(engine, case.table)
    with unit_of_work(engine):
        audit(engine, "test.before")
        with pytest.raises(Conflict):
            case.clash(engine, box, 1)
        audit(engine, "test.after")  # PostgreSQL: the transaction was not aborted
    assert count(engine, case.table) == before
    assert count(engine, tables.audit_log) == 2


def test_a_duplicate_organization_leaves_the_other_writes_of_the_unit(engine: Engine) -> None:
    orgs = SqlOrganizationStore(engine)
    orgs.add(Organization("acme", "Acme", None, NOW))
    with unit_of_work(engine):
        orgs.add(Organization("acme-eu", "Acme EU", "acme", NOW))
        with pytest.raises(Conflict):
            orgs.add(Organization("acme", "Acme again", None, NOW))
        SqlUserStore(engine).add(User(id="u-1", username="ana", created_at=NOW), [])
    assert [org.id for org in orgs.all()] == ["acme", "acme-eu"]
    assert SqlUserStore(engine).get("u-1").username == "ana"


def test_a_rolled_back_enrollment_is_never_handed_out_by_the_cache(
    engine: Engine, box: SecretBox
) -> None:
    store = SqlEnrollmentStore(engine, box)
    seen_elsewhere: list[BaseException | None] = []

    def other_thread() -> None:
        try:
            store.get("line-1")
            seen_elsewhere.append(None)
        except NotFound as exc:
            seen_elsewhere.append(exc)

    def change() -> None:
        with unit_of_work(engine):
            store.add(enrollment(1))
            assert store.get("line-1").owner == "acme"  # the unit reads its own write
            reader = threading.Thread(target=other_thread)
            reader.start()
            reader.join()
            raise Boom

    with pytest.raises(Boom):
        change()
    assert isinstance(seen_elsewhere[0], NotFound)  # uncommitted: not shared via the cache
    with pytest.raises(NotFound):
        store.get("line-1")


def test_a_committed_enrollment_is_seen_at_once_after_the_unit(
    engine: Engine, box: SecretBox
) -> None:
    store = SqlEnrollmentStore(engine, box)
    reader = SqlEnrollmentStore(engine, box)
    with unit_of_work(engine):
        store.add(enrollment(1))
        # Another thread asks meanwhile and may keep "no such enrollment" in the cache.
        answers: list[object] = []
        thread = threading.Thread(target=lambda: answers.append(reader.search(owner="acme")))
        thread.start()
        thread.join()
        assert answers == [()]
    assert [e.id for e in reader.search(owner="acme")] == ["line-1"]


def test_a_rate_limited_append_in_a_unit_leaves_the_counter(engine: Engine, box: SecretBox) -> None:
    create_channel(engine, box, 1)
    channel = SqlChannelStore(engine, box).for_device("d-1")
    assert channel is not None
    entries = SqlEntryStore(engine)
    entries.append(channel.id, EntryDraft(fields={"field1": "20"}), min_interval=timedelta(0))
    with unit_of_work(engine):
        with pytest.raises(ChannelRateLimited):
            entries.append(
                channel.id, EntryDraft(fields={"field1": "21"}), min_interval=timedelta(hours=1)
            )
        audit(engine)
    assert entries.last_entry_id(channel.id) == 1
    made = entries.append(
        channel.id, EntryDraft(fields={"field1": "22"}), min_interval=timedelta(0)
    )
    assert made.entry_id == 2


def test_an_append_that_waited_for_another_sees_its_entry(
    engine: Engine, box: SecretBox, backend: str
) -> None:
    """Two appends to one channel within its window, the second waiting for the first's
    row lock (PostgreSQL): when the first commits, the second is refused. Its bump's
    snapshot is older than the first's entry, so the entry before is looked for again."""
    if backend != "postgresql":
        pytest.skip("SQLite's writer lock is taken before a write's first statement")
    create_channel(engine, box, 1)
    channel = SqlChannelStore(engine, box).for_device("d-1")
    assert channel is not None
    entries = SqlEntryStore(engine)
    entries.append(channel.id, EntryDraft(fields={"field1": "1"}), min_interval=timedelta(0))
    outcome: list[object] = []

    def second() -> None:
        try:
            outcome.append(
                entries.append(
                    channel.id, EntryDraft(fields={"field1": "3"}), min_interval=timedelta(hours=1)
                )
            )
        except ChannelRateLimited as refused:
            outcome.append(refused)

    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE channels%'"
    )
    with engine.connect() as first:  # an append of its own, held open
        first.execute(
            text("UPDATE channels SET last_entry_id = 2 WHERE id = :id"), {"id": channel.id}
        )
        first.execute(
            text("INSERT INTO channel_entries (channel_id, entry_id, created_at)"
                 " VALUES (:id, 2, :at)"),
            {"id": channel.id, "at": datetime.now(UTC)},
        )  # fmt: skip
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        # Each look a transaction of its own: one transaction sees the same sessions.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
            while not (seen := watcher.execute(waiting).scalar()) and time.monotonic() < deadline:
                time.sleep(0.01)
        assert seen, "the second append never waited for the first's row lock"
        first.commit()
    thread.join(timeout=30)
    assert len(outcome) == 1, outcome
    assert isinstance(outcome[0], ChannelRateLimited), outcome
    assert entries.last_entry_id(channel.id) == 2


def test_a_refused_key_rotation_in_a_unit_leaves_the_current_key(
    engine: Engine, box: SecretBox
) -> None:
    store = SqlRegistrationKeyStore(engine, box)
    install_registration_key(engine, box, 1)  # line-1's current key
    install_registration_key(engine, box, 2)  # holds the first half "first2"
    rotated = RegistrationKey(
        id="rk-new",
        enrollment_id="line-1",
        key="first2-again",
        state=KeyState.CURRENT,
        created_at=NOW,
    )
    with unit_of_work(engine):
        with pytest.raises(Conflict):
            store.install(rotated, replacing="rk-1", previous_expires_at=NOW)
        audit(engine)
    assert [(k.id, k.state) for k in store.for_enrollment("line-1")] == [("rk-1", KeyState.CURRENT)]


def test_reads_outside_a_unit_stand_alone_and_inside_one_share_its_transaction(
    engine: Engine, backend: str
) -> None:
    """On PostgreSQL a read outside a unit of work runs in autocommit (one round trip, no
    BEGIN and ROLLBACK around it): two statements there see two transaction start times.
    Once a unit has written, its reads are in its transaction: one start time."""
    if backend != "postgresql":
        pytest.skip("SQLite starts no transaction for a read")
    now_after_a_pause = text("SELECT now() FROM (SELECT pg_sleep(0.01)) AS paused")
    with reading(engine) as conn:
        first = conn.execute(text("SELECT now()")).scalar_one()
        second = conn.execute(now_after_a_pause).scalar_one()
    assert second > first
    log = SqlAuditLog(engine)
    with unit_of_work(engine):
        log.write(AuditEntry(actor="test", action="test.read", target_type="test"))
        with reading(engine) as conn:
            first = conn.execute(text("SELECT now()")).scalar_one()
            second = conn.execute(now_after_a_pause).scalar_one()
    assert second == first


def test_a_transaction_of_its_own_after_the_units_first_write(engine: Engine) -> None:
    """A transaction of its own commits whatever the unit does next. On SQLite, after
    the unit's first write, it would wait for the one writer's lock the unit holds in
    this very context: refused at once instead of a 10 s wait and `database is
    locked`. Before the unit writes, and on PostgreSQL, it is fine."""
    with unit_of_work(engine):
        with own_transaction(engine) as conn:  # nothing written by the unit yet
            conn.execute(text("SELECT 1"))
        with writing(engine) as conn:
            conn.execute(select(func.count()).select_from(tables.api_keys))
        if engine.dialect.name == "sqlite":
            with pytest.raises(RuntimeError, match="first write"):
                own_transaction(engine)
        else:
            with own_transaction(engine) as conn:
                conn.execute(text("SELECT 1"))


@pytest.mark.parametrize("where", ["unit of work", "write of its own", "transaction of its own"])
def test_a_failed_commit_leaves_nothing_behind_in_the_pool(engine: Engine, where: str) -> None:
    """When a commit fails, SQLAlchemy forgets the transaction without rolling it back and
    pools the connection as it is: its next user would see the writes (and commit them
    with its own), and on SQLite the writer locks would stay taken. The connection is
    discarded instead: nothing of the failed transaction is seen, and the next writer
    writes at once."""
    from sqlalchemy import event

    from imprint.store.db import engines

    def refuse(_conn: object) -> None:
        raise OSError("the commit failed")

    insert = tables.organizations.insert().values(
        id="ghost", name="Ghost", parent_id=None, created_at=NOW
    )

    def write() -> None:
        if where == "unit of work":
            with unit_of_work(engine), writing(engine) as conn:
                conn.execute(insert)
        elif where == "write of its own":
            with writing(engine) as conn:
                conn.execute(insert)
        else:
            with own_transaction(engine) as conn:
                conn.execute(insert)

    listened = engines(engine)
    for each in listened:
        event.listen(each, "commit", refuse)
    try:
        with pytest.raises(OSError, match="commit failed"):
            write()
    finally:
        for each in listened:
            event.remove(each, "commit", refuse)
    for _ in range(3):  # whichever pooled connection comes next
        with reading(engine) as conn:
            assert (
                conn.execute(select(func.count()).select_from(tables.organizations)).scalar_one()
                == 0
            )
    started = datetime.now(UTC)
    SqlOrganizationStore(engine).add(
        Organization(id="next", name="Next", parent_id=None, created_at=NOW)
    )
    assert datetime.now(UTC) - started < timedelta(seconds=2)
    with reading(engine) as conn:
        assert conn.execute(select(tables.organizations.c.id)).scalars().all() == ["next"]
