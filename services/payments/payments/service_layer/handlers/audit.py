"""Queries for the consistency auditor (OPS-3): payments by state, and the provider's records
compared with ours through the provider port. Read-only but for the reconciliation's own record of
its checks (payment_reconciliations: when each payment was last compared and what that found) and,
for a provider whose refunds made at it arrive by no event (Fatora), the booking of such a refund
it finds, of a payment or of a paid plan purchase (provider_refunds.book_provider_refunds and
book_purchase_refunds, the webhooks' cores)."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from hirepay_platform.errors import Unavailable
from payments.domain import commands, errors, ledger
from payments.domain.credits import refunded_in_part
from payments.domain.model import TAKEN, Payment
from payments.domain.payouts import WITHDRAWAL_STUCK, stuck_detail
from payments.domain.provider import (
    InvalidRequest,
    OutcomeUnknown,
    PaymentProvider,
    ProviderPayment,
    ProviderStatus,
    RefundState,
)
from payments.domain.reconciliation import (
    LastCheck,
    MismatchKind,
    SweepCursor,
    check_order,
    in_flight,
    mismatch_across,
    provider_mismatch,
    refund_mismatches,
    refunds_in_flight,
    sweep_advanced,
    sweep_due,
)
from payments.domain.refunds import Refund
from payments.domain.transactions import Transaction
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.provider_refunds import (
    RECONCILIATION,
    book_provider_refunds,
    book_purchase_refunds,
)

log = logging.getLogger(__name__)

MAX_PAGE = 1000
MAX_RECONCILE = 500
# What a reconciliation keeps of the caller's deadline for its answer to get back (the larger):
# checks still running then are dropped, so the caller gets those done rather than
# DEADLINE_EXCEEDED (OPS-3).
REPLY_MARGIN_SECONDS = 0.5
REPLY_MARGIN_SHARE = 0.1
# A check's closed record (it agreed) not renewed for this long belongs to a payment that left
# the window and the sweep: it is forgotten (at most so many a round), as if never checked
# should the payment come back.
RECORD_RETENTION = timedelta(days=1)
FORGET_PER_ROUND = 1000
# Open records (a finding, or provider unreadable) checked again a round, longest unchecked
# first: few, and each is a violation the auditor reports until a check clears it.
OPEN_PER_ROUND = 50


class Moving(enum.Enum):
    """A check that could not judge its payment: a provider call on it was under way (begun since
    the round read it). Nothing is recorded of it; the next round checks it first."""

    MOVING = "moving"


MOVING = Moving.MOVING

_Item = TypeVar("_Item")
_Outcome = TypeVar("_Outcome")


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
class PurchaseRefundBooked:
    """A paid plan purchase's refund made at its provider (one that sends no refund event:
    Fatora's dashboard) that a round found and booked."""

    transaction_id: str
    provider: str
    amount_minor: int  # the money this round booked as refunded
    currency: str
    in_full: bool  # REFUNDED, its unused credits revoked (else a part booked, credits kept)


@dataclass(frozen=True, slots=True)
class PurchaseCheck:
    """One paid purchase read at its provider: refunds there beyond what the round's read of it
    had booked (`found`), and what this check booked of them (None: nothing; a round at once
    may have)."""

    found: bool
    booked: PurchaseRefundBooked | None = None


