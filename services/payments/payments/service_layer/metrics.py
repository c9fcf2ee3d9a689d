"""Business metrics of the payments service (OPS-1), module-level Prometheus collectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

# The business metrics of the posting path count through these: each label set's series looked
# up once, counted in one call (issue 13).
from hirepay_platform.metrics import child as child
from hirepay_platform.metrics import count as count
from hirepay_platform.metrics import observe as observe

if TYPE_CHECKING:
    from payments.domain.model import Payment

PAYMENT_ATTEMPTS = Counter(
    "hirepay_payment_attempts_total",
    "Payment authorizations by outcome (authorized, requires_action, processing, failed, unknown)"
    " and failure reason.",
    ["method", "outcome", "reason"],
)
REVENUE = Counter(
    "hirepay_payment_revenue_minor_total",
    "Money captured, in minor units, by currency.",
    ["currency"],
)
REFUNDS = Counter(
    "hirepay_payment_refunds_total",
    "Refunds by reason and outcome.",
    ["reason", "outcome"],
)
REFUNDED = Counter(
    "hirepay_payment_refunded_minor_total",
    "Money refunded, in minor units, by currency.",
    ["currency"],
)
PROVIDER_REFUNDS = Counter(
    "hirepay_payment_provider_refunds_total",
    "Refunds found at the provider by webhook, by provider and result: booked (made outside"
    " Hirepay, e.g. from the provider's dashboard, and booked now), reconciled (the same, at a"
    " provider that sends no refund event, e.g. Fatora: found and booked by the reconciliation),"
    " own (made by Hirepay: its"
    " request records it), pending (not succeeded yet), failed_after_success (a succeeded refund"
    " the provider reports failed since: reversed on the ledger), not_captured (a refund of a"
    " payment that took nothing, e.g. Razorpay's auto-refund of an authorization let go:"
    " recorded only); of subscription purchases:"
    " purchase_booked (refunded in full: credits revoked), purchase_partial (refunded in part: the"
    " money booked, the credits kept), purchase_reconciled (refunded in full at a provider that"
    " sends no refund event, found by the reconciliation: credits revoked).",
    ["provider", "result"],
)
REFUND_COINS_SHORT = Counter(
    "hirepay_payment_refund_coins_short_total",
    "Coins a refund made at the provider could not take back (spent or held): left with the"
    " buyer, their cash refunded; to be recovered.",
)
REFUNDS_FAILED_AFTER_SUCCESS = Counter(
    "hirepay_payment_refunds_failed_after_success_total",
    "Refunds that succeeded and then failed at the provider (the money never reached the"
    " customer), reversed on the ledger, by provider and the subsystem the payment was for: the"
    " customer has neither the refund nor what was refunded (a posting ended by it stays ended).",
    ["provider", "subsystem"],
)
WEBHOOK_EVENTS = Counter(
    "hirepay_webhook_events_total",
    "Provider webhook deliveries by event type and result"
    " (applied, no_effect, duplicate, invalid_signature, not_applicable_yet, provider_error).",
    ["type", "result"],
)
WEBHOOK_LAG = Histogram(
    "hirepay_webhook_lag_seconds",
    "Delay between an event's creation at the provider and its ingestion.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
)
OUTBOX_BACKLOG = Gauge(
    "hirepay_payments_outbox_backlog",
    "Settlement callbacks written to the outbox and not yet delivered.",
)
# The settlement stream's horizon (payments 0020), sampled by the poller every few seconds
# (handlers/horizon.py): every replica reports the same server, alerts take the max.
SETTLEMENT_HORIZON_AGE = Gauge(
    "hirepay_payment_settlement_horizon_age_seconds",
    "Age of the oldest running transaction holding a transaction id on the payments database's"
    " PostgreSQL server, any database or role (0: none): the settlement stream gives no event"
    " written after it began until it ends.",
)
SETTLEMENT_HELD_AGE = Gauge(
    "hirepay_payment_settlement_held_event_age_seconds",
    "Age of the oldest committed settlement event the stream holds back behind its horizon"
    " (0: none held): how late consumers get it, so far.",
)
PROVIDER_LATENCY = Histogram(
    "hirepay_provider_call_duration_seconds",
    "Latency of provider calls by operation and outcome.",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UNKNOWN_RESOLVED = Counter(
    "hirepay_payment_unknown_resolved_total",
    "Payments whose UNKNOWN outcome the poller resolved, by final state.",
    ["state"],
)
SUBSCRIPTIONS = Counter(
    "hirepay_subscription_transactions_total",
    "Subscription transactions by final status.",
    ["user_type", "status"],
)
# Card disputes (chargebacks) by provider webhook (handlers/disputes.py), each counted once when
# its record changes (never per delivery).
DISPUTES_OPENED = Counter(
    "hirepay_payment_disputes_opened_total",
    "Card disputes (chargebacks) opened at a provider, by provider and the cardholder's reason.",
    ["provider", "reason"],
)
DISPUTES_CLOSED = Counter(
    "hirepay_payment_disputes_closed_total",
    "Card disputes closed, by provider and outcome (won, lost, warning_closed, prevented).",
    ["provider", "outcome"],
)
DISPUTED = Counter(
    "hirepay_payment_disputed_minor_total",
    "Money disputed, in minor units, by currency (counted when the dispute opens).",
    ["currency"],
)
DISPUTE_MONEY_UNBOOKED = Counter(
    "hirepay_payment_dispute_money_unbooked_total",
    "Disputes with money Hirepay did not book because it cannot be known exactly, by provider"
    " and why (refund_currency: PayPal refunded the buyer in another currency than the held"
    " amount; several_payments: one dispute of captures of several orders). Counted once per"
    " dispute (as it closes; several_payments per event stored); the audit entry names it.",
    ["provider", "why"],
)
TIME_TO_FINAL = Histogram(
    "hirepay_payment_time_to_final_seconds",
    "Time from a payment's start to its final state (promise 4), by method and final state"
    " (CAPTURED, VOIDED, FAILED).",
    ["method", "state"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 21600, 86400),
)


def observe_final(payment: Payment, was_final: bool) -> None:
    """Count a payment that just reached its final state (after the commit that recorded it)."""
    if was_final or not payment.final:
        return
    elapsed = (payment.updated_at - payment.created_at).total_seconds()
    observe(TIME_TO_FINAL, max(0.0, elapsed), payment.method, payment.state)


CREDIT_GRANTS = Counter(
    "hirepay_credit_grants_total",
    "Plan purchases' bookings on the wallet (issue on payment, revoke on refund), by outcome: "
    "booked, or retry (the wallet did not acknowledge; the grant stays owed).",
    ["kind", "outcome"],
)

WITHDRAWALS = Counter(
    "hirepay_withdrawals_total",
    "Withdrawals that reached a final state (ESC-9): paid out, or failed with the money back.",
    ["outcome", "currency"],
)
