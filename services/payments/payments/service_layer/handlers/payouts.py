"""Withdrawals (ESC-9): a contractor's available wallet money paid out to their bank.

A withdrawal is recorded first (REQUESTED), then every step is idempotent and resumable: the
wallet hold (branch `payout:<id>`, refused with INSUFFICIENT_FUNDS when the available balance is
short, so concurrent withdrawals never overdraw), the provider transfer and payout (idempotency
keys derived from the withdrawal), and the ledger's follow-up once the provider has spoken (the
hold posted to provider clearing, or released after the transfer is reversed). Provider calls never
run inside a database transaction. The request drives the steps inline; whatever a crash or an
outage interrupts, the recovery worker (`advance_due`, several replicas share it with SKIP LOCKED
leases) finishes; `payout.paid` / `payout.failed` webhooks settle it (deduplicated by event id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from hirepay_platform.errors import HirepayError, Unavailable
from hirepay_platform.ids import new_id
from hirepay_platform.reasons import FailureReason
from hirepay_platform.tcc import IdempotencyMismatch
from payments.domain import commands, errors
from payments.domain.events import AuditEntry, EventType, OutboxEvent
from payments.domain.payouts import (
    PayoutAccountState,
    ProviderOutcome,
    Withdrawal,
    WithdrawalState,
    validate_request,
)
from payments.domain.provider import (
    InvalidRequest,
    OutcomeUnknown,
    PayoutStatus,
    ProviderEvent,
    ProviderFailure,
    ProviderPayout,
)
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.payout_accounts import refreshed
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.ports import PaymentsUnitOfWork, PayoutLedger

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 200
# Metadata on every provider object a withdrawal creates (webhooks find the withdrawal by it).
WITHDRAWAL_KEY = "hirepay_withdrawal_id"


# --- withdrawals: the request -------------------------------------------------------------


def _ledger(deps: Deps) -> PayoutLedger:
    if deps.payout_ledger is None:
        raise Unavailable("withdrawals need the wallet (PAYMENTS_WALLET_TARGET is empty)")
    return deps.payout_ledger


async def request_withdrawal(cmd: commands.RequestWithdrawal, deps: Deps) -> Withdrawal:
    """Record the withdrawal, then hold, transfer and pay it out (inline as far as it goes).

    Idempotent on (user, request id): a repeat answers the recorded withdrawal. Bad input, no
    payout account or not enough available money change nothing (INSUFFICIENT_FUNDS)."""
    request = validate_request(cmd.user_id, cmd.amount_minor, cmd.currency, cmd.request_id)
    _ledger(deps)
    async with deps.uow as uow:
        existing = await uow.payouts.get_by_request(request.user_id, request.request_id)
        account = await uow.payouts.get_account(request.user_id)
    if existing is not None:
        return _replayed(existing, request.amount_minor, request.currency)
    if account is None:
        raise errors.PayoutAccountNotFound(request.user_id)
    account = await refreshed(account, deps)
    if account.state is not PayoutAccountState.ACTIVE:
        raise errors.PayoutAccountNotReady(request.user_id, account.onboarding_url)
    now = deps.clock()
    withdrawal = Withdrawal(
        id=new_id("wd"),
        user_id=request.user_id,
        request_id=request.request_id,
        amount_minor=request.amount_minor,
        currency=request.currency,
        provider=account.provider,
        provider_account_id=account.provider_account_id,
        state=WithdrawalState.REQUESTED,
        created_at=now,
        updated_at=now,
        # The request drives it now: the worker keeps off for a lease.
        next_attempt_at=now + timedelta(seconds=deps.config.lease_seconds),
    )
    async with deps.uow as uow:
        if not await uow.payouts.add(withdrawal):
            twin = await uow.payouts.get_by_request(request.user_id, request.request_id)
            assert twin is not None
            return _replayed(twin, request.amount_minor, request.currency)
        await uow.commit()
    try:
        return await advance(withdrawal.id, deps, inline=True)
    except WithdrawalRefused:
        raise errors.InsufficientFunds(
            "the wallet's available balance is less than the withdrawal",
            metadata={"currency": request.currency, "amount_minor": str(request.amount_minor)},
        ) from None
    except (HirepayError, ProviderFailure) as exc:
        # Recorded and resumable: the worker finishes it; the caller sees where it stands.
        await _retry_later(withdrawal.id, deps, exc)
        return await get_withdrawal(withdrawal.id, deps)


def _replayed(withdrawal: Withdrawal, amount_minor: int, currency: str) -> Withdrawal:
    """The recorded withdrawal for a repeated request id, which must ask for the same money."""
    if withdrawal.amount_minor != amount_minor:
        raise IdempotencyMismatch(withdrawal.request_id, "amount_minor")
    if withdrawal.currency != currency:
        raise IdempotencyMismatch(withdrawal.request_id, "currency")
    return withdrawal


async def get_withdrawal(withdrawal_id: str, deps: Deps) -> Withdrawal:
    async with deps.uow as uow:
        withdrawal = await uow.payouts.get(withdrawal_id)
    if withdrawal is None:
        raise errors.WithdrawalNotFound(withdrawal_id)
    return withdrawal


@dataclass(frozen=True, slots=True)
class WithdrawalPage:
    withdrawals: list[Withdrawal]
    next_page_token: str


def _cursor(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    created, _, wid = token.partition("|")
    try:
        return datetime.fromisoformat(created), wid
    except ValueError:
        raise errors.invalid("page_token", "is not a token this service issued") from None


async def list_withdrawals(query: commands.ListWithdrawals, deps: Deps) -> WithdrawalPage:
    """A user's withdrawals, newest first, paged."""
    if query.page_size < 0:
        raise errors.invalid("page_size", "must not be negative")
    size = min(query.page_size or 50, MAX_PAGE_SIZE)
    before = _cursor(query.page_token)
    async with deps.uow as uow:
        rows = await uow.payouts.list_for_user(query.user_id, size + 1, before)
    page, more = rows[:size], len(rows) > size
    token = f"{page[-1].created_at.isoformat()}|{page[-1].id}" if more and page else ""
    return WithdrawalPage(page, token)