@dataclass(frozen=True, slots=True)
class PurchaseRound:
    """A round's paid plan purchases of the providers that send no refund event: how many were
    read at their provider, how many had refunds there not booked here (found), those this round
    booked, and how many could not be read now (read again in their turn)."""

    checked: int = 0
    found: int = 0
    booked: list[PurchaseRefundBooked] = field(default_factory=list)
    unreadable: int = 0


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
    # Payments of the round whose provider has not been readable for longer than
    # `reconcile_unreadable_grace_seconds` (kind UNREADABLE): nobody has compared them since.
    unreadable_past_grace: list[Mismatch] = field(default_factory=list)
    # The round's paid plan purchases read for refunds made at a provider that sends no refund
    # event (Fatora), and what it found and booked of them.
    purchases: PurchaseRound = field(default_factory=PurchaseRound)


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
    """Re-fetch payments, each from the provider that made it, and name every record that
    disagrees: the charge, and for money taken each refund (the provider's refunds matched with
    our refund records). Payments with a provider call in flight are skipped (they may differ a
    moment); those whose provider is unreachable or no longer configured here are counted
    (`unreadable`), and named once unreadable past the grace (`unreadable_past_grace`).

    A round's payments: first the sweep's batch (`reconcile_sweep_per_round` payments after its
    durable cursor, through every payment with a provider id changed within
    `reconcile_sweep_horizon_days`: those whose provider record can still change, not final
    there or refundable and disputable; see `sweep_due`), then the open records (a finding, or
    provider unreadable: checked every round until one finds it gone or readable), then the
    window (the `limit` most recently changed payments). The cursor moves past the batch's
    payments the round completed, so a pass through the sweep's payments takes about
    their number / `reconcile_sweep_per_round` rounds whatever else changes, and each such
    payment is compared at least once a pass.

    A provider answers in ~300 ms (real Stripe), so up to `reconcile_concurrency` payments are
    checked at once, each worker with its own unit of work (`new_deps()`; a unit of work is one
    transaction at a time), and the round's provider reads are paced to at most
    `reconcile_reads_per_second` (a provider's rate limit: real Stripe allows 25 reads a second
    in test mode, 100 live, for everything the account does). Within the caller's deadline
    (`time_left()`, seconds; None: none): no check starts that the time left would not allow
    (the slowest one so far, plus a margin for the answer), and checks still running when only
    the margin is left are dropped; the answer says how many were checked and how many were left
    (OPS-3: a partial answer, never DEADLINE_EXCEEDED).

    The window's payments are checked in `check_order`: never checked first, then the longest
    unchecked, by each payment's last completed check, recorded with what it found
    (payment_reconciliations) before the answer. So the ones a round left are the next round's
    first, and however short the deadline, every payment of the window is checked within a
    bounded number of rounds rather than the newest every round and the oldest never. The
    answer's `mismatches` are what this round found, in the round's order (sweep, open records,
    window most recently changed first) whatever order the checks ran in; `earlier` what the
    last check found of those it did not check, so that a mismatch stays reported between the
    rounds that check its payment."""
    deps = new_deps()
    config = deps.config
    per_round = config.reconcile_sweep_per_round
    cursor, batch, not_due, due, order, last = await _round(
        deps, min(max(cmd.limit, 1), MAX_RECONCILE)
    )
    pacer = _Pacer(config.reconcile_reads_per_second)
    outcomes = await _check_within(
        due, order, new_deps, config.reconcile_concurrency, time_left, pacer, _check
    )
    now = deps.clock()
    # The batch's payments done: checked (their provider read or not, or found moving: done for
    # the sweep as one in flight at the round's start is, see `sweep_due`), or not due this pass.
    done = {due[i].id for i in outcomes} | not_due
    judged = _judged(outcomes)
    advanced = sweep_advanced(cursor, batch, done, len(batch) == per_round, now)
    found = {
        due[i].id: None if o is None else [(m.kind, m.detail) for m in o] for i, o in judged.items()
    }
    await _record(deps, found, advanced if per_round and advanced != cursor else None, now)
    purchases = await _reconcile_purchases(
        deps, new_deps, min(max(cmd.limit, 1), MAX_RECONCILE), time_left, pacer
    )
    if advanced.pass_started_at != cursor.pass_started_at:
        log.info("reconcile: the sweep's pass begun %s is done", cursor.pass_started_at)
    left = len(due) - len(outcomes)
    if left:
        log.warning(
            "reconcile: the caller's deadline allowed %d of %d payments; %d left for the next round",
            len(outcomes),
            len(due),
            left,
        )
    unreadable = sum(1 for o in judged.values() if o is None)
    if unreadable:
        # Not a mismatch, but payments nobody compares while it lasts (a provider down, or
        # one no longer configured here: then for good), so said in the answer too.
        log.warning("reconcile: %d payments' providers could not be read now", unreadable)
    grace = timedelta(seconds=config.reconcile_unreadable_grace_seconds)
    checked = 0
    mismatches: list[Mismatch] = []
    earlier: list[Mismatch] = []
    blind: list[Mismatch] = []
    for i, payment in enumerate(due):
        before = last.get(payment.id)
        outcome = judged.get(i)
        if outcome is not None:
            checked += 1
            mismatches += outcome
            continue
        if before is not None:
            earlier += [
                Mismatch(payment.id, payment.provider_payment_id, detail, kind)
                for kind, detail in before.found
            ]
        if i in outcomes and i not in judged:
            continue  # moving: its provider was read now, so not unreadable
        # Unreadable since its first check that could not read it (this one, if so).
        since = before.unreadable_since if before is not None else None
        if since is None and i in outcomes:
            since = now
        if since is not None and since <= now - grace:
            detail = f"provider {payment.provider} unreadable since {since.isoformat()}"
            blind.append(
                Mismatch(payment.id, payment.provider_payment_id, detail, MismatchKind.UNREADABLE)
            )
    return Reconciliation(checked, mismatches, left, earlier, unreadable, blind, purchases)


