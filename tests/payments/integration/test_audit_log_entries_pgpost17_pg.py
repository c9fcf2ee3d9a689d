"""An audit line is written into one B-tree, the index it is read by (issue 13, payments 0025).

A card posting appends seven audit lines. Each was also inserted into the primary key's B-tree on
`id`, which nothing reads (lines are read by payment or by transaction, each through its partial
index: test_partial_indexes_pg.py): one B-tree insertion, its WAL record and its buffers per
line. Counted here as the index entries each line of a card payment holds (an index's entries
are the rows its predicate admits: audit lines are never updated or deleted), 2 before 0025, 1
after; ids still come only from the column's sequence (GENERATED ALWAYS), distinct and in order."""

from __future__ import annotations

import itertools
import random

import asyncpg
import pytest

from hirepay_dev.pg import libpq_url
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.events import AuditEntry

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
# A card posting's audit lines: the attempt, the two provider calls, the transitions.
LINES_PER_POSTING = 7
POSTINGS = 10


async def _entries_per_line(connection: asyncpg.Connection) -> float:
    """Index entries held per audit line, over every index of the table."""
    indexes = await connection.fetch(
        "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) AS predicate FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'audit_log'::regclass"
    )
    lines = await connection.fetchval("SELECT count(*) FROM audit_log")
    entries = 0
    for index in indexes:
        where = f"WHERE {index['predicate']}" if index["predicate"] else ""
        entries += await connection.fetchval(f"SELECT count(*) FROM audit_log {where}")
    return entries / lines


async def test_a_card_postings_audit_lines_go_into_one_index_each(database_url, sessions) -> None:
    for _ in range(POSTINGS):
        payment_id = f"pay_{next(_IDS)}"
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            await uow.audit.add(
                *(
                    AuditEntry(
                        action="transition",
                        actor="jobs",
                        reason=str(k),
                        details={"k": k},
                        payment_id=payment_id,
                    )
                    for k in range(LINES_PER_POSTING)
                )
            )
            await uow.commit()
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        indexes = await connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_log' ORDER BY 1"
        )
        assert [r[0] for r in indexes] == ["ix_audit_log_payment", "ix_audit_log_transaction"]
        assert await _entries_per_line(connection) == 1.0  # 2.0 with the primary key's B-tree
    finally:
        await connection.close()

    async with SqlPaymentsUnitOfWork(sessions) as uow:
        lines = await uow.audit.list_for_payment(payment_id)
    assert [line.reason for line in lines] == [str(k) for k in range(LINES_PER_POSTING)]
    assert len({line.id for line in lines}) == LINES_PER_POSTING


async def test_an_audit_line_cannot_be_given_an_id(database_url) -> None:
    """Every id comes from the sequence: a statement naming one is refused, so ids stay
    distinct without a unique index."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        taken = await connection.fetchval(
            "INSERT INTO audit_log (action, actor, reason, details, created_at) "
            "VALUES ('transition', 'test', '', '{}', now()) RETURNING id"
        )
        with pytest.raises(asyncpg.GeneratedAlwaysError):
            await connection.execute(
                "INSERT INTO audit_log (id, action, actor, reason, details, created_at) "
                "VALUES ($1, 'transition', 'test', '', '{}', now())",
                taken,
            )
    finally:
        await connection.close()