# --- withdrawals: the steps ---------------------------------------------------------------


class WithdrawalRefused(Exception):
    """The wallet refused the hold for lack of available money (the withdrawal is undone)."""


async def advance(withdrawal_id: str, deps: Deps, *, inline: bool = False) -> Withdrawal:
    """Take the withdrawal through every step it can take now; returns where it stands.

    Provider failures that leave the outcome unknown and wallet errors propagate (the caller
    schedules a retry); a refused hold raises WithdrawalRefused when `inline` (the request is
    undone), else the withdrawal fails with `insufficient_funds`."""
    while True:
        w = await get_withdrawal(withdrawal_id, deps)
        if w.final:
            return w
        if w.outcome is not ProviderOutcome.NONE:
            return await _follow_outcome(w, deps)
        if w.state is WithdrawalState.REQUESTED:
            await _hold(w, deps, inline=inline)
        elif w.state is WithdrawalState.SENDING:
            await _send(w, deps)
        else:  # in transit: the bank has not answered yet
            return w


async def _hold(w: Withdrawal, deps: Deps, *, inline: bool) -> None:
    """Reserve the amount on the wallet. Refused for lack of money: a request is undone (its row
    removed, then the branch cancelled so that any hold goes back and no late Try can reserve);
    for the worker the withdrawal fails (`insufficient_funds`) and the ledger step releases it.
    Only a withdrawal still REQUESTED is undone or failed: one another actor has moved on holds
    its money legitimately."""
    ledger = _ledger(deps)
    try:
        await ledger.hold(w)
    except HirepayError as exc:
        if exc.reason not in (FailureReason.INSUFFICIENT_FUNDS, FailureReason.HOLD_CANCELLED):
            raise
        if not inline:
            await _record(w.id, deps, _refused)
            return
        async with deps.uow as uow:
            fresh = await uow.payouts.get(w.id, for_update=True)
            if fresh is not None and fresh.state is not WithdrawalState.REQUESTED:
                return  # held by a twin meanwhile: carry on from where it stands
            if fresh is not None:
                await uow.payouts.remove(w.id)
                await uow.commit()
        await ledger.release(w, "insufficient funds")
        raise WithdrawalRefused() from None
    await _record(w.id, deps, lambda x, now: x.held(now))


