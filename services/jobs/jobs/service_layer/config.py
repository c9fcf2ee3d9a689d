"""What the use cases need to know from configuration, as a plain value (built from settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.domain.escrow import CancelPolicy
from jobs.domain.pricing import PriceList, RefundPolicy


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """Business and saga parameters of the jobs service."""

    price_list: PriceList
    terms_version: str
    posting_days: int = 30
    refund_policy: RefundPolicy = field(default_factory=RefundPolicy)
    # Identity of this process in leases (several replicas may run).
    instance_id: str = "jobs"
    # How long a saga's holder may work on it before another replica may take over.
    lease_seconds: float = 30.0
    # A saga that has not reached activation by then is cancelled.
    saga_deadline_seconds: float = 900.0
    # A payment that settles later (bank transfer, 3-D Secure, checkout) may take this long.
    settlement_deadline_seconds: float = 86_400.0
    # How often recovery polls a saga waiting for settlement (a backstop for missed events).
    settlement_poll_seconds: float = 60.0
    # A Confirm refused this many times in a way waiting will not fix (the provider knows no such
    # payment, the authorization expired) is final: the job is never published, the saga cancels.
    capture_max_refusals: int = 3
    # The consistency auditor: a payment changed this recently may still be on its way (not yet
    # a violation); a payment not final after `settlement_deadline_seconds` plus this is one.
    audit_grace_seconds: float = 600.0
    # The auditor's worker reads only what changed since its previous round (minus the overlap:
    # transactions committing after their rows' time, clocks apart) and everything once after
    # start and then every `audit_full_sweep_seconds` (issue 13: every round read all history).
    audit_full_sweep_seconds: float = 3_600.0
    audit_overlap_seconds: float = 120.0
    # Backoff of retried Confirm / Cancel / Refund calls.
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    # How long a twin request waits for the first one to answer (PAY-8).
    idempotency_wait_seconds: float = 10.0
    idempotency_poll_seconds: float = 0.05
    # A credits hold outlives the saga deadline so a recovered saga can still confirm it.
    hold_expiry_seconds: int = 3_600
    # The provider payment method used for a bank transfer when the client sends none.
    bank_transfer_token: str = "pm_bank_transfer"
    # PAY-14: this many failed payments (declines, insufficient funds, ...) of one company within
    # the window block further postings until the window passes; 0 disables the rule.
    max_failed_payments: int = 10
    failed_payments_window_seconds: float = 3_600.0
    # Marketplace (ESC-6..8). An offer not accepted within its validity expires and is released;
    # it must be shorter than a card authorization lives (checked in settings).
    offer_validity_seconds: int = 172_800
    # A coin hold outlives its offer by this much, so the expiry (or a late acceptance being
    # captured) always finds it still pending.
    offer_hold_grace_seconds: int = 3_600
    # Fees in basis points of the engagement amount: at funding (to revenue) and at completion.
    acceptance_fee_bps: int = 1_000
    completion_fee_bps: int = 2_000
    # ESC-8: what a cancellation gives back (the fee too before work starts, by default).
    cancel_policy: CancelPolicy = field(default_factory=CancelPolicy)
