"""The settlement stream without a publishing step (payments 0020, issue 13): events are read in
their writers' transaction-id order, only below the reading snapshot's xmin, so a consumer that
resumes after the last cursor it was given never misses an event and never gets one twice,
whatever order the writers commit in, however long an older transaction (here or in another
database of the server) holds the horizon back, and whether a writer commits, aborts or dies."""

from __future__ import annotations

import asyncio
import random

import asyncpg
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_dev.pg import libpq_url
from hirepay_dev.services import SPECS
from hirepay_platform.migrations import alembic_config
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.events import EventType, OutboxEvent
from tests.support.payments_helpers import card_payment
from tests.support.waiting import wait_for

# How long a read must keep finding nothing while an older writer runs.
HELD_SECONDS = 0.6


async def _write(uow: SqlPaymentsUnitOfWork, name: str) -> None:
    """A payment and its event in `uow`'s transaction, sent to the server (its writer has a
    transaction id from here on), not committed."""
    payment = card_payment(f"pay_{name}", f"gtx-{name}")
    await uow.payments.add(payment)
    await uow.outbox.add(
        OutboxEvent(
            f"evt_{name}", EventType.PAYMENT_AUTHORIZED, payment.created_at, "jobs", payment=payment
        ),
        callback=False,
    )
    await uow.payments.get(payment.id)  # a statement: the held-back inserts go first


async def _read(sessions: async_sessionmaker[AsyncSession], after: int) -> list[OutboxEvent]:
    uow = SqlPaymentsUnitOfWork(sessions)
    async with uow:
        return await uow.outbox.list_after(after, 1000, "jobs")


async def _end(sessions: async_sessionmaker[AsyncSession]) -> int:
    """The cursor of the stream's last event visible now (a consumer caught up)."""
    events = await _read(sessions, 0)
    return events[-1].cursor if events else 0


async def _none_of(sessions, after: int, names: set[str]) -> None:
    """For HELD_SECONDS, no read after `after` returns an event of `names`."""
    loop = asyncio.get_running_loop()
    until = loop.time() + HELD_SECONDS
    while loop.time() < until:
        got = {e.event_id for e in await _read(sessions, after)}
        assert not got & names, got
        await asyncio.sleep(0.05)


async def _mine(sessions, after: int, names: set[str]) -> list[OutboxEvent]:
    """The events of `names` after `after`, once all of them are there."""

    async def all_there() -> list[OutboxEvent] | None:
        got = [e for e in await _read(sessions, after) if e.event_id in names]
        return got if len(got) == len(names) else None

    return await wait_for(all_there, timeout=10)


async def test_an_event_waits_for_a_writer_that_began_before_it(sessions) -> None:
    """The older writer has a transaction id and an event on the server; a younger one commits
    first. The stream gives neither until the older one ends (handing out the younger one now
    would put the older one behind a cursor already given), then both, the older first."""
    start = await _end(sessions)
    older, younger = SqlPaymentsUnitOfWork(sessions), SqlPaymentsUnitOfWork(sessions)
    async with older:
        await _write(older, "older")
        async with younger:
            await _write(younger, "younger")
            await younger.commit()
        await _none_of(sessions, start, {"evt_older", "evt_younger"})
        await older.commit()
    events = await _mine(sessions, start, {"evt_older", "evt_younger"})
    assert [e.event_id for e in events] == ["evt_older", "evt_younger"]
    assert events[0].cursor < events[1].cursor
    # A consumer that stored the first cursor resumes with the second, once.
    assert [e.event_id for e in await _read(sessions, events[0].cursor)][:1] == ["evt_younger"]
    assert "evt_younger" not in {e.event_id for e in await _read(sessions, events[1].cursor)}


