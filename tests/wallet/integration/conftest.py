"""Integration fixtures: the service layer over a real PostgreSQL database (fresh per module)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_platform.db import create_engine, make_session_factory
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.domain import commands as c
from wallet.domain.model import AccountKind, Balance, Leg
from wallet.service_layer import handlers as h


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
def uow(sessions, clock) -> Callable[[], SqlWalletUnitOfWork]:
    return lambda: SqlWalletUnitOfWork(sessions, clock)


class Ledger:
    """Shortcuts for arranging a test: open accounts, fund them, read balances."""

    def __init__(self, uow: Callable[[], SqlWalletUnitOfWork]) -> None:
        self.uow = uow
        self.tag = uuid.uuid4().hex[:8]  # owners unique per test, so tests share a database
        self.clearing = ""

    async def open(
        self, owner: str, kind: AccountKind = AccountKind.USER, unit: str = "USD", neg=False
    ) -> str:
        cmd = c.OpenAccount(f"{owner}-{self.tag}", unit, kind, neg)
        return (await h.open_account(cmd, self.uow())).account.id

    async def fund(self, account_id: str, amount: int, unit: str = "USD") -> None:
        source = await self.open(f"clearing-{unit}", AccountKind.PROVIDER_CLEARING, unit, True)
        leg = Leg(source, account_id, amount, unit)
        await h.transfer(c.Transfer(f"fund-{uuid.uuid4().hex}", (leg,)), self.uow())

    async def balance(self, account_id: str) -> Balance:
        return (await h.get_account(c.GetAccount(account_id), self.uow())).balance

    async def balances(self, *account_ids: str) -> list[tuple[int, int]]:
        """(posted, pending) of each account."""
        return [((b := await self.balance(a)).posted, b.pending) for a in account_ids]


@pytest.fixture
def ledger(uow) -> Ledger:
    return Ledger(uow)


@pytest.fixture
async def sound(engine, audit) -> AsyncIterator[None]:
    """Fails the test if the ledger's invariants do not hold after it."""
    yield
    assert await audit(engine) == {}
