"""A card payment writes no entry into an index that no lookup of it can read (issue 13, payments
migration 0012): its audit lines name no transaction, its booking names none, it has no hosted
checkout, so `ix_audit_log_transaction`, `ix_credit_grants_transaction` and
`uq_payments_provider_checkout_id` stay empty (their metapage only) while it is written. Every
lookup by value still goes through its index, planned generically with sequential scans off (a
plan that could not use it would show its scan), and the provider's ids are still unique."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import asyncpg
import pytest

from hirepay_dev.pg import libpq_url
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import CreditGrant, GrantKind, GrantStatus
from payments.domain.events import AuditEntry
from tests.support.payments_helpers import card_payment
from tests.support.pg_plans import generic_plan, planning

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
# An index that never held an entry is its metapage alone.
_EMPTY_INDEX_BYTES = 8192


async def _index_bytes(database_url: str, *names: str) -> dict[str, int]:
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        return {
            name: await connection.fetchval("SELECT pg_relation_size($1)", name) for name in names
        }
    finally:
        await connection.close()


async def _write_card_payments(sessions, count: int) -> None:
    """`count` card payments as a posting writes them: the payment (no provider id yet), its
    audit lines, and its capture's booking."""
    now = datetime.now(UTC)
    for _ in range(count):
        n = next(_IDS)
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            await uow.payments.add(card_payment(f"pay_{n}", f"gtx_{n}"))
            await uow.audit.add(
                AuditEntry(
                    action="attempt", actor="jobs", reason="", details={}, payment_id=f"pay_{n}"
                ),
                AuditEntry(
                    action="transition", actor="jobs", reason="", details={}, payment_id=f"pay_{n}"
                ),
            )
            await uow.credit_grants.owe(
                CreditGrant(
                    id=f"capture:pay_{n}",
                    kind=GrantKind.CAPTURE,
                    transaction_id="",
                    user_type=None,
                    user_id="o",
                    granted={},
                    amounts={"USD": 100},
                    status=GrantStatus.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    provider="stripe",
                    payment_id=f"pay_{n}",
                    legs=[],
                )
            )
            await uow.commit()


async def test_a_card_payment_writes_nothing_into_indexes_it_cannot_be_found_by(
    database_url, sessions
):
    unread = (
        "ix_audit_log_transaction",
        "ix_credit_grants_transaction",
        "uq_payments_provider_checkout_id",
    )
    read = ("ix_audit_log_payment", "ix_credit_grants_payment", "payments_pkey")
    before = await _index_bytes(database_url, *unread)
    assert before == dict.fromkeys(unread, _EMPTY_INDEX_BYTES), "the module's database is not fresh"

    await _write_card_payments(sessions, 20)

    assert await _index_bytes(database_url, *unread) == before
    assert all(
        size > _EMPTY_INDEX_BYTES for size in (await _index_bytes(database_url, *read)).values()
    )


async def _plan(database_url: str, sql: str) -> str:
    async with planning(database_url) as connection:
        return await generic_plan(connection, sql)


@pytest.mark.parametrize(
    ("read", "marker", "index"),
    [
        (
            lambda uow: uow.audit.list_for_transaction("txn_1"),
            "FROM audit_log",
            "ix_audit_log_transaction",
        ),
        (lambda uow: uow.audit.list_for_payment("pay_1"), "FROM audit_log", "ix_audit_log_payment"),
        (
            lambda uow: uow.credit_grants.for_transaction("txn_1"),
            "FROM credit_grants",
            "ix_credit_grants_transaction",
        ),
        (
            lambda uow: uow.payments.find_by_provider(payment_intent_id="pi_1"),
            "FROM payments",
            "uq_payments_provider_payment_id",
        ),
        (
            lambda uow: uow.payments.find_by_provider(checkout_id="cs_1"),
            "FROM payments",
            "uq_payments_provider_checkout_id",
        ),
    ],
    ids=[
        "audit-by-transaction",
        "audit-by-payment",
        "grants-by-transaction",
        "by-intent",
        "by-checkout",
    ],
)
async def test_a_lookup_by_value_goes_through_its_partial_index(
    database_url, sessions, round_trips, read, marker, index
):
    await _write_card_payments(sessions, 5)
    round_trips.sent.clear()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await read(uow)
    sql = next(sql for kind, sql in round_trips.sent if kind == "statement" and marker in sql)

    plan = await _plan(database_url, sql)
    assert f"using {index}" in plan and "Seq Scan" not in plan, plan


@pytest.mark.parametrize("column", ["provider_payment_id", "provider_checkout_id"])
async def test_a_provider_id_still_names_one_payment(sessions, column):
    shared = f"id_{next(_IDS)}"
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.payments.add(
            card_payment(f"pay_{next(_IDS)}", f"gtx_{next(_IDS)}", **{column: shared})
        )
        await uow.commit()

    with pytest.raises(Exception, match=f"uq_payments_{column}"):
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            await uow.payments.add(
                card_payment(f"pay_{next(_IDS)}", f"gtx_{next(_IDS)}", **{column: shared})
            )
            await uow.commit()


async def test_the_callback_relay_has_one_index_of_due_rows_and_its_backlog_reads_it(
    database_url, sessions, round_trips
):
    """`ix_outbox_callback_next_at` held the same rows as `ix_outbox_callbacks_due` and nothing
    read it (migration 0013); the relay's backlog count reads the one left."""
    round_trips.sent.clear()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.outbox.backlog()
    count = next(
        sql for kind, sql in round_trips.sent if kind == "statement" and "FROM outbox" in sql
    )

    async with planning(database_url) as connection:
        indexes = await connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'outbox' AND indexdef LIKE '%callback%'"
        )
        plan = await generic_plan(connection, count)
    assert [r["indexname"] for r in indexes] == ["ix_outbox_callbacks_due"]
    assert "ix_outbox_callbacks_due" in plan and "Seq Scan" not in plan, plan
