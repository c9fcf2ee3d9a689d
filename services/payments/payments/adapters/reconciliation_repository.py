"""PostgreSQL record of the provider reconciliation's checks (OPS-3, migration 0017): when each
payment was last compared with its provider. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert

from payments.adapters import tables as t

_R = t.payment_reconciliations

_LAST_CHECKED = select(_R.c.payment_id, _R.c.checked_at).where(
    _R.c.payment_id.in_(bindparam("ids", expanding=True))
)


class SqlReconciliationRepository:
    def __init__(self, session: Any) -> None:
        self.s = session

    async def last_checked(self, payment_ids: Sequence[str]) -> dict[str, datetime]:
        """When each of the payments was last checked (those never checked are absent): one
        read by primary key."""
        if not payment_ids:
            return {}
        rows = (await self.s.execute(_LAST_CHECKED, {"ids": list(payment_ids)})).all()
        return {payment_id: checked_at for payment_id, checked_at in rows}

    async def record_checked(self, payment_ids: Sequence[str], at: datetime) -> None:
        """The payments were checked `at` (one statement for all, once a round)."""
        if not payment_ids:
            return
        rows = [{"payment_id": p, "checked_at": at} for p in sorted(set(payment_ids))]
        upsert = insert(_R).values(rows)
        await self.s.execute(
            upsert.on_conflict_do_update(
                index_elements=[_R.c.payment_id], set_={"checked_at": upsert.excluded.checked_at}
            )
        )
