"""PostgreSQL record of the provider reconciliation's checks (OPS-3, migrations 0017, 0018): when
each payment was last compared with its provider, what that found and since when its provider
could not be read; the open records (findings, or unreadable); the sweep's cursor and its batch of
older payments; the pass through paid plan purchases' cursor, one per provider (0024). Never
commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert

from payments.adapters import tables as t
from payments.adapters.repositories import payment_from_row
from payments.domain.model import Payment
from payments.domain.reconciliation import LastCheck, MismatchKind, SweepCursor

_R = t.payment_reconciliations
_P = t.payments
_S = t.payment_reconciliation_sweep
_PS = t.purchase_reconciliation_sweeps

_LAST_CHECKS = select(
    _R.c.payment_id, _R.c.checked_at, _R.c.mismatches, _R.c.unreadable_since
).where(_R.c.payment_id.in_(bindparam("ids", expanding=True)))

# A record with findings or whose provider could not be read: ix_payment_reconciliations_open's
# condition in its words (literal, so that every plan proves it).
_OPEN = text("mismatches <> '[]'::jsonb OR unreadable_since IS NOT NULL")
_CLOSED = text("mismatches = '[]'::jsonb AND unreadable_since IS NULL")

# The oldest closed records not renewed since `before`, at most `limit`, in one statement: an
# open one stays (it is checked every round, its finding reported until a check finds it gone).
_FORGET = delete(_R).where(
    _R.c.payment_id.in_(
        select(_R.c.payment_id)
        .where(_R.c.checked_at < bindparam("before"), _CLOSED)
        .order_by(_R.c.checked_at)
        .limit(bindparam("limit"))
        .scalar_subquery()
    )
)

# The last checks of given payments and those of at most `limit` open records, the longest
# unchecked (ix_payment_reconciliations_open), in one read.
_LAST_AND_OPEN = _LAST_CHECKS.union(
    select(_R.c.payment_id, _R.c.checked_at, _R.c.mismatches, _R.c.unreadable_since)
    .where(_OPEN)
    .order_by(_R.c.checked_at)
    .limit(bindparam("limit"))
)

_PAYMENTS = select(_P).where(_P.c.id.in_(bindparam("ids", expanding=True)))

# The sweep's pass: payments with a provider id changed within the horizon before the pass began
# (and before it began), in (updated_at, id) order through ix_payments_updated_at (the
# `updated_at >=` bound is where the index scan starts; the row comparison breaks ties).
_SWEEP_ORDER = (_P.c.updated_at, _P.c.id)
_SWEEP = select(_P).where(
    _P.c.provider_payment_id.is_not(None),
    _P.c.updated_at < bindparam("pass_started_at"),
    _P.c.updated_at >= bindparam("from_at"),
    tuple_(*_SWEEP_ORDER) > tuple_(bindparam("after_at"), bindparam("after_id")),
)

_SWEEP_CURSOR = select(_S.c.pass_started_at, _S.c.after_updated_at, _S.c.after_id).where(
    _S.c.id == 1
)

_PURCHASE_SWEEPS = select(
    _PS.c.provider, _PS.c.pass_started_at, _PS.c.after_updated_at, _PS.c.after_id
).where(_PS.c.provider.in_(bindparam("providers", expanding=True)))


def _sweep_position(columns: Any) -> Any:
    """A cursor's place in the order passes go: by pass, then past which (updated_at, id) (none
    yet: before every one)."""
    return tuple_(
        columns.pass_started_at,
        func.coalesce(columns.after_updated_at, text("'-infinity'::timestamptz")),
        func.coalesce(columns.after_id, ""),
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
        return {payment_id: _last_check(*rest) for payment_id, *rest in rows}

    async def record_checks(self, found: Mapping[str, Found | None], at: datetime) -> None:
        """The payments were checked `at` and found what `found` says (None: their provider could
        not be read: what the check before found is kept, and `unreadable_since` set unless it
        was; read: cleared): one statement for those read, one for those not (usually none),
        once a round."""
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
                        "unreadable_since": None,
                    },
                )
            )
        if unread:
            upsert = insert(_R).values(
                [{"payment_id": p, "checked_at": at, "unreadable_since": at} for p in unread]
            )
            await self.s.execute(
                upsert.on_conflict_do_update(
                    index_elements=[_R.c.payment_id],
                    set_={
                        "checked_at": upsert.excluded.checked_at,
                        # Since the first check that could not read it, not the last.
                        "unreadable_since": func.coalesce(
                            _R.c.unreadable_since, upsert.excluded.unreadable_since
                        ),
                    },
                )
            )

    async def forget_before(self, before: datetime, limit: int) -> int:
        """Forget at most `limit` closed records (it agreed, its provider read) not renewed since
        `before`, the oldest first (through ix_payment_reconciliations_checked_at); how many
        were."""
        result = await self.s.execute(_FORGET, {"before": before, "limit": limit})
        return int(result.rowcount)

    async def last_and_open_checks(
        self, payment_ids: Sequence[str], limit: int
    ) -> dict[str, LastCheck]:
        """`last_checks` of the payments, and the last checks of at most `limit` open records
        (a finding, or provider unreadable), the longest unchecked: one read (the primary key
        and ix_payment_reconciliations_open)."""
        params = {"ids": list(payment_ids) or [""], "limit": limit}
        rows = (await self.s.execute(_LAST_AND_OPEN, params)).all()
        return {payment_id: _last_check(*rest) for payment_id, *rest in rows}

    async def payments(self, payment_ids: Sequence[str]) -> list[Payment]:
        """The payments, by id (those of open records outside the round's other reads)."""
        if not payment_ids:
            return []
        rows = (await self.s.execute(_PAYMENTS, {"ids": list(payment_ids)})).all()
        return sorted((payment_from_row(r) for r in rows), key=lambda p: p.id)

    async def sweep_cursor(self) -> SweepCursor | None:
        """Where the sweep is (None: it never ran)."""
        row = (await self.s.execute(_SWEEP_CURSOR)).first()
        if row is None:
            return None
        started, after_at, after_id = row
        return SweepCursor(started, None if after_at is None else (after_at, after_id))

    async def sweep_batch(
        self, cursor: SweepCursor, horizon: timedelta, limit: int
    ) -> list[Payment]:
        """The next `limit` payments of the cursor's pass, in its order."""
        since = cursor.pass_started_at - horizon
        after_at, after_id = cursor.after if cursor.after is not None else (since, "")
        params = {
            "pass_started_at": cursor.pass_started_at,
            "from_at": max(since, after_at),
            "after_at": after_at,
            "after_id": after_id,
        }
        stmt = _SWEEP.order_by(*_SWEEP_ORDER).limit(limit)
        rows = (await self.s.execute(stmt, params)).all()
        return [payment_from_row(r) for r in rows]

    async def save_sweep(self, cursor: SweepCursor) -> None:
        """The sweep is at `cursor` (one row, written once a round)."""
        after_at, after_id = cursor.after if cursor.after is not None else (None, None)
        values = {
            "pass_started_at": cursor.pass_started_at,
            "after_updated_at": after_at,
            "after_id": after_id,
        }
        upsert = insert(_S).values(id=1, **values)
        await self.s.execute(upsert.on_conflict_do_update(index_elements=[_S.c.id], set_=values))

    async def purchase_sweeps(self, providers: Sequence[str]) -> dict[str, SweepCursor]:
        """Where each provider's pass through its paid purchases is (absent: it never ran)."""
        if not providers:
            return {}
        rows = (await self.s.execute(_PURCHASE_SWEEPS, {"providers": list(providers)})).all()
        return {
            provider: SweepCursor(started, None if after_at is None else (after_at, after_id))
            for provider, started, after_at, after_id in rows
        }

    async def save_purchase_sweep(self, provider: str, cursor: SweepCursor) -> bool:
        """The provider's pass through paid purchases is at `cursor`, unless it is further on
        already (a round at once went further, or began a later pass): one statement that never
        moves the row back; whether it moved."""
        after_at, after_id = cursor.after if cursor.after is not None else (None, None)
        values = {
            "pass_started_at": cursor.pass_started_at,
            "after_updated_at": after_at,
            "after_id": after_id,
        }
        upsert = insert(_PS).values(provider=provider, **values)
        stmt = upsert.on_conflict_do_update(
            index_elements=[_PS.c.provider],
            set_=values,
            where=_sweep_position(_PS.c) < _sweep_position(upsert.excluded),
        )
        return int((await self.s.execute(stmt)).rowcount) > 0


def _last_check(
    checked_at: datetime, mismatches: list[dict[str, str]], unreadable_since: datetime | None
) -> LastCheck:
    found = tuple((MismatchKind(m["kind"]), m["detail"]) for m in mismatches)
    return LastCheck(checked_at, found, unreadable_since)