async def _reconcile_purchases(
    deps: Deps,
    new_deps: Callable[[], Deps],
    limit: int,
    time_left: Callable[[], float | None],
    pacer: _Pacer,
) -> PurchaseRound:
    """Paid plan purchases of the providers whose refunds made at them arrive by no event
    (`refunds_by_event` False: Fatora) read at their provider within the round's deadline and
    pace, and a refund found booked through the webhook's own core
    (provider_refunds.book_purchase_refunds: refunded in full, REFUNDED with its unused credits
    revoked; in part, that money booked once). A round's purchases: the most recently changed
    (`limit`, at most `reconcile_sweep_per_round`: a purchase paid and refunded lately is found
    at the next round), then each such provider's pass's next `reconcile_sweep_per_round`
    (every paid purchase changed within `reconcile_sweep_horizon_days` before the pass began is
    read once a pass), after the round's payments and within its deadline and pace. None such
    configured: nothing read. Only what could be booked is: a refund of the purchase the
    provider lists and the core cannot book (none such today) is read again next pass, logged.

    A pass's place is durable (purchase_reconciliation_sweeps, one row per provider): written
    after the round's checks, past the purchases it read, never moved back (a round at once
    further on wins), so a restart continues the pass; what the round booked was booked before,
    idempotently, so one killed in between reads those again and books nothing twice."""
    silent = [n for n in deps.providers.names if not deps.providers.get(n).refunds_by_event]
    if not silent:
        return PurchaseRound()
    config = deps.config
    per_round = config.reconcile_sweep_per_round
    now = deps.clock()
    horizon = timedelta(days=config.reconcile_sweep_horizon_days)
    cursors: dict[str, SweepCursor] = {}
    batches: dict[str, list[Transaction]] = {}
    async with deps.uow as uow:
        # At most a batch's worth of the newest too: a round reads at most two batches of them.
        recent = min(limit, per_round) if per_round else limit
        window = await uow.transactions.paid_since(silent, now - horizon, recent, newest=True)
        if per_round:
            stored = await uow.reconciliations.purchase_sweeps(silent)
            for provider in silent:
                cursor = cursors[provider] = stored.get(provider) or SweepCursor(now)
                batches[provider] = await uow.transactions.paid_since(
                    [provider],
                    cursor.pass_started_at - horizon,
                    per_round,
                    after=cursor.after,
                    before=cursor.pass_started_at,
                )
    due = {t.id: t for t in (*window, *(t for b in batches.values() for t in b))}
    purchases = list(due.values())
    outcomes = await _check_within(
        purchases,
        list(range(len(purchases))),
        new_deps,
        config.reconcile_concurrency,
        time_left,
        pacer,
        _check_purchase,
    )
    # Each pass moves past what was read: one not reached, or whose provider could not be read
    # now, is the next round's first.
    read = [o for o in outcomes.values() if o is not None]
    checked = {purchases[i].id for i, o in outcomes.items() if o is not None}
    advanced = {
        provider: sweep_advanced(cursors[provider], batch, checked, len(batch) == per_round, now)
        for provider, batch in batches.items()
    }
    moved = {p: c for p, c in advanced.items() if c != cursors[p]}
    if moved:
        async with deps.uow as uow:
            for provider, cursor in moved.items():
                await uow.reconciliations.save_purchase_sweep(provider, cursor)
            await uow.commit()
    booked = [o.booked for o in read if o.booked is not None]
    if booked:
        log.warning(
            "reconcile: %d plan purchases refunded at a provider that sends no refund event"
            " found and booked",
            len(booked),
        )
    return PurchaseRound(
        checked=len(read),
        found=sum(1 for o in read if o.found),
        booked=booked,
        unreadable=len(outcomes) - len(read),
    )


