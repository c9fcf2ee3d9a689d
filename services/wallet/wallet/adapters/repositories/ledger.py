"""PostgreSQL repository of the ledger: transfers and entries, and the one-statement posting.

Hot paths are single statements with array parameters (the statement text does not depend on the
number of legs, so asyncpg's prepared-statement cache serves every call).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from wallet.adapters.tables import entries as E
from wallet.adapters.tables import transfers as T
from wallet.domain.ledger import Entry, Posting, TransferRecord
from wallet.domain.model import Balance
from wallet.service_layer.ports import PostOutcome, StoredTransfer, TransferHeader


def _entry_from_row(row: Any, description: str) -> Entry:
    return Entry(
        id=row.id,
        transfer_id=row.transfer_id,
        account_id=str(row.account_id),
        unit=row.unit,
        amount=row.amount,
        created_at=row.created_at,
        description=description,
    )


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
    """Transfers, entries and balance changes on the unit of work's session; never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim_transfer(self, header: TransferHeader) -> datetime | None:
        # Waits for an in-flight twin with the same id to finish: then either it committed (we get
        # nothing back and replay it) or it rolled back (we insert and proceed).
        statement = (
            insert(T)
            .values(
                {
                    "id": header.id,
                    "kind": header.kind,
                    "description": header.description,
                    "metadata": dict(header.metadata),
                    "fingerprint": dict(header.fingerprint),
                }
            )
            .on_conflict_do_nothing(index_elements=[T.c.id])
            .returning(T.c.created_at)
        )
        return (await self._session.execute(statement)).scalar_one_or_none()

    async def get_transfer(self, transfer_id: str) -> StoredTransfer | None:
        row = (await self._session.execute(select(T).where(T.c.id == transfer_id))).one_or_none()
        if row is None:
            return None
        query = select(E).where(E.c.transfer_id == transfer_id).order_by(E.c.id)
        entries = tuple(
            _entry_from_row(e, row.description) for e in await self._session.execute(query)
        )
        record = TransferRecord(
            id=row.id,
            description=row.description,
            metadata=dict(row._mapping["metadata"]),
            created_at=row.created_at,
            entries=entries,
        )
        return StoredTransfer(record=record, kind=row.kind, fingerprint=dict(row.fingerprint))

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
            select(E, T.c.description.label("transfer_description"))
            .join(T, T.c.id == E.c.transfer_id)
            .where(E.c.account_id == account_id)
        )
        if before_id is not None:
            query = query.where(E.c.id < before_id)
        rows = await self._session.execute(query.order_by(E.c.id.desc()).limit(limit))
        return [_entry_from_row(row, row.transfer_description) for row in rows]
