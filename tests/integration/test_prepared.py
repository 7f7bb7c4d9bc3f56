"""``Prepared`` statements (store/db.py) store what Core would store, value for value,
and fail as Core fails: a refused value is a ``StatementError``, a clash an
``IntegrityError``, and a statement that needs what they do not do is refused."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    bindparam,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    text,
    union_all,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, StatementError

from imprint.store.db import Prepared, engines, on_event_loop, own_transaction, reading, writing
from imprint.store.tables import certificates, devices, used_nonces, users

pytestmark = pytest.mark.both_databases

#: A time in another zone, with microseconds: the UTC type converts it on the way in.
AT = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
#: A whole second, as certificates and devices keep their times: SQLite's text must
#: still carry the microseconds, or text comparisons with other rows go wrong.
WHOLE = AT.replace(microsecond=0)


def _certificate(serial: str, at: datetime = AT) -> dict[str, object]:
    return {
        "serial": serial, "issuer": "i", "profile": "device", "subject": "CN=é ü",
        "sans": json.dumps(["a.example"]), "status": "issued", "not_before": at,
        "not_after": at + timedelta(days=1), "requested_by": "t", "created_at": at,
        "issued_at": at, "fingerprint_sha256": "f" * 64, "der": b"\x00\x01\xff",
        "owner": None, "device_ref": None,
    }  # fmt: skip


def _stored(engine: Engine, serial: str) -> tuple[object, ...]:
    with reading(engine) as conn:
        typed = conn.execute(select(certificates).where(certificates.c.serial == serial)).one()
        # What the column holds, below the type's processing (SQLite: the text).
        raw = conn.execute(
            text("SELECT not_before, created_at FROM certificates WHERE serial = :s"), {"s": serial}
        ).one()
    return (*typed, *raw)


@pytest.mark.parametrize(
    "at", [AT, WHOLE, AT.astimezone(UTC)], ids=["microseconds", "whole second", "in UTC"]
)
def test_a_prepared_insert_stores_what_core_stores(engine: Engine, at: datetime) -> None:
    prepared = Prepared(insert(certificates))
    with own_transaction(engine) as conn:
        conn.execute(insert(certificates), _certificate("c0", at))
        prepared.execute(conn, _certificate("p0", at))
    core, ours = _stored(engine, "c0"), _stored(engine, "p0")
    assert ours[1:] == core[1:]
    assert ours[0] == "p0"
    with reading(engine) as conn:
        back = conn.execute(select(certificates.c.not_before).where(certificates.c.serial == "p0"))
        assert back.scalar_one() == at.astimezone(UTC)
        # Rows written either way compare as equal times.
        same = select(func.count()).where(certificates.c.not_after == at + timedelta(days=1))
        assert conn.execute(same).scalar_one() == 2


def test_a_prepared_upsert_writes_what_core_writes(engine: Engine) -> None:
    """The device store's upsert, inserting and then updating, against Core's."""
    module = __import__(f"sqlalchemy.dialects.{engine.dialect.name}", fromlist=["insert"])
    statement = module.insert(devices)
    columns = ("owner", "device_id", "status", "updated_at", "provisioned_at")
    upsert = statement.on_conflict_do_update(
        index_elements=[devices.c.id], set_={c: statement.excluded[c] for c in columns}
    )
    prepared = Prepared(upsert)

    def device(ref: str, at: datetime) -> dict[str, object]:
        return {"id": ref, "owner": "o", "device_id": f"d-{ref}", "enrollment_id": "e",
                "mechanism": "x509", "status": "provisioned", "created_at": WHOLE,
                "updated_at": at, "certificate_serial": None, "pinned_fingerprint": None,
                "public_key_sha256": "k", "provisioned_at": at}  # fmt: skip

    with own_transaction(engine) as conn:
        for at in (WHOLE, WHOLE + timedelta(hours=1)):
            conn.execute(upsert, device("core", at))
            prepared.execute(conn, device("ours", at))
    with reading(engine) as conn:
        raw = text("SELECT * FROM devices WHERE id = :id")
        core = conn.execute(raw, {"id": "core"}).one()._asdict()
        ours = conn.execute(raw, {"id": "ours"}).one()._asdict()
    differing = {k for k in core if core[k] != ours[k]}
    assert differing == {"id", "device_id"}, (core, ours)


def test_several_rows_at_once(engine: Engine) -> None:
    prepared = Prepared(insert(used_nonces))
    rows = [{"scope": "s", "nonce": f"n{i}", "expires_at": AT} for i in range(5)]
    with own_transaction(engine) as conn:
        prepared.execute(conn, rows)
    with reading(engine) as conn:
        stored = conn.execute(select(used_nonces).order_by(used_nonces.c.nonce)).all()
    assert [(r.nonce, r.expires_at) for r in stored] == [(f"n{i}", AT) for i in range(5)]


def test_the_row_count_of_an_insert_that_did_nothing(engine: Engine) -> None:
    dialect = engine.dialect.name
    module = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"])
    prepared = Prepared(module.insert(used_nonces).on_conflict_do_nothing())
    values = {"scope": "s", "nonce": "once", "expires_at": AT}
    with own_transaction(engine) as conn:
        assert prepared.execute(conn, values) == 1
        assert prepared.execute(conn, values) == 0


def test_a_clash_is_an_integrity_error_and_a_refused_value_a_statement_error(
    engine: Engine,
) -> None:
    prepared = Prepared(insert(used_nonces))
    values = {"scope": "s", "nonce": "twice", "expires_at": AT}
    with own_transaction(engine) as conn:
        prepared.execute(conn, values)
    with pytest.raises(IntegrityError), own_transaction(engine) as conn:
        prepared.execute(conn, values)
    naive = {**values, "nonce": "naive", "expires_at": datetime(2031, 1, 1)}
    with pytest.raises(StatementError, match="naive datetimes"), own_transaction(engine) as conn:
        prepared.execute(conn, naive)
    with reading(engine) as conn:
        assert conn.execute(select(used_nonces.c.nonce)).scalars().all() == ["twice"]


def test_a_statement_it_cannot_bind_is_refused(engine: Engine) -> None:
    incomplete = _certificate("x")
    del incomplete["sans"]  # the column has a default Core would fill in
    with own_transaction(engine) as conn:
        with pytest.raises(TypeError, match="every value"):
            Prepared(insert(certificates)).execute(conn, incomplete)
        expanding = delete(used_nonces).where(used_nonces.c.nonce.in_(["a", "b"]))
        with pytest.raises(TypeError, match="expanding IN"):
            Prepared(expanding).execute(conn, {"scope": "s"})
    # an option only Core's execution context would read is refused, not ignored
    with pytest.raises(TypeError, match="execution options"):
        Prepared(insert(used_nonces).execution_options(preserve_rowcount=True))


def test_a_prepared_query_reads_what_core_reads(engine: Engine) -> None:
    """Times (with and without microseconds, and NULL), bytes, text, booleans, a
    labelled literal in a UNION: every value as Core's own execution returns it."""
    with own_transaction(engine) as conn:
        conn.execute(insert(certificates), [_certificate("a", AT), _certificate("b", WHOLE)])
        conn.execute(
            insert(users),
            [
                {"id": "u1", "username": "ana", "password_hash": None, "disabled": True,
                 "created_at": AT, "sessions_valid_after": None},
                {"id": "u2", "username": "bo", "password_hash": "h", "disabled": False,
                 "created_at": WHOLE, "sessions_valid_after": WHOLE},
            ],
        )  # fmt: skip
    by_serial = select(certificates).where(certificates.c.serial == bindparam("serial"))
    both = union_all(
        select(users, literal_column("0").label("which")).where(users.c.id == bindparam("a")),
        select(users, literal_column("1").label("which")).where(users.c.id == bindparam("b")),
    )
    with reading(engine) as conn:
        for serial in ("a", "b"):
            core = [dict(r) for r in conn.execute(by_serial, {"serial": serial}).mappings()]
            ours = Prepared(by_serial).rows(conn, {"serial": serial})
            assert ours == core
            assert len(ours) == 1
            assert ours[0]["not_before"].tzinfo is not None
        core = [dict(r) for r in conn.execute(both, {"a": "u1", "b": "u2"}).mappings()]
        ours = Prepared(both).rows(conn, {"a": "u1", "b": "u2"})
        assert sorted(ours, key=str) == sorted(core, key=str)
        assert len(ours) == 2
        assert {row["username"]: row["disabled"] for row in ours} == {"ana": True, "bo": False}
        assert all(type(row["disabled"]) is bool for row in ours)
        assert Prepared(by_serial).rows(conn, {"serial": "none"}) == []