async def _check_purchase(txn: Transaction, deps: Deps, pacer: _Pacer) -> PurchaseCheck | None:
    """One paid purchase's refunds at its provider, any succeeded one beyond what the round read
    booked of them found and booked (unless a round at once booked it first); None when its
    provider cannot be read now (read again in its turn)."""
    try:
        provider = deps.providers.of_existing(txn.provider)
        await pacer.take()
        found = await provider.list_refunds(txn.provider_payment_intent_id)
    except InvalidRequest as exc:
        log.warning("reconcile: purchase %s unreadable at its provider: %s", txn.id, exc.message)
        return None
    except OutcomeUnknown as exc:
        log.info("reconcile: purchase %s unreadable now: %s", txn.id, exc.message)
        return None
    refunded = sum(r.amount_minor for r in found if r.state is RefundState.SUCCEEDED)
    if refunded <= refunded_in_part(txn):
        return PurchaseCheck(found=False)
    outcome = await book_purchase_refunds(deps, txn.id, found, RECONCILIATION)
    if not outcome.applied:
        return PurchaseCheck(found=True)
    booked = PurchaseRefundBooked(
        txn.id, txn.provider, outcome.booked_minor, txn.currency, outcome.in_full
    )
    return PurchaseCheck(found=True, booked=booked)


def _judged(
    outcomes: dict[int, list[Mismatch] | Moving | None],
) -> dict[int, list[Mismatch] | None]:
    """The checks that judged their payment (provider read or not). One found moving is neither
    recorded (no finding, nor an agreement clearing an earlier one) nor counted: it is answered
    as one not reached (what its last check found) and, its last check unchanged, is among the
    next round's first."""
    judged = {i: o for i, o in outcomes.items() if not isinstance(o, Moving)}
    if len(judged) < len(outcomes):
        log.info(
            "reconcile: %d payments had a provider call begun since the round read them;"
            " left for the next round",
            len(outcomes) - len(judged),
        )
    return judged


async def _round(
    deps: Deps, limit: int
) -> tuple[SweepCursor, list[Payment], set[str], list[Payment], list[int], dict[str, LastCheck]]:
    """A round's payments, read in one transaction: the sweep's cursor, its batch and those of
    the batch not due this pass; the payments due (each once: the batch's due and the open
    records' outside the window, then the window's), the order to check them in (indexes into
    it), and their last checks."""
    config = deps.config
    per_round = config.reconcile_sweep_per_round
    async with deps.uow as uow:
        recent = await uow.payments.recently_changed(limit)
        window = [p for p in recent if p.provider_payment_id and not in_flight(p)]
        cursor = await uow.reconciliations.sweep_cursor() or SweepCursor(deps.clock())
        batch: list[Payment] = []
        if per_round:
            horizon = timedelta(days=config.reconcile_sweep_horizon_days)
            batch = await uow.reconciliations.sweep_batch(cursor, horizon, per_round)
        known = {p.id: p for p in (*window, *batch)}
        last = await uow.reconciliations.last_and_open_checks(sorted(known), OPEN_PER_ROUND)
        # The open records' payments (those of the window are the window's): read unless the
        # batch holds them.
        in_window = {p.id for p in window}
        open_ids = sorted(p for p, c in last.items() if c.open and p not in in_window)
        fetched = await uow.reconciliations.payments([p for p in open_ids if p not in known])
        known.update((p.id, p) for p in fetched)
        reopened = [known[p] for p in open_ids if p in known and not in_flight(known[p])]
    swept = sweep_due(batch, last, cursor.pass_started_at)
    not_due = {p.id for p in batch} - {p.id for p in swept}
    # The sweep's share of the round first: it is what bounds a pass, whatever the window holds;
    # then the open records (few). A payment of the window is the window's, in `check_order`:
    # one of the batch is done for the sweep once checked (the cursor waits for it meanwhile:
    # it is checked within a few rounds, or leaves the window for the sweep's next round).
    head: dict[str, Payment] = {}
    for p in (*swept, *reopened):
        if p.id not in in_window:
            head.setdefault(p.id, p)
    last_at = {payment_id: c.at for payment_id, c in last.items()}
    order = [*range(len(head)), *(len(head) + i for i in check_order(window, last_at))]
    return cursor, batch, not_due, [*head.values(), *window], order, last