def _refused(w: Withdrawal, now: datetime) -> None:
    if w.state is WithdrawalState.REQUESTED:
        w.provider_failed("insufficient_funds", "", now)


async def _send(w: Withdrawal, deps: Deps) -> None:
    """The Connect transfer to the user's account, then the payout to their bank."""
    provider = deps.providers.payouts(w.provider)
    metadata = {WITHDRAWAL_KEY: w.id, "hirepay_user_id": w.user_id}
    records: list[CallRecord] = []
    transfer_id = w.transfer_id
    if not transfer_id:
        try:
            transfer = await call(
                records,
                "transfer",
                w.key("transfer"),
                lambda: provider.transfer(
                    w.provider_account_id, w.amount_minor, w.currency, metadata, w.key("transfer")
                ),
            )
        except InvalidRequest as exc:  # refused: nothing moved at the provider
            await _record(w.id, deps, _failed(exc, "transfer_failed"), records)
            return
        transfer_id = transfer.id

        def transferred(x: Withdrawal, now: datetime) -> None:
            x.transfer_id = transfer_id

        await _record(w.id, deps, transferred, records)
        records = []
    try:
        payout = await call(
            records,
            "payout",
            w.key("payout"),
            lambda: provider.payout(
                w.provider_account_id, w.amount_minor, w.currency, metadata, w.key("payout")
            ),
        )
    except InvalidRequest as exc:  # the money sits on the connected account: reversed next
        await _record(w.id, deps, _failed(exc, "payout_failed"), records)
        return

    def sent(x: Withdrawal, now: datetime) -> None:
        x.sent(transfer_id, payout.id, now)
        _observe(x, payout, now)
        x.next_attempt_at = now + timedelta(seconds=deps.config.payout_watch_seconds)

    await _record(w.id, deps, sent, records)


def _failed(exc: InvalidRequest, default_code: str) -> Any:
    """The change recording a refused transfer or payout as the withdrawal's failure."""

    def change(w: Withdrawal, now: datetime) -> None:
        w.provider_failed(exc.code or default_code, exc.message, now)

    return change


def _observe(w: Withdrawal, payout: ProviderPayout, now: datetime) -> bool:
    """Take the provider's current view of the payout; whether it settled the outcome."""
    if payout.status is PayoutStatus.PAID:
        return w.provider_paid(now)
    if payout.status in (PayoutStatus.FAILED, PayoutStatus.CANCELED):
        code = payout.failure_code or f"payout_{payout.status.value}"
        if w.outcome is ProviderOutcome.PAID:  # reported paid before: the bank returned it
            return w.provider_returned(code, payout.failure_message, now)
        return w.provider_failed(code, payout.failure_message, now)
    return False


