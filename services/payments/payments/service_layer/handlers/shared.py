"""Steps the payment use cases share: publishing settlement events, the error a recorded
outcome means, and the automatic refund of money settled after its Void."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from hirepay_platform.errors import HirepayError, ValidationError
from hirepay_platform.ids import new_id
from hirepay_platform.reasons import FailureReason
from payments.domain import errors, ledger
from payments.domain.credits import CreditGrant
from payments.domain.events import AuditEntry, EventType, OutboxEvent
from payments.domain.model import Payment, PaymentState, decline_error
from payments.domain.provider import ProviderErrorInfo
from payments.domain.refunds import Refund, RefundStatus
from payments.domain.transactions import Transaction
from payments.service_layer import metrics
from payments.service_layer.config import Policy
from payments.service_layer.ports import PaymentsUnitOfWork


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """A payment use case's answer: the payment (None after a lone Void) and how it came about."""

    payment: Payment | None
    replayed: bool = False
    null_compensation: bool = False


VOID_REFUND_REQUEST = "void"  # request id of the automatic refund of money settled after a Void


async def publish(
    uow: PaymentsUnitOfWork,
    config: Policy,
    events: list[EventType],
    now: datetime,
    *,
    payment: Payment | None = None,
    txn: Transaction | None = None,
    refund: Refund | None = None,
) -> None:
    """Write settlement events to the outbox, in the caller's transaction (call it last), with the
    ledger booking a capture or a succeeded `refund` of the payment owes (ESC-1, every cent)."""
    if payment is not None:
        events = await owe_booking(uow, events, now, payment, refund)
    await emit(uow, config, events, now, payment=payment, txn=txn)


async def owe_booking(
    uow: PaymentsUnitOfWork,
    events: list[EventType],
    now: datetime,
    payment: Payment,
    refund: Refund | None,
) -> list[EventType]:
    """Record the booking a captured payment or a succeeded refund owes the ledger, in the same
    local transaction as the settlement (insert-first on its id: recorded once); the booking
    worker posts it. A direct job payment's `payment.captured` waits for its booking (it carries
    the escrow the booking funds): the worker publishes it. Returns the events to publish now."""
    grant: CreditGrant | None = None
    if EventType.PAYMENT_CAPTURED in events:
        grant = CreditGrant.capture(payment, now)
    elif EventType.PAYMENT_REFUNDED in events and refund is not None:
        grant = CreditGrant.refund(payment, refund, now)
    if grant is not None:
        await uow.credit_grants.owe(grant)
    if ledger.purpose_of(payment.metadata) is ledger.Purpose.JOB_PAYMENT:
        return [e for e in events if e is not EventType.PAYMENT_CAPTURED]
    return events


async def emit(
    uow: PaymentsUnitOfWork,
    config: Policy,
    events: list[EventType],
    now: datetime,
    *,
    payment: Payment | None = None,
    txn: Transaction | None = None,
) -> None:
    """Write settlement events to the outbox as they are."""
    subsystem = (payment.subsystem if payment else "") or (txn.subsystem if txn else "")
    for event_type in events:
        await uow.outbox.add(
            OutboxEvent(
                event_id=new_id("evt"),
                type=event_type,
                occurred_at=now,
                subsystem=subsystem,
                payment=payment,
                transaction=txn,
            ),
            callback=subsystem in config.callback_subsystems,
        )
        if event_type is EventType.PAYMENT_CAPTURED and payment is not None:
            # Counted once committed: a unit of work that is redone (StaleRow) counts once.
            uow.after_commit(
                functools.partial(
                    metrics.child(metrics.REVENUE, payment.currency).inc, payment.captured_minor
                )
            )


def outcome_error(payment: Payment) -> HirepayError | None:
    """The error a caller of Authorize gets for the payment's recorded outcome, if any."""
    meta = {"payment_id": payment.id}
    if payment.state is PaymentState.UNKNOWN:
        if not payment.failure_reason:  # the first call has not come back yet
            return errors.OperationInProgress(payment.id, "authorize")
        if payment.failure_reason == FailureReason.PAYMENT_PROVIDER_UNAVAILABLE:
            return errors.ProviderUnavailable(
                "the payment provider is unavailable; the payment is being resolved",
                metadata={**meta, "retry": "true"},
            )
        return errors.PaymentTimeout(
            "the payment provider did not respond in time; the payment is being resolved",
            metadata={**meta, "retry": "true"},
        )
    if payment.state is PaymentState.VOIDED and payment.void_requested:
        return errors.PaymentVoided(
            payment.branch.global_tx_id, payment.branch.branch_id, payment.id
        )
    if payment.state is not PaymentState.FAILED:
        return None
    info = ProviderErrorInfo(payment.failure_code, payment.decline_code, payment.failure_message)
    if payment.failure_reason in (
        FailureReason.PAYMENT_DECLINED,
        FailureReason.INSUFFICIENT_FUNDS,
    ):
        return decline_error(info, payment.id)
    if payment.failure_reason == FailureReason.INVALID_PAYMENT_DETAILS:
        return errors.InvalidPaymentDetails(
            payment.failure_message or "the payment method is invalid",
            metadata={**meta, "code": payment.failure_code, "field": "payment_method_token"},
        )
    if payment.failure_reason == FailureReason.VALIDATION_FAILED:
        return ValidationError(payment.failure_message or "the provider refused the request")
    return errors.PaymentDeclined(
        payment.failure_message or "the payment failed",
        metadata={**meta, "code": payment.failure_code, "decline_code": payment.decline_code},
    )


async def refund_if_voided(uow: PaymentsUnitOfWork, p: Payment, now: datetime, actor: str) -> None:
    """A Void was accepted but the money settled anyway (a bank transfer cannot be cancelled
    while processing): schedule a full refund, in the caller's transaction, for the poller."""
    if not (p.void_requested and p.state is PaymentState.CAPTURED and p.refundable_minor > 0):
        return
    if await uow.refunds.get_by_request(p.id, VOID_REFUND_REQUEST) is not None:
        return
    amount = p.reserve_refund(0, now)
    ref = Refund(
        id=new_id("rfd"),
        payment_id=p.id,
        request_id=VOID_REFUND_REQUEST,
        amount_minor=amount,
        requested_minor=0,
        currency=p.currency,
        reason="voided_after_settlement",
        status=RefundStatus.PENDING,
        idempotency_key=f"refund:{p.id}:{VOID_REFUND_REQUEST}",
        created_at=now,
        updated_at=now,
        next_poll_at=now,
    )
    await uow.refunds.add(ref)
    await uow.audit.add(
        AuditEntry(
            action="attempt",
            actor=actor,
            reason="refund of money settled after its void",
            details={
                "refund_id": ref.id,
                "amount_minor": str(amount),
                "idempotency_key": ref.idempotency_key,
            },
            payment_id=p.id,
        )
    )