def test_the_first_statement_begins_a_transaction_that_commits_or_rolls_back(
    engine: Engine,
) -> None:
    """On the cursor, as under Core: the connection's transaction begins with a prepared
    statement, so it commits with the connection, and is rolled back without it."""
    prepared = Prepared(insert(used_nonces))
    with engine.connect() as conn:
        assert prepared.execute(conn, {"scope": "s", "nonce": "dropped", "expires_at": AT}) == 1
        assert conn.in_transaction()
    with engine.connect() as conn:
        prepared.execute(conn, {"scope": "s", "nonce": "kept", "expires_at": AT})
        conn.commit()
        assert not conn.in_transaction()
    with reading(engine) as conn:
        assert conn.execute(select(used_nonces.c.nonce)).scalars().all() == ["kept"]


def test_the_engines_events_see_each_prepared_statement(engine: Engine) -> None:
    """The statement budget and the fault tests listen to ``before_cursor_execute``."""
    seen: list[tuple[str, str, bool]] = []

    def before(_c: Any, _cur: Any, sql: str, _p: Any, _ctx: Any, many: bool) -> None:
        seen.append(("before", sql.split()[0], many))

    def after(_c: Any, _cur: Any, sql: str, _p: Any, _ctx: Any, many: bool) -> None:
        seen.append(("after", sql.split()[0], many))

    prepared = Prepared(insert(used_nonces))
    rows = [{"scope": "s", "nonce": f"e{i}", "expires_at": AT} for i in range(2)]
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        with own_transaction(engine) as conn:
            prepared.execute(conn, rows[0])
            prepared.execute(conn, rows)
    except IntegrityError:  # the second writes e0 again: the events still came first
        pass
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert seen == [
        ("before", "INSERT", False),
        ("after", "INSERT", False),
        ("before", "INSERT", True),
    ]


