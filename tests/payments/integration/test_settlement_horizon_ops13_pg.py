"""The settlement stream's horizon as gauges (payments 0020, OPS-1, OPS-4): while a transaction
holding a transaction id stays open anywhere on the server (here: in another database), the
horizon gauge counts its age and the held-event gauge the age of the committed events the stream
holds back behind it; both fall when it ends. A role that may not read other roles' transaction
starts still sees that such a transaction runs, and ages it from when it first saw it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_dev.pg import libpq_url, with_database
from hirepay_platform.db import create_engine, make_session_factory
from payments.adapters.event_repositories import _HORIZON
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.events import EventType, OutboxEvent
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.horizon import HorizonAges, HorizonWatch, sample_horizon
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeProvider
from tests.support.payments_helpers import card_payment
from tests.support.waiting import wait_for

# How long the test holds a transaction with an xid open before sampling.
HOLD_SECONDS = 1.5


def _deps(sessions: async_sessionmaker[AsyncSession]) -> Deps:
    return Deps(SqlPaymentsUnitOfWork(sessions), ProviderRegistry([FakeProvider()]))


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


@pytest.fixture
async def elsewhere(make_database: Callable[[str], str]) -> AsyncIterator[asyncpg.Connection]:
    """A connection to another database of the same server (nothing of payments there)."""
    url = await asyncio.to_thread(make_database, "horizon_other")
    connection = await asyncpg.connect(libpq_url(url))
    yield connection
    await connection.close()


async def _hold_xid(connection: asyncpg.Connection) -> int:
    """Begin a transaction on `connection` and give it a transaction id (as a write would)."""
    await connection.execute("BEGIN")
    return int(await connection.fetchval("SELECT pg_current_xact_id()::text"))


async def _settled(sessions, watch: HorizonWatch) -> HorizonAges | None:
    """A sample once nothing runs with an xid any longer (another test run on the server may hold
    one for a moment) and nothing is held."""
    ages = await sample_horizon(_deps(sessions), watch)
    return ages if ages.horizon_seconds < HOLD_SECONDS and ages.held_seconds == 0 else None


async def test_the_horizon_gauge_rises_while_a_transaction_holds_an_xid_and_falls_after(
    sessions, elsewhere
) -> None:
    watch = HorizonWatch()
    await wait_for(lambda: _settled(sessions, watch))
    await _hold_xid(elsewhere)
    try:
        await asyncio.sleep(HOLD_SECONDS)
        ages = await sample_horizon(_deps(sessions), watch)
        # Its start was read (a superuser here): at least as old as the hold, from its BEGIN.
        assert ages.horizon_seconds >= HOLD_SECONDS
        assert _gauge("hirepay_payment_settlement_horizon_age_seconds") == ages.horizon_seconds
        await asyncio.sleep(0.3)
        later = await sample_horizon(_deps(sessions), watch)
        assert later.horizon_seconds >= ages.horizon_seconds + 0.3
    finally:
        await elsewhere.execute("COMMIT")
    ended = await wait_for(lambda: _settled(sessions, watch))
    assert _gauge("hirepay_payment_settlement_horizon_age_seconds") == ended.horizon_seconds
    assert ended.horizon_seconds < HOLD_SECONDS


async def _write_event(sessions, name: str, *, commit: bool) -> SqlPaymentsUnitOfWork:
    """An event written in a unit of work entered here (its writer has an xid from the insert
    on), committed or left open (the caller ends it)."""
    uow = SqlPaymentsUnitOfWork(sessions)
    await uow.__aenter__()
    payment = card_payment(f"pay_{name}", f"gtx-{name}")
    await uow.payments.add(payment)
    await uow.outbox.add(
        OutboxEvent(
            f"evt_{name}", EventType.PAYMENT_AUTHORIZED, datetime.now(UTC), "jobs", payment=payment
        ),
        callback=False,
    )
    await uow.payments.get(payment.id)  # a statement: the held-back inserts go first
    if commit:
        await uow.commit()
        await uow.__aexit__(None, None, None)
    return uow


async def test_events_committed_behind_an_open_writer_are_counted_held_until_it_ends(
    sessions,
) -> None:
    watch = HorizonWatch()
    await wait_for(lambda: _settled(sessions, watch))
    suffix = uuid.uuid4().hex[:8]
    older = await _write_event(sessions, f"older_{suffix}", commit=False)
    try:
        await _write_event(sessions, f"younger_{suffix}", commit=True)
        await asyncio.sleep(HOLD_SECONDS)
        ages = await sample_horizon(_deps(sessions), watch)
        assert ages.held_seconds >= HOLD_SECONDS
        assert ages.horizon_seconds >= ages.held_seconds  # the older writer began first
        assert _gauge("hirepay_payment_settlement_held_event_age_seconds") == ages.held_seconds
    finally:
        await older.commit()
        await older.__aexit__(None, None, None)
    ended = await wait_for(lambda: _settled(sessions, watch))
    assert _gauge("hirepay_payment_settlement_held_event_age_seconds") == ended.held_seconds == 0


async def test_the_held_range_is_read_through_the_stream_index(sessions, database_url) -> None:
    """The sample reads the events above the horizon by ix_outbox_stream, not by a scan of the
    whole outbox (it runs every few seconds on an outbox that only grows)."""
    connection = await asyncpg.connect(libpq_url(database_url))
    reading = connection.transaction()  # rolled back: nothing of the test stays
    await reading.start()
    try:
        await connection.execute(
            "INSERT INTO outbox (event_id, type, subsystem, snapshot, occurred_at) "
            "SELECT 'evt_scan_' || n, 'payment.captured', 'jobs', '{}'::jsonb, now() "
            "FROM generate_series(1, 500) AS n"
        )
        await connection.fetchrow(str(_HORIZON))
        scans = await connection.fetchrow(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'outbox'"
        )
        assert scans["seq_scan"] == 0 and scans["idx_scan"] >= 1, dict(scans)
    finally:
        await reading.rollback()
        await connection.close()


@pytest.fixture
async def plain_sessions(
    database_url: str, pg_server_url: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the payments database as a role that may read the outbox and nothing of other
    roles' activity (no pg_read_all_stats): as a payments role not granted pg_monitor."""
    role = f"t_plain_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    database = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(libpq_url(database_url))
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    await admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    await admin.execute(f"GRANT SELECT ON outbox TO {role}")
    parts = urlsplit(with_database(pg_server_url, database))
    host = parts.netloc.rsplit("@", 1)[-1]
    url = urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))
    engine = create_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_a_role_without_pg_read_all_stats_ages_what_it_cannot_read_from_first_sight(
    plain_sessions, elsewhere
) -> None:
    watch = HorizonWatch()
    await wait_for(lambda: _settled(plain_sessions, watch))
    xid = await _hold_xid(elsewhere)
    held = (elsewhere.get_server_pid(), xid)
    try:
        async with SqlPaymentsUnitOfWork(plain_sessions) as uow:
            sample = await uow.outbox.horizon()
        # Its start is hidden (another role's); that it holds an xid is not.
        assert held in sample.unseen
        watch.ages(sample)
        assert watch.first_seen[held] == sample.at  # aged from here on
        await asyncio.sleep(HOLD_SECONDS)
        later = await sample_horizon(_deps(plain_sessions), watch)
        assert watch.first_seen[held] == sample.at
        assert later.horizon_seconds >= HOLD_SECONDS
    finally:
        await elsewhere.execute("COMMIT")
    await wait_for(lambda: _settled(plain_sessions, watch))
    # Ended, it is forgotten (another test run on the server may have one of its own running).
    assert held not in watch.first_seen
