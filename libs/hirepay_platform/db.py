"""The async SQLAlchemy engine, session factory and unit of work, built at start-up (never at import)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, Self, TypeVar

import asyncpg
from sqlalchemy import Executable, Result, bindparam, pool, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import asyncpg as sa_asyncpg
from sqlalchemy.engine import Connection, CursorResult, Row, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection
from sqlalchemy.pool.base import _NOOP_WEAKREF_CALLBACK, _ConnectionFairy
from sqlalchemy.util.concurrency import await_, greenlet_spawn

from hirepay_platform import jsonb, tracing
from hirepay_platform.errors import Conflict, Unavailable
from hirepay_platform.settings import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE, ServiceSettings

_TRACER = tracing.tracer("hirepay.db")

# SQLSTATEs of a lost race: deadlock detected, serialization failure, lock not available.
_RACE_STATES = frozenset({"40P01", "40001", "55P03"})


def _sqlstate(error: BaseException) -> str | None:
    for candidate in (getattr(error, "orig", None), error.__cause__, error):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def lost_race(error: BaseException | None) -> bool:
    """A concurrent transaction won (deadlock, serialization failure, lock timeout): retryable."""
    return isinstance(error, sa_exc.DBAPIError) and _sqlstate(error) in _RACE_STATES


def database_down(error: BaseException | None) -> bool:
    """The database cannot be reached (transient), as opposed to a refused statement (a bug or a
    constraint), which must surface as it is."""
    if isinstance(error, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        return bool(error.connection_invalidated) or "shutting down" in str(error.orig)
    return isinstance(error, ConnectionError | OSError)


# A statement that reads and nothing else, whose effect is the same in or out of a transaction
# at READ COMMITTED (each statement sees its own snapshot): no row locks, no transaction-scoped
# function (advisory xact locks, set_config, notify, xact ids), no transaction timestamp.
_PLAIN_READ = re.compile(r"\s*SELECT\b", re.IGNORECASE)
_NOT_PLAIN = re.compile(
    r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE|KEY\s+SHARE)\b|xact|set_config|notify|txid"
    r"|nextval|setval|\bnow\s*\(|current_(?:timestamp|time|date)|localtime|transaction_timestamp",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=2048)
def plain_read(sql: str) -> bool:
    """Whether `sql` is a plain read that may run before its transaction's BEGIN. Remembered per
    SQL text: a service sends a few hundred distinct texts (SQLAlchemy's compiled cache hands out
    the same string object, whose hash is kept), and scanning a long SELECT for the words that
    make it more than a read cost about 1% of payments' CPU per posting (issue 13)."""
    return bool(_PLAIN_READ.match(sql)) and not _NOT_PLAIN.search(sql)


# The adapter's isolation levels under which a plain read may go before BEGIN (None: the
# server's default, READ COMMITTED); under a snapshot isolation every statement stays inside.
_READ_COMMITTED = frozenset({None, "read_committed"})


class _LazyBeginCursor(sa_asyncpg.AsyncAdapt_asyncpg_cursor):
    """Sends BEGIN with the first statement that needs a transaction, not with the first one.

    SQLAlchemy's asyncpg adapter opens the server transaction (a round trip of its own) before a
    connection's first statement. Plain reads at READ COMMITTED (the isolation every Hirepay
    database uses) see the same rows in or out of a transaction, so they run before it: a unit of
    work that only reads costs one round trip per statement instead of BEGIN + statements +
    ROLLBACK, and one that writes opens its transaction at its first lock or write (issue 13).
    Locks, writes, commits and rollbacks are exactly as before."""

    __slots__ = ()

    async def _prepare_and_execute(self, operation: str, parameters: object) -> None:
        connection = self._adapt_connection
        try:
            if (
                connection._transaction is not None
                or connection.isolation_level not in _READ_COMMITTED
                or not plain_read(operation)
            ):
                await super()._prepare_and_execute(operation, parameters)
                return
            level = connection.isolation_level
            connection.isolation_level = "autocommit"  # the adapter then sends no BEGIN
            try:
                await super()._prepare_and_execute(operation, parameters)
            finally:
                connection.isolation_level = level
        except Exception as error:
            if isinstance(error.__cause__, asyncpg.exceptions.OutdatedSchemaCacheError):
                _forget_statement(connection, operation)
            raise


def _forget_statement(adapted: Any, sql: str) -> None:
    """Drop `sql`'s prepared statement from the adapter's cache after asyncpg found its type
    cache stale (OutdatedSchemaCacheError: its types reloaded, the statement closed), so the next
    run prepares it again, as asyncpg's own statement cache does. SQLAlchemy's adapter keeps the
    closed statement, and every later run of the statement on that connection failed ("the
    prepared statement is closed") until the dialect's schema cache was invalidated."""
    cache = adapted._prepared_statement_cache
    if cache is not None:
        cache.pop(sql, None)


class _LazyBeginConnection(sa_asyncpg.AsyncAdapt_asyncpg_connection):
    """SQLAlchemy's asyncpg adapter whose plain reads go before BEGIN (_LazyBeginCursor), and
    whose commit and rollback never leave a server transaction it did not begin open (a BEGIN
    sent past it, a unit of work cancelled mid-statement): rolled back as asyncpg's own pool
    resets a connection it gets back, so no later unit of work on the pooled connection runs its
    plain reads or execute_alone writes inside it. A commit then fails: what ran in that
    transaction was never committed."""

    # `_begun`: the connection's _Begun, made once when it opens (see _execute_hot).
    __slots__ = ("_begun",)
    _cursor_cls = _LazyBeginCursor

    def rollback(self) -> None:
        super().rollback()
        protocol = self._connection._protocol  # (no helper's call: each costs per unit of work)
        if (
            protocol is not None
            and protocol.is_connected()
            and (protocol.is_in_transaction() or protocol._is_cancelling())
        ):
            self._roll_back_left_open()

    def commit(self) -> None:
        super().commit()
        protocol = self._connection._protocol  # (as in rollback)
        if (
            protocol is not None
            and protocol.is_connected()
            and (protocol.is_in_transaction() or protocol._is_cancelling())
        ):
            self._roll_back_left_open()
            self._handle_exception(
                asyncpg.exceptions.InterfaceError(
                    "a transaction the adapter did not begin was open on the server: it was "
                    "rolled back, not committed"
                )
            )

    def _roll_back_left_open(self) -> None:
        """Roll back a server transaction the adapter did not begin (or, a cancelled statement
        not answered yet, may be open: the status asyncpg knows is stale until its end), as
        asyncpg's pool resets a connection (Connection._reset): its own Transaction forgotten,
        `ROLLBACK` sent once the cancelled statement has ended."""
        connection = self._connection
        connection._top_xact = None
        try:
            await_(connection.execute("ROLLBACK"))
        except Exception as error:
            self._handle_exception(error)


