"""PostgreSQL repository of subscription transactions: rows <-> domain objects. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payments.adapters import tables as t
from payments.domain.transactions import Transaction, TxnStatus, UserType

# --- transactions -----------------------------------------------------------------------------


def _txn_values(x: Transaction) -> dict[str, Any]:
    return {
        "id": x.id,
        "status": x.status.value,
        "user_type": x.user_type.value,
        "user_id": x.user_id,
        "email": x.email,
        "amount_minor": x.amount_minor,
        "currency": x.currency,
        "payment_method": x.payment_method,
        "provider": x.provider,
        "plan": x.plan,
        "period_days": x.period_days,
        "request_id": x.request_id,
        "return_url": x.return_url,
        "cancel_url": x.cancel_url,
        "checkout_key": x.checkout_key,
        "expire_key": x.expire_key,
        "provider_transaction_id": x.provider_transaction_id or None,
        "provider_payment_intent_id": x.provider_payment_intent_id or None,
        "provider_customer_id": x.provider_customer_id,
        "checkout_url": x.checkout_url,
        "expires_at": x.expires_at,
        "subscription_start_date": x.subscription_start,
        "subscription_end_date": x.subscription_end,
        "failure_reason": x.failure_reason,
        "failure_code": x.failure_code,
        "decline_code": x.decline_code,
        "failure_message": x.failure_message,
        "metadata": x.metadata,
        "created_at": x.created_at,
        "updated_at": x.updated_at,
    }


def _txn(row: Any) -> Transaction:
    m = row._mapping
    return Transaction(
        id=m["id"],
        status=TxnStatus(m["status"]),
        user_type=UserType(m["user_type"]),
        user_id=m["user_id"],
        email=m["email"],
        amount_minor=m["amount_minor"],
        currency=m["currency"],
        payment_method=m["payment_method"],
        provider=m["provider"],
        plan=m["plan"],
        period_days=m["period_days"],
        request_id=m["request_id"],
        return_url=m["return_url"],
        cancel_url=m["cancel_url"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        checkout_key=m["checkout_key"],
        expire_key=m["expire_key"],
        provider_transaction_id=m["provider_transaction_id"] or "",
        provider_payment_intent_id=m["provider_payment_intent_id"] or "",
        provider_customer_id=m["provider_customer_id"],
        checkout_url=m["checkout_url"],
        expires_at=m["expires_at"],
        subscription_start=m["subscription_start_date"],
        subscription_end=m["subscription_end_date"],
        failure_reason=m["failure_reason"],
        failure_code=m["failure_code"],
        decline_code=m["decline_code"],
        failure_message=m["failure_message"],
        metadata=dict(m["metadata"] or {}),
    )


_T = t.transactions

# Paid purchases of the given providers changed since `since`, with a provider payment: the
# reconciliation's reads of them (ix_transactions_updated_at: the `updated_at >=` bound is where
# the index scan starts).
_PAID = select(_T).where(
    _T.c.status == TxnStatus.SUCCESS.value,
    _T.c.provider.in_(bindparam("providers", expanding=True)),
    _T.c.provider_payment_intent_id.is_not(None),
    _T.c.updated_at >= bindparam("since"),
)
_PASS_ORDER = (_T.c.updated_at, _T.c.id)


class SqlTransactionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, txn: Transaction) -> None:
        await self.s.execute(insert(t.transactions).values(**_txn_values(txn)))

    async def get(self, transaction_id: str, *, for_update: bool = False) -> Transaction | None:
        stmt = select(t.transactions).where(t.transactions.c.id == transaction_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.s.execute(stmt)).first()
        return _txn(row) if row else None

    async def get_by_request(
        self, user_type: UserType, user_id: str, request_id: str
    ) -> Transaction | None:
        row = (
            await self.s.execute(
                select(t.transactions).where(
                    t.transactions.c.user_type == user_type.value,
                    t.transactions.c.user_id == user_id,
                    t.transactions.c.request_id == request_id,
                )
            )
        ).first()
        return _txn(row) if row else None

    async def find_by_provider(
        self, *, checkout_id: str = "", payment_intent_id: str = ""
    ) -> Transaction | None:
        if checkout_id:
            where = t.transactions.c.provider_transaction_id == checkout_id
        elif payment_intent_id:
            where = t.transactions.c.provider_payment_intent_id == payment_intent_id
        else:
            return None
        row = (await self.s.execute(select(t.transactions).where(where))).first()
        return _txn(row) if row else None

    async def lock_user(self, user_type: UserType, user_id: str) -> None:
        await self.s.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"subscription:{user_type.value}:{user_id}"},
        )

    async def latest_active(
        self, user_type: UserType, user_id: str, today: date
    ) -> Transaction | None:
        row = (
            await self.s.execute(
                select(t.transactions)
                .where(
                    t.transactions.c.user_type == user_type.value,
                    t.transactions.c.user_id == user_id,
                    t.transactions.c.status == TxnStatus.SUCCESS.value,
                    t.transactions.c.subscription_end_date > today,
                )
                .order_by(t.transactions.c.subscription_end_date.desc())
                .limit(1)
            )
        ).first()
        return _txn(row) if row else None

    async def save(self, txn: Transaction) -> None:
        values = _txn_values(txn)
        values.pop("id")
        await self.s.execute(
            update(t.transactions).where(t.transactions.c.id == txn.id).values(values)
        )

    async def list_stale_pending(self, now: datetime, limit: int) -> list[Transaction]:
        stmt = (
            select(t.transactions)
            .where(
                t.transactions.c.status == TxnStatus.PENDING.value,
                t.transactions.c.expires_at < now - timedelta(seconds=30),
                # checked at most once a minute each (the provider may expire it a little late)
                t.transactions.c.updated_at < now - timedelta(seconds=60),
            )
            .order_by(t.transactions.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_txn(r) for r in (await self.s.execute(stmt)).all()]

    async def paid_since(
        self,
        providers: Sequence[str],
        since: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
        before: datetime | None = None,
        newest: bool = False,
    ) -> list[Transaction]:
        """Paid purchases of `providers` changed since `since` (and before `before`): the
        `limit` after `after` in (updated_at, id) order, or with `newest` the `limit` most
        recently changed."""
        if not providers or limit <= 0:
            return []
        params: dict[str, Any] = {"providers": list(providers), "since": since}
        if newest:
            stmt = _PAID.order_by(*(c.desc() for c in _PASS_ORDER))
        else:
            stmt = _PAID.order_by(*_PASS_ORDER)
            if after is not None:
                stmt = stmt.where(
                    tuple_(*_PASS_ORDER) > tuple_(bindparam("after_at"), bindparam("after_id"))
                )
                # The index scan starts at the cursor's updated_at, not the horizon's.
                params.update(since=max(since, after[0]), after_at=after[0], after_id=after[1])
        if before is not None:
            stmt = stmt.where(_T.c.updated_at < bindparam("before"))
            params["before"] = before
        rows = (await self.s.execute(stmt.limit(limit), params)).all()
        return [_txn(r) for r in rows]
