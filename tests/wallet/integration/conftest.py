"""Integration fixtures: the service layer over a real PostgreSQL database (fresh per module)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_platform.db import create_engine, make_session_factory
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind, Balance
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps


@pytest.fixture(scope="module")
async def engine(wallet_db_url: str) -> AsyncIterator[AsyncEngine]:
    # Enough connections for the concurrency tests to run every request truly at once.
    engine = create_engine(wallet_db_url, pool_size=60, max_overflow=10)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(engine)


@pytest.fixture
def uow(sessions) -> Callable[[], SqlWalletUnitOfWork]:
    return lambda: SqlWalletUnitOfWork(sessions)


@pytest.fixture
def deps(uow, clock) -> Deps:
    """What every handler gets: a fresh unit of work per call, and the test's clock."""
    return Deps(uow=uow, clock=clock)


class Ledger:
    """Shortcuts for arranging a test: open accounts, fund them, read balances."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.tag = uuid.uuid4().hex[:8]  # owners unique per test, so tests share a database
        self.clearing = ""

    async def open(
        self, owner: str, kind: AccountKind = AccountKind.USER, unit: str = "USD", neg=False
    ) -> str:
        cmd = c.OpenAccount(f"{owner}-{self.tag}", unit, kind, neg)
        return (await h.open_account(cmd, self.deps)).account.id

    async def fund(self, account_id: str, amount: int, unit: str = "USD") -> None:
        source = await self.open(f"clearing-{unit}", AccountKind.PROVIDER_CLEARING, unit, True)
        leg = Leg(source, account_id, amount, unit)
        await h.transfer(c.Transfer(f"fund-{uuid.uuid4().hex}", (leg,)), self.deps)

    async def balance(self, account_id: str) -> Balance:
        return (await h.get_account(c.GetAccount(account_id), self.deps)).balance

    async def balances(self, *account_ids: str) -> list[tuple[int, int]]:
        """(posted, pending) of each account."""
        return [((b := await self.balance(a)).posted, b.pending) for a in account_ids]


@pytest.fixture
def ledger(deps) -> Ledger:
    return Ledger(deps)


@pytest.fixture
async def sound(engine, audit) -> AsyncIterator[None]:
    """Fails the test if the ledger's invariants do not hold after it."""
    yield
    assert await audit(engine) == {}


class RoundTrips:
    """What the engine sends to PostgreSQL while recording: each statement's first line, and
    BEGIN / COMMIT / ROLLBACK (which asyncpg sends as round trips of their own)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.recording = False

    def note(self, sql: str) -> None:
        if self.recording:
            self.sent.append(" ".join(sql.split())[:60])

    @property
    def statements(self) -> list[str]:
        return [s for s in self.sent if not s.upper().startswith(("BEGIN", "COMMIT", "ROLLBACK"))]

    @property
    def transaction_control(self) -> list[str]:
        return [s for s in self.sent if s not in self.statements]

    def __enter__(self) -> RoundTrips:
        self.sent.clear()
        self.recording = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.recording = False


@pytest.fixture
def round_trips(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    """Counts round trips of this module's engine inside `with round_trips:` (issue 13)."""
    trips = RoundTrips()

    def on_statement(conn, cursor, statement, parameters, context, executemany) -> None:
        trips.note(statement)

    execute = asyncpg.Connection.execute

    async def counted_execute(self, query: str, *args, **kwargs):
        trips.note(query)  # BEGIN, COMMIT and ROLLBACK of asyncpg's transactions
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", counted_execute)
    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    yield trips
    event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