class _LazyBeginDbapi(sa_asyncpg.AsyncAdapt_asyncpg_dbapi):
    """The asyncpg DBAPI adapter of SQLAlchemy with _LazyBeginConnection connections."""

    def connect(self, *arg: object, **kw: object) -> _LazyBeginConnection:
        creator_fn = kw.pop("async_creator_fn", self.asyncpg.connect)
        cache_size = kw.pop("prepared_statement_cache_size", 100)
        name_func = kw.pop("prepared_statement_name_func", None)
        adapted = await_(
            _LazyBeginConnection.create(
                self,
                creator_fn(*arg, **kw),  # type: ignore[operator]
                prepared_statement_cache_size=cache_size,
                prepared_statement_name_func=name_func,
            )
        )
        adapted._begun = _Begun(adapted._connection)
        return adapted  # type: ignore[no-any-return]


async def execute_alone(
    session: Any,
    statement: Executable | HotStatement,
    params: Mapping[str, Any],
) -> Result[Any] | HotResult:
    """Run one statement as a transaction of its own, on the session's connection, when the
    session has not begun one on the server yet (at most plain reads ran, see _LazyBeginCursor):
    the statement commits by itself, durable (synchronous_commit) when this returns, in one round
    trip instead of BEGIN + statement + COMMIT (issue 13). All of it or nothing applies, as for
    any statement. Later statements of the session open their own transaction as usual.
    `session`: an AsyncSession, a CoreSession or a session wrapping one (see dbapi_connection)."""
    adapted = await dbapi_connection(session)
    if not isinstance(adapted, _LazyBeginConnection) or adapted._transaction is not None:
        raise RuntimeError("execute_alone needs a session whose transaction has not begun")
    level = adapted.isolation_level
    adapted.isolation_level = "autocommit"  # the adapter then sends no BEGIN
    try:
        return await session.execute(statement, params)
    finally:
        adapted.isolation_level = level


async def dbapi_connection(session: Any) -> Any:
    """The DBAPI connection (SQLAlchemy's asyncpg adapter) a session's statements run on, taken
    from the pool on first use: an AsyncSession's, or a CoreSession's (or that of a session that
    wraps one and has a `dbapi_connection()` of its own, write_batch.BatchedSession) without
    making SQLAlchemy's Connection for it (see CoreSession)."""
    if isinstance(session, AsyncSession):
        return await _dbapi_connection(await session.connection())
    return await session.dbapi_connection()


async def autocommit(session: Any) -> None:
    """Make each later statement of `session` a transaction of its own, committed when it returns
    (durable like any commit: synchronous_commit), with no BEGIN and COMMIT round trips: for a
    unit of work that writes with one statement (an insert-first, a lease). Refused, as SQLAlchemy
    refuses a connection's isolation level, once the session's transaction has begun.
    `session`: an AsyncSession, a CoreSession (past SQLAlchemy's Connection while its statements
    are hot, see CoreSession.autocommit) or a session wrapping one with an `autocommit()` of its
    own (write_batch.BatchedSession)."""
    if isinstance(session, AsyncSession):
        await session.connection(execution_options=_AUTOCOMMIT)
    else:
        await session.autocommit()


# SQLAlchemy's execution option for a connection whose statements each commit by themselves.
_AUTOCOMMIT: Mapping[str, Any] = {"isolation_level": "AUTOCOMMIT"}


async def _dbapi_connection(connection: AsyncConnection) -> Any:
    """The DBAPI connection (SQLAlchemy's asyncpg adapter) under `connection`."""
    sync = connection.sync_connection
    fairy = sync._dbapi_connection if sync is not None else None
    if fairy is None:  # invalidated: the pool hands out a new connection
        fairy = await connection.get_raw_connection()
    return fairy.dbapi_connection


