"""PostgreSQL repository of ledger bookings (credit_grants: a plan purchase's issue/revoke, a
payment's capture/refund). Never commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.db import HotStatement, lease_due
from hirepay_platform.sql_lists import joined_checked, listed
from payments.adapters import tables as t
from payments.domain import ledger
from payments.domain.credits import (
    DISPUTED_KEY,
    FULL_REFUND,
    GRANT_KIND_OF,
    GRANT_STATUS_OF,
    REFUNDED_KEY,
    CreditGrant,
    GrantKind,
    GrantStatus,
)
from payments.domain.ledger import ExpectedBooking, Leg
from payments.domain.model import TAKEN
from payments.domain.refunds import RefundStatus
from payments.domain.transactions import TxnStatus, UserType

# Due pending grants, locked SKIP LOCKED and leased in one statement (issue 13: an idle round of
# the booking worker is one round trip). Hot (db.HotStatement): in the worker's autocommit unit
# of work it then needs no SQLAlchemy Connection either. The lease is `lease_until`, a column no
# index holds, so that it is a HOT update (migration 0023): moving `next_attempt_at` (the due
# index's key) put a new entry in three indexes per posting's booking. A row leased until later
# is still in the due index's range and skipped by the condition: only bookings in flight.
_LEASE_GRANTS = HotStatement(
    lease_due(
        t.credit_grants,
        t.credit_grants.c.next_attempt_at,
        "lease_until",
        t.PENDING_GRANT,  # literal: its partial index serves generic plans too
        or_(
            t.credit_grants.c.lease_until.is_(None),
            t.credit_grants.c.lease_until <= bindparam("now"),
        ),
    )
)


# CreditGrant.done(now) of the given grants that are still pending, in one statement. The ids
# are one parameter (sql_lists: grant ids are "<kind>:<our id>", never a comma): one SQL text
# whatever the round's size, so one prepared statement with its generic plan, run hot. An
# expanding IN list made a statement of its own for each size of round (up to GRANT_BATCH), each
# prepared and planned afresh on each connection, always through SQLAlchemy (issue 13).
# It returns the ids it marked, not the rows: the caller holds the grants it leased, and a
# grant's row as marked is those values done (mark_done); the whole row cost three JSONB
# documents decoded and a CreditGrant built per booking, about one booking per posting.
_MARK_DONE = HotStatement(
    update(t.credit_grants)
    .where(
        text(f"credit_grants.id = ANY({listed('ids', 'text')})"),
        t.credit_grants.c.status == GrantStatus.PENDING.value,
    )
    .values(status=GrantStatus.DONE.value, done_at=bindparam("now"), last_error="")
    .returning(t.credit_grants.c.id)
)


def _values(g: CreditGrant) -> dict[str, Any]:
    return {
        "id": g.id,
        "kind": str(g.kind),  # StrEnums' values as plain str (issue 13)
        "transaction_id": g.transaction_id,
        "user_type": str(g.user_type) if g.user_type else None,
        "user_id": g.user_id,
        "granted": g.granted,
        "amounts": g.amounts,
        "status": str(g.status),
        "attempts": g.attempts,
        "next_attempt_at": g.next_attempt_at,
        "created_at": g.created_at,
        "done_at": g.done_at,
        "last_error": g.last_error,
        "provider": g.provider,
        "payment_id": g.payment_id,
        "refund_id": g.refund_id,
        "legs": None if g.legs is None else [leg.to_json() for leg in g.legs],
    }


def _grant(row: Any) -> CreditGrant:
    m = row._mapping
    return CreditGrant(
        id=m["id"],
        kind=GRANT_KIND_OF[m["kind"]],
        transaction_id=m["transaction_id"],
        user_type=UserType(m["user_type"]) if m["user_type"] else None,
        user_id=m["user_id"],
        granted={str(k): int(v) for k, v in dict(m["granted"]).items()},
        amounts=None
        if m["amounts"] is None
        else {str(k): int(v) for k, v in dict(m["amounts"]).items()},
        status=GRANT_STATUS_OF[m["status"]],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        done_at=m["done_at"],
        last_error=m["last_error"],
        provider=m["provider"],
        payment_id=m["payment_id"],
        refund_id=m["refund_id"],
        legs=None if m["legs"] is None else [Leg.from_json(leg) for leg in m["legs"]],
    )


class SqlCreditGrantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.written = False  # whether this unit of work recorded a booking (the uow's commit)

    async def add(self, grant: CreditGrant) -> bool:
        """Insert-first on the grant id (one per transaction and kind): False if it existed."""
        self.written = True
        result = await self.session.execute(
            insert(t.credit_grants)
            .values(**_values(grant))
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return bool(result.rowcount)

    async def owe(self, grant: CreditGrant) -> None:
        """Record the grant insert-first (a grant recorded before stays as it is), sent with the
        transaction's next statement (hirepay_platform/write_batch.py)."""
        self.written = True
        await self.session.batch.insert(t.credit_grants, [_values(grant)], first=True)

    async def get(self, grant_id: str, *, for_update: bool = False) -> CreditGrant | None:
        query = select(t.credit_grants).where(t.credit_grants.c.id == grant_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return _grant(row) if row else None

    async def for_transaction(self, transaction_id: str) -> list[CreditGrant]:
        rows = await self.session.execute(
            select(t.credit_grants)
            .where(t.credit_grants.c.transaction_id == transaction_id, t.OF_A_TRANSACTION)
            .order_by(t.credit_grants.c.created_at)
        )
        return [_grant(row) for row in rows]

    async def save(self, grant: CreditGrant, *, release_lease: bool = False) -> None:
        values = _values(grant)
        if release_lease:
            # Retried later: its next attempt is `next_attempt_at` alone, not held back until the
            # lease taken for this attempt would have ended (it was the lease, before 0023).
            values["lease_until"] = None
        await self.session.execute(
            update(t.credit_grants).where(t.credit_grants.c.id == grant.id).values(**values)
        )

    async def mark_done(self, grants: list[CreditGrant], now: datetime) -> list[CreditGrant]:
        """CreditGrant.done(now) of those still pending, in one statement (issue 13): the given
        grants it marked, done, in the order given."""
        params = {"ids": joined_checked([g.id for g in grants]), "now": now}
        marked = {row[0] for row in await self.session.execute(_MARK_DONE, params)}
        done = [g for g in grants if g.id in marked]
        for grant in done:
            grant.done(now)  # what the statement wrote: status, done_at, last_error
        return done

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[CreditGrant]:
        """Pending grants whose attempt is due and not leased, locked SKIP LOCKED and leased
        (`lease_until`) in one statement, so several workers share them without doing one twice
        at once; oldest first."""
        params = {"now": now, "limit": limit, "until": now + timedelta(seconds=lease_seconds)}
        rows = (await self.session.execute(_LEASE_GRANTS, params)).all()
        return sorted((_grant(row) for row in rows), key=lambda g: (g.created_at, g.id))

    async def for_payment(self, payment_id: str) -> list[CreditGrant]:
        rows = await self.session.execute(
            select(t.credit_grants)
            .where(t.credit_grants.c.payment_id == payment_id)
            .order_by(t.credit_grants.c.created_at)
        )
        return [_grant(row) for row in rows]

    async def expected(
        self, before: datetime, since: datetime | None = None
    ) -> list[ExpectedBooking]:
        """Every transfer the ledger must hold for money settled before `before`; with `since`,
        only for the records changed at or after it (the auditor's incremental round, through
        each table's `updated_at` index)."""
        p, r, x = t.payments.c, t.refunds.c, t.transactions.c
        # No lower bound on a full sweep (a statement of its own: the bound would not narrow it).
        low = since is not None
        found: list[ExpectedBooking] = []
        captured = await self.session.execute(
            select(p.id, p.provider, p.currency, p.captured_minor, p.metadata).where(
                p.state.in_(sorted(s.value for s in TAKEN)),
                p.captured_minor > 0,
                p.updated_at < before,
                p.updated_at >= since if low else true(),
            )
        )
        for row in captured:
            found.append(
                ExpectedBooking(
                    ledger.capture_transfer_id(row.id),
                    row.id,
                    row.provider,
                    row.currency,
                    int(row.captured_minor),
                    ledger.purpose_of(dict(row.metadata)),
                    refund=False,
                )
            )
        refunded = await self.session.execute(
            select(r.id, r.payment_id, r.amount_minor, p.provider, p.currency, p.metadata)
            .join(t.payments, p.id == r.payment_id)
            .where(
                r.status == RefundStatus.SUCCEEDED.value,
                r.updated_at < before,
                r.updated_at >= since if low else true(),
            )
        )
        for row in refunded:
            found.append(
                ExpectedBooking(
                    ledger.refund_transfer_id(row.payment_id, row.id),
                    row.payment_id,
                    row.provider,
                    row.currency,
                    int(row.amount_minor),
                    ledger.purpose_of(dict(row.metadata)),
                    refund=True,
                )
            )
        found += await self._by_audited_kind(before, since)
        purchases = await self.session.execute(
            select(x.id, x.status, x.provider, x.currency, x.amount_minor, x.metadata).where(
                x.status.in_([TxnStatus.SUCCESS.value, TxnStatus.REFUNDED.value]),
                x.amount_minor > 0,
                x.updated_at < before,
                x.updated_at >= since if low else true(),
            )
        )
        for row in purchases:
            amount = int(row.amount_minor)
            ids = [(ledger.capture_transfer_id(row.id), False, amount)]
            # The full refund books what the refunds in part and the disputes' withdrawals
            # before it had not (if anything: none after a dispute lost in full).
            meta = dict(row.metadata or {})
            rest = amount - sum(int(meta.get(k, "0") or 0) for k in (REFUNDED_KEY, DISPUTED_KEY))
            if row.status == TxnStatus.REFUNDED.value and rest > 0:
                ids.append((ledger.refund_transfer_id(row.id, FULL_REFUND), True, rest))
            found += [
                ExpectedBooking(
                    transfer_id,
                    row.id,
                    row.provider,
                    row.currency,
                    moved,
                    ledger.Purpose.FEE,
                    refund=refund,
                )
                for transfer_id, refund, moved in ids
            ]
        return found

    async def _by_audited_kind(
        self, before: datetime, since: datetime | None
    ) -> list[ExpectedBooking]:
        """The bookings expected by their kind, read in one statement through their partial
        index (migration 0021): disputes' balance transactions, refunds that failed after they
        succeeded, purchases' refunds in part."""
        g, p = t.credit_grants.c, t.payments.c
        rows = await self.session.execute(
            select(
                g.kind,
                g.transaction_id,
                g.payment_id,
                g.refund_id,
                g.provider,
                g.granted,
                g.legs,
                p.currency,
                p.metadata,
            )
            .outerjoin(t.payments, p.id == g.payment_id)
            .where(
                t.OF_AN_AUDITED_KIND,
                g.created_at < before,
                g.created_at >= since if since is not None else true(),
            )
        )
        found: list[ExpectedBooking] = []
        for row in rows:
            if row.kind == GrantKind.DISPUTE.value and row.currency is not None:
                found.append(_disputed(row))
            elif row.kind == GrantKind.DISPUTE.value and row.transaction_id:
                found.append(_purchase_disputed(row))
            elif row.kind == GrantKind.REFUND_FAILED.value and row.currency is not None:
                found += _refund_failed(row)
            elif row.kind == GrantKind.PURCHASE_REFUND.value:
                found.append(_purchase_refund(row))
        return found


def _disputed(row: Any) -> ExpectedBooking:
    """A dispute's balance transaction: its booking is recorded in the dispute's own transaction
    (handlers/disputes.py), so each recorded one must be on the ledger; a withdrawal takes
    revenue back like a refund, a reinstatement gives it back."""
    legs = [Leg.from_json(leg) for leg in row.legs or []]
    moved = ledger.revenue_delta(legs, row.currency)
    return ExpectedBooking(
        ledger.dispute_transfer_id(row.payment_id, row.refund_id),
        row.payment_id,
        row.provider,
        row.currency,
        abs(moved),
        ledger.purpose_of(dict(row.metadata)),
        refund=moved < 0,
        what="dispute withdrew" if moved < 0 else "dispute reinstated",
    )


def _purchase_disputed(row: Any) -> ExpectedBooking:
    """A plan purchase's dispute movement (disputes._apply_purchase): as a fee payment's, revenue
    taken back or given back, in the unit its revenue leg moves (the purchase's currency; a fee
    alone, settled in another, moves no revenue)."""
    legs = [Leg.from_json(leg) for leg in row.legs or []]
    on_revenue = [
        g.source.unit for g in legs if ledger.revenue(g.source.unit) in (g.source, g.target)
    ]
    currency = (on_revenue or [g.source.unit for g in legs] or [""])[0]
    moved = ledger.revenue_delta(legs, currency)
    return ExpectedBooking(
        ledger.dispute_transfer_id(row.transaction_id, row.refund_id),
        row.transaction_id,
        row.provider,
        currency,
        abs(moved),
        ledger.Purpose.FEE,
        refund=moved < 0,
        what="dispute withdrew" if moved < 0 else "dispute reinstated",
    )


def _refund_failed(row: Any) -> list[ExpectedBooking]:
    """The two transfers of a refund that succeeded and failed since (refund_failures.py): its
    refund's booking and that booking's reversal, recorded with the refund FAILED (so the
    refunds' read no longer names it): both must be on the ledger, and together they leave
    revenue as if it had never been refunded."""
    amount = int(dict(row.granted or {}).get(row.currency, 0))
    purpose = ledger.purpose_of(dict(row.metadata))
    return [
        ExpectedBooking(
            transfer_id,
            row.payment_id,
            row.provider,
            row.currency,
            amount,
            purpose,
            refund=refund,
            what="" if refund else "refund failed after success, reversed",
        )
        for transfer_id, refund in (
            (ledger.refund_transfer_id(row.payment_id, row.refund_id), True),
            (ledger.refund_failure_transfer_id(row.payment_id, row.refund_id), False),
        )
    ]


def _purchase_refund(row: Any) -> ExpectedBooking:
    """A purchase's refund in part made at the provider (provider_refunds._book_purchase_refunds):
    revenue taken back."""
    [(currency, amount)] = dict(row.granted).items()
    return ExpectedBooking(
        ledger.refund_transfer_id(row.transaction_id, row.refund_id),
        row.transaction_id,
        row.provider,
        currency,
        int(amount),
        ledger.Purpose.FEE,
        refund=True,
        what="refunded in part",
    )
