"""The consistency auditor's sources over gRPC: payments' ListPayments, ReconcileProvider and
AuditLedgerBookings, the wallet's AuditLedger (read-only calls through the services' contracts,
never their tables). An incremental round (`updated_since`, `since`) asks each for what changed
since then only (issue 13)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay_platform.wire import timestamp, to_datetime
from jobs.adapters.participants import CreditsParticipant, PaymentsParticipant
from jobs.domain.audit import (
    BookedPurchaseRefund,
    Check,
    PaymentFact,
    ProviderRound,
    PurchaseRefunds,
    Violation,
)

log = logging.getLogger(__name__)

# How many payments one ListPayments page carries.
PAGE_SIZE = 500


class GrpcConsistencySources:
    """ConsistencySources over the participants' gRPC clients."""

    def __init__(
        self,
        payments: PaymentsParticipant,
        wallet: CreditsParticipant,
        *,
        hold_grace_seconds: int,
        reconcile_limit: int,
        booking_grace_seconds: int = 600,
    ) -> None:
        self._payments = payments
        self._wallet = wallet
        self._hold_grace_seconds = hold_grace_seconds
        self._reconcile_limit = reconcile_limit
        self._booking_grace_seconds = booking_grace_seconds

    async def payments(
        self, states: frozenset[str], updated_since: datetime | None = None
    ) -> list[PaymentFact]:
        request = ppb.ListPaymentsRequest(
            states=[ppb.Payment.State.Value(s) for s in sorted(states)],
            subsystem="jobs",
            page_size=PAGE_SIZE,
            updated_since=timestamp(updated_since),  # None: unset, every payment
        )
        client = self._payments.client
        facts: list[PaymentFact] = []
        while True:
            reply = await client.call(self._payments.stub.ListPayments, request)
            facts += [_fact(p) for p in reply.payments]
            if not reply.next_page_token:
                return facts
            request.page_token = reply.next_page_token

    async def ledger(self, now: datetime, since: datetime | None = None) -> list[Violation]:
        request = wpb.AuditLedgerRequest(
            hold_grace_seconds=self._hold_grace_seconds, changed_since=timestamp(since)
        )
        reply = await self._wallet.client.call(self._wallet.stub.AuditLedger, request)
        found = [Violation(Check(f.kind), f.subject_id, f.detail) for f in reply.findings]
        # Every captured payment and refund booked through provider clearing (payments checks
        # its records against the wallet's entries). One is checked once settled for the grace,
        # so an incremental round reads those changed since `since` minus the grace: the ones
        # that came due since the previous round.
        grace = timedelta(seconds=self._booking_grace_seconds)
        bookings = await self._payments.client.call(
            self._payments.stub.AuditLedgerBookings,
            ppb.AuditLedgerBookingsRequest(
                grace_seconds=self._booking_grace_seconds,
                settled_since=timestamp(since - grace if since is not None else None),
            ),
        )
        return found + [Violation(Check(f.kind), f.subject_id, f.detail) for f in bookings.findings]

    async def provider(self) -> ProviderRound:
        request = ppb.ReconcileProviderRequest(limit=self._reconcile_limit)
        reply = await self._payments.client.call(self._payments.stub.ReconcileProvider, request)
        if reply.left or reply.unreadable:
            # Cut short by the call's deadline (payments checks those first next round), or
            # providers that could not be read: payments not compared this round.
            log.info(
                "audit: reconciliation checked %d payments, %d left, %d unreadable",
                reply.checked,
                reply.left,
                reply.unreadable,
            )
        # What it found, and what the last check found of the payments it did not reach: a
        # mismatch stays reported between the rounds that check its payment.
        found = [*reply.mismatches, *reply.earlier_mismatches]
        # And the payments whose provider has been unreadable past payments' grace: not a
        # disagreement, but ones nobody compares (a provider down for long, or no longer
        # configured), which an operator must hear of (OPS-3).
        blind = [
            Violation(Check.PROVIDER_UNREADABLE, m.payment_id, m.detail)
            for m in reply.unreadable_payments
        ]
        violations = [Violation(_mismatch_check(m), m.payment_id, m.detail) for m in found]
        return ProviderRound(violations + blind, _purchase_refunds(reply))


def _purchase_refunds(reply: ppb.ReconcileProviderResponse) -> PurchaseRefunds:
    """The paid plan purchases the reconciliation read for refunds made at a provider that sends
    no refund event (Fatora's dashboard), what it found and booked of them."""
    booked = tuple(
        BookedPurchaseRefund(
            b.transaction_id, b.provider, b.amount_minor, b.currency, b.refunded_in_full
        )
        for b in reply.purchase_refunds_booked
    )
    return PurchaseRefunds(
        reply.purchases_checked, reply.purchase_refunds_found, booked, reply.purchases_unreadable
    )


def _mismatch_check(m: ppb.ProviderMismatch) -> Check:
    if m.kind == ppb.ProviderMismatch.KIND_REFUND:
        return Check.PROVIDER_REFUND_MISMATCH
    return Check.PROVIDER_MISMATCH


def _fact(p: ppb.Payment) -> PaymentFact:
    return PaymentFact(
        payment_id=p.payment_id,
        global_tx_id=p.branch.global_tx_id,
        subsystem=p.metadata.get("subsystem", ""),
        state=ppb.Payment.State.Name(p.state),
        captured_minor=p.captured_minor,
        refunded_minor=p.refunded_minor,
        created_at=to_datetime(p.created_at),
        updated_at=to_datetime(p.updated_at),
        purpose=p.metadata.get("purpose", ""),
    )
