"""PostgreSQL repository of payout accounts and withdrawals (ESC-9). Never commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.db import HotStatement, lease_due
from payments.adapters import tables as t
from payments.domain.payouts import (
    PayoutAccount,
    PayoutAccountState,
    ProviderOutcome,
    Withdrawal,
    WithdrawalState,
)

# Due unfinished withdrawals and paid ones whose return watch is due, locked SKIP LOCKED and
# leased in one statement (issue 13: an idle round of the recovery worker is one round trip),
# each part through its partial index (tables.UNFINISHED_WITHDRAWAL, tables.PAID_WITHDRAWAL).
# Hot (db.HotStatement): a round in autocommit then needs no SQLAlchemy Connection (issue 13).
_LEASE_WITHDRAWALS = HotStatement(
    lease_due(
        t.withdrawals,
        t.withdrawals.c.next_attempt_at,
        "next_attempt_at",
        or_(
            t.UNFINISHED_WITHDRAWAL,
            # Paid recently: watched for a return by the bank (a lost payout.failed).
            and_(t.PAID_WITHDRAWAL, t.withdrawals.c.updated_at >= bindparam("paid_since")),
        ),
    )
)


def _account(row: Any) -> PayoutAccount:
    m = row._mapping
    return PayoutAccount(
        user_id=m["user_id"],
        provider=m["provider"],
        provider_account_id=m["provider_account_id"],
        state=PayoutAccountState(m["state"]),
        onboarding_url=m["onboarding_url"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _account_values(a: PayoutAccount) -> dict[str, Any]:
    return {
        "user_id": a.user_id,
        "provider": a.provider,
        "provider_account_id": a.provider_account_id,
        "state": a.state.value,
        "onboarding_url": a.onboarding_url,
        "created_at": a.created_at,
        "updated_at": a.updated_at,
    }


_WITHDRAWAL_FIELDS = (
    "id",
    "user_id",
    "request_id",
    "amount_minor",
    "currency",
    "provider",
    "provider_account_id",
    "transfer_id",
    "payout_id",
    "reversal_id",
    "failure_code",
    "failure_message",
    "attempts",
    "last_error",
    "next_attempt_at",
    "created_at",
    "updated_at",
)


def _withdrawal(row: Any) -> Withdrawal:
    m = row._mapping
    return Withdrawal(
        **{name: m[name] for name in _WITHDRAWAL_FIELDS},
        state=WithdrawalState(m["state"]),
        outcome=ProviderOutcome(m["outcome"]),
    )


def _withdrawal_values(w: Withdrawal) -> dict[str, Any]:
    values = {name: getattr(w, name) for name in _WITHDRAWAL_FIELDS}
    values["state"] = w.state.value
    values["outcome"] = w.outcome.value
    return values


class SqlPayoutRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    # --- payout accounts ------------------------------------------------------------------

    async def add_account(self, account: PayoutAccount) -> bool:
        """Insert-first on the user: False if the user had one already."""
        result = await self.s.execute(
            insert(t.payout_accounts)
            .values(**_account_values(account))
            .on_conflict_do_nothing(index_elements=["user_id"])
        )
        return bool(result.rowcount)

    async def get_account(self, user_id: str, *, for_update: bool = False) -> PayoutAccount | None:
        query = select(t.payout_accounts).where(t.payout_accounts.c.user_id == user_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.s.execute(query)).first()
        return _account(row) if row else None

    async def save_account(self, account: PayoutAccount) -> None:
        await self.s.execute(
            update(t.payout_accounts)
            .where(t.payout_accounts.c.user_id == account.user_id)
            .values(**_account_values(account))
        )

    # --- withdrawals ----------------------------------------------------------------------

    async def add(self, withdrawal: Withdrawal) -> bool:
        """Insert-first on (user, request id): False if that request was recorded before."""
        result = await self.s.execute(
            insert(t.withdrawals)
            .values(**_withdrawal_values(withdrawal))
            .on_conflict_do_nothing(index_elements=["user_id", "request_id"])
        )
        return bool(result.rowcount)

    async def get(self, withdrawal_id: str, *, for_update: bool = False) -> Withdrawal | None:
        query = select(t.withdrawals).where(t.withdrawals.c.id == withdrawal_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.s.execute(query)).first()
        return _withdrawal(row) if row else None

    async def get_by_request(self, user_id: str, request_id: str) -> Withdrawal | None:
        c = t.withdrawals.c
        row = (
            await self.s.execute(
                select(t.withdrawals).where(c.user_id == user_id, c.request_id == request_id)
            )
        ).first()
        return _withdrawal(row) if row else None

    async def find_by_payout(self, payout_id: str) -> Withdrawal | None:
        row = (
            await self.s.execute(
                select(t.withdrawals).where(t.withdrawals.c.payout_id == payout_id)
            )
        ).first()
        return _withdrawal(row) if row else None

    async def save(self, withdrawal: Withdrawal) -> None:
        await self.s.execute(
            update(t.withdrawals)
            .where(t.withdrawals.c.id == withdrawal.id)
            .values(**_withdrawal_values(withdrawal))
        )

    async def remove(self, withdrawal_id: str) -> None:
        await self.s.execute(delete(t.withdrawals).where(t.withdrawals.c.id == withdrawal_id))

    async def list_for_user(
        self, user_id: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[Withdrawal]:
        """A user's withdrawals, newest first, strictly before the (created_at, id) cursor."""
        c = t.withdrawals.c
        query = select(t.withdrawals).where(c.user_id == user_id)
        if before is not None:
            created, wid = before
            query = query.where(
                (c.created_at < created) | ((c.created_at == created) & (c.id < wid))
            )
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        return [_withdrawal(r) for r in (await self.s.execute(query)).all()]

    async def unfinished_since(self, before: datetime, limit: int) -> list[Withdrawal]:
        """Withdrawals not final (a paid one whose payout came back included) unchanged since
        `before`, the longest unchanged first (the auditor's read)."""
        query = (
            select(t.withdrawals)
            .where(t.UNFINISHED_WITHDRAWAL, t.withdrawals.c.updated_at <= before)
            .order_by(t.withdrawals.c.updated_at, t.withdrawals.c.id)
            .limit(limit)
        )
        return [_withdrawal(r) for r in (await self.s.execute(query)).all()]

    async def lease_due(
        self, now: datetime, limit: int, lease_seconds: float, paid_since: datetime
    ) -> list[Withdrawal]:
        """Unfinished withdrawals whose next step is due, and those paid since `paid_since`
        whose return watch is due, locked SKIP LOCKED and leased (next attempt moved past the
        lease) in one statement, so several workers share them without doing one twice; oldest
        first."""
        params = {
            "now": now,
            "limit": limit,
            "until": now + timedelta(seconds=lease_seconds),
            "paid_since": paid_since,
        }
        rows = (await self.s.execute(_LEASE_WITHDRAWALS, params)).all()
        return sorted((_withdrawal(r) for r in rows), key=lambda w: (w.created_at, w.id))
