"""Read-only SQL for the ledger's readers (ESC-11): a user's wallet, histories, balances and
commission earnings. Each listing is one statement; the indexes it relies on are named beside it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from wallet.adapters.repositories.accounts import ACCOUNT_COLUMNS, account_from_row
from wallet.adapters.tables import accounts as A
from wallet.domain.model import Account, AccountKind
from wallet.domain.reports import (
    AccountFilter,
    EarningsBucket,
    EntryFilter,
    LedgerLine,
    Period,
)

# The page of entries, newest first, and for each its transfer (description, metadata) and the
# kind of the account on the other side: the transfer's largest entry of the opposite sign in the
# same unit (ix_entries_transfer_id). `{page}` is one of the two page queries below.
_LINES = """
WITH page AS ({page})
SELECT p.id, p.transfer_id, CAST(p.account_id AS text) AS account_id, p.unit, p.amount,
       p.created_at, p.owner_id, p.kind, t.description, t.metadata,
       cp.kind AS counterparty_kind
  FROM page p
  JOIN transfers t ON t.id = p.transfer_id
  LEFT JOIN LATERAL (
        SELECT oa.kind FROM entries o JOIN accounts oa ON oa.id = o.account_id
         WHERE o.transfer_id = p.transfer_id AND o.unit = p.unit
           AND (o.amount > 0) <> (p.amount > 0)
         ORDER BY abs(o.amount) DESC, o.id
         LIMIT 1
  ) cp ON true
 ORDER BY p.id DESC
"""

# The entries of a few accounts (an owner's, or the few of a kind such as platform revenue): the
# newest `limit` of each account (ix_entries_account_history, one short backward index scan per
# account), merged and cut to `limit`. The cost is bounded by the number of accounts times the page
# size, however long their histories are.
_ACCOUNTS_PAGE = """
SELECT e.id, e.transfer_id, e.account_id, e.unit, e.amount, e.created_at, a.owner_id, a.kind
  FROM accounts a
 CROSS JOIN LATERAL (
        SELECT e.id, e.transfer_id, e.account_id, e.unit, e.amount, e.created_at
          FROM entries e
         WHERE e.account_id = a.id {entry_conditions}
         ORDER BY e.id DESC
         LIMIT :limit
 ) e
 WHERE a.id = ANY(CAST(:account_ids AS uuid[]))
 ORDER BY e.id DESC
 LIMIT :limit
"""
# At most this many accounts are paged through _ACCOUNTS_PAGE; filters matching more (every user's
# USD wallet) walk the entries' key backwards instead (_ALL_PAGE).
FEW_ACCOUNTS = 64

# Entries of many accounts: the entries' key backwards (pk_entries), each joined to its account by
# key and kept if it matches.
_ALL_PAGE = """
SELECT e.id, e.transfer_id, e.account_id, e.unit, e.amount, e.created_at, a.owner_id, a.kind
  FROM entries e
  JOIN accounts a ON a.id = e.account_id
 WHERE true {entry_conditions} {account_conditions}
 ORDER BY e.id DESC
 LIMIT :limit
