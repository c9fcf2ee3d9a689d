"""The reads a posting and the recovery worker make on every posting or tick use their indexes,
even as generic plans (issue 13): PAY-14's abuse rule reads a company's failed sagas only, a
charged attempt reads its user's expired attempts only, and the recovery worker's queries read
unfinished sagas only (they read the whole table once a second). Each statement as the service
sends it is planned generically with sequential scans off: a plan that cannot use its index
still shows a sequential scan."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import text

from hirepay_platform.db import create_engine, make_session_factory
from jobs.adapters.tables import FAILED_SAGA, UNFINISHED_SAGA
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.posting_saga import FINAL_STATES
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import pay_to_post, settlement
from tests.support.jobs_fakes import FakeParticipants, make_config
from tests.support.jobs_world import FIELDS
from tests.support.pg_plans import generic_plan, planning


def test_the_unfinished_sagas_condition_names_every_final_state() -> None:
    named = set(re.findall(r"'(\w+)'", UNFINISHED_SAGA.text))
    assert named == {state.value for state in FINAL_STATES}


async def test_posting_and_recovery_reads_use_their_indexes(make_service_database, round_trips):
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url, pool_size=2, max_overflow=0)
    try:
        sessions = make_session_factory(engine)
        deps = Deps.build(
            lambda: SqlJobsUnitOfWork(sessions),
            make_config(max_failed_payments=10),
            FakeParticipants(),
        )
        post = commands.CreateJobWithPayment(
            request_id="k",
            actor=commands.Actor("co_ix", "company"),
            payment=commands.PaymentChoice(method="card", payment_method_token="pm_card_visa"),
            accept_terms=True,
            fingerprint="fp",
            fields=FIELDS,
            rate_limit=commands.PostingRateLimit(100, 60),
        )
        await pay_to_post.create_job_with_payment(post, deps)  # the bucket's first attempt
        round_trips.sent.clear()
        await pay_to_post.create_job_with_payment(replace(post, request_id="k2"), deps)
        await settlement.recover_due(commands.RecoverSagas(), deps)
        statements = round_trips.statements
    finally:
        await engine.dispose()

    first_step = next(s for s in statements if "FROM sagas AS failed" in s)
    recovery = [s for s in statements if "FROM sagas" in s and "state NOT IN" in s]
    assert len(recovery) == 2, statements  # the due sagas, the stuck ones
    async with planning(url) as connection:
        # The abuse rule's index holds failed sagas only: none of the two postings'.
        assert (
            await connection.fetchval(f"SELECT count(*) FROM sagas WHERE {FAILED_SAGA.text}") == 0
        )
        plan = await generic_plan(connection, first_step)
        assert "ix_sagas_company_failed" in plan and "ix_posting_rate_attempts_charged" in plan, (
            plan
        )
        for sql in recovery:
            plan = await generic_plan(connection, sql)
            assert "ix_sagas_unfinished" in plan and "Seq Scan on sagas" not in plan, plan


async def test_the_marketplace_callback_relay_leases_due_events_through_their_index(
    make_service_database, round_trips
):
    """The relay's lease runs every round; without `ix_marketplace_events_callbacks_due` its
    generic plan walks every event ever written in cursor order (as payments' outbox did)."""
    url = await asyncio.to_thread(make_service_database, "jobs")

    async def lease_callbacks(uow: SqlJobsUnitOfWork) -> None:
        await uow.outbox.lease_callbacks(datetime.now(UTC), 50, 30.0)
        await uow.commit()

    lease = await _statement_sent(url, round_trips, lease_callbacks, "callback_next_at <=")

    async with planning(url) as connection:
        plan = await generic_plan(connection, lease)
    assert "Index Scan using ix_marketplace_events_callbacks_due" in plan, plan
    assert "marketplace_events_pkey" not in plan and "Sort" not in plan, plan


async def test_the_saga_log_has_no_index_a_posting_must_update_but_nothing_reads(
    make_service_database,
) -> None:
    """Every posting appends three saga log lines; nothing reads the log by saga, so its only
    index is its primary key (migration 0009: ix_saga_log_saga_id cost each line a B-tree
    insertion and its WAL). Its foreign key to the saga stays."""
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            indexes = await connection.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'saga_log'")
            )
            keys = await connection.execute(
                text(
                    "SELECT count(*) FROM pg_constraint WHERE conrelid = 'saga_log'::regclass "
                    "AND contype = 'f' AND confrelid = 'sagas'::regclass"
                )
            )
            assert indexes.scalars().all() == ["saga_log_pkey"]
            assert keys.scalar_one() == 1
    finally:
        await engine.dispose()


