"""An in-memory fake of the wallet's unit of work, faithful to the ports' contracts.

The fake copies the whole store when a unit of work starts and swaps it in on commit, so a handler
that raises (or forgets to commit) leaves no trace, exactly like a rolled-back transaction.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hirepay_platform.tcc import TccBranch
from tests.support.barrier_fakes import BarrierRows, MemoryBarriers
from wallet.domain.holds import Hold, HoldState
from wallet.domain.ledger import Entry, Posting, TransferRecord
from wallet.domain.model import Account, AccountKind, AccountRef, Balance, NewAccount
from wallet.service_layer.deps import Deps
from wallet.service_layer.ports import PostOutcome, StoredTransfer, TransferHeader


@dataclass
class Store:
    refs: dict[str, AccountRef] = field(default_factory=dict)
    posted: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    shards: dict[tuple[str, int], int] = field(default_factory=dict)
    transfers: dict[str, StoredTransfer] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    holds: dict[TccBranch, Hold] = field(default_factory=dict)
    barriers: BarrierRows = field(default_factory=dict)
    counter: Any = field(default_factory=lambda: itertools.count(1))

    def balance(self, account_id: str) -> Balance:
        sharded = sum(v for (a, _), v in self.shards.items() if a == account_id)
        return Balance(self.posted[account_id] + sharded, self.pending[account_id])


T0 = datetime(2030, 1, 1, tzinfo=UTC)


class FakeAccounts:
    def __init__(self, store: Store) -> None:
        self.s = store

    def _account(self, account_id: str) -> Account:
        return Account(self.s.refs[account_id], self.s.balance(account_id), T0)

    async def add(self, account: NewAccount) -> Account | None:
        for ref in self.s.refs.values():
            if (ref.owner_id, ref.unit, ref.kind) == (account.owner_id, account.unit, account.kind):
                return None
        ref = AccountRef(
            account.id,
            account.owner_id,
            account.unit,
            account.kind,
            account.allow_negative,
            account.shards,
        )
        self.s.refs[ref.id] = ref
        self.s.posted[ref.id] = self.s.pending[ref.id] = 0
        self.s.seq[ref.id] = next(self.s.counter)
        for shard in range(ref.shards):
            self.s.shards[(ref.id, shard)] = 0
        return self._account(ref.id)

    async def get(self, account_id: str) -> Account | None:
        return self._account(account_id) if account_id in self.s.refs else None

    async def find(self, owner_id: str, unit: str, kind: AccountKind) -> Account | None:
        for ref in self.s.refs.values():
            if (ref.owner_id, ref.unit, ref.kind) == (owner_id, unit, kind):
                return self._account(ref.id)
        return None

    async def refs(self, account_ids: Collection[str]) -> dict[str, AccountRef]:
        return {a: self.s.refs[a] for a in account_ids if a in self.s.refs}

    async def list_by_owner(
        self, owner_id: str, after: int | None, limit: int
    ) -> list[tuple[int, Account]]:
        mine = sorted(
            (self.s.seq[r.id], self._account(r.id))
            for r in self.s.refs.values()
            if r.owner_id == owner_id and (after is None or self.s.seq[r.id] > after)
        )
        return mine[:limit]


class FakeLedger:
    def __init__(self, store: Store, commit_alone: Callable[[], None] | None = None) -> None:
        self.s = store
        # Commits the unit of work's copy at once (a statement that is its own transaction).
        self._commit_alone = commit_alone

    async def claim_transfer(self, header: TransferHeader) -> datetime | None:
        if header.id in self.s.transfers:
            return None
        record = TransferRecord(header.id, header.description, dict(header.metadata), T0, ())
        self.s.transfers[header.id] = StoredTransfer(record, header.kind, dict(header.fingerprint))
        return T0

    async def release_claim(self, transfer_id: str) -> None:
        stored = self.s.transfers.pop(transfer_id)
        assert not stored.record.entries, "only a transfer that posted nothing may be released"

    async def get_transfer(self, transfer_id: str) -> StoredTransfer | None:
        return self.s.transfers.get(transfer_id)

    async def lock_balances(self, account_ids: Collection[str]) -> dict[str, Balance]:
        return {a: self.s.balance(a) for a in account_ids}

    async def lock_shards(self, shards: Collection[tuple[str, int]]) -> None:
        return None  # (one process, one transaction at a time: nothing to lock)

    async def post(
        self, transfer_id: str | None, posting: Posting, claim: TransferHeader | None = None
    ) -> PostOutcome:
        if claim is not None and await self.claim_transfer(claim) is None:
            return PostOutcome(claimed=False)
        rejected = []
        for change in posting.row_changes:
            ref = self.s.refs[change.account_id]
            after = self.s.posted[ref.id] + change.posted - self.s.pending[ref.id] - change.pending
            if not (ref.allow_negative or ref.sharded or change.available >= 0 or after >= 0):
                rejected.append(ref.id)
        if rejected:
            return PostOutcome(rejected=tuple(rejected))
        for change in posting.row_changes:
            self.s.posted[change.account_id] += change.posted
            self.s.pending[change.account_id] += change.pending
        for shard in posting.shard_changes:
            self.s.shards[(shard.account_id, shard.shard)] += shard.posted
        written = tuple(
            Entry(next(self.s.counter), transfer_id or "", e.account_id, e.unit, e.amount, T0)
            for e in posting.entries
        )
        self.s.entries.extend(written)
        if transfer_id is not None and written:
            stored = self.s.transfers[transfer_id]
            described = tuple(replace(e, description=stored.record.description) for e in written)
            record = replace(stored.record, entries=stored.record.entries + described)
            self.s.transfers[transfer_id] = replace(stored, record=record)
        return PostOutcome(entries=written, created_at=T0)

    async def post_many(self, items: list[tuple[TransferHeader, Posting]]) -> list[PostOutcome]:
        outcomes = []
        for header, posting in items:
            assert not posting.guarded_sharded
            outcome = await self.post(header.id, posting, header)
            if outcome.rejected:
                await self.release_claim(header.id)
            outcomes.append(outcome)
        return outcomes

    async def post_run_alone(
        self, items: list[tuple[TransferHeader, Posting]]
    ) -> list[PostOutcome] | None:
        """post_run, then commits at once (a statement that is its own transaction)."""
        assert self._commit_alone is not None
        outcomes = await self.post_run(items)
        if outcomes is not None:
            self._commit_alone()
        return outcomes

    async def post_run(
        self, items: list[tuple[TransferHeader, Posting]]
    ) -> list[PostOutcome] | None:
        """Applies only when no posting can be refused on a floor of each balance (every debit of
        the run counted, earlier credits not), else writes nothing."""
        assert len({h.id for h, _ in items}) == len(items)
        debits: dict[str, int] = {}
        for _, posting in items:
            assert not posting.guarded_sharded
            for change in posting.row_changes:
                ref = self.s.refs[change.account_id]
                debits[ref.id] = debits.get(ref.id, 0) + min(change.available, 0)
                floor = self.s.posted[ref.id] - self.s.pending[ref.id] + debits[ref.id]
                if not (ref.allow_negative or ref.sharded or change.available >= 0 or floor >= 0):
                    return None
        return [await self.post(header.id, posting, header) for header, posting in items]

    async def list_entries(self, account_id: str, before_id: int | None, limit: int) -> list[Entry]:
        mine = [
            e
            for e in reversed(self.s.entries)
            if e.account_id == account_id and (before_id is None or e.id < before_id)
        ]
        return mine[:limit]


class FakeHolds:
    def __init__(self, store: Store) -> None:
        self.s = store

    async def add(self, hold: Hold) -> None:
        assert hold.branch not in self.s.holds
        self.s.holds[hold.branch] = copy.deepcopy(hold)

    async def add_many(self, holds: Sequence[Hold]) -> None:
        for hold in holds:
            await self.add(hold)

    async def add_reserved(self, holds: Sequence[Hold]) -> None:
        for hold in holds:
            await self.add(hold)
            self.s.pending[hold.account_id] += hold.amount

    async def get(self, branch: TccBranch, *, for_update: bool = False) -> Hold | None:
        return copy.deepcopy(self.s.holds.get(branch))

    async def save(self, holds: Collection[Hold]) -> None:
        for hold in holds:
            self.s.holds[hold.branch] = copy.deepcopy(hold)

    async def lock_expired(self, now: datetime, limit: int) -> list[Hold]:
        due = [
            h for h in self.s.holds.values() if h.state is HoldState.PENDING and h.expires_at <= now
        ]
        return copy.deepcopy(sorted(due, key=lambda h: h.expires_at)[:limit])


class FakeUnitOfWork:
    """Works on a copy of the store; commit swaps the copy in."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.committed = False

    async def __aenter__(self) -> FakeUnitOfWork:
        self.working = copy.deepcopy(self.store)
        self.accounts = FakeAccounts(self.working)
        self.ledger = FakeLedger(self.working, self._commit_alone)
        self.holds = FakeHolds(self.working)
        self.barriers = MemoryBarriers(self.working.barriers)
        self.committed = False
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        del self.working

    async def commit(self) -> None:
        self.store.__dict__.update(self.working.__dict__)
        self.committed = True

    def _commit_alone(self) -> None:
        self.store.__dict__.update(copy.deepcopy(self.working).__dict__)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def uow(store: Store) -> Callable[[], FakeUnitOfWork]:
    return lambda: FakeUnitOfWork(store)


@pytest.fixture
def deps(uow: Callable[[], FakeUnitOfWork], clock: Clock) -> Deps:
    """What every handler gets: a fresh fake unit of work per call, and the test's clock."""
    return Deps(uow=uow, clock=clock)
