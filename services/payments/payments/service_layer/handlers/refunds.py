"""Refunds of captured payments: reserve on the locked payment row, call the provider, record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from hirepay_platform.ids import new_id
from hirepay_platform.tcc import IdempotencyMismatch
from payments.domain import commands, errors
from payments.domain.events import AuditEntry, EventType
from payments.domain.model import Payment
from payments.domain.provider import Declined, InvalidRequest, OutcomeUnknown, RefundState
from payments.domain.refunds import Refund, RefundStatus
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.handlers.shared import publish


@dataclass(frozen=True, slots=True)
class RefundResult:
    """A Refund's answer: the refund and the payment it reserved its amount on."""

    refund: Refund
    payment: Payment
    replayed: bool = False


async def refund(cmd: commands.Refund, deps: Deps, *, actor: str = "saga") -> RefundResult:
    """Refund a captured payment. The amount is reserved on the payment row (locked) before the
    provider call, so concurrent refunds can never exceed the capture; a refusal releases it."""
    if not cmd.request_id:
        raise errors.invalid("request_id", "is required")
    if cmd.amount_minor < 0:
        raise errors.invalid("amount_minor", "must not be negative")
    reason = cmd.reason[:200] or "requested_by_customer"
    async with deps.uow as uow:
        now = deps.clock()
        payment = await uow.payments.get(cmd.payment_id, for_update=True)
        if payment is None:
            raise errors.PaymentNotFound(cmd.payment_id)
        existing = await uow.refunds.get_by_request(payment.id, cmd.request_id)
        if existing is not None:
            if existing.requested_minor != cmd.amount_minor:
                raise IdempotencyMismatch(f"refund {cmd.request_id}", "amount_minor")
            return _refund_outcome(existing, payment, replayed=True)
        amount = payment.reserve_refund(cmd.amount_minor, now)
        ref = Refund(
            id=new_id("rfd"),
            payment_id=payment.id,
            request_id=cmd.request_id,
            amount_minor=amount,
            requested_minor=cmd.amount_minor,
            currency=payment.currency,
            reason=reason,
            status=RefundStatus.PENDING,
            idempotency_key=f"refund:{payment.id}:{cmd.request_id}",
            created_at=now,
            updated_at=now,
        )
        ref.next_poll_at = now + timedelta(seconds=deps.config.lease_seconds)
        await uow.refunds.add(ref)
        await uow.payments.save(payment)
        await uow.audit.add(
            AuditEntry(
                action="attempt",
                actor=actor,
                reason=f"refund requested: {reason}",
                details={
                    "refund_id": ref.id,
                    "request_id": cmd.request_id,
                    "amount_minor": str(amount),
                    "idempotency_key": ref.idempotency_key,
                },
                payment_id=payment.id,
            )
        )
        await uow.commit()
    ref, payment = await advance_refund(deps, ref, payment, actor=actor)
    return _refund_outcome(ref, payment, replayed=False)


def _refund_outcome(ref: Refund, payment: Payment, *, replayed: bool) -> RefundResult:
    """A refund's answer: the refund, or the error its recorded outcome means."""
    if ref.status is RefundStatus.FAILED:
        if (
            "exceed" in ref.failure_message.lower()
            or "already been refunded" in ref.failure_message
        ):
            raise errors.RefundExceedsCaptured(
                payment.id, ref.amount_minor, payment.refundable_minor
            )
        raise errors.PaymentNotRefundable(payment.id, payment.state.value, ref.failure_message)
    if ref.status is RefundStatus.PENDING and ref.failure_message and not replayed:
        meta = {"payment_id": payment.id, "refund_id": ref.id, "retry": "true"}
        if ref.failure_message.startswith("unavailable"):
            raise errors.ProviderUnavailable(
                "refund outcome unknown; being resolved", metadata=meta
            )
        raise errors.PaymentTimeout("refund outcome unknown; being resolved", metadata=meta)
    return RefundResult(ref, payment, replayed=replayed)


async def advance_refund(
    deps: Deps, ref: Refund, payment: Payment, *, actor: str
) -> tuple[Refund, Payment]:
    """Send (or replay, with the same key) a refund to the provider that took the payment and
    record what it says."""
    records: list[CallRecord] = []
    payment_id = payment.provider_payment_id
    outcome: str
    provider_refund = None
    message = ""
    try:
        provider = deps.providers.of_existing(payment.provider)
        provider_refund = await call(
            records,
            "refund",
            ref.idempotency_key,
            lambda: provider.refund(
                payment_id,
                ref.amount_minor,
                ref.reason,
                {"hirepay_refund_id": ref.id, "reason": ref.reason},
                ref.idempotency_key,
            ),
        )
        outcome = "failed" if provider_refund.state is RefundState.FAILED else "succeeded"
    except (InvalidRequest, Declined) as exc:
        outcome, message = "failed", exc.message
    except OutcomeUnknown as exc:
        outcome = "unknown"
        message = ("timeout: " if exc.timeout else "unavailable: ") + exc.message
    async with deps.uow as uow:
        now = deps.clock()
        payment = await uow.payments.get(ref.payment_id, for_update=True)
        stored = await uow.refunds.get(ref.id, for_update=True)
        assert payment is not None and stored is not None
        events: list[EventType] = []
        if stored.status is RefundStatus.PENDING:
            if outcome == "succeeded" and provider_refund is not None:
                stored.status = RefundStatus.SUCCEEDED
                stored.provider_refund_id = provider_refund.id
                stored.next_poll_at = None
                stored.failure_message = ""
                await uow.refunds.save(stored)
                total = await uow.refunds.succeeded_total(payment.id)
                events = payment.settle_refund(total, now)
                payment.failure_reason = ""
                metrics.REFUNDS.labels(stored.reason, "succeeded").inc()
                metrics.REFUNDED.labels(payment.currency).inc(stored.amount_minor)
            elif outcome == "failed":
                stored.status = RefundStatus.FAILED
                stored.failure_message = message or "the provider refused the refund"
                stored.next_poll_at = None
                payment.release_refund(stored.amount_minor, now)
                metrics.REFUNDS.labels(stored.reason, "failed").inc()
            else:
                stored.failure_message = message
                delay = min(deps.config.poll_max, deps.config.poll_base * 2**stored.poll_attempts)
                stored.poll_attempts += 1
                stored.next_poll_at = now + timedelta(seconds=delay)
            stored.updated_at = now
            await uow.refunds.save(stored)
            await uow.payments.save(payment)
        for record in records:
            await uow.audit.add(record.audit(actor, payment_id=payment.id))
        await uow.audit.add(
            AuditEntry(
                action="refund",
                actor=actor,
                reason=f"refund {stored.id} {stored.status.value.lower()}",
                details={
                    "refund_id": stored.id,
                    "amount_minor": str(stored.amount_minor),
                    "status": stored.status.value,
                    "refunded_minor": str(payment.refunded_minor),
                },
                payment_id=payment.id,
            )
        )
        await publish(uow, deps.config, events, now, payment=payment, refund=stored)
        await uow.commit()
    return stored, payment
