"""A booking round's audit lines go as one JSON document, not as an array per column (issue 13,
audit16): a busy round (tens of bookings at c=32) wrote its lines as six arrays, and asyncpg
asked one to three abstract-class questions in Python of each element (11 per line, two Python
calls each) while SQLAlchemy encoded each line's JSON details apart: ~49 Python calls per booking
in the round, now ~33. Every line is as before: one per booking, in the bookings' order, its
action, actor, reason, details, payment and no transaction, the statement's time, written in the
transaction that marks the bookings done."""

from __future__ import annotations

import itertools
import random

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payments.adapters import tables as t
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import GrantStatus
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import credits
from payments.service_layer.providers import ProviderRegistry
from tests.support.asyncpg_checks import asyncpg_abstract_checks
from tests.support.payments_fakes import FakeLedger, FakeProvider
from tests.support.payments_helpers import owe_card_bookings
from tests.support.python_calls import entered, profiled

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
BUSY = 41  # a round at c=32 takes ~65 (one 0.5 s interval); more than write_batch._FEW_ROWS
# Python calls per booking a round adds (a round of BUSY against a round of one): ~33 measured
# (audit16), ~49 with the lines as arrays; ~10% above.
PER_BOOKING = 36


def _deps(sessions: async_sessionmaker[AsyncSession], ledger: FakeLedger) -> Deps:
    return Deps(SqlPaymentsUnitOfWork(sessions), ProviderRegistry([FakeProvider()]), ledger=ledger)


async def _calls(sessions: async_sessionmaker[AsyncSession], ledger: FakeLedger, n: int) -> int:
    """The Python calls of a round that books `n` bookings."""
    await owe_card_bookings(sessions, "au", _IDS, n)
    with entered() as seen:
        took = await credits.settle_due_grants(_deps(sessions, ledger))
    assert took == n
    return sum(seen.values())


async def test_a_busy_rounds_audit_lines_are_as_before_at_fewer_calls(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ledger = FakeLedger()
    while await credits.settle_due_grants(_deps(sessions, ledger)):
        pass  # (nothing left due by earlier tests)
    for n in (1, BUSY):  # each shape's statements compiled and prepared
        await owe_card_bookings(sessions, "au", _IDS, n)
        assert await credits.settle_due_grants(_deps(sessions, ledger)) == n

    grants = await owe_card_bookings(sessions, "au", _IDS, BUSY)
    with profiled() as profile:
        took = await credits.settle_due_grants(_deps(sessions, ledger))
    assert took == BUSY
    assert asyncpg_abstract_checks(profile) == 0  # 11 per line as arrays

    async with SqlPaymentsUnitOfWork(sessions) as uow:
        stored = [await uow.credit_grants.get(g.id) for g in grants]
        ids = [g.payment_id for g in grants]
        lines = (
            await uow.session.execute(
                select(t.audit_log)
                .where(t.audit_log.c.payment_id.in_(ids))
                .order_by(t.audit_log.c.id)
            )
        ).all()
        # The transactions that wrote the lines and last wrote the bookings (marked done).
        writers = set(
            (
                await uow.session.execute(
                    text(
                        "SELECT xmin::text FROM audit_log WHERE payment_id = ANY(:ids)"
                        " UNION SELECT xmin::text FROM credit_grants WHERE id = ANY(:grants)"
                    ),
                    {"ids": ids, "grants": [g.id for g in grants]},
                )
            ).scalars()
        )
    assert all(g is not None and g.status is GrantStatus.DONE for g in stored)
    # One line per booking, in the round's order (oldest booking first), each as it was written.
    assert [
        (r.payment_id, r.transaction_id, r.action, r.actor, r.reason, r.details) for r in lines
    ] == [
        (
            g.payment_id,
            None,
            "transition",
            "ledger",
            f"{g.kind} booked on the wallet",
            {"transfer_id": g.transfer_id, "provider": g.provider},
        )
        for g in sorted(grants, key=lambda g: (g.created_at, g.id))
    ]
    assert len({r.created_at for r in lines}) == 1  # the statement's time
    assert len(writers) == 1  # written with the bookings' mark-done, in its transaction

    # Python calls per booking of a round: a round of one against a busy one.
    one = await _calls(sessions, ledger, 1)
    busy = await _calls(sessions, ledger, BUSY)
    per_booking = (busy - one) / (BUSY - 1)
    assert per_booking <= PER_BOOKING, (one, busy, per_booking)
