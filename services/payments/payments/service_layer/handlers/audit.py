"""Queries for the consistency auditor (OPS-3): payments by state, and the provider's records
compared with ours through the provider port. Read-only but for the reconciliation's own record of
its checks (payment_reconciliations: when each payment was last compared and what that found)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hirepay_platform.errors import Unavailable
from payments.domain import commands, errors, ledger
from payments.domain.model import TAKEN, Payment
from payments.domain.payouts import WITHDRAWAL_STUCK, stuck_detail
from payments.domain.provider import (
    InvalidRequest,
    OutcomeUnknown,
    PaymentProvider,
    ProviderPayment,
    ProviderStatus,
)
from payments.domain.reconciliation import (
    MismatchKind,
    check_order,
    in_flight,
    provider_mismatch,
    refund_mismatches,
    refunds_in_flight,
)
from payments.domain.refunds import Refund
from payments.service_layer.deps import Deps

log = logging.getLogger(__name__)

MAX_PAGE = 1000
MAX_RECONCILE = 500
# What a reconciliation keeps of the caller's deadline for its answer to get back (the larger):
# checks still running then are dropped, so the caller gets those done rather than
# DEADLINE_EXCEEDED (OPS-3).
REPLY_MARGIN_SECONDS = 0.5
REPLY_MARGIN_SHARE = 0.1
# A check's record not renewed for this long belongs to a payment that left the window: it is
# forgotten (at most so many a round), as if never checked should the payment come back.
RECORD_RETENTION = timedelta(days=1)
FORGET_PER_ROUND = 1000


@dataclass(frozen=True, slots=True)
class PaymentPage:
    payments: list[Payment]
    next_after_id: str  # "" on the last page


@dataclass(frozen=True, slots=True)
class Mismatch:
    payment_id: str
    provider_payment_id: str
    detail: str
    kind: MismatchKind = MismatchKind.CHARGE


@dataclass(frozen=True, slots=True)
class Reconciliation:
    checked: int
    mismatches: list[Mismatch]
    # Payments of the window the caller's deadline left unchecked: the next round's first.
    left: int = 0
    # What the last check of the window's payments this round did not check (left, or their
    # provider unreadable now) found: still open as far as payments knows.
    earlier: list[Mismatch] = field(default_factory=list)
    # Payments whose provider could not be read now (unreachable, or no longer configured here):
    # neither checked nor left; compared again in their turn.
    unreadable: int = 0


async def list_payments(cmd: commands.ListPayments, deps: Deps) -> PaymentPage:
    """One page of payments in the given states, by id."""
    size = min(max(cmd.page_size, 1), MAX_PAGE)
    if len(cmd.global_tx_ids) > MAX_PAGE:
        raise errors.invalid("global_tx_ids", f"at most {MAX_PAGE} per call")
    async with deps.uow as uow:
        found = await uow.payments.list_by_states(
            cmd.states, cmd.subsystem, cmd.after_id, size + 1, cmd.global_tx_ids, cmd.updated_since
        )
    more = len(found) > size
    page = found[:size]
    return PaymentPage(page, page[-1].id if more and page else "")


def no_deadline() -> float | None:
    """A caller without a deadline (`time_left`)."""
    return None


async def reconcile_provider(
    cmd: commands.ReconcileProvider,
    new_deps: Callable[[], Deps],
    time_left: Callable[[], float | None] = no_deadline,
) -> Reconciliation:
    """Re-fetch the most recently changed payments (the window: `limit` of them), each from the
    provider that made it, and name every record that disagrees: the charge, and for money taken
    each refund (the provider's refunds matched with our refund records). Payments with a
    provider call in flight are skipped (they may differ a moment), as are those whose provider
    is unreachable or no longer configured here.

    A provider answers in ~300 ms (real Stripe), so up to `reconcile_concurrency` payments are
    checked at once, each worker with its own unit of work (`new_deps()`; a unit of work is one
    transaction at a time). Within the caller's deadline (`time_left()`, seconds; None: none):
    no check starts that the time left would not allow (the slowest one so far, plus a margin for
    the answer), and checks still running when only the margin is left are dropped; the answer
    says how many were checked and how many were left (OPS-3: a partial answer, never
    DEADLINE_EXCEEDED).

    The payments are checked in `check_order`: never checked first, then the longest unchecked,
    by each payment's last completed check, recorded with what it found (payment_reconciliations)
    before the answer. So the ones a round left are the next round's first, and however short
    the deadline, every payment of the window is checked within a bounded number of rounds
    rather than the newest every round and the oldest never. The answer's `mismatches` are what
    this round found, in the window's order (most recently changed first) whatever order the
    checks ran in; `earlier` what the last check found of those it did not check, so that a
    mismatch stays reported between the rounds that check its payment."""
    deps = new_deps()
    limit = min(max(cmd.limit, 1), MAX_RECONCILE)
    async with deps.uow as uow:
        recent = await uow.payments.recently_changed(limit)
        due = [p for p in recent if p.provider_payment_id and not in_flight(p)]
        last = await uow.reconciliations.last_checks([p.id for p in due])
    order = check_order(due, {payment_id: c.at for payment_id, c in last.items()})
    outcomes = await _check_within(
        due, order, new_deps, deps.config.reconcile_concurrency, time_left
    )
    if outcomes:
        # Every check completed, the provider read or not (unreadable now: it waits its turn
        # again, rather than taking the front of every round while its provider is down).
        found = {
            due[i].id: None if o is None else [(m.kind, m.detail) for m in o]
            for i, o in outcomes.items()
        }
        async with deps.uow as uow:
            # Each of its (one or two) statements a transaction of its own: two rounds at once
            # (the worker's and a report on demand) then never hold one's rows while waiting
            # for the other's (each statement locks its rows in id order).
            await uow.autocommit()
            now = deps.clock()
            await uow.reconciliations.record_checks(found, now)
            # Records of payments that left the window (one in it is checked again within a
            # few rounds): the table holds about a day of windows, not all history.
            await uow.reconciliations.forget_before(now - RECORD_RETENTION, FORGET_PER_ROUND)
            await uow.commit()
    left = len(due) - len(outcomes)
    if left:
        log.warning(
            "reconcile: the caller's deadline allowed %d of %d payments; %d left for the next round",
            len(outcomes),
            len(due),
            left,
        )
    unreadable = sum(1 for o in outcomes.values() if o is None)
    if unreadable:
        # Not a mismatch, but payments nobody compares while it lasts (a provider down, or
        # one no longer configured here: then for good), so said in the answer too.
        log.warning("reconcile: %d payments' providers could not be read now", unreadable)
    checked = 0
    mismatches: list[Mismatch] = []
    earlier: list[Mismatch] = []
    for i, payment in enumerate(due):
        outcome = outcomes.get(i)
        if outcome is not None:
            checked += 1
            mismatches += outcome
        elif payment.id in last:
            earlier += [
                Mismatch(payment.id, payment.provider_payment_id, detail, kind)
                for kind, detail in last[payment.id].found
            ]
    return Reconciliation(checked, mismatches, left, earlier, unreadable)


async def _check_within(
    due: list[Payment],
    order: list[int],
    new_deps: Callable[[], Deps],
    concurrency: int,
    time_left: Callable[[], float | None],
) -> dict[int, list[Mismatch] | None]:
    """The payments of `due` checked in `order` (indexes into it) by at most `concurrency`
    workers, within the deadline: its index -> its mismatches, or None when its provider could
    not be read now; a payment not reached (or dropped at the deadline) has no entry."""
    outcomes: dict[int, list[Mismatch] | None] = {}
    if not due:
        return outcomes
    at_start = time_left()
    margin = None if at_start is None else max(REPLY_MARGIN_SECONDS, at_start * REPLY_MARGIN_SHARE)
    next_index = iter(order)  # shared: each worker takes the next payment not taken
    slowest = 0.0

    def may_start() -> bool:
        left = time_left()
        return left is None or margin is None or left - margin > slowest

    async def worker() -> None:
        nonlocal slowest
        deps = new_deps()  # its own unit of work: workers read the database concurrently
        for i in next_index:
            if not may_start():
                return
            began = time.monotonic()
            outcomes[i] = await _check(due[i], deps)
            slowest = max(slowest, time.monotonic() - began)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(due)))]
    try:
        wait = None if at_start is None or margin is None else max(at_start - margin, 0.0)
        done, _ = await asyncio.wait(workers, timeout=wait, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        # At the deadline (or when one failed, or we are cancelled) the rest stop: their
        # reads change nothing, and an unfinished check is simply not counted.
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    for task in done:
        task.result()  # a failure other than the provider's (the database): the call fails
    return outcomes


async def _check(payment: Payment, deps: Deps) -> list[Mismatch] | None:
    """One payment against its provider; None when the provider cannot be read now."""
    try:
        return await _reconcile_one(payment, deps)
    except InvalidRequest as exc:
        return [Mismatch(payment.id, payment.provider_payment_id, f"provider: {exc.message}")]
    except OutcomeUnknown as exc:
        log.info("reconcile: %s unreadable now: %s", payment.id, exc.message)
        return None


@dataclass(frozen=True, slots=True)
class LedgerAudit:
    checked: int
    findings: list[ledger.Finding]


DEFAULT_BOOKING_GRACE = 120


async def audit_ledger_bookings(
    grace_seconds: int, deps: Deps, settled_since: datetime | None = None
) -> LedgerAudit:
    """Every capture and refund settled before the grace period has its transfer on its
    provider's clearing account, and the platform revenue of payments' own bookings equals
    captured fees minus refunds per currency (read-only: payments' records and the wallet's
    entries of those transfers).

    With `settled_since` (the auditor's incremental round) only the records changed since then
    are checked, and the revenue sums cover their transfers: a round reads what changed, not
    every capture ever made (issue 13); without it, all of them (a full sweep)."""
    if deps.ledger is None:
        raise Unavailable("the wallet is not wired (PAYMENTS_WALLET_TARGET)")
    grace = grace_seconds if grace_seconds > 0 else DEFAULT_BOOKING_GRACE
    before = deps.clock() - timedelta(seconds=grace)
    async with deps.uow as uow:
        expected = await uow.credit_grants.expected(before, settled_since)
    entries = await deps.ledger.transfer_entries(sorted({e.transfer_id for e in expected}))
    clearing = {
        await deps.ledger.existing_account_id(ledger.clearing(provider, currency))
        for provider, currency in sorted({(e.provider, e.currency) for e in expected})
    }
    on_clearing = {transfer_id for transfer_id, account, _ in entries if account in clearing}
    revenue: dict[str, dict[str, int]] = {}
    for currency in sorted({e.currency for e in expected if e.purpose is ledger.Purpose.FEE}):
        account_id = await deps.ledger.existing_account_id(ledger.revenue(currency))
        per_transfer: dict[str, int] = {}
        for transfer_id, account, amount in entries:
            if account == account_id:
                per_transfer[transfer_id] = per_transfer.get(transfer_id, 0) + amount
        revenue[currency] = per_transfer
    findings = ledger.audit_bookings(expected, on_clearing, revenue)
    return LedgerAudit(len(expected), findings + await _stuck_withdrawals(deps))


async def _stuck_withdrawals(deps: Deps, limit: int = 200) -> list[ledger.Finding]:
    """Withdrawals whose money is held (or owed back) and has not moved in time (OPS-3): a step
    the recovery worker keeps failing, or a payout the bank has not answered for days. At most
    `limit` a round, the longest unchanged first."""
    config = deps.config
    now = deps.clock()
    step = timedelta(seconds=config.withdrawal_step_grace_seconds)
    transit = timedelta(seconds=config.withdrawal_transit_grace_seconds)
    async with deps.uow as uow:
        unfinished = await uow.payouts.unfinished_since(now - min(step, transit), limit)
    found = []
    for w in unfinished:
        detail = stuck_detail(w, now, step_grace=step, transit_grace=transit)
        if detail:
            found.append(ledger.Finding(WITHDRAWAL_STUCK, w.id, detail))
    return found


async def _reconcile_one(payment: Payment, deps: Deps) -> list[Mismatch]:
    # Always the provider that made the payment, never the default (issue 8).
    provider = deps.providers.of_existing(payment.provider)
    intent = await provider.retrieve_payment(payment.provider_payment_id)
    found: list[Mismatch] = []
    detail = provider_mismatch(payment, intent, deps.clock())
    if detail:
        found.append(Mismatch(payment.id, payment.provider_payment_id, detail))
    if payment.state in TAKEN or intent.status is ProviderStatus.CAPTURED:
        found += await _reconcile_refunds(payment, provider, intent, deps)
    return found


async def _reconcile_refunds(
    payment: Payment, provider: PaymentProvider, intent: ProviderPayment, deps: Deps
) -> list[Mismatch]:
    """Money was taken: the provider's refunds of it against our refund records.

    Our records are read before and after the provider's list: a refund begins with its local
    record, so records unchanged across the list (none in flight) saw every refund of ours
    that the list can show; a round where they changed is skipped."""
    before = await _local_refunds(payment.id, deps)
    if refunds_in_flight(before):
        return []
    remote = await provider.list_refunds(intent.id)
    if await _local_refunds(payment.id, deps) != before:
        return []
    local = before
    return [
        Mismatch(payment.id, payment.provider_payment_id, detail, MismatchKind.REFUND)
        for detail in refund_mismatches(local, remote)
    ]


async def _local_refunds(payment_id: str, deps: Deps) -> list[Refund]:
    async with deps.uow as uow:
        return await uow.refunds.list_for_payment(payment_id)