"""

# Revenue accounts are few; their entries in the range come from ix_entries_account_time.
_EARNINGS = text(
    """
    SELECT date_trunc(CAST(:period AS text), e.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               AS period_start,
           e.unit,
           coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0) AS credited,
           coalesce(-sum(e.amount) FILTER (WHERE e.amount < 0), 0) AS debited
      FROM entries e
     WHERE e.account_id IN (SELECT id FROM accounts WHERE kind = 'platform_revenue')
       AND e.created_at >= :since AND e.created_at < :until
     GROUP BY 1, 2
     ORDER BY 1, 2
    """
)


def _line_from_row(row: Any) -> LedgerLine:
    return LedgerLine(
        entry_id=row.id,
        transfer_id=row.transfer_id,
        account_id=row.account_id,
        owner_id=row.owner_id,
        account_kind=AccountKind(row.kind),
        unit=row.unit,
        amount=row.amount,
        counterparty_kind=AccountKind(row.counterparty_kind) if row.counterparty_kind else None,
        description=row.description,
        metadata=dict(row.metadata or {}),
        created_at=row.created_at,
    )


def _entry_conditions(
    where: EntryFilter, before_id: int | None, params: dict[str, Any]
) -> list[str]:
    conditions = []
    if before_id is not None:
        conditions.append("AND e.id < :before_id")
        params["before_id"] = before_id
    if where.since is not None:
        conditions.append("AND e.created_at >= :since")
        params["since"] = where.since
    if where.until is not None:
        conditions.append("AND e.created_at < :until")
        params["until"] = where.until
    return conditions


def _account_conditions(where: EntryFilter, params: dict[str, Any]) -> list[str]:
    conditions = []
    if where.owner_id is not None:
        conditions.append("AND a.owner_id = :owner_id")
        params["owner_id"] = where.owner_id
    if where.unit is not None:
        conditions.append("AND a.unit = :unit")
        params["unit"] = where.unit
    if where.kind is not None:
        conditions.append("AND a.kind = :kind")
        params["kind"] = where.kind.value
    return conditions


def _lines_statement(
    where: EntryFilter, before_id: int | None, limit: int, account_ids: list[str] | None
) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of one page (fixed SQL fragments, one per given filter): over
    `account_ids` when the filter matched only those, else over every account."""
    params: dict[str, Any] = {"limit": limit}
    entry_conditions = " ".join(_entry_conditions(where, before_id, params))
    if account_ids is not None:
        params["account_ids"] = account_ids
        page = _ACCOUNTS_PAGE.format(entry_conditions=entry_conditions)
    else:
        account_conditions = " ".join(_account_conditions(where, params))
        page = _ALL_PAGE.format(
            entry_conditions=entry_conditions, account_conditions=account_conditions
        )
    return _LINES.format(page=page), params


class SqlLedgerReadRepository:
    """The readers' queries on the unit of work's session (reads only, never commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def wallet_accounts(self, owner_id: str) -> list[Account]:
        """The owner's USER accounts with balances, by unit: one statement (no query per unit)."""
        query = (
            select(*ACCOUNT_COLUMNS)
            .where(A.c.owner_id == owner_id, A.c.kind == AccountKind.USER.value)
            .order_by(A.c.unit)
        )
        return [account_from_row(row) for row in await self._session.execute(query)]

    async def lines(
        self, where: EntryFilter, before_id: int | None, limit: int
    ) -> list[LedgerLine]:
        """Entries matching `where` with ids below `before_id`, newest first. An account filter
        that matches few accounts (an owner's; platform revenue) pages through those accounts'
        own histories; one that matches many, or none given, walks every entry newest first."""
        account_ids = await self._few_accounts(where)
        statement, params = _lines_statement(where, before_id, limit, account_ids)
        rows = await self._session.execute(text(statement), params)
        return [_line_from_row(row) for row in rows]

    async def _few_accounts(self, where: EntryFilter) -> list[str] | None:
        """The ids of the accounts `where` names, if there are at most FEW_ACCOUNTS; else None."""
        if where.owner_id is None and where.kind is None and where.unit is None:
            return None
        query = select(A.c.id)
        if where.owner_id is not None:
            query = query.where(A.c.owner_id == where.owner_id)
        if where.kind is not None:
            query = query.where(A.c.kind == where.kind.value)
        if where.unit is not None:
            query = query.where(A.c.unit == where.unit)
        ids = [str(i) for i in (await self._session.scalars(query.limit(FEW_ACCOUNTS + 1)))]
        return ids if len(ids) <= FEW_ACCOUNTS else None

    async def balances(
        self, where: AccountFilter, after: int | None, limit: int
    ) -> list[tuple[int, Account]]:
        """Accounts matching `where`, oldest first, each with its keyset cursor (ix_accounts_kind_seq
        when filtered by kind; the owner's unique key when filtered by owner)."""
        query = select(*ACCOUNT_COLUMNS)
        if where.kind is not None:
            query = query.where(A.c.kind == where.kind.value)
        if where.unit is not None:
            query = query.where(A.c.unit == where.unit)
        if where.owner_id is not None:
            query = query.where(A.c.owner_id == where.owner_id)
        if after is not None:
            query = query.where(A.c.seq > after)
        rows = await self._session.execute(query.order_by(A.c.seq).limit(limit))
        return [(row.seq, account_from_row(row)) for row in rows]

    async def earnings(
        self, since: datetime, until: datetime, period: Period
    ) -> list[EarningsBucket]:
        """Credits and debits of platform revenue per period (UTC) and unit, oldest first."""
        params = {"period": period.value, "since": since, "until": until}
        rows = await self._session.execute(_EARNINGS, params)
        return [
            EarningsBucket(row.period_start, row.unit, int(row.credited), int(row.debited))
            for row in rows
        ]
