"""What the wallet's lock-order tests (issue 13) arrange their races with on real PostgreSQL: a
test transaction holding an account's row, the backend that waits behind a lock, the transactions
a group opens (one more for each run after a lost race), PostgreSQL's deadlock count, and the
calls' outcomes and hold states. One definition for every lock-order module (they imported these
from one another's test modules)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.tcc import TccBranch


def counting_uow(make: Callable, attempts: Counter[str], name: str) -> Callable:
    """A unit-of-work factory that counts the transactions a group opens (a group whose
    transaction lost a race, a deadlock, is run again in a new one)."""

    def factory():
        @asynccontextmanager
        async def counted_uow():
            attempts[name] += 1
            async with make() as uow:
                yield uow

        return counted_uow()

    return factory


async def hold_account(holder: AsyncSession, account_id: str) -> int:
    """Lock an account's row in the `holder` transaction (as a transfer does: FOR NO KEY UPDATE)
    until it ends; the pid of its backend, the blocker the racers are seen waiting for."""
    held = await holder.execute(
        text("SELECT pg_backend_pid() FROM accounts WHERE id = :id FOR NO KEY UPDATE"),
        {"id": account_id},
    )
    return int(held.scalar_one())


async def blocked_by(sessions, blockers: set[int], seen: set[int]) -> int:
    """Once a backend (not in `seen`) waits for a lock one of `blockers` holds: its pid.

    `seen` names transactions still running: once a transaction ends, its pooled connection,
    and so its backend's pid, serves whichever transaction checks out next."""
    for _ in range(1000):
        async with sessions() as session:
            waiting = await session.execute(
                text(
                    "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            for pid, blocked in waiting:
                if pid not in seen and blockers & set(blocked):
                    return int(pid)
        await asyncio.sleep(0.01)
    async with sessions() as session:
        activity = await session.execute(
            text(
                "SELECT pid, state, wait_event_type, pg_blocking_pids(pid) FROM pg_stat_activity"
                " WHERE datname = current_database()"
            )
        )
        backends = [tuple(row) for row in activity]
    raise AssertionError(
        f"no transaction (but {seen}) waiting for one of {blockers}; backends: {backends}"
    )


async def deadlocks(sessions) -> int:
    """The deadlocks PostgreSQL has detected in this database so far."""
    async with sessions() as session:
        found = await session.execute(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )
        return int(found.scalar_one())


def reasons(outcomes) -> list[str]:
    """Each outcome of a group: its error's reason, or "ok"."""
    return [o.error.reason if o.error else "ok" for o in outcomes]


async def hold_states(sessions, *branches: TccBranch) -> list[str | None]:
    """Each branch's hold state (None: no hold)."""
    found = []
    async with sessions() as session:
        for b in branches:
            row = await session.execute(
                text("SELECT state FROM holds WHERE global_tx_id = :g AND branch_id = :b"),
                {"g": b.global_tx_id, "b": b.branch_id},
            )
            found.append(row.scalar_one_or_none())
    return found
