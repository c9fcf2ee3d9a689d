"""Integration fixtures: the service layer over a real PostgreSQL database (fresh per module)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from tests.support.pg_round_trips import round_trips  # noqa: F401 (a fixture, counted round trips)
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


async def barrier_rows(sessions: async_sessionmaker[AsyncSession], branch: TccBranch) -> list[str]:
    """The operations a branch has barrier rows of, sorted."""
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT op FROM tcc_barriers WHERE global_tx_id = :g AND branch_id = :b"),
            {"g": branch.global_tx_id, "b": branch.branch_id},
        )
        return sorted(rows.scalars())


async def posted_or_replayed(call) -> str:
    """How a money-moving call was answered: "posted", "replayed", or its error's reason."""
    try:
        result = await call
    except HirepayError as exc:
        return exc.reason
    return "replayed" if result.replayed else "posted"


async def warm_refs(deps: Deps, *account_ids: str) -> None:
    """Accounts' immutable attributes in the process cache, as on a running wallet."""
    async with deps.uow() as uow:
        await uow.accounts.refs(account_ids)
