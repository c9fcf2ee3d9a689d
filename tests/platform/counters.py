"""The table of counters that the platform's unit-of-work tests run hot statements on, and a
database of core-only units of work over it: one definition for the pooled (round 9),
autocommit (round 10) and greenlet-free (round 11) unit-of-work tests."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Column, Integer, MetaData, Table, Text, bindparam, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from hirepay_platform.db import Database, HotStatement, SqlAlchemyUnitOfWork

# The server process of the connection a statement ran on, and whether its transaction has
# written (a transaction id assigned): what tells one pooled connection, or a BEGIN, from another.
PID = HotStatement(text("SELECT pg_backend_pid() AS pid"))
IN_TRANSACTION = HotStatement(text("SELECT txid_current_if_assigned() IS NOT NULL AS began"))


class CoreUnitOfWork(SqlAlchemyUnitOfWork):
    core_only = True


class Counters(NamedTuple):
    """A table of counters (`id`, `n`) and its two hot statements."""

    table: Table
    put: HotStatement  # a counter stored unless it is there; returns its n if stored
    bump: HotStatement  # the counter `key` one up; returns its new n


def counters(metadata: MetaData, name: str) -> Counters:
    table = Table(
        name,
        metadata,
        Column("id", Text, primary_key=True),
        Column("n", Integer, nullable=False),
    )
    put = HotStatement(
        pg_insert(table)
        .values(id=bindparam("id"), n=bindparam("n"))
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.n)
    )
    bump = HotStatement(
        table.update()
        .where(table.c.id == bindparam("key"))
        .values(n=table.c.n + 1)
        .returning(table.c.n)
    )
    return Counters(table, put, bump)


async def start_database(
    url: str, probe_table: str, pool_size: int, max_overflow: int = 0
) -> Database[CoreUnitOfWork]:
    """A started database of core-only units of work, `pool_size` connections at most (no
    overflow unless asked: the tests count on which connection a unit of work gets)."""
    database = Database(
        url,
        CoreUnitOfWork,
        probe_table=probe_table,
        pool_size=pool_size,
        max_overflow=max_overflow,
    )
    await database.start()
    return database