def test_a_listener_that_rewrites_the_statement_is_obeyed(engine: Engine) -> None:
    """A ``retval=True`` listener returns the statement and parameters to run, as
    under Core: the driver and the later events get the rewritten statement."""
    ran: list[str] = []

    def tag(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, _m: bool) -> Any:
        return sql + " -- tagged", params

    def after(_c: Any, _cur: Any, sql: str, _p: Any, _ctx: Any, _m: bool) -> None:
        ran.append(sql)

    prepared = Prepared(insert(used_nonces))
    event.listen(engine, "before_cursor_execute", tag, retval=True)
    event.listen(engine, "after_cursor_execute", after)
    try:
        with own_transaction(engine) as conn:
            assert prepared.execute(conn, {"scope": "s", "nonce": "t", "expires_at": AT}) == 1
    finally:
        event.remove(engine, "before_cursor_execute", tag)
        event.remove(engine, "after_cursor_execute", after)
    assert len(ran) == 1
    assert ran[0].startswith("INSERT")
    assert ran[0].endswith(" -- tagged")


def test_a_listeners_own_error_is_raised_unchanged(engine: Engine) -> None:
    """An error that is not the driver's (a fault injected by a listener, a lock file
    that cannot be opened) comes out as itself, as under Core, not as a StatementError;
    the transaction stays usable."""

    def refuse(_c: Any, _cur: Any, _sql: str, _p: Any, _ctx: Any, _m: bool) -> None:
        raise OSError("injected")

    prepared = Prepared(insert(used_nonces))
    with own_transaction(engine) as conn:
        event.listen(engine, "before_cursor_execute", refuse)
        try:
            with pytest.raises(OSError, match="injected"):
                prepared.execute(conn, {"scope": "s", "nonce": "o", "expires_at": AT})
        finally:
            event.remove(engine, "before_cursor_execute", refuse)
        assert prepared.execute(conn, {"scope": "s", "nonce": "o", "expires_at": AT}) == 1


