"""PostgreSQL repository of credit grants (issue/revoke of a plan purchase's credits). Never commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payments.adapters import tables as t
from payments.domain.credits import CreditGrant, GrantKind, GrantStatus
from payments.domain.transactions import UserType


def _values(g: CreditGrant) -> dict[str, Any]:
    return {
        "id": g.id,
        "kind": g.kind.value,
        "transaction_id": g.transaction_id,
        "user_type": g.user_type.value,
        "user_id": g.user_id,
        "granted": g.granted,
        "amounts": g.amounts,
        "status": g.status.value,
        "attempts": g.attempts,
        "next_attempt_at": g.next_attempt_at,
        "created_at": g.created_at,
        "done_at": g.done_at,
        "last_error": g.last_error,
    }


def _grant(row: Any) -> CreditGrant:
    m = row._mapping
    return CreditGrant(
        id=m["id"],
        kind=GrantKind(m["kind"]),
        transaction_id=m["transaction_id"],
        user_type=UserType(m["user_type"]),
        user_id=m["user_id"],
        granted={str(k): int(v) for k, v in dict(m["granted"]).items()},
        amounts=None
        if m["amounts"] is None
        else {str(k): int(v) for k, v in dict(m["amounts"]).items()},
        status=GrantStatus(m["status"]),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        done_at=m["done_at"],
        last_error=m["last_error"],
    )


class SqlCreditGrantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, grant: CreditGrant) -> bool:
        """Insert-first on the grant id (one per transaction and kind): False if it existed."""
        result = await self.session.execute(
            insert(t.credit_grants)
            .values(**_values(grant))
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return bool(result.rowcount)

    async def get(self, grant_id: str, *, for_update: bool = False) -> CreditGrant | None:
        query = select(t.credit_grants).where(t.credit_grants.c.id == grant_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return _grant(row) if row else None

    async def for_transaction(self, transaction_id: str) -> list[CreditGrant]:
        rows = await self.session.execute(
            select(t.credit_grants)
            .where(t.credit_grants.c.transaction_id == transaction_id)
            .order_by(t.credit_grants.c.created_at)
        )
        return [_grant(row) for row in rows]

    async def save(self, grant: CreditGrant) -> None:
        values = _values(grant)
        await self.session.execute(
            update(t.credit_grants).where(t.credit_grants.c.id == grant.id).values(**values)
        )

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[CreditGrant]:
        """Pending grants whose attempt is due, locked SKIP LOCKED and leased (next attempt moved
        past the lease) so several workers share them without doing one twice at once."""
        c = t.credit_grants.c
        rows = (
            await self.session.execute(
                select(t.credit_grants)
                .where(c.status == GrantStatus.PENDING.value, c.next_attempt_at <= now)
                .order_by(c.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        grants = [_grant(row) for row in rows]
        if grants:
            await self.session.execute(
                update(t.credit_grants)
                .where(c.id.in_([g.id for g in grants]))
                .values(next_attempt_at=now + timedelta(seconds=lease_seconds))
            )
        return grants
