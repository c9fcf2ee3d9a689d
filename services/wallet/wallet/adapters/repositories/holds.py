"""PostgreSQL repository of holds: add, read (optionally locked), save resolutions, lock expired."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.tcc import TccBranch
from wallet.adapters.tables import holds as H
from wallet.domain.holds import Hold, HoldState


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


class SqlHoldRepository:
    """Holds on the unit of work's session, read as plain rows (so a re-read is never stale);
    never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, hold: Hold) -> None:
        await self._session.execute(insert(H).values(_hold_to_row(hold)))

    async def get(self, branch: TccBranch, *, for_update: bool = False) -> Hold | None:
        query = select(H).where(
            H.c.global_tx_id == branch.global_tx_id, H.c.branch_id == branch.branch_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).one_or_none()
        return _hold_from_row(row) if row else None

    async def save(self, holds: Collection[Hold]) -> None:
        for hold in holds:
            await self._session.execute(
                update(H)
                .where(
                    H.c.global_tx_id == hold.branch.global_tx_id,
                    H.c.branch_id == hold.branch.branch_id,
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
            select(H)
            .where(H.c.state == HoldState.PENDING.value, H.c.expires_at <= now)
            .order_by(H.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_hold_from_row(row) for row in await self._session.execute(query)]