async def test_an_aborted_or_killed_writer_holds_the_stream_only_while_it_runs(
    sessions, database_url
) -> None:
    """A writer rolled back, and one whose backend dies mid-transaction (a crashed process):
    their events never appear, and the events committed behind them are given once they end."""
    start = await _end(sessions)
    rolled = SqlPaymentsUnitOfWork(sessions)
    dying = await asyncpg.connect(libpq_url(database_url))
    async with rolled:
        await _write(rolled, "rolled")
        # A writer in another process: its event sent, then its backend gone (kill -9 of the
        # process closes its connection; terminating the backend is the same for the server).
        await dying.execute("BEGIN")
        await dying.execute(
            "INSERT INTO outbox (event_id, type, subsystem, snapshot, occurred_at) "
            "VALUES ('evt_dying', 'payment.authorized', 'jobs', '{}'::jsonb, now())"
        )
        pid = dying.get_server_pid()
        behind = SqlPaymentsUnitOfWork(sessions)
        async with behind:
            await _write(behind, "behind")
            await behind.commit()
        await _none_of(sessions, start, {"evt_behind"})
        killer = await asyncpg.connect(libpq_url(database_url))
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
        finally:
            await killer.close()
        dying.terminate()
        await _none_of(sessions, start, {"evt_behind"})  # `rolled` still runs
    # `rolled` ended without commit: its unit of work rolled back.
    events = await _mine(sessions, start, {"evt_behind"})
    assert [e.event_id for e in events] == ["evt_behind"]
    assert not {"evt_rolled", "evt_dying"} & {e.event_id for e in await _read(sessions, start)}


async def test_a_long_transaction_in_another_database_holds_the_horizon(
    sessions, make_service_database
) -> None:
    """Transaction ids are the server's: an open transaction with one, in any database, holds
    the stream back until it ends (then nothing is skipped); one without (reads only, idle in
    its transaction) does not."""
    other_url = await asyncio.to_thread(make_service_database, "payments")
    other = await asyncpg.connect(libpq_url(other_url))
    start = await _end(sessions)
    try:
        idle = other.transaction()
        await idle.start()
        await other.fetchval("SELECT count(*) FROM outbox")  # a reader: no transaction id
        writer = SqlPaymentsUnitOfWork(sessions)
        async with writer:
            await _write(writer, "beside_reader")
            await writer.commit()
        await _mine(sessions, start, {"evt_beside_reader"})
        await idle.rollback()

        start = await _end(sessions)
        long = other.transaction()
        await long.start()
        await other.fetchval("SELECT pg_current_xact_id()")  # it has a transaction id now
        writer = SqlPaymentsUnitOfWork(sessions)
        async with writer:
            await _write(writer, "behind_long")
            await writer.commit()
        await _none_of(sessions, start, {"evt_behind_long"})
        await long.commit()
        events = await _mine(sessions, start, {"evt_behind_long"})
        assert [e.event_id for e in events] == ["evt_behind_long"]
    finally:
        await other.close()


async def test_writers_committing_out_of_order_reach_a_resuming_consumer_once(sessions) -> None:
    """Writers that send their event early and commit after random pauses, concurrently with a
    consumer that reads after the last cursor it was given, as jobs' does: every event comes
    exactly once, and the cursors it is given only grow."""
    start = await _end(sessions)
    names = {f"evt_ooo{i}" for i in range(24)}
    rng = random.Random(12)
    pauses = [rng.uniform(0, 0.15) for _ in range(24)]
    received: list[OutboxEvent] = []
    done = asyncio.Event()

    async def writer(i: int) -> None:
        await asyncio.sleep(rng.uniform(0, 0.05))
        uow = SqlPaymentsUnitOfWork(sessions)
        async with uow:
            await _write(uow, f"ooo{i}")
            await asyncio.sleep(pauses[i])
            await uow.commit()

    async def consumer() -> None:
        cursor = start
        while not (done.is_set() and names <= {e.event_id for e in received}):
            for event in await _read(sessions, cursor):
                received.append(event)
                cursor = event.cursor
            await asyncio.sleep(0.01)

    async def writers() -> None:
        await asyncio.gather(*(writer(i) for i in range(24)))
        done.set()

    await asyncio.wait_for(asyncio.gather(consumer(), writers()), timeout=30)
    mine = [e.event_id for e in received if e.event_id in names]
    assert sorted(mine) == sorted(names)  # each once
    cursors = [e.cursor for e in received]
    assert cursors == sorted(set(cursors))


