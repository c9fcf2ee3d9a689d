"""PostgreSQL repositories of payments, refunds and the audit log: rows <-> domain objects,
every query in one place. Never commit."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.db import HotStatement, lease_due
from hirepay_platform.tcc import TccBranch
from payments.adapters import tables as t
from payments.domain.events import AuditEntry
from payments.domain.model import METHOD_OF, PENDING_OP_OF, STATE_OF, Payment
from payments.domain.refunds import CoinsState, Refund, RefundStatus

# --- payments -------------------------------------------------------------------------------

# The statements of the hot path, built once: SQLAlchemy finds their compiled form by a cache key
# computed once per statement instead of building and keying a new statement per call (issue 13).
_KEY = "_key"  # the bound parameter of the row's id (a column's name is reserved for SET)
_GET_PAYMENT = select(t.payments).where(t.payments.c.id == bindparam(_KEY))
_LOCK_PAYMENT = _GET_PAYMENT.with_for_update()
# A payment by its branch (Capture, Void) or by the provider's ids (every webhook), built once:
# building a statement per call cost more than the look-up's own round trip (issue 13).
_BY_BRANCH = select(t.payments).where(
    t.payments.c.global_tx_id == bindparam("_global_tx_id"),
    t.payments.c.branch_id == bindparam("_branch_id"),
)
_LOCK_BY_BRANCH = _BY_BRANCH.with_for_update()


# The columns a payment is created with and that nothing changes afterwards: save() never
# writes them and refuses a change of one, so a row holds the values a copy of its payment has
# for these as long as it exists. The guards below need not compare them (issue 13: 15 of the
# 38 parameters of each of the three guarded statements of a posting, the longest texts among
# them): they still find the row only if it holds every value anything can change.
FIXED_COLUMNS = frozenset(
    {
        "global_tx_id",
        "branch_id",
        "owner_id",
        "amount_minor",
        "currency",
        "method",
        "provider",
        "fingerprint",
        "payment_method_token",
        "description",
        "email",
        "return_url",
        "cancel_url",
        "authorize_key",
        "created_at",
    }
)
# The columns a guard compares: the id, then every column that may change.
GUARDED_COLUMNS = tuple(c.name for c in t.payments.c if c.name not in FIXED_COLUMNS)


def _still_stored(prefix: str) -> Select[Any]:
    """The payment, locked, only if it still holds every value given (`<prefix><column>`) of
    the columns that may change (GUARDED_COLUMNS). Its id by `=`: IS NOT DISTINCT FROM uses no
    index, and would scan the whole table."""
    columns = [t.payments.c[name] for name in GUARDED_COLUMNS]
    values = {c.name: bindparam(f"{prefix}{c.name}", type_=c.type) for c in columns}
    return (
        select(t.payments.c.id)
        .where(
            t.payments.c.id == values["id"],
            *(
                column.is_not_distinct_from(values[column.name])
                for column in columns
                if column.name != "id"
            ),
        )
        .with_for_update()
    )


# The guard of a unit of work that assumed the payment (SqlPaymentRepository.assume), and the
# same check as the condition of another guard (`stored_as`, e.g. a barrier row's insert-first;
# its own parameters are named `g_*`).
_STILL_STORED = _still_stored("g_")
_STORED_AS = _still_stored("s_")
# Their parameters' names, and the guarded values of a payment's row values in the same order:
# a guard's parameters are zipped in C, not built by a comprehension that formats 23 names per
# call (issue 13: ~3-5 us and one Python call less per guard, three guards per posting).
_STILL_STORED_NAMES = tuple(f"g_{c}" for c in GUARDED_COLUMNS)
_STORED_AS_NAMES = tuple(f"s_{c}" for c in GUARDED_COLUMNS)
_guarded_values = itemgetter(*GUARDED_COLUMNS)
_BY_INTENT = select(t.payments).where(t.payments.c.provider_payment_id == bindparam(_KEY))
_BY_CHECKOUT = select(t.payments).where(t.payments.c.provider_checkout_id == bindparam(_KEY))
# An audit entry's creation time, the statement's (built once: WriteBatch knows its key).
_CREATED_NOW = {"created_at": func.now()}
# Each run hot (db.HotStatement): past SQLAlchemy's execution once warm (issue 13).
_GET_PAYMENT, _LOCK_PAYMENT, _BY_BRANCH, _LOCK_BY_BRANCH, _BY_INTENT, _BY_CHECKOUT = map(
    HotStatement,
    (_GET_PAYMENT, _LOCK_PAYMENT, _BY_BRANCH, _LOCK_BY_BRANCH, _BY_INTENT, _BY_CHECKOUT),
)


# The poller's leases, hot (db.HotStatement): in its autocommit unit of work a round then needs
# no SQLAlchemy Connection, as the other workers' (issue 13). Pending refunds, and settled ones
# whose coin hold the wallet has not followed yet: the states as literals (an expanding IN list
# cannot run hot, and it made SQLAlchemy set up a Connection for every round of the poller).
_LEASE_PAYMENTS = HotStatement(lease_due(t.payments, t.payments.c.next_poll_at, "next_poll_at"))
_LEASE_REFUNDS = HotStatement(
    lease_due(
        t.refunds,
        t.refunds.c.next_poll_at,
        "next_poll_at",
        or_(t.refunds.c.status == "PENDING", text("refunds.coins_state IN ('reserving', 'held')")),
    )
)


def _payment_values(p: Payment) -> dict[str, Any]:
    # Enums as str(member), their values as plain str (model.METHOD_OF; issue 13).
    return {
        "id": p.id,
        "global_tx_id": p.branch.global_tx_id,
        "branch_id": p.branch.branch_id,
        "owner_id": p.owner_id,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "method": str(p.method),
        "provider": p.provider,
        "state": str(p.state),
        "fingerprint": p.fingerprint,
        "payment_method_token": p.payment_method_token,
        "description": p.description,
        "email": p.email,
        "return_url": p.return_url,
        "cancel_url": p.cancel_url,
        "metadata": p.metadata,
        "captured_minor": p.captured_minor,
        "refunded_minor": p.refunded_minor,
        "provider_payment_id": p.provider_payment_id or None,
        "provider_checkout_id": p.provider_checkout_id or None,
        "provider_customer_id": p.provider_customer_id,
        "next_action_url": p.next_action_url,
        "failure_reason": p.failure_reason,
        "failure_code": p.failure_code,
        "decline_code": p.decline_code,
        "failure_message": p.failure_message,
        "authorize_key": p.authorize_key,
        "capture_key": p.capture_key,
        "void_key": p.void_key,
        "capture_amount_minor": p.capture_amount_minor,
        "pending_op": str(p.pending_op) if p.pending_op else None,
        "void_requested": p.void_requested,
        "void_reason": p.void_reason,
        "next_poll_at": p.next_poll_at,
        "poll_attempts": p.poll_attempts,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


def payment_from_row(row: Any) -> Payment:
    """A payment of a row with the payments table's columns (any other column is ignored)."""
    m = row._mapping
    return Payment(
        id=m["id"],
        branch=TccBranch(m["global_tx_id"], m["branch_id"]),
        owner_id=m["owner_id"],
        amount_minor=m["amount_minor"],
        currency=m["currency"],
        method=METHOD_OF[m["method"]],
        provider=m["provider"],
        state=STATE_OF[m["state"]],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        fingerprint=m["fingerprint"],
        payment_method_token=m["payment_method_token"],
        description=m["description"],
        email=m["email"],
        return_url=m["return_url"],
        cancel_url=m["cancel_url"],
        metadata=dict(m["metadata"] or {}),
        captured_minor=m["captured_minor"],
        refunded_minor=m["refunded_minor"],
        provider_payment_id=m["provider_payment_id"] or "",
        provider_checkout_id=m["provider_checkout_id"] or "",
        provider_customer_id=m["provider_customer_id"],
        next_action_url=m["next_action_url"],
        failure_reason=m["failure_reason"],
        failure_code=m["failure_code"],
        decline_code=m["decline_code"],
        failure_message=m["failure_message"],
        authorize_key=m["authorize_key"],
        capture_key=m["capture_key"],
        void_key=m["void_key"],
        capture_amount_minor=m["capture_amount_minor"],
        pending_op=PENDING_OP_OF[m["pending_op"]] if m["pending_op"] else None,
        void_requested=m["void_requested"],
        void_reason=m["void_reason"],
        next_poll_at=m["next_poll_at"],
        poll_attempts=m["poll_attempts"],
    )


class SqlPaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session
        # The stored values of each payment this unit of work read or wrote: save() sets only
        # the columns that differ (issue 13: less to send, encode and write, HOT updates).
        self._stored: dict[str, dict[str, Any]] = {}

    def _track(self, payment: Payment, values: dict[str, Any] | None = None) -> Payment:
        stored = dict(values or _payment_values(payment))
        # A copy of the metadata (strings to strings): a change made to the payment's own dict
        # in place must show.
        stored["metadata"] = dict(stored["metadata"])
        self._stored[payment.id] = stored
        return payment

    async def add(self, payment: Payment) -> None:
        values = _payment_values(payment)
        await self.s.batch.insert(t.payments, [dict(values)])  # sent with the next statement
        self._track(payment, values)

    async def _one(self, stmt: Any, params: dict[str, str]) -> Payment | None:
        row = (await self.s.execute(stmt, params)).first()
        return self._track(payment_from_row(row)) if row else None

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return await self._one(_LOCK_PAYMENT if for_update else _GET_PAYMENT, {_KEY: payment_id})

    def assume(self, payment: Payment, *, guard: bool = True) -> Payment:
        """A copy of the payment as this process last committed it, not read: the unit of work's
        writes go as one statement of its own that writes them only if the row, locked by it,
        still holds every one of these values that may change (GUARDED_COLUMNS: the others never
        do; hirepay_platform.write_batch `guard`), else StaleRow at commit (issue 13: recording
        a provider's answer costs one round trip, not BEGIN, SELECT ... FOR UPDATE, the writes
        and COMMIT). `guard=False`: the unit of work's
        guard is another one that checks `stored_as(payment)` (a Capture's barrier row)."""
        values = _payment_values(payment)
        if guard:
            self.s.batch.guard(
                _STILL_STORED, dict(zip(_STILL_STORED_NAMES, _guarded_values(values), strict=True))
            )
        self.s.batch.seen(t.payments, dict(values))
        return self._track(payment.snapshot(), values)

    def stored_as(self, payment: Payment) -> tuple[Select[Any], dict[str, Any]]:
        """The payment, locked, only if its row still holds every value of `payment` that may
        change (GUARDED_COLUMNS): a SELECT built once and its parameters, for another guard to
        check (`assume(guard=False)`)."""
        return _STORED_AS, dict(
            zip(_STORED_AS_NAMES, _guarded_values(_payment_values(payment)), strict=True)
        )

    async def get_by_branch(self, branch: TccBranch, *, for_update: bool = False) -> Payment | None:
        return await self._one(
            _LOCK_BY_BRANCH if for_update else _BY_BRANCH,
            {"_global_tx_id": branch.global_tx_id, "_branch_id": branch.branch_id},
        )

    async def find_by_provider(
        self, *, payment_intent_id: str = "", checkout_id: str = ""
    ) -> Payment | None:
        if payment_intent_id:
            return await self._one(_BY_INTENT, {_KEY: payment_intent_id})
        if checkout_id:
            return await self._one(_BY_CHECKOUT, {_KEY: checkout_id})
        return None

    async def save(self, payment: Payment) -> None:
        """Write the payment's changes: the columns that differ from what this unit of work read
        (every column that may change of a payment it did not read); nothing when none differs.
        A change of a column fixed at creation (FIXED_COLUMNS) is refused: the guards rely on
        those never changing."""
        values = _payment_values(payment)
        stored = self._stored.get(payment.id)
        if stored is None:
            changed = {c: v for c, v in values.items() if c != "id" and c not in FIXED_COLUMNS}
        else:
            changed = {c: v for c, v in values.items() if c != "id" and stored[c] != v}
            if not FIXED_COLUMNS.isdisjoint(changed):
                fixed = ", ".join(sorted(FIXED_COLUMNS.intersection(changed)))
                raise ValueError(f"payment {payment.id}: {fixed} never change once created")
        if not changed:
            return
        await self.s.batch.update(
            t.payments, {"id": payment.id, **changed}
        )  # sent with the next statement
        self._track(payment, values)

    async def list_by_states(
        self,
        states: frozenset[str],
        subsystem: str,
        after_id: str,
        limit: int,
        global_tx_ids: frozenset[str] = frozenset(),
        updated_since: datetime | None = None,
    ) -> list[Payment]:
        stmt = select(t.payments).where(t.payments.c.id > after_id)
        if updated_since is not None:
            # The auditor's incremental round: what changed since (ix_payments_updated_at).
            stmt = stmt.where(t.payments.c.updated_at >= updated_since)
        if global_tx_ids:
            stmt = stmt.where(t.payments.c.global_tx_id.in_(sorted(global_tx_ids)))
        if states:
            # Named literally, so that a generic plan too proves the auditor's in-flight read
            # within ix_payments_not_final (migration 0016; a bound list implies nothing).
            listed = bindparam("states", sorted(states), expanding=True, literal_execute=True)
            stmt = stmt.where(t.payments.c.state.in_(listed))
        if subsystem:
            stmt = stmt.where(t.payments.c.metadata["subsystem"].astext == subsystem)
        stmt = stmt.order_by(t.payments.c.id).limit(limit)
        return [payment_from_row(r) for r in (await self.s.execute(stmt)).all()]

    async def recently_changed(self, limit: int) -> list[Payment]:
        stmt = select(t.payments).order_by(t.payments.c.updated_at.desc()).limit(limit)
        return [payment_from_row(r) for r in (await self.s.execute(stmt)).all()]

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Payment]:
        """Due payments, locked SKIP LOCKED and leased (next poll moved past the lease) in one
        statement, so replicas share them; oldest due first."""
        until = now + timedelta(seconds=lease_seconds)
        params = {"now": now, "limit": limit, "until": until}
        rows = (await self.s.execute(_LEASE_PAYMENTS, params)).all()
        return sorted((payment_from_row(r) for r in rows), key=lambda p: (p.created_at, p.id))