def test_an_error_while_the_rows_are_fetched_is_sqlalchemys(engine: Engine, backend: str) -> None:
    """SQLite computes the rows after the first as they are fetched: an error there is
    SQLAlchemy's ``OperationalError``, as from Core's result, not the driver's own."""
    if backend != "sqlite":
        pytest.skip("psycopg reads every row when the statement runs")
    calls = []

    def second_fails(value: str) -> str:
        calls.append(value)
        if len(calls) == 2:
            raise ValueError("the second row")
        return value

    with own_transaction(engine) as conn:
        for i in range(3):
            conn.execute(insert(used_nonces).values(scope="f", nonce=f"f{i}", expires_at=AT))
        conn.connection.driver_connection.create_function("second_fails", 1, second_fails)  # type: ignore[union-attr]
        prepared = Prepared(
            select(func.second_fails(used_nonces.c.nonce).label("n"))
            .where(used_nonces.c.scope == bindparam("s"))
            .order_by(used_nonces.c.nonce)
        )
        with pytest.raises(DBAPIError) as failed:
            prepared.rows(conn, {"s": "f"})
        assert isinstance(failed.value, OperationalError)
        assert len(calls) == 2


def test_a_lost_connection_is_invalidated_and_the_next_checkout_works(
    engine: Engine, backend: str
) -> None:
    """A prepared statement on a connection the server has ended fails as under Core:
    a ``DBAPIError`` that says the connection was invalidated, which the pool then
    replaces."""
    if backend != "postgresql":
        pytest.skip("a server ends the connection: PostgreSQL")
    prepared = Prepared(select(used_nonces).where(used_nonces.c.nonce == bindparam("n")))
    with engine.connect() as conn:
        pid = conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
        with engine.connect() as admin:
            ended = admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
            assert ended.scalar_one() is True
        with pytest.raises(DBAPIError) as lost:
            prepared.rows(conn, {"n": "x"})
        assert lost.value.connection_invalidated
    with reading(engine) as conn:
        assert prepared.rows(conn, {"n": "x"}) == []


def test_on_the_event_loop_a_connection_keeps_one_cursor(engine: Engine, backend: str) -> None:
    """On PostgreSQL's event loop a pooled connection runs its prepared statements on one
    psycopg cursor, across statements and checkouts; a clash is still an
    ``IntegrityError``, after which the connection goes on; a connection the server ended
    is replaced, with a cursor of its own."""
    if backend != "postgresql":
        pytest.skip("the event loop's statements: PostgreSQL")
    add = Prepared(insert(certificates))
    find = Prepared(select(certificates.c.serial).where(certificates.c.serial == bindparam("s")))
    cursors: list[object] = []

    def seen(_conn: object, cursor: object, *_: object) -> None:
        cursors.append(cursor)

    def write_and_read() -> list[dict[str, Any]]:
        with writing(engine) as conn:
            assert add.execute(conn, _certificate("kept-1")) == 1
            assert add.execute(conn, [_certificate("kept-2"), _certificate("kept-3")]) == 2
        with reading(engine) as conn:
            return find.rows(conn, {"s": "kept-2"})

    def clash() -> None:
        with writing(engine) as conn:
            add.execute(conn, _certificate("kept-1"))

    def serials(serial: str) -> list[dict[str, Any]]:
        with reading(engine) as conn:
            return find.rows(conn, {"s": serial})

    def backend_pid() -> int:
        with reading(engine) as conn:
            return int(conn.connection.driver_connection.info.backend_pid)  # type: ignore[union-attr]

    async def main() -> None:
        assert await on_event_loop(engine, write_and_read) == [{"serial": "kept-2"}]
        with pytest.raises(IntegrityError):
            await on_event_loop(engine, clash)
        assert await on_event_loop(engine, serials, "kept-3") == [{"serial": "kept-3"}]
        pid = await on_event_loop(engine, backend_pid)
        with engine.connect() as admin:
            ended = admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
            assert ended.scalar_one() is True
        # The pool sees the ended connection at checkout and replaces it (db.py).
        assert await on_event_loop(engine, serials, "kept-1") == [{"serial": "kept-1"}]

    twin = engines(engine)[1]
    event.listen(twin, "before_cursor_execute", seen)
    try:
        asyncio.run(main())
    finally:
        event.remove(twin, "before_cursor_execute", seen)
    first, last = cursors[0], cursors[-1]
    assert all(cursor is first for cursor in cursors[:-1]), "a new cursor per statement"
    assert last is not first, "the replacing connection ran on the old one's cursor"
