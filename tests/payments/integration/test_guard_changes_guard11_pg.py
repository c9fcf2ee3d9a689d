"""The guards of a step written on a payment as this process last read or committed it
(repositories' `assume` and `stored_as`) on real PostgreSQL, against changes made by other
statements (issue 13; PAY-8: a step is written once, never over a change it did not see).

A change of the row since the copy was made refuses the guarded write (StaleRow, nothing of it
written) and `stored_as` finds no row, whoever made it: the poller's lease (the real statement,
which moves only `next_poll_at`) or a raw UPDATE of any one column that may change, including
those the step itself never writes. The same write on an unchanged copy goes through, so the
refusals are the guard's and not the test's. Weakening the guard (a column left out of
GUARDED_COLUMNS) fails the case of that column."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Boolean, DateTime, Integer, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from hirepay_platform.db import make_session_factory
from hirepay_platform.errors import StaleRow
from hirepay_platform.tcc import TccBranch
from payments.adapters import tables
from payments.adapters.repositories import GUARDED_COLUMNS, SqlPaymentRepository
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.model import Method, Payment, PaymentState
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.in_flight import InFlight
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeProvider

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
_WRITTEN = "written on the copy"  # what the guarded write sets (failure_message)


def _deps(engine: AsyncEngine) -> Deps:
    provider = FakeProvider()
    provider._ids = _IDS
    return Deps(
        SqlPaymentsUnitOfWork(make_session_factory(engine)),
        ProviderRegistry([provider]),
        Policy(provider_timeout=1, poll_base=1, poll_max=4),
        in_flight=InFlight(),
    )


async def _committed(engine: AsyncEngine) -> Payment:
    """An authorized card payment as this process committed it (its Try's answer recorded)."""
    gtx = f"gtx-{next(_IDS)}"
    command = commands.Authorize(
        request_id=f"r-{gtx}",
        branch=TccBranch(gtx, "payment"),
        owner_id="company-1",
        amount_minor=2500,
        currency="USD",
        method=Method.CARD,
        payment_method_token="pm_card_visa",
        metadata={"subsystem": "jobs", "job_id": "job-1"},
        description="a job post",
        email="owner@example.com",
    )
    payment = (await handlers.authorize(command, _deps(engine))).payment
    assert payment.state is PaymentState.AUTHORIZED
    return payment


def _changed(column: str) -> str:
    """SQL that gives `column` another value than it holds, whatever it holds."""
    kind = tables.payments.c[column].type
    if column == "state":
        return "CASE WHEN state = 'AUTHORIZED' THEN 'PROCESSING' ELSE 'AUTHORIZED' END"
    if isinstance(kind, JSONB):
        return f"""{column} || '{{"changed": "meanwhile"}}'"""
    if isinstance(kind, Boolean):
        return f"NOT {column}"
    if isinstance(kind, DateTime):
        return f"coalesce({column}, now()) + interval '1 second'"
    if isinstance(kind, Integer):  # BigInteger too
        return f"{column} + 1"
    if tables.payments.c[column].nullable:
        # A value of its own per row (the provider ids are unique), within the column's length.
        return f"CASE WHEN {column} IS NULL THEN right(id, 16) ELSE NULL END"
    return f"{column} || 'x'"


async def _execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with make_session_factory(engine)() as session:
        await session.execute(text(sql), params)
        await session.commit()


async def _value(engine: AsyncEngine, column: str, payment_id: str) -> Any:
    async with make_session_factory(engine)() as session:
        return await session.scalar(
            text(f"SELECT {column} FROM payments WHERE id = :p"), {"p": payment_id}
        )


async def _write_on(engine: AsyncEngine, copy: Payment) -> None:
    """A step written on `copy` as a guarded unit of work (assume): StaleRow if refused."""
    uow = SqlPaymentsUnitOfWork(make_session_factory(engine))
    async with uow:
        payment = uow.payments.assume(copy)
        payment.failure_message = _WRITTEN
        await uow.payments.save(payment)
        await uow.commit()


async def _stored_as_finds(engine: AsyncEngine, copy: Payment) -> bool:
    async with make_session_factory(engine)() as session:
        statement, params = SqlPaymentRepository(session).stored_as(copy)
        found = (await session.execute(statement, params)).first() is not None
        await session.rollback()
    return found


async def test_an_unchanged_copy_is_written(engine: AsyncEngine) -> None:
    copy = await _committed(engine)
    assert await _stored_as_finds(engine, copy)
    await _write_on(engine, copy)
    assert await _value(engine, "failure_message", copy.id) == _WRITTEN


@pytest.mark.parametrize("column", [c for c in GUARDED_COLUMNS if c != "id"])
async def test_a_change_of_any_column_that_may_change_refuses_the_guarded_write(
    engine: AsyncEngine, column: str
) -> None:
    copy = await _committed(engine)
    await _execute(
        engine, f"UPDATE payments SET {column} = {_changed(column)} WHERE id = :p", p=copy.id
    )
    assert not await _stored_as_finds(engine, copy)
    with pytest.raises(StaleRow):
        await _write_on(engine, copy)
    assert await _value(engine, "failure_message", copy.id) != _WRITTEN


async def test_a_lease_by_the_poller_refuses_a_guarded_write_on_the_copy_read_before(
    engine: AsyncEngine,
) -> None:
    committed = await _committed(engine)
    due = datetime.now(UTC) - timedelta(minutes=1)
    await _execute(
        engine, "UPDATE payments SET next_poll_at = :due WHERE id = :p", due=due, p=committed.id
    )
    reader = SqlPaymentsUnitOfWork(make_session_factory(engine))
    async with reader:
        copy = await reader.payments.get(committed.id)
    assert copy is not None and copy.next_poll_at == due
    assert await _stored_as_finds(engine, copy)  # as read: the guard would find it

    poller = SqlPaymentsUnitOfWork(make_session_factory(engine))
    async with poller:  # the poller's lease, as its worker runs it (another replica's, say)
        leased = await poller.payments.lease_due(datetime.now(UTC), 1000, 60)
        await poller.commit()
    assert committed.id in {p.id for p in leased}

    assert not await _stored_as_finds(engine, copy)
    with pytest.raises(StaleRow):
        await _write_on(engine, copy)
    assert await _value(engine, "failure_message", copy.id) != _WRITTEN