async def _follow_outcome(w: Withdrawal, deps: Deps) -> Withdrawal:
    """The ledger follows the provider: post the hold (paid), reverse the transfer and release
    the hold (failed), or reverse the transfer and credit the posted amount back (returned after
    it was paid); then the withdrawal is final and its notification is written."""
    ledger = _ledger(deps)
    if w.outcome is ProviderOutcome.PAID:
        await ledger.post(w)
    elif w.outcome is ProviderOutcome.RETURNED:
        # Paid, then returned by the bank: the hold is posted (if the ledger had not followed
        # the paid outcome yet), the money taken back from the contractor's connected account,
        # then credited back to their wallet — each step idempotent, so twins and the worker
        # may repeat any of them and the wallet is credited once.
        if w.state is not WithdrawalState.PAID:
            await ledger.post(w)
        await _reverse_transfer(w, deps)
        await ledger.credit_back(w)
    else:
        await _reverse_transfer(w, deps)
        await ledger.release(w, f"payout failed: {w.failure_code}")
    async with deps.uow as uow:
        fresh = await uow.payouts.get(w.id, for_update=True)
        assert fresh is not None
        if fresh.final:  # a twin (webhook or worker) finished it
            return fresh
        now = deps.clock()
        before = (fresh.state, fresh.outcome)
        fresh.settled(now)
        if fresh.state is WithdrawalState.PAID:  # the bank may still return it: watched
            fresh.next_attempt_at = now + timedelta(seconds=deps.config.payout_return_watch_seconds)
        await uow.payouts.save(fresh)
        await uow.audit.add(_transition(fresh, before))
        metrics.WITHDRAWALS.labels(fresh.state.value, fresh.currency).inc()
        await _notify(uow, deps, fresh, now)
        await uow.commit()
    log.info("withdrawal %s %s", fresh.id, fresh.state.value)
    return fresh


async def _reverse_transfer(w: Withdrawal, deps: Deps) -> None:
    """A failed payout leaves the money on the user's provider account: take it back to the
    platform's balance (the other side of provider clearing) before the wallet gets it back."""
    transfer_id = w.transfer_id
    if not transfer_id and w.payout_id:
        # A payout exists, so its transfer does: the transfer's key replays it and names it.
        provider = deps.providers.payouts(w.provider)
        transfer = await provider.transfer(
            w.provider_account_id,
            w.amount_minor,
            w.currency,
            {WITHDRAWAL_KEY: w.id},
            w.key("transfer"),
        )
        transfer_id = transfer.id
    if not transfer_id or w.reversal_id:
        return
    provider = deps.providers.payouts(w.provider)
    records: list[CallRecord] = []
    try:
        reversed_ = await call(
            records,
            "reverse_transfer",
            w.key("reverse"),
            lambda: provider.reverse_transfer(
                transfer_id, {WITHDRAWAL_KEY: w.id}, w.key("reverse")
            ),
        )
    except InvalidRequest as exc:
        if exc.param != "amount":  # "nothing left to reverse" means it was reversed already
            raise
        reversed_ = None

    def done(x: Withdrawal, now: datetime) -> None:
        x.transfer_id = transfer_id
        x.reversal_id = reversed_.id if reversed_ is not None else transfer_id

    await _record(w.id, deps, done, records)


async def _notify(uow: PaymentsUnitOfWork, deps: Deps, w: Withdrawal, now: datetime) -> None:
    """payout.paid / payout.failed through the settlement outbox, in the final transition's
    own transaction (once per final state: a payout returned after it was paid is announced
    paid, then failed)."""
    event_type = (
        EventType.PAYOUT_PAID if w.state is WithdrawalState.PAID else EventType.PAYOUT_FAILED
    )
    subsystem = deps.config.payout_subsystem
    await uow.outbox.add(
        OutboxEvent(
            event_id=new_id("evt"),
            type=event_type,
            occurred_at=now,
            subsystem=subsystem,
            withdrawal=w,
        ),
        callback=subsystem in deps.config.callback_subsystems,
    )


