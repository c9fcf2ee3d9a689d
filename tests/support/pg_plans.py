"""The generic plan of a statement as a service sends it (issue 13): what PostgreSQL runs once a
prepared statement's plan is cached, its parameters unknown. Tests use it to pin the index a hot
or periodic read goes through, so that its cost does not grow with the history kept."""

from __future__ import annotations

import re

import asyncpg


async def generic_plan(connection: asyncpg.Connection, sql: str) -> str:
    """The generic plan of `sql` (its $n parameters unknown). Set `plan_cache_mode =
    force_generic_plan` (and `enable_seqscan = off`, so that a plan that cannot use an index
    still shows its sequential scan) on the connection first."""
    await connection.execute("DEALLOCATE ALL")
    await connection.execute(f"PREPARE measured AS {sql}")
    params = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
    rows = await connection.fetch(
        f"EXPLAIN EXECUTE measured({', '.join(['NULL'] * params)})"
        if params
        else "EXPLAIN EXECUTE measured"
    )
    return "\n".join(r[0] for r in rows)
