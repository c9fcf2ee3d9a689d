"""Try / Confirm / Cancel: the payment side of the two-phase handshake (Authorize, Capture, Void).

The guard is the platform's TCC barrier, written insert-first in the same local transaction as the
payment: a repeat is a replay (same request or IDEMPOTENCY_MISMATCH), a Void before its Authorize is
a null compensation, and an Authorize after its Void reserves nothing (hanging Try).
"""

from __future__ import annotations

from dataclasses import dataclass

from hirepay_platform import money
from hirepay_platform.errors import Conflict, HirepayError, StaleRow
from hirepay_platform.fingerprint import Fingerprint, encode, fingerprint
from hirepay_platform.ids import new_id
from hirepay_platform.tcc import (
    CancelGate,
    ConfirmGate,
    TccBranch,
    TccOp,
    TryGate,
    cancelled_before_try,
    enter_cancel,
    enter_confirm,
    enter_try,
)
from payments.domain import commands, errors
from payments.domain.events import AuditEntry
from payments.domain.model import TAKEN, Method, Payment, PaymentState, PendingOp, validate_metadata
from payments.domain.provider import PaymentProvider, looks_like_card_number
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.engine import drive
from payments.service_layer.handlers.shared import PaymentResult, outcome_error
from payments.service_layer.ports import PaymentsUnitOfWork

# Each state's outcome label of PAYMENT_ATTEMPTS, made once (not .value.lower() per Try, issue 13).
_OUTCOMES = {state: state.value.lower() for state in PaymentState}


def _method(cmd: commands.Authorize, provider: PaymentProvider) -> Method:
    if cmd.method is None:
        raise errors.invalid("method", "is required (CARD, BANK_TRANSFER or CHECKOUT)")
    if cmd.method is not Method.CHECKOUT and not cmd.payment_method_token:
        raise errors.invalid("payment_method_token", "is required for CARD and BANK_TRANSFER")
    token = cmd.payment_method_token
    # SAQ A (API-7): only the provider's own tokens, never anything that could be a card number.
    if token and (looks_like_card_number(token) or not provider.accepts_payment_method(token)):
        raise errors.InvalidPaymentDetails(
            f"payment_method_token must be a {provider.name} payment method token"
            " (never a card number)",
            metadata={"field": "payment_method_token"},
        )
    if cmd.method is Method.CHECKOUT and not cmd.return_url:
        raise errors.invalid("return_url", "is required for CHECKOUT")
    return cmd.method


@dataclass(frozen=True, slots=True)
class _Try:
    """An Authorize, validated."""

    cmd: commands.Authorize
    branch: TccBranch
    provider: str
    method: Method
    currency: str
    metadata: dict[str, str]
    print_: Fingerprint


def _new_payment(t: _Try, deps: Deps) -> Payment:
    """The payment a first Try records, leased for its provider call."""
    cmd, branch, now = t.cmd, t.branch, deps.clock()
    payment = Payment(
        id=new_id("pay"),
        branch=branch,
        owner_id=cmd.owner_id,
        amount_minor=cmd.amount_minor,
        currency=t.currency,
        method=t.method,
        provider=t.provider,
        state=PaymentState.UNKNOWN,
        created_at=now,
        updated_at=now,
        fingerprint=encode(t.print_),
        payment_method_token=cmd.payment_method_token,
        description=cmd.description[:500],
        email=cmd.email,
        return_url=cmd.return_url,
        cancel_url=cmd.cancel_url,
        metadata=t.metadata,
        authorize_key=branch.key("authorize"),
        pending_op=PendingOp.AUTHORIZE,
    )
    payment.lease(now, deps.config.lease_seconds)
    return payment


async def _add_attempt(
    uow: PaymentsUnitOfWork, payment: Payment, cmd: commands.Authorize, actor: str
) -> None:
    await uow.payments.add(payment)
    await uow.audit.add(
        AuditEntry(
            action="attempt",
            actor=actor,
            reason="authorize requested",
            details={
                "request_id": cmd.request_id,
                "amount_minor": str(cmd.amount_minor),
                "currency": payment.currency,
                "method": str(payment.method),
                "idempotency_key": payment.authorize_key,
                "owner_id": cmd.owner_id,
            },
            payment_id=payment.id,
        )
    )


async def _enter_again(t: _Try, deps: Deps, actor: str) -> tuple[Payment, bool]:
    """A Try whose branch has a barrier row, through the barrier as usual: the payment and whether
    it is a replay (a row gone since, e.g. released, makes it a first Try after all)."""
    branch = t.branch
    async with deps.uow as uow:
        gate = await enter_try(uow.barriers, branch, t.print_)
        if gate is TryGate.CANCELLED:
            raise errors.PaymentVoided(branch.global_tx_id, branch.branch_id)
        if gate is TryGate.REPLAY:
            payment = await uow.payments.get_by_branch(branch)
            if payment is None:
                raise Conflict(f"branch {branch} is being written; retry")
            return payment, True
        payment = _new_payment(t, deps)
        await _add_attempt(uow, payment, t.cmd, actor)
        await uow.commit()
    return payment, False