async def _record(
    deps: Deps,
    found: dict[str, list[tuple[MismatchKind, str]] | None],
    cursor: SweepCursor | None,
    now: datetime,
) -> None:
    """The round's completed checks (provider read or not) and the sweep's new cursor (None:
    unmoved), each statement a transaction of its own: two rounds at once (the worker's and a
    report on demand) then never hold one's rows while waiting for the other's (each statement
    locks its rows in id order). Of two rounds' cursors the last written wins, each past
    payments that round checked: at worst some are checked twice, none skipped."""
    if not found and cursor is None:
        return
    async with deps.uow as uow:
        await uow.autocommit()
        if found:
            # Unreadable now: it waits its turn again (and, open, is checked every round)
            # rather than taking the front of the window while its provider is down.
            await uow.reconciliations.record_checks(found, now)
            # Closed records of payments that left the window and the sweep: the table holds
            # about a day of them and the open ones, not all history.
            await uow.reconciliations.forget_before(now - RECORD_RETENTION, FORGET_PER_ROUND)
        if cursor is not None:
            await uow.reconciliations.save_sweep(cursor)
        await uow.commit()


class _Pacer:
    """A round's provider reads at most `rate` a second, after a first burst of up to `rate`
    (one second's worth): each read waits for its turn (a generic cell rate: the reads' due
    times `1 / rate` apart, the first `rate` of them due at once). The workers share it, so a
    round stays within the provider's rate limit whatever its concurrency."""

    def __init__(self, rate: float) -> None:
        self._gap = 1.0 / rate
        self._tolerance = (max(rate, 1.0) - 1.0) * self._gap  # the burst's reads ahead of time
        # asyncio's clock, which times its sleeps: the pace and the waits agree by construction.
        self._clock = asyncio.get_running_loop().time
        self._due = self._clock()  # when the next read would be due at the steady rate

    async def take(self) -> None:
        now = self._clock()
        due = max(self._due, now)
        self._due = due + self._gap
        wait = due - now - self._tolerance
        if wait > 0:
            await asyncio.sleep(wait)


async def _check_within(
    due: Sequence[_Item],
    order: list[int],
    new_deps: Callable[[], Deps],
    concurrency: int,
    time_left: Callable[[], float | None],
    pacer: _Pacer,
    check: Callable[[_Item, Deps, _Pacer], Awaitable[_Outcome]],
) -> dict[int, _Outcome]:
    """The records of `due` (payments, or paid purchases) checked by `check` in `order` (indexes
    into it) by at most `concurrency` workers, their provider reads paced by `pacer`, within the
    deadline: its index -> what its check found (for a payment its mismatches, None when its
    provider could not be read now, or MOVING); one not reached (or dropped at the deadline) has
    no entry."""
    outcomes: dict[int, _Outcome] = {}
    if not due:
        return outcomes
    at_start = time_left()
    margin = None if at_start is None else max(REPLY_MARGIN_SECONDS, at_start * REPLY_MARGIN_SHARE)
    next_index = iter(order)  # shared: each worker takes the next payment not taken
    slowest = 0.0
    # Checks are timed by asyncio's clock, the one `asyncio.wait` below times the deadline by.
    clock = asyncio.get_running_loop().time

    def may_start() -> bool:
        left = time_left()
        return left is None or margin is None or left - margin > slowest

    async def worker() -> None:
        nonlocal slowest
        deps = new_deps()  # its own unit of work: workers read the database concurrently
        for i in next_index:
            if not may_start():
                return
            began = clock()
            outcomes[i] = await check(due[i], deps, pacer)
            slowest = max(slowest, clock() - began)

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


