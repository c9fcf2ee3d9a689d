"""Hot statements (db.HotStatement) on real PostgreSQL: the same rows, errors and transactions as
SQLAlchemy's own execution of the same statement, with far fewer Python calls (issue 13)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    bindparam,
    event,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Row

from hirepay_platform.db import (
    CoreSession,
    Database,
    HotResult,
    HotStatement,
    SqlAlchemyUnitOfWork,
    create_engine,
    database_down,
    execute_alone,
    lost_race,
)
from hirepay_platform.errors import Conflict, Unavailable
from tests.support.pg_round_trips import RoundTrips
from tests.support.pg_schema import database_with


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


metadata = MetaData()
things = Table(
    "hot_things",
    metadata,
    Column("id", Text, primary_key=True),
    Column("n", Integer, nullable=False),
    Column("big", BigInteger),
    Column("amount", Numeric(18, 4)),
    Column("ratio", Float),
    Column("flag", Boolean),
    Column("at", DateTime(timezone=True)),
    Column("day", Date),
    Column("doc", JSONB),
    Column("plain_doc", JSON),
    Column("color", Enum(Color, name="hot_color")),
    Column("uid", UUID(as_uuid=True)),
    Column("tags", ARRAY(Text)),
    Column("note", Text, server_default="none"),
)

_INSERT = HotStatement(insert(things).returning(*things.c))
_GET = HotStatement(select(things).where(things.c.id == bindparam("id")))
_BY_COLOR = HotStatement(
    select(things.c.id, things.c.color, (things.c.n * 2).label("twice"))
    .where(things.c.color == bindparam("color"), things.c.id.like("v-%"))
    .order_by(things.c.id)
)
_BUMP = HotStatement(update(things).where(things.c.id == bindparam("key")).values(n=things.c.n + 1))
_BUMP_RETURNING = HotStatement(
    update(things)
    .where(things.c.id == bindparam("key"))
    .values(n=things.c.n + bindparam("by"))
    .returning(things.c.n, func.now().label("now"))
)
_LOCK = HotStatement(select(things.c.n).where(things.c.id == bindparam("id")).with_for_update())
_INSERT_FIRST = HotStatement(
    pg_insert(things)
    .values(id=bindparam("id"), n=bindparam("n"))
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(literal_column("1").label("inserted"))
)
_TEXT = HotStatement(
    text("SELECT CAST(:a AS int) + CAST(:a AS int) AS doubled, CAST(:b AS text) AS word")
)


def _values(key: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": key,
        "n": 1,
        "big": 2**40,
        "amount": Decimal("12.3400"),
        "ratio": 0.25,
        "flag": True,
        "at": datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "day": date(2026, 12, 1),
        "doc": {"a": [1, 2, {"b": None}], "é": "ü"},
        "plain_doc": [1, "two"],
        "color": Color.BLUE,
        "uid": uuid.UUID(int=7),
        "tags": ["x", "y"],
        "note": "given",
    }
    values.update(changes)
    return values


class CoreUnitOfWork(SqlAlchemyUnitOfWork):
    core_only = True


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_hot", metadata)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database[CoreUnitOfWork]]:
    database = Database(db_url, CoreUnitOfWork, probe_table="hot_things", pool_size=2)
    await database.start()
    yield database
    await database.stop()


@pytest.fixture
def through_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements SQLAlchemy's own execution ran (a hot statement's first run per set of
    parameter names, and every statement that is not hot)."""
    ran: list[str] = []
    execute_context = Connection._execute_context

    def counted(
        self: Connection, dialect: Any, constructor: Any, statement: Any, *a: Any, **kw: Any
    ) -> Any:
        ran.append(str(statement))
        return execute_context(self, dialect, constructor, statement, *a, **kw)

    monkeypatch.setattr(Connection, "_execute_context", counted)
    return ran