async def authorize(cmd: commands.Authorize, deps: Deps, *, actor: str = "saga") -> PaymentResult:
    """Try: reserve the amount with the provider (manual capture), once per branch.

    A repeat answers with the stored outcome; a Try after its branch's Cancel reserves nothing."""
    branch = cmd.branch.validated()
    provider = deps.providers.for_new(cmd.provider)
    method = _method(cmd, provider)
    money.validate_amount(cmd.amount_minor, field="amount.amount_minor")
    currency = money.validate_unit(cmd.currency, field="amount.currency", cash_only=True)
    if not cmd.owner_id:
        raise errors.invalid("owner_id", "is required")
    metadata = validate_metadata(cmd.metadata)
    # Fields in name order: a reused branch is refused naming the first field that differs.
    print_ = fingerprint(
        {
            "amount": [cmd.amount_minor, currency],
            "method": str(method),
            "owner_id": cmd.owner_id,
            "payment_method_token": cmd.payment_method_token,
        }
    )
    new_try = _Try(cmd, branch, provider.name, method, currency, metadata, print_)
    try:
        # A first Try (the usual case): its barrier row, the payment and its audit entry as one
        # statement of its own that writes them only if the barrier row is new (issue 13).
        async with deps.uow as uow:
            payment = _new_payment(new_try, deps)
            uow.barriers.insert_with_batch(branch, TccOp.TRY, TccOp.TRY, print_)
            await _add_attempt(uow, payment, cmd, actor)
            await uow.commit()
        replay = False
    except StaleRow:
        # The branch has its barrier row already: a replay, a reused branch or a late Try.
        payment, replay = await _enter_again(new_try, deps, actor)
    if replay:
        error = outcome_error(payment)
        if error is not None:
            raise error
        return PaymentResult(payment, replayed=True)
    step = await drive(deps, payment, actor=actor, direct=True)
    p = step.payment
    metrics.count(metrics.PAYMENT_ATTEMPTS, method, _OUTCOMES[p.state], p.failure_reason or "none")
    error = outcome_error(p)
    if error is not None:
        raise error
    deps.in_flight.recorded(p)  # its Confirm then needs no read of it (_capture_first)
    return PaymentResult(p)


async def capture(cmd: commands.Capture, deps: Deps, *, actor: str = "saga") -> PaymentResult:
    """Confirm: capture the authorization (all, or part), once per branch."""
    branch = cmd.branch.validated()
    if cmd.amount_minor < 0:
        raise errors.invalid("amount_minor", "must not be negative")
    print_ = fingerprint({"amount_minor": cmd.amount_minor})
    try:
        payment = await _capture_first(cmd, deps, branch, print_, actor)
    except StaleRow:
        payment = None  # the payment changed since it was read, or the branch has its row
    if payment is None:
        result = await _capture_locked(cmd, deps, branch, print_, actor)
        if isinstance(result, PaymentResult):
            return result
        payment = result
    step = await drive(deps, payment, actor=actor, direct=True)
    if step.refused is not None and step.payment.state not in TAKEN:
        raise errors.PaymentNotCapturable(
            step.payment.id, step.payment.state.value, step.refused.message
        )
    return _capture_outcome(step.payment, replayed=False)


def _request_capture(payment: Payment, cmd: commands.Capture, deps: Deps) -> None:
    """The capture requested on the payment, leased for its provider call (a payment that may
    not be captured raises, unchanged)."""
    now = deps.clock()
    payment.request_capture(cmd.amount_minor, now)
    payment.lease(now, deps.config.lease_seconds)


async def _save_capture(
    uow: PaymentsUnitOfWork, payment: Payment, cmd: commands.Capture, actor: str
) -> None:
    await uow.payments.save(payment)
    await uow.audit.add(
        AuditEntry(
            action="attempt",
            actor=actor,
            reason="capture requested",
            details={
                "request_id": cmd.request_id,
                "amount_minor": str(payment.capture_amount_minor),
                "idempotency_key": payment.capture_key,
            },
            payment_id=payment.id,
        )
    )


