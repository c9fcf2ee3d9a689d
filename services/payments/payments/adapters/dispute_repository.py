"""PostgreSQL repository of card disputes (one row per provider dispute). Never commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payments.adapters import tables as t
from payments.domain.disputes import STATUS_OF, Dispute


def _values(d: Dispute) -> dict[str, Any]:
    return {
        "id": d.id,
        "provider": d.provider,
        "payment_id": d.payment_id,
        "amount_minor": d.amount_minor,
        "currency": d.currency,
        "reason": d.reason[:64],
        "status": d.status.value,
        "withdrawn_minor": d.withdrawn_minor,
        "reinstated_minor": d.reinstated_minor,
        "fee_minor": d.fee_minor,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "closed_at": d.closed_at,
        "provider_updated_at": d.provider_updated_at,
    }


def _dispute(row: Any) -> Dispute:
    m = row._mapping
    return Dispute(
        id=m["id"],
        provider=m["provider"],
        payment_id=m["payment_id"],
        amount_minor=int(m["amount_minor"]),
        currency=m["currency"],
        reason=m["reason"],
        status=STATUS_OF[m["status"]],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        withdrawn_minor=int(m["withdrawn_minor"]),
        reinstated_minor=int(m["reinstated_minor"]),
        fee_minor=int(m["fee_minor"]),
        closed_at=m["closed_at"],
        provider_updated_at=m["provider_updated_at"],
    )


class SqlDisputeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, dispute: Dispute) -> bool:
        """Insert-first on the provider's dispute id: False if it was recorded before."""
        result = await self.session.execute(
            insert(t.disputes)
            .values(**_values(dispute))
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return bool(result.rowcount)

    async def get(self, dispute_id: str, *, for_update: bool = False) -> Dispute | None:
        query = select(t.disputes).where(t.disputes.c.id == dispute_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return _dispute(row) if row else None

    async def save(self, dispute: Dispute) -> None:
        await self.session.execute(
            update(t.disputes).where(t.disputes.c.id == dispute.id).values(**_values(dispute))
        )

    async def for_payment(self, payment_id: str) -> list[Dispute]:
        rows = await self.session.execute(
            select(t.disputes)
            .where(t.disputes.c.payment_id == payment_id)
            .order_by(t.disputes.c.created_at, t.disputes.c.id)
        )
        return [_dispute(row) for row in rows]
