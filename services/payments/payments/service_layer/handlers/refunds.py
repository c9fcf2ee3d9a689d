"""Refunds of captured payments: reserve on the locked payment row, call the provider, record.

A payment that issued coins (a coin purchase, a direct job payment; ESC-3, ESC-5) gets its cash
back only with the coins it bought: before the provider call the refund holds those coins on the
buyer's coin wallet (the wallet's TCC handshake, branch `refund:<refund id>`), and a refund whose
coins are spent or held elsewhere is refused (COINS_NOT_AVAILABLE) with nothing sent. The hold is
posted back to coin issuance when the provider refunds, released when it refuses; a crash between
the two is finished by the poller (the refund stays leased while its coins are owed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform.errors import HirepayError, Unavailable
from hirepay_platform.ids import new_id
from hirepay_platform.reasons import FailureReason
from hirepay_platform.tcc import IdempotencyMismatch
from payments.domain import commands, errors, ledger
from payments.domain.events import AuditEntry, EventType
from payments.domain.model import Payment
from payments.domain.provider import Declined, InvalidRequest, OutcomeUnknown, RefundState
from payments.domain.refunds import CoinsState, Refund, RefundStatus
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.handlers.shared import publish
from payments.service_layer.ports import CreditsLedger

log = logging.getLogger(__name__)


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
        coins = 0
        if ledger.issues_coins(payment.metadata):
            coins = ledger.coins_to_take_back(payment.metadata, payment.captured_minor, amount)
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
            coins=coins,
            coins_state=CoinsState.RESERVING if coins else CoinsState.NONE,
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
                    "coins": str(coins),
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
    if ref.status is RefundStatus.FAILED and ref.failure_message.startswith(COINS_REFUSED):
        raise errors.CoinsNotAvailable(payment.id, ref.coins, ref.failure_message)
    if ref.status is RefundStatus.PENDING and ref.coins_state is CoinsState.RESERVING:
        meta = {"payment_id": payment.id, "refund_id": ref.id, "retry": "true"}
        raise Unavailable("the wallet did not hold the coins yet; being resolved", metadata=meta)
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


COINS_REFUSED = "coins_not_available"


async def advance_refund(
    deps: Deps, ref: Refund, payment: Payment, *, actor: str
) -> tuple[Refund, Payment]:
    """Take a refund as far as it goes: its coins held, the provider asked, the coin hold
    posted or released. A refund made at the provider (succeeded already) holds and posts its
    coins the same way, or records them short when they are not there."""
    if ref.status is RefundStatus.SUCCEEDED and ref.coins_state is CoinsState.RESERVING:
        ref = await _hold_coins_refunded_at_provider(deps, ref, payment, actor=actor)
    if ref.status is RefundStatus.PENDING and ref.coins_state is CoinsState.RESERVING:
        ref, payment = await _hold_coins(deps, ref, payment, actor=actor)
    if ref.status is RefundStatus.PENDING and ref.coins_state is not CoinsState.RESERVING:
        ref, payment = await _ask_provider(deps, ref, payment, actor=actor)
    if ref.status is not RefundStatus.PENDING and ref.coins_owed:
        ref = await _settle_coins(deps, ref, actor=actor)
    return ref, payment


def _coin_ledger(deps: Deps) -> CreditsLedger:
    if deps.ledger is None:
        raise Unavailable("refunds of coins need the wallet (PAYMENTS_WALLET_TARGET is empty)")
    return deps.ledger


async def _try_hold_coins(deps: Deps, ref: Refund, owner_id: str) -> str:
    """The coin hold's Try: "" when held, the wallet's refusal when the coins are not there
    (spent, held by an offer or a withdrawal, or the branch cancelled first); any other failure
    (the wallet not answering) schedules a retry by the poller and is raised."""
    try:
        await _coin_ledger(deps).hold_coins(ref, owner_id)
    except HirepayError as exc:
        if exc.reason not in (FailureReason.INSUFFICIENT_FUNDS, FailureReason.HOLD_CANCELLED):
            await _retry_coins_later(deps, ref, exc)
            raise
        return str(exc)
    return ""


async def _hold_coins(
    deps: Deps, ref: Refund, payment: Payment, *, actor: str
) -> tuple[Refund, Payment]:
    """The Try: hold the coins the refund takes back. Not there (spent, or held by an offer or a
    withdrawal): the refund fails before the provider is asked, its reservation on the payment
    given back, and the branch cancelled so that no late Try can hold anything. A wallet that
    does not answer leaves it to the poller."""
    not_there = await _try_hold_coins(deps, ref, payment.owner_id)
    refused = f"{COINS_REFUSED}: {not_there}" if not_there else ""
    if refused:
        await _coin_ledger(deps).return_coins(ref, "refund refused: coins not available")
    async with deps.uow as uow:
        now = deps.clock()
        payment = await uow.payments.get(ref.payment_id, for_update=True)
        stored = await uow.refunds.get(ref.id, for_update=True)
        assert payment is not None and stored is not None
        if stored.status is RefundStatus.PENDING and stored.coins_state is CoinsState.RESERVING:
            if refused:
                stored.status = RefundStatus.FAILED
                stored.failure_message = refused[:500]
                stored.coins_state = CoinsState.RETURNED
                stored.next_poll_at = None
                payment.release_refund(stored.amount_minor, now)
                await uow.payments.save(payment)
                metrics.REFUNDS.labels(stored.reason, "coins_not_available").inc()
            else:
                stored.coins_state = CoinsState.HELD
            stored.updated_at = now
            await uow.refunds.save(stored)
            await uow.audit.add(
                _coins_audit(stored, actor, "not available: refused" if refused else "held")
            )
            await uow.commit()
    return stored, payment


async def _hold_coins_refunded_at_provider(
    deps: Deps, ref: Refund, payment: Payment, *, actor: str
) -> Refund:
    """The Try of a refund made at the provider: its cash is back with the buyer already, so
    coins that are not there (spent, or held by an offer or a withdrawal) cannot stop it. They
    are never taken below zero (ESC-1): the branch is cancelled, so no late Try holds anything,
    and the refund records them short (metric, audit trail, warning) for the platform to recover
    from the buyer. A wallet that does not answer leaves it to the poller."""
    try:
        short = await _try_hold_coins(deps, ref, payment.owner_id)
    except HirepayError:
        return ref  # the poller takes it again (scheduled)
    if short:
        try:
            await _coin_ledger(deps).return_coins(ref, "refunded at the provider: coins short")
        except HirepayError as exc:
            await _retry_coins_later(deps, ref, exc)
            return ref
    async with deps.uow as uow:
        stored = await uow.refunds.get(ref.id, for_update=True)
        assert stored is not None
        if stored.coins_state is not CoinsState.RESERVING:
            return stored  # another worker took this step
        now = deps.clock()
        stored.coins_state = CoinsState.SHORT if short else CoinsState.HELD
        stored.updated_at = now
        if short:
            stored.next_poll_at = None
            stored.failure_message = f"{COINS_REFUSED}: {short}"[:500]
            metrics.REFUND_COINS_SHORT.inc(stored.coins)
            log.warning(
                "refund %s of payment %s made at the provider: %d coins not available (%s);"
                " left with the buyer, recorded short",
                stored.id,
                stored.payment_id,
                stored.coins,
                short,
            )
        await uow.refunds.save(stored)
        await uow.audit.add(
            _coins_audit(
                stored, actor, f"not available: short ({short[:200]})" if short else "held"
            )
        )
        await uow.commit()
    return stored


async def _settle_coins(deps: Deps, ref: Refund, *, actor: str) -> Refund:
    """Confirm or Cancel: the coins go back to issuance with a succeeded refund, back to the
    buyer with a failed one. Both are the wallet's idempotent handshake: a repeat moves nothing."""
    coin_ledger = _coin_ledger(deps)
    taken = ref.status is RefundStatus.SUCCEEDED
    try:
        if taken:
            await coin_ledger.take_coins(ref)
        else:
            await coin_ledger.return_coins(ref, f"refund failed: {ref.failure_message[:100]}")
    except HirepayError as exc:
        await _retry_coins_later(deps, ref, exc)
        return ref
    async with deps.uow as uow:
        stored = await uow.refunds.get(ref.id, for_update=True)
        assert stored is not None
        if stored.coins_owed:
            now = deps.clock()
            stored.coins_state = CoinsState.TAKEN if taken else CoinsState.RETURNED
            stored.next_poll_at = None
            stored.updated_at = now
            await uow.refunds.save(stored)
            await uow.audit.add(
                _coins_audit(stored, actor, "taken back" if taken else "released to the buyer")
            )
            await uow.commit()
    return stored