# --- refunds ----------------------------------------------------------------------------------


def _refund(row: Any) -> Refund:
    m = row._mapping
    return Refund(
        id=m["id"],
        payment_id=m["payment_id"],
        request_id=m["request_id"],
        amount_minor=m["amount_minor"],
        requested_minor=m["requested_minor"],
        currency=m["currency"],
        reason=m["reason"],
        status=RefundStatus(m["status"]),
        idempotency_key=m["idempotency_key"],
        provider_refund_id=m["provider_refund_id"] or "",
        failure_message=m["failure_message"],
        next_poll_at=m["next_poll_at"],
        poll_attempts=m["poll_attempts"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        coins=m["coins"],
        coins_state=CoinsState(m["coins_state"]),
    )


def _refund_values(r: Refund) -> dict[str, Any]:
    values = asdict(r)
    values["status"] = r.status.value
    values["coins_state"] = r.coins_state.value
    values["provider_refund_id"] = r.provider_refund_id or None
    return values


class SqlRefundRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, refund: Refund) -> None:
        await self.s.execute(insert(t.refunds).values(**_refund_values(refund)))

    async def get(self, refund_id: str, *, for_update: bool = False) -> Refund | None:
        stmt = select(t.refunds).where(t.refunds.c.id == refund_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.s.execute(stmt)).first()
        return _refund(row) if row else None

    async def get_by_request(self, payment_id: str, request_id: str) -> Refund | None:
        row = (
            await self.s.execute(
                select(t.refunds).where(
                    t.refunds.c.payment_id == payment_id, t.refunds.c.request_id == request_id
                )
            )
        ).first()
        return _refund(row) if row else None

    async def save(self, refund: Refund) -> None:
        values = _refund_values(refund)
        values.pop("id")
        await self.s.execute(update(t.refunds).where(t.refunds.c.id == refund.id).values(values))

    async def succeeded_total(self, payment_id: str) -> int:
        total = await self.s.scalar(
            select(func.coalesce(func.sum(t.refunds.c.amount_minor), 0)).where(
                t.refunds.c.payment_id == payment_id,
                t.refunds.c.status == RefundStatus.SUCCEEDED.value,
            )
        )
        return int(total or 0)

    async def list_for_payment(self, payment_id: str) -> list[Refund]:
        stmt = (
            select(t.refunds)
            .where(t.refunds.c.payment_id == payment_id)
            .order_by(t.refunds.c.created_at, t.refunds.c.id)
        )
        return [_refund(r) for r in (await self.s.execute(stmt)).all()]

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Refund]:
        """Pending refunds whose poll is due, locked SKIP LOCKED and leased in one statement."""
        until = now + timedelta(seconds=lease_seconds)
        params = {"now": now, "limit": limit, "until": until}
        rows = (await self.s.execute(_LEASE_REFUNDS, params)).all()
        return sorted((_refund(r) for r in rows), key=lambda r: (r.created_at, r.id))


class SqlAuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, *entries: AuditEntry) -> None:
        """Append entries in order: several go to the server together (one statement)."""
        rows = [
            {
                "payment_id": entry.payment_id or None,
                "transaction_id": entry.transaction_id or None,
                "action": entry.action,
                "actor": entry.actor,
                "reason": entry.reason,
                "details": entry.details,
            }
            for entry in entries
        ]
        # Sent with the next statement of the transaction (hirepay_platform/write_batch.py).
        await self.s.batch.insert(t.audit_log, rows, _CREATED_NOW)

    async def _list(self, where: Any) -> list[AuditEntry]:
        rows = (
            await self.s.execute(select(t.audit_log).where(where).order_by(t.audit_log.c.id))
        ).all()
        return [
            AuditEntry(
                action=r.action,
                actor=r.actor,
                reason=r.reason,
                details=dict(r.details or {}),
                payment_id=r.payment_id or "",
                transaction_id=r.transaction_id or "",
                id=r.id,
                created_at=r.created_at,
            )
            for r in rows
        ]

    async def list_for_payment(self, payment_id: str) -> list[AuditEntry]:
        return await self._list(t.audit_log.c.payment_id == payment_id)

    async def list_for_transaction(self, transaction_id: str) -> list[AuditEntry]:
        return await self._list(t.audit_log.c.transaction_id == transaction_id)