async def _check(payment: Payment, deps: Deps, pacer: _Pacer) -> list[Mismatch] | Moving | None:
    """One payment against its provider; None when the provider cannot be read now, MOVING when
    a provider call on it was begun since the round read it."""
    try:
        return await _reconcile_one(payment, deps, pacer)
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


async def _reconcile_one(payment: Payment, deps: Deps, pacer: _Pacer) -> list[Mismatch] | Moving:
    """One payment against its provider: the charge, and the refunds of money taken.

    `payment` is the round's read, made before the provider's (a round reads its payments first
    and each from its provider later: pacing, concurrency, a loaded machine), and a capture may
    have been begun and done in between. So a finding is judged again with the payment read
    anew, after the provider's read (`mismatch_across`: which read judges which disagreement):
    money the provider took and we did not is named only if that read, no provider call in
    flight, still shows it not taken; a payment whose call is still under way then (our record
    of its outcome not written yet) cannot be told and is left to the next round (MOVING) rather
    than judged by either read. The re-read is one read by primary key, on a finding only: a
    payment that agrees (the usual case) costs nothing more."""
    # Always the provider that made the payment, never the default (issue 8).
    provider = deps.providers.of_existing(payment.provider)
    await pacer.take()
    intent = await provider.retrieve_payment(payment.provider_payment_id)
    found: list[Mismatch] = []
    now = deps.clock()
    detail = provider_mismatch(payment, intent, now)
    if detail:
        detail = mismatch_across(payment, intent, await _payment_now(payment, deps), now)
        if detail is None:
            return MOVING
    if detail:
        found.append(Mismatch(payment.id, payment.provider_payment_id, detail))
    if payment.state in TAKEN or intent.status is ProviderStatus.CAPTURED:
        found += await _reconcile_refunds(payment, provider, intent, deps, pacer)
    return found


async def _reconcile_refunds(
    payment: Payment,
    provider: PaymentProvider,
    intent: ProviderPayment,
    deps: Deps,
    pacer: _Pacer,
) -> list[Mismatch]:
    """Money was taken: the provider's refunds of it against our refund records.

    Our records are read before and after the provider's list: a refund begins with its local
    record, so records unchanged across the list (none in flight) saw every refund of ours
    that the list can show; a round where they changed is skipped.

    A provider whose refunds made at it arrive by no event (Fatora: `refunds_by_event` False)
    has this read as the only word of them: a refund finding is then applied through the same
    core as a webhook's (provider_refunds.book_provider_refunds: a succeeded refund Hirepay has
    no record of recorded once under the payment's lock and booked, its settlement event
    published), and judged again against the records as they are then, so that what was booked
    (by this round or one at once) is no longer named; what could not be booked yet still is."""
    before = await _local_refunds(payment.id, deps)
    if refunds_in_flight(before):
        return []
    await pacer.take()
    remote = await provider.list_refunds(intent.id)
    if await _local_refunds(payment.id, deps) != before:
        return []
    local = before
    found = refund_mismatches(local, remote)
    if found and not provider.refunds_by_event:
        # Judged again whatever this booked: a round at once (the auditor's and a report on
        # demand) may have booked it first, under the payment's lock.
        await book_provider_refunds(deps, payment.id, remote, RECONCILIATION)
        found = refund_mismatches(await _local_refunds(payment.id, deps), remote)
    return [
        Mismatch(payment.id, payment.provider_payment_id, detail, MismatchKind.REFUND)
        for detail in found
    ]


async def _payment_now(payment: Payment, deps: Deps) -> Payment:
    """The payment as stored now (a payment is never deleted: `payment` should it be gone)."""
    async with deps.uow as uow:
        return await uow.payments.get(payment.id) or payment


async def _local_refunds(payment_id: str, deps: Deps) -> list[Refund]:
    async with deps.uow as uow:
        return await uow.refunds.list_for_payment(payment_id)