def lease_due(table: Any, due: Any, next_column: str, *where: Any) -> Any:
    """One statement that locks a worker's due rows SKIP LOCKED and moves their next attempt to
    the end of a lease (parameters `:now`, `:limit`, `:until`), returning the rows: alone, it is a
    whole transaction, so an idle round of a worker costs one round trip (issue 13). `due` is the
    column compared with `:now` (and ordered by), `where` any further conditions. Wrapped in a
    HotStatement by its caller (when `where` has no expanding IN list), a lease in autocommit
    (see autocommit) costs no SQLAlchemy Connection."""
    chosen = (
        select(table.c.id)
        .where(due <= bindparam("now"), *where)
        .order_by(due)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return (
        update(table)
        .where(table.c.id.in_(chosen.scalar_subquery()))
        .values({next_column: bindparam("until")})
        .returning(*table.c)
    )


def async_url(url: str) -> str:
    """Turn any postgres URL into the asyncpg dialect's."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+asyncpg://", url)


# PostgreSQL's setting, sent in each new connection's start-up packet (no round trip), by which a
# prepared statement gets its generic plan at its first run instead of after five custom plans.
GENERIC_PLANS: Mapping[str, str] = {"plan_cache_mode": "force_generic_plan"}


def create_engine(
    url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    generic_plans: bool = False,
) -> AsyncEngine:
    """An asyncpg engine with a bounded pool (its statements traced when spans are exported).

    `generic_plans`: every connection of the pool plans each prepared statement once, generically
    (GENERIC_PLANS), for the request path's engine (see Database.request_uow). PostgreSQL's default
    plans a statement's first five runs on a connection for their values (custom plans) before it
    may settle on the generic plan: a pool's connections opened or first used at a peak of load
    planned the request path's statements again and again (issue 13, round 14: 0.29 plans per
    posting in jobs and 0.73 in payments at c=32, 10% of the hot statements' runs). Only for
    statements whose generic plan is as good as their custom ones (their rows found through the
    same indexes whatever the values: the request path's key probes and guarded writes); a
    periodic read over a range of values may plan far worse without its values (round 10: the
    recovery's stuck-saga count read 133 buffers a call instead of 30), so the default engine
    keeps PostgreSQL's default."""
    server_settings = {"application_name": "hirepay"}
    if generic_plans:
        server_settings.update(GENERIC_PLANS)
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        # The connection checked in last is handed out next: a load that needs fewer connections
        # than the pool holds keeps reusing the same warm ones, whose statements are past
        # PostgreSQL's five custom plans and have their generic plan, instead of rotating through
        # every connection and planning afresh on each (issue 13: at c=32, 13-24% of the hot
        # statements' runs were planned, on connections the rotation had not warmed yet).
        pool_use_lifo=True,
        # Statement parameters carry customer data (e-mails, names): keep them out of every error
        # message and log line; the SQL text alone says which statement failed.
        hide_parameters=True,
        # Statements are short; a stuck one should fail rather than hold a pooled connection forever.
        connect_args={"command_timeout": 30, "server_settings": server_settings},
        # Plain reads go before BEGIN (one round trip less per transaction, two per read-only one).
        module=_LazyBeginDbapi(__import__("asyncpg")),
        # JSONB values written and read as json.dumps and json.loads do, in fewer Python calls.
        json_serializer=jsonb.dumps,
        json_deserializer=jsonb.loads,
    )
    tracing.instrument_engine(engine)
    return engine


def database_check(url: str) -> Callable[[], Awaitable[None]]:
    """A readiness check (GrpcApp.add_readiness_check): one `SELECT 1` on the check's own connection.

    It never borrows from the service's pool, so a busy pool is not mistaken for a dead database.
    It keeps one connection of its own between checks: a new connection every check (every
    `readiness_interval_seconds`, 5 s by default) cost PostgreSQL a backend's start-up and exit,
    3.4-4.2 CPU-ms, and the service 2-2.8 CPU-ms, per service (round 13, issue 13), more than an
    idle service's whole load. A kept connection that fails (the server restarted, the network
    dropped it) is thrown away and the check judged again on a fresh one, so a stale connection
    can neither hide that the server is back nor report it down; one that fails or is cancelled
    (the check's timeout) is never used again."""
    kept: asyncpg.Connection | None = None
    connect_kwargs: dict[str, Any] | None = None

    def drop() -> None:
        nonlocal kept
        if kept is not None:
            kept.terminate()  # no round trip: a failed connection may not answer one
            kept = None

    async def fresh() -> asyncpg.Connection:
        nonlocal connect_kwargs
        if connect_kwargs is None:
            sa_url = make_url(async_url(url))
            _, connect_kwargs = sa_asyncpg.dialect().create_connect_args(sa_url)
        return await asyncpg.connect(
            **connect_kwargs, timeout=5, server_settings={"application_name": "hirepay"}
        )

    async def check() -> None:
        nonlocal kept
        if kept is not None:
            try:
                await kept.fetchval("SELECT 1")
                return
            except asyncio.CancelledError:
                drop()
                raise
            except Exception:  # judged again below, on a fresh connection
                drop()
        kept = await fresh()
        try:
            await kept.fetchval("SELECT 1")
        except BaseException:
            drop()
            raise

    return check


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (no implicit refresh in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    """Declarative base; each service keeps its own metadata by subclassing it once."""

    __abstract__ = True


class HotStatement:
    """A statement of the request path, run with far less Python than SQLAlchemy's execution.

    SQLAlchemy spends about 100 Python calls on each statement it runs (its compiled cache, the
    parameters' construction, the execution context, greenlet switches, the result and its rows):
    18% of payments' and 14% of jobs' CPU per posting (issue 13). A hot statement is run once by
    SQLAlchemy, as any statement, per set of parameter names; what that run compiled is kept (the
    SQL text, which parameter goes to each position and its type's conversion, the result's columns
    and theirs), and every later run on a CoreSession goes straight to the unit of work's asyncpg
    connection: the statement prepared there as SQLAlchemy prepares it (its cache, the same
    prepared statement), rows built as SQLAlchemy builds them (Row: by attribute, key, position).

    The transaction is the same: a plain read goes before BEGIN (see _LazyBeginCursor), anything
    else opens the transaction first; execute_alone, the connection's isolation and the unit of
    work's commit and rollback act on it as on any statement. An error goes through SQLAlchemy's
    own handling (the same exception classes, parameters hidden, a lost connection invalidated),
    so lost_race and database_down read it as before. While the engine has event listeners
    (HIREPAY_TRACE_SQL's spans, a test counting statements) every run goes through SQLAlchemy.

    Not for a statement whose SQL depends on its values (expanding IN lists, literal_execute) or
    whose execution computes values (Python-side column defaults): refused at its first run."""

    __slots__ = ("_plans", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        # Per tuple of parameter names (the SQL of an INSERT depends on them): how to run it.
        self._plans: dict[tuple[str, ...], _HotPlan] = {}

    def __repr__(self) -> str:
        return f"HotStatement({self.statement!r})"


class _Given:
    """Marks where a given parameter lands when the plan is made (see _HotPlan.make)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _HotPlan:
    """What a hot statement's first run compiled: its SQL, its arguments in order (a parameter's
    name, its type's conversion; or a value fixed in the statement), and its result's rows."""

    __slots__ = ("arguments", "dialect", "key_to_index", "metadata", "plain", "processors", "sql")

    def __init__(
        self,
        dialect: Any,
        sql: str,
        arguments: tuple[tuple[str | None, Callable[[Any], Any] | None, Any], ...],
        metadata: Any,
    ) -> None:
        self.dialect = dialect  # the engine's: what it compiled to, and converts with, is its own
        self.sql = sql
        self.arguments = arguments
        self.plain = plain_read(sql)
        self.metadata = metadata  # None: the statement returns no rows
        self.processors = metadata._effective_processors if metadata is not None else None
        self.key_to_index = metadata._key_to_index if metadata is not None else None

    @classmethod
    def make(cls, statement: Executable, result: CursorResult[Any], names: tuple[str, ...]) -> Self:
        context: Any = result.context
        compiled = context.compiled
        if (
            compiled is None
            or not compiled.positional
            or compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.schema_translate_map
            or context.executemany
            or any(b.callable is not None for b in compiled.binds.values())
        ):
            raise ValueError(f"not a statement to run as hot (see HotStatement): {statement}")
        # Where each given parameter lands, and the values fixed in the statement, exactly as
        # SQLAlchemy builds them (by name, escaped or repeated, defaults of its bindparams).
        cache_key = statement._generate_cache_key()  # type: ignore[attr-defined]
        if cache_key is None:  # SQLAlchemy compiles such a statement on every run
            raise ValueError(f"not a statement to run as hot (see HotStatement): {statement}")
        _, extracted, collected = cache_key
        built = compiled.construct_params(
            {name: _Given(name) for name in names},
            extracted_parameters=extracted,
            escape_names=False,
            _collected_params=collected,
        )
        processors = compiled._bind_processors
        arguments = []
        for key in compiled.positiontup or ():
            value, process = built[key], processors.get(key)
            if isinstance(value, _Given):
                arguments.append((value.name, process, None))
            else:  # fixed in the statement: converted once
                arguments.append((None, None, process(value) if process else value))
        metadata = result._metadata if result.returns_rows else None
        if metadata is not None and metadata._tuplefilter is not None:
            raise ValueError(f"not a statement to run as hot (see HotStatement): {statement}")
        return cls(context.dialect, context.statement, tuple(arguments), metadata)


class HotResult:
    """A hot statement's result: its rows (SQLAlchemy's Row, read by attribute, key or position)
    with the part of Result's interface the repositories use; like a Result, read once."""

    __slots__ = ("_rows", "_status")

    def __init__(self, rows: list[Row[Any]] | None, status: str | None) -> None:
        self._rows = rows
        self._status = status

    def _take(self) -> list[Row[Any]]:
        rows = self._rows
        if rows is None:
            raise sa_exc.ResourceClosedError(
                "This result object does not return rows. It has been closed automatically."
            )
        self._rows = []
        return rows

    @property
    def returns_rows(self) -> bool:
        return self._rows is not None

    @property
    def rowcount(self) -> int:
        found = _ROWCOUNT.match(self._status or "")
        return int(found.group(1)) if found else -1

    def __iter__(self) -> Iterator[Row[Any]]:
        return iter(self._take())

    def all(self) -> list[Row[Any]]:
        return self._take()

    fetchall = all

    def first(self) -> Row[Any] | None:
        rows = self._take()
        return rows[0] if rows else None

    def one_or_none(self) -> Row[Any] | None:
        rows = self._take()
        if len(rows) > 1:
            raise sa_exc.MultipleResultsFound(
                "Multiple rows were found when one or none was required"
            )
        return rows[0] if rows else None

    def one(self) -> Row[Any]:
        rows = self._take()
        if not rows:
            raise sa_exc.NoResultFound("No row was found when one was required")
        if len(rows) > 1:
            raise sa_exc.MultipleResultsFound(
                "Multiple rows were found when exactly one was required"
            )
        return rows[0]

    def scalar(self) -> Any:
        row = self.first()
        return row[0] if row is not None else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return row[0] if row is not None else None

    def scalars(self) -> HotResult:
        """The first column's values, as a result of their own."""
        return _HotScalars([row[0] for row in self._take()], None)


class _HotScalars(HotResult):
    """The values of one column (HotResult.scalars): each is what a row was."""

    __slots__ = ()

    def scalars(self) -> HotResult:
        raise TypeError("scalars() of scalars")


# A command tag's row count, read as SQLAlchemy's asyncpg adapter reads it.
_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


def _through_sqlalchemy(connection: Connection) -> bool:
    """Whether a hot statement on `connection` must go SQLAlchemy's way: the engine has event
    listeners (statement spans, a test's counter), logs statements, the connection has execution
    options other than its isolation level, or has lost its database connection."""
    options = connection._execution_options
    return bool(
        connection._has_events
        or connection.engine._has_events
        or connection._echo
        or (options and options.keys() - {"isolation_level"})
        or connection._dbapi_connection is None
    )


def _raise_as_sqlalchemy(
    connection: Connection, error: BaseException, sql: str | None, arguments: Any
) -> NoReturn:
    """Raise `error` as SQLAlchemy would have, had it run the statement (or the COMMIT or
    ROLLBACK: `sql` None): its handling of a DBAPI error (the exception classes, parameters
    hidden, handle_error events, a lost connection invalidated). Runs in SQLAlchemy's greenlet
    (run_sync): invalidating may close the connection."""
    try:
        raise error
    except BaseException as raised:
        connection._handle_dbapi_exception(raised, sql, arguments, None, None)
    raise AssertionError("unreachable")  # pragma: no cover


async def _execute_through_sqlalchemy(
    session: CoreSession,
    hot: HotStatement,
    params: Mapping[str, Any],
    names: tuple[str, ...],
    plan: _HotPlan | None,
) -> Result[Any]:
    """A hot statement run SQLAlchemy's way; its first run (or its first on another engine)
    makes its plan."""
    connection = session._connection or await session.connection()
    result = await connection.execute(hot.statement, params)
    sync = connection.sync_connection
    if plan is None or sync is None or plan.dialect is not sync.dialect:  # (another engine's)
        hot._plans[names] = _HotPlan.make(hot.statement, result, names)  # type: ignore[arg-type]
    return result


async def _execute_hot(
    session: CoreSession, hot: HotStatement, params: Mapping[str, Any]
) -> Result[Any] | HotResult:
    names = tuple(params)
    plan = hot._plans.get(names)
    adapted = await session._hot_connection(plan) if plan is not None else None
    if adapted is None:
        return await _execute_through_sqlalchemy(session, hot, params, names, plan)
    hot_plan: _HotPlan = plan  # type: ignore[assignment]  # (a plan: else no adapted)
    dialect: Any = hot_plan.dialect
    arguments: list[Any] | None = None
    try:
        arguments = [
            value if name is None else process(params[name]) if process else params[name]
            for name, process, value in hot_plan.arguments
        ]
        # The adapter's lock on its connection, taken and given back as `async with` does, by
        # the lock's own acquire and release (its __aenter__ and __aexit__ are two Python calls
        # more per statement around them, issue 13).
        mutex = adapted._execute_mutex
        await mutex.acquire()
        try:
            connection = adapted._connection
            begins = adapted._transaction is None and not (
                hot_plan.plain and adapted.isolation_level in _READ_COMMITTED
            )
            if begins and _begins_plainly(adapted, connection):
                await connection._protocol.query("BEGIN;", None)
                adapted._transaction = adapted._begun
            elif begins:
                await adapted._start_transaction()  # nothing sent under autocommit
            # The adapter's prepared statement, looked up in its cache as its _prepare() does
            # (an LRU entry: statement, attributes, when prepared) when nothing is stale: seven
            # Python calls fewer per statement (issue 13, round 16); else by _prepare() itself.
            asof = dialect._invalidate_schema_cache_asof
            cache = adapted._prepared_statement_cache
            entry = cache._data.get(hot_plan.sql) if cache is not None else None
            if (
                entry is not None
                and asof <= adapted._invalidate_schema_cache_asof
                and entry[1][2] > asof
            ):
                prepared = entry[1][0]
                cache._counter += 1  # (LRUCache's use mark, as its __getitem__ sets it)
                entry[2][0] = cache._counter
            else:
                prepared, _ = await adapted._prepare(hot_plan.sql, asof)
            state = prepared._state
            protocol = connection._protocol
            if (
                state.closed
                or connection._query_loggers
                or connection._aborted  # (asyncpg's is_closed(), inline)
                or not protocol.is_connected()
            ):
                # asyncpg's own way: its errors for a closed statement or connection, loggers.
                records = await prepared.fetch(*arguments)
                status = prepared.get_statusmsg()
            else:
                # What PreparedStatement.fetch() runs, without its layers (a guard, its
                # validity checks and three coroutines, each entered and resumed: 18 Python
                # calls per statement, issue 13, round 16).
                try:
                    records, raw, _ = await protocol.bind_execute(
                        state, arguments, "", 0, True, None
                    )
                except asyncpg.exceptions.OutdatedSchemaCacheError:
                    # As asyncpg does: its types reloaded, the statement prepared again next time.
                    await connection.reload_schema_state()
                    state.mark_closed()
                    raise
                prepared._last_status = raw
                status = raw.decode() if raw is not None else None
        finally:
            mutex.release()
    except BaseException as error:
        await session._raise_as_sqlalchemy(adapted, error, hot_plan.sql, arguments)
    metadata = hot_plan.metadata
    if metadata is None:
        return HotResult(None, status)
    processors, key_to_index = hot_plan.processors, hot_plan.key_to_index
    if len(records) < 2:  # (most: a key's row or none, with no list comprehension's frame)
        return HotResult(
            [Row(metadata, processors, key_to_index, records[0])] if records else [], status
        )
    return HotResult([Row(metadata, processors, key_to_index, r) for r in records], status)


def _begins_plainly(adapted: Any, connection: Any) -> bool:
    """Whether a hot statement's BEGIN may go straight to asyncpg's protocol (see _Begun) on the
    adapter `adapted` of asyncpg's `connection`: the adapter would send a plain "BEGIN;" too (no
    isolation level, read-only or deferrable to spell out); no asyncpg transaction of its own is
    on the connection, none is open on the server (asyncpg refuses to begin inside one: a
    connection left in a transaction is never joined as if clean); the connection is open
    (asyncpg's is_closed(), inline) and has no query loggers. Else the adapter's way, with its
    checks and errors."""
    protocol = connection._protocol
    return (
        type(adapted) is _LazyBeginConnection
        and adapted.isolation_level is None
        and not adapted.readonly
        and not adapted.deferrable
        and connection._top_xact is None
        and not connection._query_loggers
        and not connection._aborted
        and protocol.is_connected()
        and not protocol.is_in_transaction()
    )


class _Begun:
    """A transaction a hot statement began by asyncpg's protocol ("BEGIN;", see _execute_hot), in
    the adapter's `_transaction` as asyncpg's Transaction would be: its commit() and rollback()
    send "COMMIT;" and "ROLLBACK;" the same way, whoever ends it (CoreSession's commit, rollback
    or close; SQLAlchemy's Connection once it wraps the connection). asyncpg's Transaction costs
    about 13 Python calls for each of its BEGIN and COMMIT (its object, a guard, validity and
    state checks, three coroutines entered and resumed), issue 13, round 16. A closed connection
    or one with query loggers goes asyncpg's Connection.execute() way, its errors as before.
    Holds nothing but what it sends: one per connection, made when it opens."""

    __slots__ = ("commit", "rollback")

    def __init__(self, connection: Any) -> None:
        # (partials: called, they enter no Python frame of their own before _send's)
        self.commit = functools.partial(_send, connection, "COMMIT;")
        self.rollback = functools.partial(_send, connection, "ROLLBACK;")


def _send(connection: Any, sql: str) -> Awaitable[Any]:
    """`sql` (a COMMIT or ROLLBACK of _Begun) sent on asyncpg's `connection` by its protocol, as
    its execute() does with no arguments; by execute() itself when the connection is closed
    (asyncpg's is_closed(), inline: its own error) or has query loggers."""
    protocol = connection._protocol
    if connection._query_loggers or connection._aborted or not protocol.is_connected():
        return connection.execute(sql)  # type: ignore[no-any-return]
    return protocol.query(sql, None)  # type: ignore[no-any-return]


# The queues an AsyncAdaptedQueuePool keeps its idle connections in, and which end of each hands
# out the next one (what asyncio's get_nowait takes: the last put for LIFO, else the first).
_NEXT_OUT = {asyncio.LifoQueue: -1, asyncio.Queue: 0}


def _checkout_now(engine_pool: pool.Pool) -> PoolProxiedConnection | None:
    """The pool's next connection, checked out as the pool's own code (`Pool.connect()`) does it,
    in the caller's context, when that checkout provably does nothing to await: an idle connection is
    waiting in the queue and is usable as it is (not invalidated, by itself or with the whole
    pool, nor closed), no recycle age, no pre-ping, no checkout listener. Else None: the caller
    goes SQLAlchemy's way (`AsyncEngine.raw_connection()`, the pool's code in a new greenlet that
    can await), which waits for a connection, opens one, or closes and reopens a stale one.

    What is checked is exactly what the pool's checkout would otherwise do I/O for
    (`QueuePool._do_get`, `_ConnectionRecord.get_connection`, `_ConnectionFairy._checkout`), on
    the very connection it will hand out; nothing else runs between the check and the checkout.
    A greenlet made per checkout and per checkin (a 16 KiB stack mapped and unmapped on Python
    3.11, two switches) was the rest of SQLAlchemy's cost per unit of work (issue 13).

    Whether a pool event has a listener is read as the event's bool() reads it (listeners on
    this pool, or on the pool's class: both kinds of SQLAlchemy's per-pool event collection,
    _EmptyListener and _ListenerCollection, have both attributes), in no call: the events'
    __bool__ cost three Python calls per unit of work (round 16)."""
    if type(engine_pool) is not AsyncAdaptedQueuePool:
        return None
    checkout = engine_pool.dispatch.checkout
    if (
        engine_pool._pre_ping
        or checkout.listeners  # (the event's bool(), inline: see the docstring)
        or checkout.parent_listeners
        or engine_pool._recycle > -1
    ):
        return None
    idle = engine_pool._pool._queue  # type: ignore[attr-defined]
    end = _NEXT_OUT.get(type(idle))
    if end is None or not idle._queue:  # (empty: it would wait, or open a connection)
        return None
    record = idle._queue[end]
    # As _ConnectionRecord.get_connection decides (inline: each call here costs per unit of
    # work): a closed or invalidated connection would be closed and opened again.
    started = record.starttime
    if (
        record.dbapi_connection is None
        or engine_pool._invalidate_time > started
        or record._soft_invalidate_time > started
    ):
        return None
    if engine_pool.logger.isEnabledFor(logging.DEBUG):  # (the pool's _should_log_debug())
        return engine_pool.connect()  # the pool logs its checkouts: its own way
    # The pool's checkout, as _ConnectionRecord.checkout and _ConnectionFairy._checkout run it
    # when they have nothing to wait for, check, tell or log (all checked above): the record
    # taken from the queue, a fairy for it (whose finalizer gives the record back should the
    # fairy be lost), the record pointed at the fairy, checked out once. SQLAlchemy's layers
    # around it cost 11 Python calls per unit of work (issue 13, round 16).
    record = idle.get_nowait()  # (the record checked above: nothing ran since)
    fairy = _ConnectionFairy(engine_pool, record.dbapi_connection, record, False)
    record.fairy_ref = weakref.ref(fairy, _NOOP_WEAKREF_CALLBACK)
    fairy._counter = 1
    return fairy


def _checkin_now(pooled: PoolProxiedConnection) -> bool:
    """Give `pooled` back as the pool's own checkin does (`_close_special()`, as `close()`
    without the rollback-on-return) in the caller's context when that checkin provably does
    nothing to await: no transaction left for the pool's reset to roll back (the adapter's, or
    one open on the server it did not begin: see _LazyBeginConnection), room in the pool's
    queue (a surplus connection would be closed), no reset or checkin listener and nothing
    registered to run at checkin. Else False, nothing done: the caller gives it back in
    SQLAlchemy's greenlet (see _checkout_now)."""
    fairy: Any = pooled
    record = fairy._connection_record
    engine_pool = fairy._pool
    adapted = fairy.dbapi_connection
    if (
        fairy._counter != 1  # (not the last close: nothing to check in yet)
        or record is None  # (detached: closed for real)
        or type(adapted) is not _LazyBeginConnection  # (create_engine's: no isinstance call)
        or adapted._transaction is not None  # (the reset's ROLLBACK)
        # A server transaction the adapter did not begin (as _LazyBeginConnection.rollback checks):
        # the reset's rollback ends it (_LazyBeginConnection.rollback), never handed out open.
        or (protocol := adapted._connection._protocol) is None
        or protocol.is_in_transaction()
        or protocol._is_cancelling()
        or type(engine_pool) is not AsyncAdaptedQueuePool
        or record.finalize_callback
        or (dispatch := engine_pool.dispatch).reset.listeners  # (see _checkout_now)
        or dispatch.reset.parent_listeners
        or dispatch.checkin.listeners
        or dispatch.checkin.parent_listeners
    ):
        return False
    idle = engine_pool._pool._queue
    if 0 < idle._maxsize <= len(idle._queue):  # (full: asyncio's full(), in no call)
        return False
    if fairy._echo:  # the pool logs its checkins: its own way
        fairy._close_special(transaction_reset=True)
        return True
    # The pool's checkin as SQLAlchemy's Connection.close() runs it for a connection whose
    # transaction it ended itself (_close_special, _finalize_fairy): no rollback-on-return, which
    # here provably has nothing to roll back (no transaction, checked above) and cost a dialect
    # do_rollback, the fairy's attribute look-up and the adapter's no-op rollback per unit of
    # work (issue 13); no listener to tell, nothing to log: the record given back to the queue
    # (room checked above) and no longer pointed at the fairy, whose finalizer is cancelled.
    # SQLAlchemy's layers around it cost 12 Python calls per unit of work (round 16).
    fairy._counter = 0
    record.fairy_ref = None
    idle.put_nowait(record)
    fairy._finalizer.detach()
    return True


class CoreSession:
    """What a unit of work asks of its session, on one Core connection of the engine's pool.

    A service whose repositories run Core statements only (tables, no mapped classes) gets
    nothing from an ORM session but its unit-of-work machinery (session and transaction state,
    identity map, flush events) around every statement: about 115 Python calls per unit of work
    (issue 13). The transaction is the connection's, exactly as the session's was: it begins with
    the first statement that needs one (see _LazyBeginCursor), `commit()` commits it,
    `rollback()` or `close()` without a commit rolls it back, and the connection goes back to the
    pool on `close()`.

    While a unit of work runs hot statements only (the request path's), it holds the pool's
    connection itself (`AsyncEngine.raw_connection()`: the same pool, its size, checkout and
    checkin, what `pool.checkedout()` counts, invalidation and `dispose()`), and its commit and
    rollback go straight to the asyncpg transaction the statements began: SQLAlchemy's
    Connection, AsyncConnection and their transaction around it cost about 70 Python calls per
    unit of work (issue 13). The first thing that needs SQLAlchemy's Connection (a statement that
    is not hot, `connection()`, execution options, event listeners, an error to raise as
    SQLAlchemy raises it) wraps the same pooled connection in one, in the state it would have
    had (begun if a hot statement ran), and the rest of the unit of work goes that way."""

    __slots__ = ("_autocommit", "_began", "_connection", "_engine", "_pooled")

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        # The pool's connection while only hot statements ran, and whether one did (SQLAlchemy's
        # Connection would then have begun its transaction).
        self._pooled: PoolProxiedConnection | None = None
        self._began = False
        # Whether each statement commits by itself (autocommit(); AUTOCOMMIT's isolation level).
        self._autocommit = False

    async def autocommit(self) -> None:
        """Make each later statement a transaction of its own, committed when it returns, as
        SQLAlchemy's AUTOCOMMIT isolation level does (db.autocommit). While only hot statements
        run, that costs no SQLAlchemy Connection either: the pooled connection's adapter is put
        in autocommit (no BEGIN sent; COMMIT and ROLLBACK have nothing to end) and put back when
        the connection goes back to the pool. About 60 Python calls per unit of work fewer than
        the Connection made to set its isolation level (issue 13). Anything that needs
        SQLAlchemy's Connection gets one with AUTOCOMMIT set, as before; once the transaction has
        begun, SQLAlchemy refuses it as it always did."""
        if self._connection is not None or self._began:
            await self.connection(execution_options=_AUTOCOMMIT)
            return
        self._autocommit = True
        if self._pooled is not None:  # (taken by dbapi_connection(); nothing ran on it yet)
            self._pooled.dbapi_connection.autocommit = True  # type: ignore[attr-defined]

    async def _hot_connection(self, plan: _HotPlan) -> Any:
        """The DBAPI connection to run `plan` on past SQLAlchemy, or None if it must go
        SQLAlchemy's way (see _through_sqlalchemy; another engine's plan)."""
        connection = self._connection
        if connection is None:
            # Only hot statements so far: straight on the pool's connection.
            engine = self._engine.sync_engine
            if plan.dialect is not engine.dialect or engine._has_events or Connection._has_events:
                return None
            pooled = self._pooled or await self._checkout()
            if pooled is None:
                return None
            self._began = True  # as SQLAlchemy's execute would begin its Connection's
            return pooled.dbapi_connection
        sync = connection.sync_connection
        if sync is None or plan.dialect is not sync.dialect or _through_sqlalchemy(sync):
            return None
        if sync._transaction is None:
            sync._autobegin()  # as SQLAlchemy's execute: the unit of work's commit commits it
        return sync._dbapi_connection.dbapi_connection  # type: ignore[union-attr]

    async def _checkout(self) -> PoolProxiedConnection | None:
        """The pool's connection for hot statements, or None if statements must go SQLAlchemy's
        way because it logs them (echo, or sqlalchemy.engine's logger at INFO)."""
        engine = self._engine
        sync_engine = engine.sync_engine
        if sync_engine._should_log_info():
            return None
        try:
            pooled = _checkout_now(sync_engine.pool) or await engine.raw_connection()
            self._pooled = pooled
        except sync_engine.dialect.loaded_dbapi.Error as error:
            # As Connection() raises it when the pool cannot connect (a DBAPIError: UNAVAILABLE).
            Connection._handle_dbapi_exception_noconnection(error, sync_engine.dialect, sync_engine)
            raise
        if self._autocommit:  # put back before the pool has it again (close)
            pooled.dbapi_connection.autocommit = True  # type: ignore[attr-defined]
        return pooled

    def _wrap(self) -> AsyncConnection:
        """SQLAlchemy's Connection on the pooled connection, as SQLAlchemy's execution of the
        hot statements so far would have left it; the session goes its way from now on."""
        pooled, self._pooled = self._pooled, None
        sync = Connection(self._engine.sync_engine, pooled)
        if self._autocommit:
            # SQLAlchemy's own AUTOCOMMIT instead of the adapter's flag: it is undone when the
            # connection goes back to the pool, as for any isolation level set on a Connection.
            pooled.dbapi_connection.autocommit = False  # type: ignore[union-attr, attr-defined]
            sync.execution_options(**_AUTOCOMMIT)
        if self._began:
            sync.begin()
        connection = self._connection = AsyncConnection(self._engine, sync)
        return connection

    async def _raise_as_sqlalchemy(
        self, adapted: Any, error: BaseException, sql: str | None, arguments: Any
    ) -> NoReturn:
        """Raise `error` of a hot statement (or of the COMMIT or ROLLBACK: `sql` None) on the
        DBAPI connection `adapted` as SQLAlchemy raises it (see _raise_as_sqlalchemy)."""
        if sql is not None and isinstance(error, asyncpg.exceptions.OutdatedSchemaCacheError):
            _forget_statement(adapted, sql)
        if isinstance(error, Exception):
            try:
                adapted._handle_exception(error)  # the adapter's DBAPI error for asyncpg's
            except Exception as translated:
                error = translated
        dialect: Any = self._engine.sync_engine.dialect
        dbapi = dialect.loaded_dbapi
        if sql is not None and isinstance(
            error, dbapi.InvalidCachedStatementError | dbapi.InternalServerError
        ):
            dialect._invalidate_schema_cache()  # as SQLAlchemy's asyncpg execution context does
        connection = self._connection or self._wrap()
        await connection.run_sync(_raise_as_sqlalchemy, error, sql, arguments)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _end(self, adapted: Any, end: Callable[[], Awaitable[None]]) -> None:
        """Commit or roll back (`end`: the asyncpg transaction's) what hot statements began on
        the pooled connection, as SQLAlchemy's Connection does (its dialect's do_commit or
        do_rollback, errors raised through its handling)."""
        try:
            try:
                await end()
            finally:  # ended either way, as the adapter's _call_and_discard() (two calls) does
                adapted._transaction = None
        except BaseException as error:
            await self._raise_as_sqlalchemy(adapted, error, None, None)

    async def dbapi_connection(self) -> Any:
        """The unit of work's DBAPI connection (SQLAlchemy's asyncpg adapter), taken from the pool
        on first use."""
        if self._connection is None:
            pooled = self._pooled or await self._checkout()
            if pooled is not None:
                return pooled.dbapi_connection
        return await _dbapi_connection(await self.connection())

    async def connection(
        self, execution_options: Mapping[str, Any] | None = None
    ) -> AsyncConnection:
        """The unit of work's connection, taken from the pool on first use; `execution_options`
        (e.g. an isolation level) apply to it, refused once its transaction has begun."""
        connection = self._connection
        if connection is None:
            if self._pooled is not None:
                connection = self._wrap()
            else:
                connection = self._connection = await self._engine.connect()
                if self._autocommit:
                    await connection.execution_options(**_AUTOCOMMIT)
        if execution_options:
            await connection.execution_options(**execution_options)
        return connection

    def execute(
        self, statement: Executable | HotStatement, params: Any = None, **kw: Any
    ) -> Awaitable[Result[Any] | HotResult]:
        """Run `statement` (awaited as an AsyncSession's execute is). A hot statement's run is
        handed back to be awaited itself, not awaited in a coroutine of this method's: one
        Python frame less to enter and to resume at each of its round trips (issue 13)."""
        if type(statement) is HotStatement:
            if kw:
                raise TypeError("a hot statement takes its parameters only")
            return _execute_hot(self, statement, params or {})
        return self._execute(statement, params, kw)

    async def _execute(
        self, statement: Executable, params: Any, kw: Mapping[str, Any]
    ) -> Result[Any]:
        connection = self._connection or await self.connection()
        return await connection.execute(statement, params, **kw)  # type: ignore[arg-type]

    async def scalar(
        self, statement: Executable | HotStatement, params: Any = None, **kw: Any
    ) -> Any:
        if type(statement) is HotStatement:
            return (await self.execute(statement, params, **kw)).scalar()
        connection = self._connection or await self.connection()
        return await connection.scalar(statement, params, **kw)  # type: ignore[arg-type]

    async def scalars(
        self, statement: Executable | HotStatement, params: Any = None, **kw: Any
    ) -> Any:
        if type(statement) is HotStatement:
            return (await self.execute(statement, params, **kw)).scalars()
        connection = self._connection or await self.connection()
        return await connection.scalars(statement, params, **kw)  # type: ignore[arg-type]

    def commit(self) -> Awaitable[None]:
        """Commit (awaited as an AsyncSession's commit is). What ends the transaction is handed
        back to be awaited itself, not awaited in a coroutine of this method's: one Python frame
        less to resume per unit of work (issue 13, round 16)."""
        if self._connection is not None:
            return self._connection.commit()
        if self._pooled is not None:
            self._began = False  # SQLAlchemy's Connection ends its transaction, failed or not
            adapted: Any = self._pooled.dbapi_connection
            if adapted._transaction is not None:  # (none if only plain reads ran, before BEGIN)
                return self._end(adapted, adapted._transaction.commit)
        return _DONE

    def rollback(self) -> Awaitable[None]:
        """Roll back (awaited as an AsyncSession's rollback is; see commit)."""
        if self._connection is not None:
            return self._connection.rollback()
        if self._pooled is not None:
            self._began = False
            adapted: Any = self._pooled.dbapi_connection
            if adapted._transaction is not None:
                return self._end(adapted, adapted._transaction.rollback)
        return _DONE

    async def close(self) -> None:
        """Roll back what was not committed and give the connection back to the pool."""
        try:
            if self._pooled is not None:
                adapted: Any = self._pooled.dbapi_connection
                if self._autocommit:
                    adapted.autocommit = False  # the pool's next user begins transactions again
                if adapted._transaction is not None:
                    await self._end(adapted, adapted._transaction.rollback)
        finally:
            pooled, self._pooled = self._pooled, None  # (None if an error wrapped it)
            connection, self._connection = self._connection, None
            if pooled is not None and not _checkin_now(pooled):
                # The pool's checkin (its reset, events, a surplus connection closed) may await:
                # in SQLAlchemy's greenlet, as Connection.close() runs it.
                await greenlet_spawn(pooled.close)
            elif connection is not None:
                await connection.close()


class _Done:
    """Awaited, done at once with None, entering no Python frame (its __await__ a builtin: an
    empty tuple's iterator): CoreSession's commit or rollback with no transaction to end, where a
    coroutine of its own would cost a Python call per unit of work (issue 13, round 16)."""

    __slots__ = ()
    __await__ = ().__iter__


_DONE: Awaitable[None] = _Done()  # type: ignore[assignment]


class SqlAlchemyUnitOfWork:
    """One local transaction. `async with uow:` rolls back unless `await uow.commit()` was called.

    Services subclass it and attach their repositories in `_attach(session)`. Storage failures are
    mapped here, once for every service: a lost race becomes CONFLICT (ABORTED: retry the operation)
    and an unreachable database UNAVAILABLE / DATABASE_UNAVAILABLE (retryable), never INTERNAL.
    A service whose repositories run Core statements only sets `core_only`: its session is then a
    CoreSession on the factory's engine, not an ORM session.

    Repositories a transaction may not use are named in `made_on_first_use` (name -> a factory
    given the unit of work, after `_attach`): each is made when first read in a transaction, is a
    plain attribute for the rest of it (no call to reach it), and is forgotten when the next
    transaction begins. A saga step uses two or three repositories of a dozen, and making them all
    for every unit of work cost ~10-15 Python calls each time (issue 13).
    """

    session: AsyncSession | CoreSession
    core_only = False
    made_on_first_use: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory: Callable[[], AsyncSession | CoreSession] = session_factory
        if self.core_only:
            engine: AsyncEngine = session_factory.kw["bind"]
            self._session_factory = functools.partial(CoreSession, engine)
        self._committed = False
        self._made: list[str] = []  # this transaction's repositories made on first use

    def _attach(self, session: Any) -> None:
        """Create repositories bound to the session (override)."""

    def made(self, name: str) -> bool:
        """Whether this transaction has made (used) repository `name` of `made_on_first_use`."""
        return name in self.__dict__

    async def __aenter__(self) -> Self:
        self.session = self._session_factory()
        self._committed = False
        if self._made:  # the last transaction's, bound to its session: the next use makes new
            state = self.__dict__
            for name in self._made:
                del state[name]
            self._made = []
        self._attach(self.session)
        return self

    if not TYPE_CHECKING:  # subclasses declare their repositories' types; no other name is made

        def __getattr__(self, name: str) -> Any:
            """A repository of `made_on_first_use` not yet used in this transaction: made, and
            kept as an attribute until the next transaction begins."""
            try:
                make = self.made_on_first_use[name]
            except KeyError:
                raise AttributeError(name) from None
            repository = self.__dict__[name] = make(self)
            self._made.append(name)
            return repository

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:  # (the usual way out: nothing to map, ~8 Python calls fewer)
            session = self.session  # (_release inline: one coroutine's call fewer, round 16)
            try:
                if not self._committed:
                    await session.rollback()
            finally:
                await session.close()
            return
        down = database_down(exc)
        # When the server is gone the rollback fails too; the original error is what matters.
        with contextlib.suppress(Exception) if down else contextlib.nullcontext():
            await self._release()
        if lost_race(exc):
            raise Conflict("a concurrent transaction touched the same rows; retry") from exc
        if down:
            raise Unavailable(
                "the database is unavailable; retry", reason="DATABASE_UNAVAILABLE"
            ) from exc

    async def _release(self) -> None:
        """Roll back unless committed, and give the connection back to the pool."""
        try:
            if not self._committed:
                await self.session.rollback()
        finally:
            await self.session.close()

    async def commit(self) -> None:
        if tracing.exporting():
            # Its own span, so a trace shows what the durable COMMIT (the WAL flush) costs each hop.
            with _TRACER.start_as_current_span("db.commit"):
                await self.session.commit()
        else:
            # A span that goes nowhere still costs ~85 Python calls per commit (issue 13).
            await self.session.commit()
        self._committed = True

    async def rollback(self) -> None:
        await self.session.rollback()


U = TypeVar("U", bound=SqlAlchemyUnitOfWork)


class Database(Generic[U]):
    """A service's engine and session factory: built at start-up (never at import), checked before
    the service reports SERVING, disposed at shutdown. `uow()` makes a unit of work.

    With `generic_plan_requests`, the request path's units of work (`request_uow()`: a service
    gives it to the RPCs whose statements it checked, e.g. payments' Authorize and Capture) go
    through an engine of their own whose connections plan each prepared statement once,
    generically (create_engine's `generic_plans`), while `uow()` (other RPCs, the workers'
    periodic rounds and reads) keeps PostgreSQL's default plans. Each engine has a pool of
    `pool_size` connections, opened as they are first needed. Without it both are the one engine."""

    def __init__(
        self,
        url: str,
        make_uow: Callable[[async_sessionmaker[AsyncSession]], U],
        *,
        probe_table: str,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        generic_plan_requests: bool = False,
    ) -> None:
        self._url = url
        self._make_uow = make_uow
        self._probe_table = probe_table
        self._pool = (pool_size, max_overflow)
        self._generic_plan_requests = generic_plan_requests
        self.engine: AsyncEngine | None = None
        self.request_engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._request_sessions: async_sessionmaker[AsyncSession] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        make_uow: Callable[[async_sessionmaker[AsyncSession]], U],
        *,
        probe_table: str,
        generic_plan_requests: bool = False,
    ) -> Database[U]:
        """The database named by a service's settings (URL and pool sizes)."""
        return cls(
            settings.database_url.get_secret_value(),
            make_uow,
            probe_table=probe_table,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            generic_plan_requests=generic_plan_requests,
        )

    async def start(self) -> None:
        size, overflow = self._pool
        self.engine = create_engine(self._url, pool_size=size, max_overflow=overflow)
        self._sessions = make_session_factory(self.engine)
        if self._generic_plan_requests:
            self.request_engine = create_engine(
                self._url, pool_size=size, max_overflow=overflow, generic_plans=True
            )
            self._request_sessions = make_session_factory(self.request_engine)
        else:
            self.request_engine, self._request_sessions = self.engine, self._sessions
        # Fail fast: a service that cannot reach its migrated database must not report SERVING.
        async with self.engine.connect() as connection:
            await connection.execute(text(f"SELECT 1 FROM {self._probe_table} LIMIT 1"))

    async def stop(self) -> None:
        if self.request_engine is not None and self.request_engine is not self.engine:
            await self.request_engine.dispose()
        if self.engine is not None:
            await self.engine.dispose()

    def readiness_check(self) -> Callable[[], Awaitable[None]]:
        """This database as a readiness check for GrpcApp.add_readiness_check."""
        return database_check(self._url)

    def uow(self) -> U:
        """A unit of work on the default engine (PostgreSQL's default plans): workers' rounds."""
        if self._sessions is None:
            raise RuntimeError("database not started")
        return self._make_uow(self._sessions)

    def request_uow(self) -> U:
        """A unit of work of the request path: on the engine of generic plans when the database
        has one (`generic_plan_requests`), else the same as uow()."""
        if self._request_sessions is None:
            raise RuntimeError("database not started")
        return self._make_uow(self._request_sessions)
