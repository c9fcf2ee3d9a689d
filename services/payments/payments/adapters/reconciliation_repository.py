"""PostgreSQL record of the provider reconciliation's checks (OPS-3, migration 0017): when each
payment was last compared with its provider, and what that found. Never commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert

from payments.adapters import tables as t
from payments.domain.reconciliation import LastCheck, MismatchKind

_R = t.payment_reconciliations

_LAST_CHECKS = select(_R.c.payment_id, _R.c.checked_at, _R.c.mismatches).where(
    _R.c.payment_id.in_(bindparam("ids", expanding=True))
)

# The oldest records not renewed since `before`, at most `limit` of them, in one statement.
_FORGET = delete(_R).where(
    _R.c.payment_id.in_(
        select(_R.c.payment_id)
        .where(_R.c.checked_at < bindparam("before"))
        .order_by(_R.c.checked_at)
        .limit(bindparam("limit"))
        .scalar_subquery()
    )
)

Found = Sequence[tuple[MismatchKind, str]]


class SqlReconciliationRepository:
    def __init__(self, session: Any) -> None:
        self.s = session

    async def last_checks(self, payment_ids: Sequence[str]) -> dict[str, LastCheck]:
        """Each of the payments' last check (those never checked are absent): one read by
        primary key."""
        if not payment_ids:
            return {}
        rows = (await self.s.execute(_LAST_CHECKS, {"ids": list(payment_ids)})).all()
        return {
            payment_id: LastCheck(
                checked_at, tuple((MismatchKind(m["kind"]), m["detail"]) for m in mismatches)
            )
            for payment_id, checked_at, mismatches in rows
        }

    async def record_checks(self, found: Mapping[str, Found | None], at: datetime) -> None:
        """The payments were checked `at` and found what `found` says (None: their provider could
        not be read, what the check before found is kept): one statement for those read, one for
        those not (usually none), once a round."""
        read = {p: f for p, f in found.items() if f is not None}
        unread = sorted(p for p, f in found.items() if f is None)
        if read:
            rows = [
                {
                    "payment_id": p,
                    "checked_at": at,
                    "mismatches": [{"kind": str(kind), "detail": detail} for kind, detail in f],
                }
                for p, f in sorted(read.items())
            ]
            upsert = insert(_R).values(rows)
            await self.s.execute(
                upsert.on_conflict_do_update(
                    index_elements=[_R.c.payment_id],
                    set_={
                        "checked_at": upsert.excluded.checked_at,
                        "mismatches": upsert.excluded.mismatches,
                    },
                )
            )
        if unread:
            upsert = insert(_R).values([{"payment_id": p, "checked_at": at} for p in unread])
            await self.s.execute(
                upsert.on_conflict_do_update(
                    index_elements=[_R.c.payment_id],
                    set_={"checked_at": upsert.excluded.checked_at},
                )
            )

    async def forget_before(self, before: datetime, limit: int) -> int:
        """Forget at most `limit` records not renewed since `before`, the oldest first (through
        ix_payment_reconciliations_checked_at); how many were."""
        result = await self.s.execute(_FORGET, {"before": before, "limit": limit})
        return int(result.rowcount)
