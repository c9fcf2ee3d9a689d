"""Read-side use cases: a payment, by id or branch, its audit trail and the settlement events."""

from __future__ import annotations

from hirepay_platform.tcc import TccBranch, cancelled_before_try
from payments.domain import errors
from payments.domain.events import AuditEntry, OutboxEvent
from payments.domain.model import Payment
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.shared import PaymentResult


async def get_payment(payment_id: str, deps: Deps) -> Payment:
    async with deps.uow as uow:
        payment = await uow.payments.get(payment_id)
    if payment is None:
        raise errors.PaymentNotFound(payment_id)
    return payment


async def get_payment_by_branch(branch: TccBranch, deps: Deps) -> PaymentResult:
    branch = branch.validated()
    async with deps.uow as uow:
        payment = await uow.payments.get_by_branch(branch)
        if payment is not None:
            return PaymentResult(payment)
        null_compensation = await cancelled_before_try(uow.barriers, branch)
    if null_compensation:
        return PaymentResult(None, null_compensation=True)
    raise errors.PaymentNotFound(str(branch))


async def list_attempts(subject_id: str, deps: Deps) -> list[AuditEntry]:
    """The audit trail of a payment (pay_...) or of a subscription transaction (txn_...)."""
    async with deps.uow as uow:
        if subject_id.startswith("txn_"):
            if await uow.transactions.get(subject_id) is None:
                raise errors.TransactionNotFound(subject_id)
            return await uow.audit.list_for_transaction(subject_id)
        if await uow.payments.get(subject_id) is None:
            raise errors.PaymentNotFound(subject_id)
        return await uow.audit.list_for_payment(subject_id)


async def settlement_events_after(
    deps: Deps, cursor: int, *, limit: int = 200, subsystem: str = ""
) -> list[OutboxEvent]:
    """Committed settlement events after a cursor, oldest first."""
    if cursor < 0:
        raise errors.invalid("after_cursor", "must not be negative")
    async with deps.uow as uow:
        return await uow.outbox.list_after(cursor, limit, subsystem)
