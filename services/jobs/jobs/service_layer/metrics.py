"""The jobs service's Prometheus metrics (OPS-1): the posting funnel, saga outcomes, transitions."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Counted in one call, each series looked up once per label values (issue 13).
from hirepay_platform.metrics import count as count
from hirepay_platform.metrics import observe as observe
from jobs.domain.model import Transition

FUNNEL = Counter(
    "hirepay_jobs_funnel_total",
    "Pay-to-post funnel steps: draft_created, previewed, payment_started, paid, activated.",
    ["step"],
)
SAGA_OUTCOMES = Counter(
    "hirepay_jobs_saga_outcomes_total",
    "Finished pay-to-post sagas by result (completed, failed, refunded) and reason.",
    ["result", "reason", "method"],
)
SAGA_DURATION = Histogram(
    "hirepay_jobs_saga_duration_seconds",
    "Time from a saga's start to its final state, by result.",
    ["result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
)
TRANSITIONS = Counter(
    "hirepay_jobs_transitions_total",
    "Job status transitions by from and to status.",
    ["from_status", "to_status"],
)
STUCK_SAGAS = Gauge(
    "hirepay_jobs_stuck_sagas",
    "Unfinished pay-to-post sagas past their deadline (alert when above zero for long).",
)
PARTICIPANT_FAILURES = Counter(
    "hirepay_jobs_participant_failures_total",
    "Failed participant calls of the saga by step and reason (retried when transient).",
    ["step", "reason"],
)
SETTLEMENT_EVENTS = Counter(
    "hirepay_jobs_settlement_events_total",
    "Settlement events consumed from payments, by type and whether they changed a saga.",
    ["type", "applied"],
)
BLOCKED_POSTINGS = Counter(
    "hirepay_jobs_blocked_postings_total",
    "Posting attempts refused because the company had too many failed payments (PAY-14).",
)
CONSISTENCY_VIOLATIONS = Gauge(
    "hirepay_consistency_violations",
    "Current violations of Hirepay's promises found by the consistency auditor (OPS-3), by check.",
    ["check"],
)
AUDIT_RUNS = Counter(
    "hirepay_consistency_audits_total",
    "Consistency audit rounds by outcome (ok, or the source that could not be read).",
    ["outcome"],
)
ESCROW_REFUNDS_AT_PROVIDER = Counter(
    "hirepay_escrow_refunds_at_provider_total",
    "Refunds of offer money made at the provider, outside the escrow, by what they did: unwound"
    " (the escrow emptied to provider clearing), frozen (in part: owed, a dispute opened) or owed"
    " (after the escrow was released).",
    ["outcome"],
)
ESCROW_REFUNDS_REFUSED = Counter(
    "hirepay_escrow_refunds_refused_total",
    "Card refunds of offer money (an engagement's cancellation or resolution) the provider"
    " refused outright: the money step ended, what it gave back booked to the engagement's"
    " receivable, owed to the customer; by step (cancel, resolve).",
    ["step"],
)
RECEIVABLES_SETTLED = Counter(
    "hirepay_escrow_receivables_settled_total",
    "Money owed to a customer on an engagement's receivable that an operator recorded as paid"
    " back outside Hirepay (receivable -> outside): settlements recorded, by currency.",
    ["currency"],
)
ESCROW_REFUNDS_FAILED_AFTER_SUCCESS = Counter(
    "hirepay_escrow_refunds_failed_after_success_total",
    "Refunds of offer money that failed at the provider after they succeeded, reversed on the"
    " ledger (clearing -> the engagement's receivable), by which refund: at_provider (one made at"
    " the provider) or own (the engagement's cancellation or resolution).",
    ["refund"],
)
EXPIRED_JOBS = Counter("hirepay_jobs_expired_total", "Active postings expired by the worker.")


def record_transitions(transitions: list[Transition]) -> None:
    """Count transitions once they are committed."""
    for t in transitions:
        # StrEnums: str() is the value, without the `.value` property's calls (issue 13).
        count(TRANSITIONS, str(t.from_status) if t.from_status else "", str(t.to_status))
