"""A payment's columns fixed at creation (repositories.FIXED_COLUMNS) on real PostgreSQL (issue 13):
nothing writes them after the insert, so the guards of the statements that record a step on a
payment as this process committed it (assume, stored_as) compare only the columns that may change;
a change of a fixed column is refused rather than written, and a payment changed meanwhile in a
column that may change is still caught by the guard (the step goes the locked way)."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hirepay_platform.db import make_session_factory
from hirepay_platform.tcc import TccBranch
from payments.adapters import tables
from payments.adapters.repositories import FIXED_COLUMNS, GUARDED_COLUMNS
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.model import PaymentState
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.in_flight import InFlight
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeProvider
from tests.support.payments_helpers import authorize_command

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))


def _deps(engine: AsyncEngine, in_flight: InFlight) -> Deps:
    provider = FakeProvider()
    provider._ids = _IDS
    return Deps(
        SqlPaymentsUnitOfWork(make_session_factory(engine)),
        ProviderRegistry([provider]),
        Policy(provider_timeout=1, poll_base=1, poll_max=4),
        in_flight=in_flight,
    )


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with make_session_factory(engine)() as session:
        return await session.scalar(text(sql), params)


def test_every_column_is_either_fixed_or_guarded() -> None:
    names = {c.name for c in tables.payments.c}
    assert FIXED_COLUMNS.issubset(names)
    assert set(GUARDED_COLUMNS) == names - FIXED_COLUMNS
    assert GUARDED_COLUMNS[0] == "id"
    # What a step changes stays guarded: state, the pending operation, polling, amounts taken.
    assert {"state", "pending_op", "next_poll_at", "captured_minor", "metadata"} < set(
        GUARDED_COLUMNS
    )


async def test_the_guards_compare_only_the_columns_that_may_change(engine: AsyncEngine) -> None:
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((" ".join(statement.split()), parameters))

    deps = _deps(engine, InFlight())
    gtx = f"gtx-{next(_IDS)}"
    sa_event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await handlers.authorize(authorize_command(gtx), deps)
        done = await handlers.capture(commands.Capture(f"c-{gtx}", TccBranch(gtx, "payment")), deps)
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert done.payment.state is PaymentState.CAPTURED
    # The answers recorded on the payment as committed (2), the Capture's barrier row (1).
    guarded = [s for s, _ in sent if "IS NOT DISTINCT FROM" in s]
    assert len(guarded) == 3, [s for s, _ in sent]
    for statement in guarded:
        assert "payments.void_reason IS NOT DISTINCT FROM" in statement
        assert "payments.state IS NOT DISTINCT FROM" in statement
        for column in FIXED_COLUMNS:
            assert f"payments.{column} IS NOT DISTINCT FROM" not in statement, column


async def test_a_change_of_a_fixed_column_is_refused_and_nothing_written(
    engine: AsyncEngine,
) -> None:
    deps = _deps(engine, InFlight())
    gtx = f"gtx-{next(_IDS)}"
    pid = (await handlers.authorize(authorize_command(gtx), deps)).payment.id
    uow = SqlPaymentsUnitOfWork(make_session_factory(engine))
    with pytest.raises(ValueError, match="description"):
        async with uow:
            payment = await uow.payments.get(pid, for_update=True)
            assert payment is not None
            payment.description = "another text"
            payment.void_reason = "changed too"
            await uow.payments.save(payment)
            await uow.commit()
    assert await _scalar(engine, "SELECT description FROM payments WHERE id = :p", p=pid) == (
        "a job post"
    )
    assert await _scalar(engine, "SELECT void_reason FROM payments WHERE id = :p", p=pid) == ""


async def test_a_payment_not_read_is_saved_without_its_fixed_columns(engine: AsyncEngine) -> None:
    deps = _deps(engine, InFlight())
    gtx = f"gtx-{next(_IDS)}"
    authorized = (await handlers.authorize(authorize_command(gtx), deps)).payment
    changed = replace(authorized, description="not written", void_reason="written")
    uow = SqlPaymentsUnitOfWork(make_session_factory(engine))
    async with uow:
        await uow.payments.save(changed)  # not read in this unit of work
        await uow.commit()
    pid = authorized.id
    assert await _scalar(engine, "SELECT description FROM payments WHERE id = :p", p=pid) == (
        "a job post"
    )
    assert await _scalar(engine, "SELECT void_reason FROM payments WHERE id = :p", p=pid) == (
        "written"
    )


async def test_a_change_meanwhile_of_a_guarded_column_still_sends_the_capture_the_locked_way(
    engine: AsyncEngine,
) -> None:
    deps = _deps(engine, InFlight())
    gtx = f"gtx-{next(_IDS)}"
    pid = (await handlers.authorize(authorize_command(gtx), deps)).payment.id
    async with make_session_factory(engine)() as session:
        await session.execute(
            text("UPDATE payments SET poll_attempts = poll_attempts + 1 WHERE id = :p"),
            {"p": pid},
        )
        await session.commit()
    done = await handlers.capture(commands.Capture(f"c-{gtx}", TccBranch(gtx, "payment")), deps)
    assert done.payment.state is PaymentState.CAPTURED
    assert (
        await _scalar(
            engine,
            "SELECT count(*) FROM audit_log WHERE payment_id = :p AND reason = 'capture requested'",
            p=pid,
        )
        == 1
    )