async def _record(
    withdrawal_id: str, deps: Deps, change: Any, records: list[CallRecord] | None = None
) -> None:
    """Apply `change(withdrawal, now)` to the locked, current row (never to a stale copy), with
    the audit records (PAY-15) of the provider calls behind it and of the transition."""
    async with deps.uow as uow:
        fresh = await uow.payouts.get(withdrawal_id, for_update=True)
        if fresh is None or fresh.final:
            return
        before = (fresh.state, fresh.outcome)
        change(fresh, deps.clock())
        await uow.payouts.save(fresh)
        for record in records or []:
            await uow.audit.add(_about(record.audit("withdrawal"), fresh))
        if before != (fresh.state, fresh.outcome):
            await uow.audit.add(_transition(fresh, before))
        await uow.commit()


def _about(entry: AuditEntry, w: Withdrawal) -> AuditEntry:
    """An audit entry naming the withdrawal (the audit log's own columns name payments)."""
    return replace(entry, details={**entry.details, "withdrawal_id": w.id, "user_id": w.user_id})


def _transition(w: Withdrawal, before: tuple[WithdrawalState, ProviderOutcome]) -> AuditEntry:
    state, outcome = before
    details = {
        "from": state.value,
        "to": w.state.value,
        "outcome": w.outcome.value,
        "failure_code": w.failure_code,
    }
    return _about(
        AuditEntry(
            action="transition",
            actor="payouts",
            reason=f"withdrawal {state.value}{'/' + outcome.value if outcome.value else ''}"
            f" -> {w.state.value}{'/' + w.outcome.value if w.outcome.value else ''}",
            details=details,
        ),
        w,
    )


async def _retry_later(withdrawal_id: str, deps: Deps, exc: BaseException) -> None:
    config = deps.config

    def later(w: Withdrawal, now: datetime) -> None:
        delay = min(config.payout_retry_max, config.payout_retry_base * 2 ** min(w.attempts, 16))
        w.retry_later(now, delay, f"{type(exc).__name__}: {exc}")

    await _record(withdrawal_id, deps, later)
    log.warning("withdrawal %s: %s; retried later", withdrawal_id, exc)


# --- the recovery worker and the webhooks -------------------------------------------------


async def advance_due(deps: Deps, limit: int = 20) -> int:
    """One round of the recovery worker: every unfinished withdrawal whose step is due (leased,
    so replicas share them) is taken as far as it goes; one in transit is re-fetched."""
    async with deps.uow as uow:
        await uow.autocommit()  # the lease is one statement: a transaction of its own
        now = deps.clock()
        paid_since = now - timedelta(seconds=deps.config.payout_return_window_seconds)
        due = await uow.payouts.lease_due(now, limit, deps.config.lease_seconds, paid_since)
        await uow.commit()
    for w in due:
        try:
            if w.state is WithdrawalState.IN_TRANSIT and w.outcome is ProviderOutcome.NONE:
                await _watch(w, deps)
            elif w.state is WithdrawalState.PAID and w.outcome is ProviderOutcome.PAID:
                await _watch_paid(w, deps)
            await advance(w.id, deps)
        except (HirepayError, ProviderFailure) as exc:
            await _retry_later(w.id, deps, exc)
        except Exception as exc:
            log.exception("withdrawal %s step failed", w.id)
            await _retry_later(w.id, deps, exc)
    return len(due)


async def _watch(w: Withdrawal, deps: Deps) -> None:
    """A payout in transit, re-fetched (a backstop for a lost webhook)."""
    provider = deps.providers.payouts(w.provider)
    payout = await provider.retrieve_payout(w.provider_account_id, w.payout_id)

    def seen(x: Withdrawal, now: datetime) -> None:
        if not _observe(x, payout, now):
            x.next_attempt_at = now + timedelta(seconds=deps.config.payout_watch_seconds)

    await _record(w.id, deps, seen)