async def _capture_first(
    cmd: commands.Capture, deps: Deps, branch: TccBranch, print_: Fingerprint, actor: str
) -> Payment | None:
    """A first Confirm of an authorized payment (the usual case) in two round trips instead of
    five (one when this process recorded its Try: in_flight.take_recorded): the payment read
    (no lock, before any BEGIN), then its barrier row, the capture
    requested and its audit entry as one statement of its own that writes them only if the
    barrier row is new and the payment row, locked by it, is still as read (issue 13). The
    payment, or None if this does not apply (then nothing is written); StaleRow if the statement
    wrote nothing. Either way the Confirm goes the usual way (`_capture_locked`): a replay, a
    reused branch, a Confirm after Cancel or of a payment in another state answer as they do
    there, and this path only ever writes what that one writes for a first Confirm."""
    async with deps.uow as uow:
        # The payment as this process's Try committed it, when it did (no read, one round trip:
        # the guard below checks the row still holds it, as it checks a read one).
        read = deps.in_flight.take_recorded(branch) or await uow.payments.get_by_branch(branch)
        if read is None or read.state in TAKEN:
            return None
        payment = uow.payments.assume(read, guard=False)
        try:
            _request_capture(payment, cmd, deps)
        except HirepayError:
            return None  # refused (voided, not authorized, too much) after the barrier's checks
        uow.barriers.insert_with_batch(
            branch, TccOp.CONFIRM, TccOp.CONFIRM, print_, only_if=uow.payments.stored_as(read)
        )
        await _save_capture(uow, payment, cmd, actor)
        await uow.commit()
    return payment


async def _capture_locked(
    cmd: commands.Capture, deps: Deps, branch: TccBranch, print_: Fingerprint, actor: str
) -> Payment | PaymentResult:
    """A Confirm through the barrier and the payment's lock, in one transaction: the payment whose
    capture it requested, or the answer when there is nothing to ask the provider."""
    async with deps.uow as uow:
        if await enter_confirm(uow.barriers, branch, print_) is ConfirmGate.REPLAY:
            payment = await uow.payments.get_by_branch(branch)
            if payment is None:
                raise Conflict(f"branch {branch} is being written; retry")
            return _capture_outcome(payment, replayed=True)
        payment = await uow.payments.get_by_branch(branch, for_update=True)
        if payment is None:
            if await cancelled_before_try(uow.barriers, branch):
                raise errors.PaymentVoided(branch.global_tx_id, branch.branch_id)
            raise errors.PaymentNotFound(str(branch))
        if payment.state in TAKEN and not payment.void_requested:
            # An automatic payment (bank transfer) already settled: confirming it is a success.
            await uow.commit()
            return PaymentResult(payment)
        _request_capture(payment, cmd, deps)
        await _save_capture(uow, payment, cmd, actor)
        await uow.commit()
    return payment


def _capture_outcome(payment: Payment, *, replayed: bool) -> PaymentResult:
    if payment.state in TAKEN:
        return PaymentResult(payment, replayed=replayed)
    if payment.pending_op is PendingOp.CAPTURE and payment.state is PaymentState.AUTHORIZED:
        raise errors.OperationInProgress(payment.id, "capture")
    if payment.state is PaymentState.UNKNOWN:
        raise outcome_error(payment) or errors.PaymentTimeout("capture outcome unknown")
    if payment.state is PaymentState.VOIDED:
        raise errors.PaymentVoided(
            payment.branch.global_tx_id, payment.branch.branch_id, payment.id
        )
    raise errors.PaymentNotCapturable(payment.id, payment.state.value)


async def void(cmd: commands.Void, deps: Deps, *, actor: str = "saga") -> PaymentResult:
    """Cancel: release the authorization. A Void before its Authorize is recorded and succeeds
    doing nothing (and makes a late Authorize refuse). A Void never fails because the provider is
    slow: it is recorded, and the poller completes it (then payment.voided is published)."""
    branch = cmd.branch.validated()
    async with deps.uow as uow:
        now = deps.clock()
        gate = await enter_cancel(uow.barriers, branch)
        if gate is CancelGate.NULL_COMPENSATION:
            await uow.commit()
            return PaymentResult(None, null_compensation=True)
        if gate is CancelGate.REPLAY:
            payment = await uow.payments.get_by_branch(branch)
            return PaymentResult(payment, replayed=True, null_compensation=payment is None)
        payment = await uow.payments.get_by_branch(branch, for_update=True)
        if payment is None:
            raise HirepayError(
                f"branch {branch} has a Try but no payment", reason="TCC_INCONSISTENT"
            )
        must_call = payment.request_void(cmd.reason[:500], now)
        in_flight = (
            payment.pending_op is PendingOp.AUTHORIZE
            and payment.next_poll_at is not None
            and payment.next_poll_at > now
        )
        if must_call and not in_flight:
            payment.lease(now, deps.config.lease_seconds)
        await uow.payments.save(payment)
        await uow.audit.add(
            AuditEntry(
                action="attempt",
                actor=actor,
                reason=f"void requested: {cmd.reason[:200]}",
                details={"request_id": cmd.request_id, "idempotency_key": payment.void_key},
                payment_id=payment.id,
            )
        )
        await uow.commit()
    if must_call and not in_flight:
        payment = (await drive(deps, payment, actor=actor, direct=True)).payment
    return PaymentResult(payment)