async def test_sagas_and_jobs_by_ids_probe_their_keys_on_a_fresh_database(
    make_service_database, round_trips
):
    """The settlement consumer reads its batch's sagas by ids, the auditor its pages' jobs. As
    `id = ANY(:ids)`, the generic plan PostgreSQL makes while the table is small (a fresh
    database) reads the whole table, and a connection keeps that plan: it read every saga ever
    made on every batch until a replan (issue 13). Planned generically on a fresh database with
    sequential scans allowed, as the server plans it: one primary key probe per id; and that plan
    is the one a warm connection keeps."""
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        sessions = make_session_factory(engine)
        round_trips.sent.clear()
        async with SqlJobsUnitOfWork(sessions) as uow:
            assert await uow.sagas.get_many(["saga_a", "saga_b"]) == {}
            assert await uow.jobs.get_many(["job_a"]) == {}
        statements = round_trips.statements
    finally:
        await engine.dispose()

    reads = {
        table: next(s for s in statements if f"FROM {table}" in s) for table in ("sagas", "jobs")
    }
    for table, sql in reads.items():
        async with planning(url) as connection:
            await connection.execute("SET enable_seqscan = on")
            plan = await generic_plan(connection, sql)
            assert f"Index Scan using {table}_pkey" in plan, plan
        assert "Seq Scan" not in plan and "Hash" not in plan, plan

    # Kept generic once warm (the ids' row estimate is fixed, migration 0011): as unnest(:ids),
    # every call was planned again (a custom plan knows the array's length, and looked cheaper).
    sql = reads["sagas"]
    async with planning(url) as connection:
        await connection.execute("SET plan_cache_mode = auto")
        await connection.execute(f"PREPARE measured AS {sql}")
        for _ in range(8):
            await connection.execute("EXECUTE measured('saga_a,saga_b,saga_c')")
        plans = await connection.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'measured'"
        )
    assert plans["generic_plans"] >= 3 and plans["custom_plans"] <= 5, dict(plans)


async def test_job_transitions_have_one_index_and_a_jobs_history_reads_it_in_order(
    make_service_database, round_trips
) -> None:
    """Every posting appends three transitions: their one index is the primary key by job
    (migration 0012: `ix_job_transitions_job_id` beside a primary key on `id` cost each
    transition a second B-tree insertion, and nothing reads a transition by id). A job's history
    reads it in order, generic plan: no scan of every transition, no sort."""
    url = await asyncio.to_thread(make_service_database, "jobs")

    async def history_of_a_job(uow: SqlJobsUnitOfWork) -> None:
        await uow.jobs.transitions("job_1")

    history = await _statement_sent(url, round_trips, history_of_a_job, "FROM job_transitions")

    async with planning(url) as connection:
        indexes = await connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'job_transitions'"
        )
        assert [r["indexname"] for r in indexes] == ["job_transitions_pkey"]
        plan = await generic_plan(connection, history)
    assert "Index Scan using job_transitions_pkey" in plan, plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan


async def _statement_sent(
    url: str,
    round_trips,
    use: Callable[[SqlJobsUnitOfWork], Awaitable[None]],
    marker: str,
) -> str:
    """The statement with `marker` in it that `use` sends through a unit of work on `url`."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        round_trips.sent.clear()
        async with SqlJobsUnitOfWork(make_session_factory(engine)) as uow:
            await use(uow)
        return next(s for s in round_trips.statements if marker in s)
    finally:
        await engine.dispose()
