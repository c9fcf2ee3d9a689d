"""Read-only queries for the consistency auditor (OPS-3): payments by state, and the provider's
records compared with ours through the provider port."""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


async def reconcile_provider(cmd: commands.ReconcileProvider, deps: Deps) -> Reconciliation:
    """Re-fetch the most recently changed payments, each from the provider that made it, and name
    every record that disagrees: the charge, and for money taken each refund (the provider's
    refunds matched with our refund records). Payments with a provider call in flight are skipped
    (they may differ a moment), as are those whose provider is unreachable or no longer
    configured here."""
    limit = min(max(cmd.limit, 1), MAX_RECONCILE)
    async with deps.uow as uow:
        recent = await uow.payments.recently_changed(limit)
    checked = 0
    mismatches: list[Mismatch] = []
    for payment in recent:
        if not payment.provider_payment_id or in_flight(payment):
            continue
        try:
            found = await _reconcile_one(payment, deps)
        except InvalidRequest as exc:
            found = [Mismatch(payment.id, payment.provider_payment_id, f"provider: {exc.message}")]
        except OutcomeUnknown as exc:
            log.info("reconcile: %s unreadable now: %s", payment.id, exc.message)
            continue
        checked += 1
        mismatches += found
    return Reconciliation(checked, mismatches)


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