def _coins_audit(ref: Refund, actor: str, what: str) -> AuditEntry:
    """PAY-15: where a refund's coins went, on the payment's audit trail."""
    return AuditEntry(
        action="refund",
        actor=actor,
        reason=f"refund {ref.id}: {ref.coins} coins {what}",
        details={
            "refund_id": ref.id,
            "coins": str(ref.coins),
            "coins_state": ref.coins_state.value,
            "status": ref.status.value,
        },
        payment_id=ref.payment_id,
    )


async def _retry_coins_later(deps: Deps, ref: Refund, exc: HirepayError) -> None:
    """The wallet did not answer: the poller takes the coin step again after a backoff."""
    async with deps.uow as uow:
        stored = await uow.refunds.get(ref.id, for_update=True)
        if stored is None or not stored.coins_owed:
            return
        now = deps.clock()
        delay = min(deps.config.poll_max, deps.config.poll_base * 2**stored.poll_attempts)
        stored.poll_attempts += 1
        stored.next_poll_at = now + timedelta(seconds=delay)
        await uow.refunds.save(stored)
        await uow.commit()
    log.warning("refund %s: the wallet's coin step failed (%s); retried later", ref.id, exc)


async def _ask_provider(
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
                # With coins held, the poller posts them if the step after this one is lost.
                stored.next_poll_at = _coins_due(stored, now, deps)
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
                stored.next_poll_at = _coins_due(stored, now, deps)
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


def _coins_due(ref: Refund, now: datetime, deps: Deps) -> datetime | None:
    """When the poller takes over a coin hold still owed (None: nothing owed)."""
    if not ref.coins_owed:
        return None
    return now + timedelta(seconds=deps.config.lease_seconds)
