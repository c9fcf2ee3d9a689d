"""PostgreSQL repositories of the wallet: every SQL statement the service runs lives here.

Rows become domain objects through the named `_..._from_row` functions; nothing ORM-mapped leaves
this module. Hot paths are single statements with array parameters (the statement text does not
depend on the number of legs, so asyncpg's prepared-statement cache serves every call).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from wallet.adapters.orm import (
    AccountRow,
    AccountShardRow,
    EntryRow,
    HoldRow,
    TccBarrierRow,
    TransferRow,
)
from wallet.domain.fingerprint import Fingerprint
from wallet.domain.model import (
    Account,
    AccountKind,
    AccountRef,
    Balance,
    Entry,
    Hold,
    HoldState,
    NewAccount,
    Posting,
    TccBranch,
    TccOp,
    TransferRecord,
)
from wallet.service_layer.unit_of_work import (
    BarrierRecord,
    PostOutcome,
    StoredTransfer,
    TransferHeader,
)

# --- conversions between storage rows and domain objects -------------------------------------


def _ref_from_row(row: Any) -> AccountRef:
    return AccountRef(
        id=str(row.id),
        owner_id=row.owner_id,
        unit=row.unit,
        kind=AccountKind(row.kind),
        allow_negative=row.allow_negative,
        shards=row.shards,
    )


def _account_from_row(row: Any) -> Account:
    """A row of _ACCOUNT_COLUMNS: the account with its balance (shards summed)."""
    return Account(
        ref=_ref_from_row(row),
        balance=Balance(posted=int(row.balance_posted), pending=row.pending),
        created_at=row.created_at,
    )


def _entry_from_row(row: EntryRow, description: str) -> Entry:
    return Entry(
        id=row.id,
        transfer_id=row.transfer_id,
        account_id=str(row.account_id),
        unit=row.unit,
        amount=row.amount,
        created_at=row.created_at,
        description=description,
    )


def _transfer_from_row(row: TransferRow) -> StoredTransfer:
    record = TransferRecord(
        id=row.id,
        description=row.description,
        metadata=dict(row.meta),
        created_at=row.created_at,
        entries=tuple(_entry_from_row(e, row.description) for e in row.entries),
    )
    return StoredTransfer(record=record, kind=row.kind, fingerprint=dict(row.fingerprint))


def _hold_from_row(row: Any) -> Hold:
    return Hold(
        branch=TccBranch(row.global_tx_id, row.branch_id),
        account_id=str(row.account_id),
        destination_account_id=str(row.destination_account_id),
        unit=row.unit,
        amount=row.amount,
        expires_at=row.expires_at,
        created_at=row.created_at,
        description=row.description,
        state=HoldState(row.state),
        confirmed_amount=row.confirmed_amount,
        transfer_id=row.transfer_id,
        resolved_at=row.resolved_at,
    )


def _hold_to_row(hold: Hold) -> dict[str, Any]:
    return {
        "global_tx_id": hold.branch.global_tx_id,
        "branch_id": hold.branch.branch_id,
        "account_id": hold.account_id,
        "destination_account_id": hold.destination_account_id,
        "unit": hold.unit,
        "amount": hold.amount,
        "confirmed_amount": hold.confirmed_amount,
        "state": hold.state.value,
        "expires_at": hold.expires_at,
        "transfer_id": hold.transfer_id,
        "description": hold.description,
        "created_at": hold.created_at,
        "resolved_at": hold.resolved_at,
    }


# --- accounts --------------------------------------------------------------------------------

# An account's posted balance is its own column plus the sum of its shards (none if unsharded).
_ACCOUNT_COLUMNS = (
    AccountRow.id,
    AccountRow.owner_id,
    AccountRow.unit,
    AccountRow.kind,
    AccountRow.allow_negative,
    AccountRow.shards,
    AccountRow.pending,
    AccountRow.created_at,
    AccountRow.seq,
    (
        AccountRow.posted
        + select(func.coalesce(func.sum(AccountShardRow.posted), 0))
        .where(AccountShardRow.account_id == AccountRow.id)
        .correlate(AccountRow)
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
            await self._session.execute(
                select(*_ACCOUNT_COLUMNS).where(AccountRow.id == account_id)
            )
        ).one_or_none()
        return _account_from_row(row) if row else None

    async def find(self, owner_id: str, unit: str, kind: AccountKind) -> Account | None:
        query = select(*_ACCOUNT_COLUMNS).where(
            AccountRow.owner_id == owner_id, AccountRow.unit == unit, AccountRow.kind == kind.value
        )
        row = (await self._session.execute(query)).one_or_none()
        return _account_from_row(row) if row else None

    async def refs(self, account_ids: Collection[str]) -> dict[str, AccountRef]:
        found, missing = self._cache.get_many(account_ids)
        if missing:
            query = select(
                AccountRow.id,
                AccountRow.owner_id,
                AccountRow.unit,
                AccountRow.kind,
                AccountRow.allow_negative,
                AccountRow.shards,
            ).where(AccountRow.id.in_(missing))
            for row in await self._session.execute(query):
                ref = _ref_from_row(row)
                self._cache.put(ref)
                found[ref.id] = ref
        return found

    async def list_by_owner(
        self, owner_id: str, after: int | None, limit: int
    ) -> list[tuple[int, Account]]:
        query = select(*_ACCOUNT_COLUMNS).where(AccountRow.owner_id == owner_id)
        if after is not None:
            query = query.where(AccountRow.seq > after)
        rows = await self._session.execute(query.order_by(AccountRow.seq).limit(limit))
        return [(row.seq, _account_from_row(row)) for row in rows]


# --- ledger ----------------------------------------------------------------------------------

# Applies a whole posting in one round trip, in a fixed lock order (account rows by id, then shard
# rows by (account, shard)) so that concurrent postings cannot deadlock:
#  0. with :claim, insert the transfer first (ON CONFLICT DO NOTHING waits for an in-flight twin);
#     if the id is taken, `go` is false and nothing below happens;
#  1. lock the account rows to change, ascending id (a MATERIALIZED CTE with ORDER BY ... FOR
#     UPDATE locks in that order);
#  2. apply each row change only if the account may go negative, is sharded (checked by the caller
#     under the lock), does not lose availability, or keeps posted - pending >= 0. In READ
#     COMMITTED the UPDATE re-evaluates that condition on the newest row version;
#  3. only if every row change applied (the scalar subquery reads all of step 2 first, so shard
#     locks are always taken after row locks): lock and change the shards, and write the entries;
#  4. report whether the id was claimed, the rejected accounts (then the caller rolls back) and
#     the new entry ids.
_POST = text(
    """
    WITH claimed AS (
        INSERT INTO transfers (id, kind, description, metadata, fingerprint)
        SELECT CAST(:transfer_id AS text), CAST(:kind AS text), CAST(:description AS text),
               CAST(:metadata AS jsonb), CAST(:fingerprint AS jsonb)
         WHERE CAST(:claim AS boolean)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), go AS (
        SELECT NOT CAST(:claim AS boolean) OR EXISTS (SELECT 1 FROM claimed) AS ok
    ), row_change AS (
        SELECT * FROM unnest(
            CAST(:row_ids AS uuid[]), CAST(:row_posted AS bigint[]), CAST(:row_pending AS bigint[])
        ) AS c(account_id, posted, pending)
    ), locked AS MATERIALIZED (
        SELECT a.id FROM accounts a
         WHERE a.id IN (SELECT account_id FROM row_change) AND (SELECT ok FROM go)
         ORDER BY a.id
           FOR NO KEY UPDATE
    ), changed AS (
        UPDATE accounts a
           SET posted = a.posted + c.posted, pending = a.pending + c.pending
          FROM locked l JOIN row_change c ON c.account_id = l.id
         WHERE a.id = l.id
           AND (a.allow_negative OR a.shards > 0 OR c.posted - c.pending >= 0
                OR a.posted + c.posted - (a.pending + c.pending) >= 0)
        RETURNING a.id
    ), verdict AS (
        SELECT (SELECT ok FROM go) AND count(*) = cardinality(CAST(:row_ids AS uuid[])) AS ok
          FROM changed
    ), shard_change AS (
        SELECT * FROM unnest(
            CAST(:shard_ids AS uuid[]), CAST(:shard_nos AS smallint[]),
            CAST(:shard_posted AS bigint[])
        ) AS c(account_id, shard, posted)
    ), shard_locked AS MATERIALIZED (
        SELECT s.account_id, s.shard FROM account_shards s
          JOIN shard_change c ON c.account_id = s.account_id AND c.shard = s.shard
         WHERE (SELECT ok FROM verdict)
         ORDER BY s.account_id, s.shard
           FOR NO KEY UPDATE OF s
    ), shards_changed AS (
        UPDATE account_shards s
           SET posted = s.posted + c.posted
          FROM shard_locked l
          JOIN shard_change c ON c.account_id = l.account_id AND c.shard = l.shard
         WHERE s.account_id = l.account_id AND s.shard = l.shard
        RETURNING 1
    ), written AS (
        INSERT INTO entries (transfer_id, account_id, unit, amount)
        SELECT CAST(:transfer_id AS text), e.account_id, e.unit, e.amount
          FROM unnest(
                CAST(:entry_accounts AS uuid[]), CAST(:entry_units AS text[]),
                CAST(:entry_amounts AS bigint[])
               ) WITH ORDINALITY AS e(account_id, unit, amount, n)
         WHERE (SELECT ok FROM verdict)
         ORDER BY e.n
        RETURNING id
    )
    SELECT (SELECT ok FROM go) AS claimed,
           (SELECT ok FROM verdict) AS ok,
           ARRAY(SELECT CAST(c.account_id AS text) FROM row_change c
                  WHERE c.account_id NOT IN (SELECT id FROM changed)
                  ORDER BY c.account_id) AS rejected,
           ARRAY(SELECT id FROM written ORDER BY id) AS entry_ids,
           (SELECT count(*) FROM shards_changed) AS shards_changed,
           now() AS created_at
    """
)

_LOCK_ACCOUNTS = text(
    "SELECT id FROM accounts WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE"
)
# A separate statement after the lock, so its snapshot includes every debit committed before it.
_READ_BALANCES = text(
    """
    SELECT CAST(a.id AS text) AS id, a.pending,
           a.posted + coalesce((SELECT sum(s.posted) FROM account_shards s
                                 WHERE s.account_id = a.id), 0) AS posted
      FROM accounts a
     WHERE a.id = ANY(CAST(:ids AS uuid[]))
    """
)


class SqlLedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim_transfer(self, header: TransferHeader) -> datetime | None:
        # Waits for an in-flight twin with the same id to finish: then either it committed (we get
        # nothing back and replay it) or it rolled back (we insert and proceed).
        statement = (
            insert(TransferRow)
            .values(
                id=header.id,
                kind=header.kind,
                description=header.description,
                meta=dict(header.metadata),
                fingerprint=dict(header.fingerprint),
            )
            .on_conflict_do_nothing(index_elements=[TransferRow.id])
            .returning(TransferRow.created_at)
        )
        return (await self._session.execute(statement)).scalar_one_or_none()

    async def get_transfer(self, transfer_id: str) -> StoredTransfer | None:
        query = (
            select(TransferRow)
            .where(TransferRow.id == transfer_id)
            .options(selectinload(TransferRow.entries))
        )
        row = (await self._session.execute(query)).scalar_one_or_none()
        return _transfer_from_row(row) if row else None

    async def lock_balances(self, account_ids: Collection[str]) -> dict[str, Balance]:
        ids = sorted(account_ids)
        await self._session.execute(_LOCK_ACCOUNTS, {"ids": ids})
        rows = await self._session.execute(_READ_BALANCES, {"ids": ids})
        return {row.id: Balance(int(row.posted), row.pending) for row in rows}

    async def post(
        self, transfer_id: str | None, posting: Posting, claim: TransferHeader | None = None
    ) -> PostOutcome:
        if (posting.entries or claim) and transfer_id is None:
            raise ValueError("entries need a transfer")
        if claim is not None and claim.id != transfer_id:
            raise ValueError("the claimed transfer must be the one posted")
        rows, shards, entries = posting.row_changes, posting.shard_changes, posting.entries
        result = await self._session.execute(
            _POST,
            {
                "claim": claim is not None,
                "kind": claim.kind if claim else None,
                "description": claim.description if claim else None,
                "metadata": json.dumps(dict(claim.metadata)) if claim else None,
                "fingerprint": json.dumps(dict(claim.fingerprint)) if claim else None,
                "row_ids": [c.account_id for c in rows],
                "row_posted": [c.posted for c in rows],
                "row_pending": [c.pending for c in rows],
                "shard_ids": [s.account_id for s in shards],
                "shard_nos": [s.shard for s in shards],
                "shard_posted": [s.posted for s in shards],
                "transfer_id": transfer_id,
                "entry_accounts": [e.account_id for e in entries],
                "entry_units": [e.unit for e in entries],
                "entry_amounts": [e.amount for e in entries],
            },
        )
        row = result.one()
        if not row.claimed:
            return PostOutcome(claimed=False)
        if not row.ok:
            return PostOutcome(rejected=tuple(row.rejected) or ("?",))
        if row.shards_changed != len(shards) or len(row.entry_ids) != len(entries):
            raise RuntimeError("posting applied partially")  # a missing shard row: never expected
        return PostOutcome(
            created_at=row.created_at,
            entries=tuple(
                Entry(
                    id=entry_id,
                    transfer_id=transfer_id or "",
                    account_id=line.account_id,
                    unit=line.unit,
                    amount=line.amount,
                    created_at=row.created_at,
                )
                for entry_id, line in zip(row.entry_ids, entries, strict=True)
            ),
        )

    async def list_entries(self, account_id: str, before_id: int | None, limit: int) -> list[Entry]:
        query = (
            select(EntryRow, TransferRow.description)
            .join(TransferRow, TransferRow.id == EntryRow.transfer_id)
            .where(EntryRow.account_id == account_id)
        )
        if before_id is not None:
            query = query.where(EntryRow.id < before_id)
        rows = await self._session.execute(query.order_by(EntryRow.id.desc()).limit(limit))
        return [_entry_from_row(entry, description) for entry, description in rows]


# --- holds and the TCC barrier ---------------------------------------------------------------

_HOLD = HoldRow.__table__


class SqlHoldRepository:
    """Holds are read as plain rows (not tracked ORM objects), so a re-read is never stale."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, hold: Hold) -> None:
        await self._session.execute(insert(_HOLD).values(_hold_to_row(hold)))

    async def get(self, branch: TccBranch, *, for_update: bool = False) -> Hold | None:
        query = select(_HOLD).where(
            _HOLD.c.global_tx_id == branch.global_tx_id, _HOLD.c.branch_id == branch.branch_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).one_or_none()
        return _hold_from_row(row) if row else None

    async def save(self, holds: Collection[Hold]) -> None:
        for hold in holds:
            await self._session.execute(
                update(_HOLD)
                .where(
                    _HOLD.c.global_tx_id == hold.branch.global_tx_id,
                    _HOLD.c.branch_id == hold.branch.branch_id,
                )
                .values(
                    state=hold.state.value,
                    confirmed_amount=hold.confirmed_amount,
                    transfer_id=hold.transfer_id,
                    resolved_at=hold.resolved_at,
                )
            )

    async def lock_expired(self, now: datetime, limit: int) -> list[Hold]:
        query = (
            select(_HOLD)
            .where(_HOLD.c.state == HoldState.PENDING.value, _HOLD.c.expires_at <= now)
            .order_by(_HOLD.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_hold_from_row(row) for row in await self._session.execute(query)]


_BARRIER = TccBarrierRow.__table__


class SqlBarrierRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def insert(
        self, branch: TccBranch, op: TccOp, origin: TccOp, fingerprint: Fingerprint
    ) -> bool:
        statement = (
            insert(_BARRIER)
            .values(
                global_tx_id=branch.global_tx_id,
                branch_id=branch.branch_id,
                op=op.value,
                origin=origin.value,
                fingerprint=dict(fingerprint),
            )
            .on_conflict_do_nothing()
            .returning(_BARRIER.c.op)
        )
        return (await self._session.execute(statement)).scalar_one_or_none() is not None

    async def get(self, branch: TccBranch, op: TccOp) -> BarrierRecord | None:
        query = select(_BARRIER).where(
            _BARRIER.c.global_tx_id == branch.global_tx_id,
            _BARRIER.c.branch_id == branch.branch_id,
            _BARRIER.c.op == op.value,
        )
        row: Row[Any] | None = (await self._session.execute(query)).one_or_none()
        if row is None:
            return None
        return BarrierRecord(branch, TccOp(row.op), TccOp(row.origin), dict(row.fingerprint))


__all__ = [
    "ACCOUNT_REFS",
    "AccountRefCache",
    "SqlAccountRepository",
    "SqlBarrierRepository",
    "SqlHoldRepository",
    "SqlLedgerRepository",
]