async def _watch_paid(w: Withdrawal, deps: Deps) -> None:
    """A paid payout, re-fetched while the bank may still return it (a backstop for a lost
    `payout.failed` after `payout.paid`): a return found is recorded, and `advance` credits it
    back; else it is looked at again after PAYOUT_RETURN_WATCH_SECONDS."""
    provider = deps.providers.payouts(w.provider)
    payout = await provider.retrieve_payout(w.provider_account_id, w.payout_id)
    async with deps.uow as uow:
        fresh = await uow.payouts.get(w.id, for_update=True)
        if fresh is None or fresh.state is not WithdrawalState.PAID:
            return
        now = deps.clock()
        before = (fresh.state, fresh.outcome)
        if _observe(fresh, payout, now):
            fresh.next_attempt_at = now
            await uow.audit.add(_transition(fresh, before))
        else:
            fresh.next_attempt_at = now + timedelta(seconds=deps.config.payout_return_watch_seconds)
        await uow.payouts.save(fresh)
        await uow.commit()


async def _subject(uow: PaymentsUnitOfWork, event: ProviderEvent) -> Withdrawal | None:
    found = await uow.payouts.find_by_payout(event.object_id)
    if found is None and event.metadata.get(WITHDRAWAL_KEY):
        found = await uow.payouts.get(event.metadata[WITHDRAWAL_KEY])
    return found


@dataclass(frozen=True, slots=True)
class PayoutEventOutcome:
    applied: bool
    duplicate: bool


async def apply_payout_event(
    deps: Deps, provider_name: str, event: ProviderEvent, payload: dict[str, Any]
) -> PayoutEventOutcome | None:
    """A payout webhook: the payout re-fetched (never the event's copy) settles the withdrawal's
    outcome once per event id; the ledger follows right away (or the worker, after a crash).
    None for a payout Hirepay did not make (the caller records the event, unapplied)."""
    async with deps.uow as uow:
        withdrawal = await _subject(uow, event)
    if withdrawal is None:
        if event.metadata.get(WITHDRAWAL_KEY):  # ours, its record not committed yet: retry
            raise errors.EventNotApplicableYet(
                f"payout {event.object_id} is not known yet; retry later",
                metadata={"event_id": event.id, "object_id": event.object_id},
            )
        return None
    provider = deps.providers.payouts(withdrawal.provider)
    account = event.account or withdrawal.provider_account_id
    try:
        payout = await provider.retrieve_payout(account, event.object_id)
    except (OutcomeUnknown, InvalidRequest) as exc:
        raise errors.ProviderUnavailable(
            f"could not re-fetch {event.object_id} from the provider: {exc.message}",
            metadata={"event_id": event.id},
        ) from None
    async with deps.uow as uow:
        inserted = await uow.events.add(
            provider=provider_name,
            event_id=event.id,
            event_type=event.type,
            object_id=event.object_id,
            payload=payload,
            applied=True,
            provider_created_at=event.created,
            received_at=deps.clock(),
        )
        if not inserted:
            return PayoutEventOutcome(applied=False, duplicate=True)
        fresh = await uow.payouts.get(withdrawal.id, for_update=True)
        assert fresh is not None
        now = deps.clock()
        if not fresh.payout_id:
            fresh.payout_id = payout.id
        before = (fresh.state, fresh.outcome)
        # A paid withdrawal still listens: its payout can fail afterwards (returned by the bank).
        listening = not fresh.final or fresh.state is WithdrawalState.PAID
        changed = listening and _observe(fresh, payout, now)
        if changed:
            fresh.next_attempt_at = now
        await uow.payouts.save(fresh)
        webhook = AuditEntry(
            action="webhook",
            actor="provider",
            reason=f"{event.type}: payout {payout.status.value}",
            details={"event_id": event.id, "event_type": event.type, "object_id": payout.id},
        )
        await uow.audit.add(_about(webhook, fresh))
        if changed:
            await uow.audit.add(_transition(fresh, before))
        await uow.commit()
    if changed:
        try:
            await advance(withdrawal.id, deps)
        except Exception:
            log.exception(
                "withdrawal %s: settling after %s failed; retried", withdrawal.id, event.id
            )
    return PayoutEventOutcome(applied=changed, duplicate=False)
