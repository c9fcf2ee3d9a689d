"""PostgreSQL repositories: rows <-> domain objects, every query in one place. Never commit."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payments.adapters import snapshots
from payments.adapters import tables as t
from payments.domain.model import (
    AuditEntry,
    EventType,
    Method,
    OutboxEvent,
    Payment,
    PaymentState,
    PendingOp,
    Refund,
    RefundStatus,
    TccBranch,
    TccOp,
    Transaction,
    TxnStatus,
    UserType,
)

# Writers of the outbox take this lock until commit, so cursors become visible in order and a
# reader resuming "after cursor N" can never skip an event committed late with a smaller cursor.
OUTBOX_LOCK_KEY = 7_310_001


# --- payments -------------------------------------------------------------------------------


def _payment_values(p: Payment) -> dict[str, Any]:
    return {
        "id": p.id,
        "global_tx_id": p.branch.global_tx_id,
        "branch_id": p.branch.branch_id,
        "owner_id": p.owner_id,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "method": p.method.value,
        "provider": p.provider,
        "state": p.state.value,
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
        "pending_op": p.pending_op.value if p.pending_op else None,
        "void_requested": p.void_requested,
        "void_reason": p.void_reason,
        "next_poll_at": p.next_poll_at,
        "poll_attempts": p.poll_attempts,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


def _payment(row: Any) -> Payment:
    m = row._mapping
    return Payment(
        id=m["id"],
        branch=TccBranch(m["global_tx_id"], m["branch_id"]),
        owner_id=m["owner_id"],
        amount_minor=m["amount_minor"],
        currency=m["currency"],
        method=Method(m["method"]),
        provider=m["provider"],
        state=PaymentState(m["state"]),
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
        pending_op=PendingOp(m["pending_op"]) if m["pending_op"] else None,
        void_requested=m["void_requested"],
        void_reason=m["void_reason"],
        next_poll_at=m["next_poll_at"],
        poll_attempts=m["poll_attempts"],
    )


class SqlPaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, payment: Payment) -> None:
        await self.s.execute(insert(t.payments).values(**_payment_values(payment)))

    async def _one(self, where: Any, for_update: bool) -> Payment | None:
        stmt = select(t.payments).where(where)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.s.execute(stmt)).first()
        return _payment(row) if row else None

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return await self._one(t.payments.c.id == payment_id, for_update)

    async def get_by_branch(self, branch: TccBranch, *, for_update: bool = False) -> Payment | None:
        return await self._one(
            and_(
                t.payments.c.global_tx_id == branch.global_tx_id,
                t.payments.c.branch_id == branch.branch_id,
            ),
            for_update,
        )

    async def find_by_provider(
        self, *, payment_intent_id: str = "", checkout_id: str = ""
    ) -> Payment | None:
        if payment_intent_id:
            return await self._one(t.payments.c.provider_payment_id == payment_intent_id, False)
        if checkout_id:
            return await self._one(t.payments.c.provider_checkout_id == checkout_id, False)
        return None

    async def save(self, payment: Payment) -> None:
        values = _payment_values(payment)
        values.pop("id")
        await self.s.execute(update(t.payments).where(t.payments.c.id == payment.id).values(values))

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Payment]:
        stmt = (
            select(t.payments)
            .where(t.payments.c.next_poll_at <= now)
            .order_by(t.payments.c.next_poll_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = (await self.s.execute(stmt)).all()
        leased = [_payment(r) for r in rows]
        if leased:
            until = now + timedelta(seconds=lease_seconds)
            await self.s.execute(
                update(t.payments)
                .where(t.payments.c.id.in_([p.id for p in leased]))
                .values(next_poll_at=until)
            )
            for p in leased:
                p.next_poll_at = until
        return leased


class SqlBarrierRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def insert(self, branch: TccBranch, op: TccOp, origin: TccOp, fingerprint: str) -> bool:
        stmt = (
            insert(t.tcc_barriers)
            .values(
                global_tx_id=branch.global_tx_id,
                branch_id=branch.branch_id,
                op=op.value,
                origin=origin.value,
                fingerprint=fingerprint,
                created_at=func.now(),
            )
            .on_conflict_do_nothing()
            .returning(t.tcc_barriers.c.op)
        )
        return (await self.s.execute(stmt)).first() is not None

    async def get(self, branch: TccBranch, op: TccOp) -> tuple[TccOp, str] | None:
        row = (
            await self.s.execute(
                select(t.tcc_barriers.c.origin, t.tcc_barriers.c.fingerprint).where(
                    t.tcc_barriers.c.global_tx_id == branch.global_tx_id,
                    t.tcc_barriers.c.branch_id == branch.branch_id,
                    t.tcc_barriers.c.op == op.value,
                )
            )
        ).first()
        return (TccOp(row.origin), row.fingerprint) if row else None


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
    )


def _refund_values(r: Refund) -> dict[str, Any]:
    values = asdict(r)
    values["status"] = r.status.value
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

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Refund]:
        stmt = (
            select(t.refunds)
            .where(t.refunds.c.next_poll_at <= now, t.refunds.c.status == "PENDING")
            .order_by(t.refunds.c.next_poll_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        leased = [_refund(r) for r in (await self.s.execute(stmt)).all()]
        if leased:
            until = now + timedelta(seconds=lease_seconds)
            await self.s.execute(
                update(t.refunds)
                .where(t.refunds.c.id.in_([r.id for r in leased]))
                .values(next_poll_at=until)
            )
        return leased


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


# --- provider events, outbox, audit -----------------------------------------------------------


class SqlEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def exists(self, event_id: str) -> bool:
        found = await self.s.scalar(
            select(t.provider_events.c.id).where(t.provider_events.c.event_id == event_id)
        )
        return found is not None

    async def add(
        self,
        *,
        provider: str,
        event_id: str,
        event_type: str,
        object_id: str,
        payload: dict[str, Any],
        applied: bool,
        provider_created_at: datetime,
        received_at: datetime,
    ) -> bool:
        stmt = (
            insert(t.provider_events)
            .values(
                provider=provider,
                event_id=event_id,
                event_type=event_type,
                object_id=object_id,
                payload=payload,
                applied=applied,
                provider_created_at=provider_created_at,
                received_at=received_at,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(t.provider_events.c.id)
        )
        return (await self.s.execute(stmt)).first() is not None


def _snapshot(event: OutboxEvent) -> dict[str, Any]:
    return snapshots.dump(event.payment, event.transaction)


class SqlOutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, event: OutboxEvent, *, callback: bool) -> None:
        await self.s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": OUTBOX_LOCK_KEY})
        await self.s.execute(
            insert(t.outbox).values(
                event_id=event.event_id,
                type=event.type.value,
                subsystem=event.subsystem,
                payment_id=event.payment.id if event.payment else None,
                transaction_id=event.transaction.id if event.transaction else None,
                snapshot=_snapshot(event),
                occurred_at=event.occurred_at,
                callback_next_at=event.occurred_at if callback else None,
            )
        )

    async def list_after(self, cursor: int, limit: int, subsystem: str = "") -> list[OutboxEvent]:
        stmt = select(t.outbox).where(t.outbox.c.cursor > cursor)
        if subsystem:
            stmt = stmt.where(t.outbox.c.subsystem == subsystem)
        stmt = stmt.order_by(t.outbox.c.cursor).limit(limit)
        return [_outbox(r) for r in (await self.s.execute(stmt)).all()]

    async def backlog(self) -> int:
        n = await self.s.scalar(
            select(func.count())
            .select_from(t.outbox)
            .where(t.outbox.c.callback_next_at.is_not(None))
        )
        return int(n or 0)

    async def lease_callbacks(
        self, now: datetime, limit: int, lease_seconds: float
    ) -> list[OutboxEvent]:
        stmt = (
            select(t.outbox)
            .where(t.outbox.c.callback_next_at <= now)
            .order_by(t.outbox.c.cursor)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = (await self.s.execute(stmt)).all()
        events = [_outbox(r) for r in rows]
        if events:
            await self.s.execute(
                update(t.outbox)
                .where(t.outbox.c.cursor.in_([e.cursor for e in events]))
                .values(
                    callback_next_at=now + timedelta(seconds=lease_seconds),
                    callback_attempts=t.outbox.c.callback_attempts + 1,
                )
            )
        return events

    async def callback_done(self, cursor: int, now: datetime) -> None:
        await self.s.execute(
            update(t.outbox)
            .where(t.outbox.c.cursor == cursor)
            .values(callback_next_at=None, callback_delivered_at=now)
        )

    async def callback_retry(self, cursor: int, next_at: datetime) -> None:
        await self.s.execute(
            update(t.outbox).where(t.outbox.c.cursor == cursor).values(callback_next_at=next_at)
        )

    async def callback_attempts(self, cursor: int) -> int:
        n = await self.s.scalar(
            select(t.outbox.c.callback_attempts).where(t.outbox.c.cursor == cursor)
        )
        return int(n or 0)


def _outbox(row: Any) -> OutboxEvent:
    m = row._mapping
    payment, txn = snapshots.load(m["snapshot"])
    return OutboxEvent(
        event_id=m["event_id"],
        type=EventType(m["type"]),
        occurred_at=m["occurred_at"],
        subsystem=m["subsystem"],
        payment=payment,
        transaction=txn,
        cursor=m["cursor"],
    )


class SqlAuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, entry: AuditEntry) -> None:
        await self.s.execute(
            insert(t.audit_log).values(
                payment_id=entry.payment_id or None,
                transaction_id=entry.transaction_id or None,
                action=entry.action,
                actor=entry.actor,
                reason=entry.reason,
                details=entry.details,
                created_at=func.now(),
            )
        )

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