async def test_an_event_is_written_once_and_a_read_writes_nothing(sessions, database_url) -> None:
    """No publishing step (issue 13: ~12 WAL records and a commit per posting): the row a writer
    inserts is the row the stream gives, never updated (its xmin is still its writer's), and a
    read of the stream takes no transaction id (nothing to commit, no WAL)."""
    start = await _end(sessions)
    uow = SqlPaymentsUnitOfWork(sessions)
    async with uow:
        await _write(uow, "once")
        await uow.commit()
    await _mine(sessions, start, {"evt_once"})
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        row = await connection.fetchrow(
            "SELECT xmin::text::bigint AS xmin, writer_xid::text::bigint AS writer "
            "FROM outbox WHERE event_id = 'evt_once'"
        )
        assert row["xmin"] == row["writer"] % 2**32
        async with connection.transaction():
            got = await connection.fetch("SELECT * FROM outbox_after($1, 100, 'jobs')", start)
            assert "evt_once" in {r["event_id"] for r in got}
            assert await connection.fetchval("SELECT pg_current_xact_id_if_assigned()") is None
    finally:
        await connection.close()


async def _insert(connection: asyncpg.Connection, names: range) -> None:
    """Events as a writer writes them, one transaction each (subsystems jobs and marketplace)."""
    for n in names:
        await connection.execute(
            "INSERT INTO outbox (event_id, type, subsystem, snapshot, occurred_at) VALUES "
            "('evt_m' || $1::int, 'payment.captured', CASE WHEN $1::int % 3 = 0 THEN 'marketplace' "
            "ELSE 'jobs' END, '{}'::jsonb, now())",
            n,
        )


async def _after(connection: asyncpg.Connection, after: int, subsystem: str, n: int = 1000):
    rows = await connection.fetch("SELECT * FROM outbox_after($1, $2, $3)", after, n, subsystem)
    return [(r["position"], r["event_id"]) for r in rows]


async def test_consumers_resume_across_migration_0020_without_loss_or_replay(
    make_service_database,
) -> None:
    """Consumers that stored positions before 0020 (some events committed and not yet published
    then) resume after it with the rest of the old events in their order, then the new ones;
    a read crosses from the old part into the new; and after a downgrade, cursors given since
    0020 resume where they were (payments 0020 maps every old position and new cursor)."""
    url = await asyncio.to_thread(make_service_database, "payments")
    config = alembic_config(SPECS["payments"].migrations, url)
    await asyncio.to_thread(command.downgrade, config, "0019")
    connection = await asyncpg.connect(libpq_url(url))
    try:
        await _insert(connection, range(0, 30))
        stored = {}
        given = {}
        for subsystem in ("", "jobs", "marketplace"):
            first = await _after(connection, 0, subsystem, 6)  # the read publishes them
            given[subsystem] = first
            stored[subsystem] = first[-1][0]
        old_order = {s: [e for _, e in await _after(connection, 0, s)] for s in given}
        await _insert(connection, range(30, 35))  # committed, not yet published at the upgrade
        await connection.close()

        await asyncio.to_thread(command.upgrade, config, "head")
        connection = await asyncpg.connect(libpq_url(url))
        await _insert(connection, range(35, 41))
        for subsystem, first in given.items():
            rest = await _after(connection, stored[subsystem], subsystem)
            events = [e for _, e in first + rest]
            want = old_order[subsystem] + [
                f"evt_m{n}"
                for n in range(30, 41)
                if subsystem in ("", "marketplace" if n % 3 == 0 else "jobs")
            ]
            assert events == want, subsystem  # each once, old ones in their order, then new
            cursors = [c for c, _ in first + rest]
            assert cursors == sorted(set(cursors))
            # Read by small pages from the stored position, crossing into the new part.
            paged, cursor = [], stored[subsystem]
            while page := await _after(connection, cursor, subsystem, 4):
                paged += page
                cursor = page[-1][0]
            assert paged == rest
        last_new = (await _after(connection, 0, ""))[-1][0]
        before_downgrade = await _after(connection, stored[""], "")
        await connection.close()

        await asyncio.to_thread(command.downgrade, config, "0019")
        connection = await asyncpg.connect(libpq_url(url))
        assert await _after(connection, stored[""], "") == before_downgrade
        await _insert(connection, range(41, 42))
        assert [e for _, e in await _after(connection, last_new, "")] == ["evt_m41"]
    finally:
        await connection.close()
