"""Fixtures shared by the wallet's integration and gRPC tests: a migrated database per module and a
ledger audit that proves the invariants straight from the tables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Each query returns the rows that break one invariant; an empty result everywhere is a sound ledger.
AUDIT_QUERIES = {
    "transfer does not sum to zero per unit": """
        SELECT transfer_id, unit, sum(amount) FROM entries
         GROUP BY transfer_id, unit HAVING sum(amount) <> 0
    """,
    "posted balance differs from the sum of the account's entries": """
        SELECT a.id FROM accounts a
         WHERE a.posted + coalesce((SELECT sum(posted) FROM account_shards s
                                     WHERE s.account_id = a.id), 0)
            <> coalesce((SELECT sum(amount) FROM entries e WHERE e.account_id = a.id), 0)
    """,
    "pending balance differs from the account's pending holds": """
        SELECT a.id FROM accounts a
         WHERE a.pending <> coalesce((SELECT sum(amount) FROM holds h
                                       WHERE h.account_id = a.id AND h.state = 'pending'), 0)
    """,
    "non-negative account below zero": """
        SELECT a.id FROM accounts a
         WHERE NOT a.allow_negative
           AND a.posted + coalesce((SELECT sum(posted) FROM account_shards s
                                     WHERE s.account_id = a.id), 0) - a.pending < 0
    """,
    "confirmed hold without exactly its posted transfer, or a transfer for an unconfirmed hold": """
        SELECT h.global_tx_id, h.branch_id FROM holds h
          LEFT JOIN entries e
            ON e.transfer_id = 'hold/' || h.global_tx_id || '/' || h.branch_id
           AND e.account_id = h.account_id
         GROUP BY h.global_tx_id, h.branch_id, h.state, h.confirmed_amount
        HAVING (h.state = 'confirmed') <> (count(e.id) = 1)
            OR (h.state = 'confirmed' AND -sum(e.amount) <> h.confirmed_amount)
    """,
    "hold transfer without a confirmed hold": """
        SELECT t.id FROM transfers t
         WHERE t.kind = 'hold' AND NOT EXISTS (
               SELECT 1 FROM holds h
                WHERE t.id = 'hold/' || h.global_tx_id || '/' || h.branch_id
                  AND h.state = 'confirmed')
    """,
    "resolved hold with a Confirm and a Cancel both recorded as its outcome": """
        SELECT h.global_tx_id, h.branch_id FROM holds h
         WHERE h.state = 'cancelled' AND EXISTS (
               SELECT 1 FROM tcc_barriers b
                WHERE (b.global_tx_id, b.branch_id, b.op) = (h.global_tx_id, h.branch_id, 'confirm'))
    """,
}


async def ledger_audit(engine: AsyncEngine) -> dict[str, list[tuple[object, ...]]]:
    """Every broken invariant with its offending rows (empty when the ledger is sound)."""
    broken: dict[str, list[tuple[object, ...]]] = {}
    async with engine.connect() as connection:
        for name, query in AUDIT_QUERIES.items():
            rows = [tuple(r) for r in await connection.execute(text(query))]
            if rows:
                broken[name] = rows
    return broken


@pytest.fixture(scope="module")
def wallet_db_url(make_service_database: Callable[[str], str]) -> str:
    """A fresh wallet database for the module, migrated to head with the wallet's Alembic scripts."""
    return make_service_database("wallet")


@pytest.fixture(scope="session")
def audit() -> Callable[[AsyncEngine], Awaitable[dict[str, list[tuple[object, ...]]]]]:
    return ledger_audit


class Clock:
    """A clock tests can move forward (holds expire without waiting)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()
