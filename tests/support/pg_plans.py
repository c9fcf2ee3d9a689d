"""The generic plan of a statement as a service sends it (issue 13): what PostgreSQL runs once a
prepared statement's plan is cached, its parameters unknown. Tests use it to pin the index a hot
or periodic read goes through, so that its cost does not grow with the history kept."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import asyncpg

from hirepay_dev.pg import libpq_url


@contextlib.asynccontextmanager
async def planning(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to `database_url` (a SQLAlchemy URL) that plans generically, with sequential
    scans off so that a plan that cannot use an index still shows its sequential scan."""
    # No statement cache: generic_plan deallocates every prepared statement of the connection,
    # so a cached one (the EXPLAIN of an earlier statement with as many parameters) is gone.
    connection = await asyncpg.connect(libpq_url(database_url), statement_cache_size=0)
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute("SET enable_seqscan = off")
        yield connection
    finally:
        await connection.close()


async def generic_plan(connection: asyncpg.Connection, sql: str) -> str:
    """The generic plan of `sql` (its $n parameters unknown), on a connection from `planning`."""
    await connection.execute("DEALLOCATE ALL")
    await connection.execute(f"PREPARE measured AS {sql}")
    params = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
    rows = await connection.fetch(
        f"EXPLAIN EXECUTE measured({', '.join(['NULL'] * params)})"
        if params
        else "EXPLAIN EXECUTE measured"
    )
    return "\n".join(r[0] for r in rows)