async def _both(
    db: Database[CoreUnitOfWork], statement: HotStatement, params: dict[str, Any]
) -> tuple[list[Row[Any]], list[Row[Any]]]:
    """The rows of `statement` run by SQLAlchemy and run hot (warmed first), each in a unit of
    work that rolls back."""
    async with db.uow() as uow:
        by_sqlalchemy = (await uow.session.execute(statement.statement, params)).all()
    async with db.uow() as uow:
        await uow.session.execute(statement, params)  # the first run per names is SQLAlchemy's
    async with db.uow() as uow:
        result = await uow.session.execute(statement, params)
        assert isinstance(result, HotResult)
        hot = result.all()
    return by_sqlalchemy, hot


def _same(a: list[Row[Any]], b: list[Row[Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert tuple(x) == tuple(y)
        assert [type(v) for v in x] == [type(v) for v in y]
        assert dict(x._mapping) == dict(y._mapping)
        assert x._fields == y._fields
        assert type(x) is type(y)


async def test_rows_are_the_same_as_sqlalchemys_for_every_column_type(db, through_sqlalchemy):
    key = f"t-{uuid.uuid4()}"
    async with db.uow() as uow:
        first = (await uow.session.execute(_INSERT, _values(key))).one()
        await uow.commit()
    async with db.uow() as uow:
        hot = await uow.session.execute(_INSERT, _values(f"{key}-2", note=None, doc=None))
        assert isinstance(hot, HotResult)
        second = hot.one()
        await uow.commit()
    assert first.color is Color.BLUE and second.color is Color.BLUE
    assert second.amount == Decimal("12.3400") and second.at == _values(key)["at"]
    assert second.doc is None and second.note is None and second.tags == ["x", "y"]

    by_sqlalchemy, hot_rows = await _both(db, _GET, {"id": key})
    _same(by_sqlalchemy, hot_rows)
    row = hot_rows[0]
    assert row.doc == {"a": [1, 2, {"b": None}], "é": "ü"} and row.plain_doc == [1, "two"]
    assert row.uid == uuid.UUID(int=7) and row[0] == key
    assert row._mapping[things.c.color] is Color.BLUE  # by column too, as SQLAlchemy's rows
    _same(*await _both(db, _GET, {"id": f"{key}-2"}))
    # A fixed value in the statement (LIKE 'v-%'), a label, an enum parameter converted.
    async with db.uow() as uow:
        for i in range(3):
            values = _values(f"v-{key}-{i}", color=Color.RED if i % 2 else Color.BLUE, n=i)
            await uow.session.execute(_INSERT, values)
        await uow.commit()
    _same(*await _both(db, _BY_COLOR, {"color": Color.BLUE}))
    _same(*await _both(db, _BY_COLOR, {"color": Color.RED}))
    _same(*await _both(db, _TEXT, {"a": 21, "b": "w"}))
    assert (await _both(db, _TEXT, {"a": 21, "b": "w"}))[1][0].doubled == 42


async def test_a_hot_statement_runs_past_sqlalchemy_once_warm(db, through_sqlalchemy):
    """SQLAlchemy runs it once per set of parameter names; then the rows come without it."""
    key = f"w-{uuid.uuid4()}"
    insert_first, get = HotStatement(_INSERT_FIRST.statement), HotStatement(_GET.statement)
    for n in range(3):
        async with db.uow() as uow:
            result = await uow.session.execute(insert_first, {"id": f"{key}-{n}", "n": n})
            assert isinstance(result, HotResult) is (n > 0) and result.scalar_one() == 1
            assert (
                await uow.session.execute(insert_first, {"id": f"{key}-0", "n": 5})
            ).first() is None
            assert await uow.session.scalar(get, {"id": f"{key}-{n}"}) == f"{key}-{n}"
            assert list(await uow.session.scalars(get, {"id": f"{key}-0"})) == [f"{key}-0"]
            await uow.commit()
    assert len(through_sqlalchemy) == 2, through_sqlalchemy  # the first run of each


async def test_rowcount_and_results_without_rows(db):
    key = f"r-{uuid.uuid4()}"
    async with db.uow() as uow:
        await uow.session.execute(_INSERT_FIRST, {"id": key, "n": 1})
        for _ in range(3):
            result = await uow.session.execute(_BUMP, {"key": key})
            assert result.rowcount == 1 and not result.returns_rows
            with pytest.raises(sa_exc.ResourceClosedError):
                result.all()
        missing = await uow.session.execute(_BUMP, {"key": "nobody"})
        assert missing.rowcount == 0
        bumped = await uow.session.execute(_BUMP_RETURNING, {"key": key, "by": 10})
        assert bumped.rowcount == 1
        assert bumped.one().n == 14
        with pytest.raises(sa_exc.NoResultFound):
            (await uow.session.execute(_BUMP_RETURNING, {"key": "nobody", "by": 1})).one()
        await uow.commit()


async def test_plain_reads_go_before_begin_writes_open_the_transaction(db, round_trips: RoundTrips):
    """The lazy BEGIN as for any statement: a hot plain read sends no BEGIN, a lock or a write
    sends BEGIN first, the unit of work's commit or rollback ends it."""
    key = f"b-{uuid.uuid4()}"
    async with db.uow() as uow:
        await uow.session.execute(_INSERT_FIRST, {"id": key, "n": 1})
        await uow.commit()
    for _ in range(2):  # warm: every statement hot and prepared on the connection
        async with db.uow() as uow:
            await uow.session.execute(_GET, {"id": key})
            await uow.session.execute(_LOCK, {"id": key})
            await uow.session.execute(_BUMP, {"key": key})
    with round_trips:
        async with db.uow() as uow:
            assert (await uow.session.execute(_GET, {"id": key})).one().n == 1
    assert round_trips.sent == [("statement", " ".join(_sql(db, _GET).split()))]
    with round_trips:
        async with db.uow() as uow:
            await uow.session.execute(_GET, {"id": key})
            await uow.session.execute(_LOCK, {"id": key})
            await uow.session.execute(_BUMP, {"key": key})
            await uow.commit()
    kinds = [kind for kind, _ in round_trips.sent]
    assert kinds == ["statement", "simple", "statement", "statement", "simple"]
    assert round_trips.transaction_control == ["BEGIN;", "COMMIT;"]
    with round_trips:
        async with db.uow() as uow:
            await uow.session.execute(_BUMP, {"key": key})
    assert round_trips.transaction_control == ["BEGIN;", "ROLLBACK;"]
    async with db.uow() as uow:
        assert (await uow.session.execute(_GET, {"id": key})).one().n == 2


def _sql(db: Database[CoreUnitOfWork], hot: HotStatement) -> str:
    (plan,) = hot._plans.values()
    return plan.sql


async def test_a_hot_statement_alone_commits_itself(db, round_trips: RoundTrips):
    key = f"a-{uuid.uuid4()}"
    for n in range(2):  # warm
        async with db.uow() as uow:
            await execute_alone(uow.session, _INSERT_FIRST, {"id": f"{key}-{n}", "n": 1})
    with round_trips:
        async with db.uow() as uow:
            result = await execute_alone(uow.session, _INSERT_FIRST, {"id": key, "n": 3})
            assert isinstance(result, HotResult) and result.scalar_one() == 1
            # The unit of work rolls back: nothing of it was left open.
    assert round_trips.transaction_control == []
    assert round_trips.kinds() == {"statement": 1}
    async with db.uow() as uow:
        assert (await uow.session.execute(_GET, {"id": key})).one().n == 3
        await uow.session.execute(_BUMP, {"key": key})
        with pytest.raises(RuntimeError):
            await execute_alone(uow.session, _INSERT_FIRST, {"id": f"{key}-x", "n": 1})


async def _warm(db: Database[CoreUnitOfWork], key: str) -> None:
    for _ in range(2):
        async with db.uow() as uow:
            await uow.session.execute(_INSERT_FIRST, {"id": key, "n": 1})
            await uow.session.execute(_INSERT, _values(f"{key}-{uuid.uuid4()}"))
            await uow.session.execute(_LOCK, {"id": key})
            await uow.commit()


async def test_errors_are_sqlalchemys_with_parameters_hidden(db):
    """A refused statement raises what SQLAlchemy raises for it (the class, the SQL, the
    asyncpg error behind it), never with its parameters."""
    key = f"e-{uuid.uuid4()}"
    secret = "owner-secret@example.com"
    await _warm(db, key)
    caught: list[BaseException] = []
    for hot in (True, False):
        with pytest.raises(sa_exc.IntegrityError) as error:
            async with db.uow() as uow:
                statement = _INSERT if hot else _INSERT.statement
                await uow.session.execute(statement, _values(key, note=secret))
        caught.append(error.value)
    hot_error, sa_error = caught
    assert type(hot_error) is type(sa_error)
    assert type(hot_error.orig) is type(sa_error.orig)  # type: ignore[attr-defined]
    assert hot_error.orig.sqlstate == "23505"  # type: ignore[attr-defined]
    assert secret not in str(hot_error) and "parameters hidden" in str(hot_error)
    assert hot_error.statement == sa_error.statement  # type: ignore[attr-defined]
    assert not lost_race(hot_error) and not database_down(hot_error)
    # The unit of work goes on after it as after any error: rolled back, connection reused.
    async with db.uow() as uow:
        assert (await uow.session.execute(_GET, {"id": key})).one().n == 1


async def test_a_lost_race_is_a_conflict(db):
    key = f"l-{uuid.uuid4()}"
    await _warm(db, key)
    async with db.uow() as holder:
        await holder.session.execute(_LOCK, {"id": key})
        with pytest.raises(Conflict) as caught:
            async with db.uow() as waiter:
                await waiter.session.execute(text("SET LOCAL lock_timeout = '50ms'"))
                assert isinstance(await waiter.session.execute(_LOCK, {"id": key}), HotResult)
        assert caught.value.reason == "CONFLICT"
        assert lost_race(caught.value.__cause__)
        assert isinstance(caught.value.__cause__, sa_exc.DBAPIError)


async def test_a_lost_connection_is_unavailable_and_the_pool_recovers(db):
    key = f"d-{uuid.uuid4()}"
    await _warm(db, key)
    with pytest.raises(Unavailable) as caught:
        async with db.uow() as uow:
            pid = await uow.session.scalar(text("SELECT pg_backend_pid()"))
            async with db.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                await other.commit()
            await uow.session.execute(_LOCK, {"id": key})
    assert caught.value.reason == "DATABASE_UNAVAILABLE"
    cause = caught.value.__cause__
    assert isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated
    for _ in range(3):  # the lost connection was thrown away, not handed out again
        async with db.uow() as uow:
            assert (await uow.session.execute(_LOCK, {"id": key})).one().n == 1
    assert db.engine.sync_engine.pool.checkedout() == 0


async def test_with_engine_listeners_every_run_is_sqlalchemys(db):
    """Statement spans (HIREPAY_TRACE_SQL) and counters hook SQLAlchemy's execution: with a
    listener on the engine a hot statement goes that way, and is seen."""
    key = f"s-{uuid.uuid4()}"
    await _warm(db, key)
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = create_engine(db.engine.url.render_as_string(hide_password=False))
    event.listen(engine.sync_engine, "before_cursor_execute", listen)
    session = CoreSession(engine)
    try:
        for _ in range(2):
            result = await session.execute(_LOCK, {"id": key})
            assert not isinstance(result, HotResult) and result.one().n == 1
            await session.rollback()
        assert seen == [_sql(db, _LOCK)] * 2
    finally:
        await session.close()
        await engine.dispose()


async def test_a_statement_whose_sql_depends_on_its_values_is_refused(db):
    expanding = HotStatement(select(things.c.id).where(things.c.id.in_(bindparam("ids"))))
    async with db.uow() as uow:
        with pytest.raises(ValueError, match="not a statement to run as hot"):
            await uow.session.execute(expanding, {"ids": ["a", "b"]})
