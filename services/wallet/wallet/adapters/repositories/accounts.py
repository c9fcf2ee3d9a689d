"""PostgreSQL repository of the wallet's accounts: open, read, list, and the immutable-attribute cache."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from wallet.adapters.tables import account_shards as S
from wallet.adapters.tables import accounts as A
from wallet.domain.model import Account, AccountKind, AccountRef, Balance, NewAccount


def _ref_from_row(row: Any) -> AccountRef:
    return AccountRef(
        id=str(row.id),
        owner_id=row.owner_id,
        unit=row.unit,
        kind=AccountKind(row.kind),
        allow_negative=row.allow_negative,
        shards=row.shards,
    )


def account_from_row(row: Any) -> Account:
    """A row of ACCOUNT_COLUMNS: the account with its balance (shards summed)."""
    return Account(
        ref=_ref_from_row(row),
        balance=Balance(posted=int(row.balance_posted), pending=row.pending),
        created_at=row.created_at,
    )


# An account's posted balance is its own column plus the sum of its shards (none if unsharded).
ACCOUNT_COLUMNS = (
    A.c.id,
    A.c.owner_id,
    A.c.unit,
    A.c.kind,
    A.c.allow_negative,
    A.c.shards,
    A.c.pending,
    A.c.created_at,
    A.c.seq,
    (
        A.c.posted
        + select(func.coalesce(func.sum(S.c.posted), 0))
        .where(S.c.account_id == A.c.id)
        .correlate(A)
        .scalar_subquery()
    ).label("balance_posted"),
)

_OPEN_ACCOUNT = text(
    """
    WITH created AS (
        INSERT INTO accounts (id, owner_id, unit, kind, allow_negative, shards)
        VALUES (:id, :owner_id, :unit, :kind, :allow_negative, :shards)
        ON CONFLICT (owner_id, unit, kind) DO NOTHING
        RETURNING id, shards, created_at
    ), shard_rows AS (
        INSERT INTO account_shards (account_id, shard)
        SELECT created.id, g FROM created, generate_series(0, created.shards - 1) AS g
    )
    SELECT created_at FROM created
    """
)


class AccountRefCache:
    """Process-wide cache of accounts' immutable attributes (unit, kind, shards...).

    Accounts are never changed or deleted after they are opened, so a cached entry can never be
    stale, in this replica or any other; it saves the hot path one round trip per transfer.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._refs: dict[str, AccountRef] = {}
        self._max = max_entries

    def get_many(self, ids: Iterable[str]) -> tuple[dict[str, AccountRef], list[str]]:
        found, missing = {}, []
        for account_id in ids:
            ref = self._refs.get(account_id)
            if ref is None:
                missing.append(account_id)
            else:
                found[account_id] = ref
        return found, missing

    def put(self, ref: AccountRef) -> None:
        if len(self._refs) >= self._max:
            self._refs.clear()  # crude but bounded; refilling costs one query per account
        self._refs[ref.id] = ref


ACCOUNT_REFS = AccountRefCache()


class SqlAccountRepository:
    """Accounts and their balances (shards summed); immutable attributes cached per process."""

    def __init__(self, session: AsyncSession, cache: AccountRefCache = ACCOUNT_REFS) -> None:
        self._session = session
        self._cache = cache

    async def add(self, account: NewAccount) -> Account | None:
        result = await self._session.execute(
            _OPEN_ACCOUNT,
            {
                "id": account.id,
                "owner_id": account.owner_id,
                "unit": account.unit,
                "kind": account.kind.value,
                "allow_negative": account.allow_negative,
                "shards": account.shards,
            },
        )
        created_at = result.scalar_one_or_none()
        if created_at is None:
            return None
        ref = AccountRef(
            account.id,
            account.owner_id,
            account.unit,
            account.kind,
            account.allow_negative,
            account.shards,
        )
        return Account(ref, Balance(0, 0), created_at)

    async def get(self, account_id: str) -> Account | None:
        row = (
            await self._session.execute(select(*ACCOUNT_COLUMNS).where(A.c.id == account_id))
        ).one_or_none()
        return account_from_row(row) if row else None

    async def find(self, owner_id: str, unit: str, kind: AccountKind) -> Account | None:
        query = select(*ACCOUNT_COLUMNS).where(
            A.c.owner_id == owner_id, A.c.unit == unit, A.c.kind == kind.value
        )
        row = (await self._session.execute(query)).one_or_none()
        return account_from_row(row) if row else None

    async def refs(self, account_ids: Collection[str]) -> dict[str, AccountRef]:
        found, missing = self._cache.get_many(account_ids)
        if missing:
            query = select(
                A.c.id,
                A.c.owner_id,
                A.c.unit,
                A.c.kind,
                A.c.allow_negative,
                A.c.shards,
            ).where(A.c.id.in_(missing))
            for row in await self._session.execute(query):
                ref = _ref_from_row(row)
                self._cache.put(ref)
                found[ref.id] = ref
        return found

    async def list_by_owner(
        self, owner_id: str, after: int | None, limit: int
    ) -> list[tuple[int, Account]]:
        query = select(*ACCOUNT_COLUMNS).where(A.c.owner_id == owner_id)
        if after is not None:
            query = query.where(A.c.seq > after)
        rows = await self._session.execute(query.order_by(A.c.seq).limit(limit))
        return [(row.seq, account_from_row(row)) for row in rows]
