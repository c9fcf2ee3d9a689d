"""The consistency auditor's rules (OPS-3): pure checks of Hirepay's promises over facts read from
the jobs database and, through their gRPC contracts, from payments and the wallet."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jobs.domain.model import Job, JobStatus, may_be_live
from jobs.domain.posting_saga import Saga, TryResult, TryState


class Check(enum.StrEnum):
    """One promise the auditor checks; the `check` label of `hirepay_consistency_violations`."""

    # An active job whose money is not taken (promise 1, PAY-4).
    ACTIVE_JOB_WITHOUT_PAYMENT = "active_job_without_payment"
    # Money taken for a posting that is neither live (or was live) nor refunded (promise 3).
    CAPTURED_PAYMENT_WITHOUT_JOB = "captured_payment_without_job"
    # A payment still not final past its deadline (promise 4).
    PAYMENT_PAST_DEADLINE = "payment_past_deadline"
    # A ledger transfer whose entries do not sum to zero per unit (ESC-1).
    UNBALANCED_TRANSACTION = "unbalanced_transaction"
    # An account below zero that may not be, or whose holds exceed its balance (ESC-1).
    BALANCE_LIMIT_BREACH = "balance_limit_breach"
    # A hold past its expiry still reserving money (ESC-2).
    EXPIRED_HOLD_UNRELEASED = "expired_hold_unreleased"
    # The provider's charge (money taken or held) differs from the local record.
    PROVIDER_MISMATCH = "provider_mismatch"
    # A captured payment or refund without its ledger transfer through provider clearing (ESC-1).
    LEDGER_BOOKING_MISSING = "ledger_booking_missing"
    # Platform revenue on the ledger differs from captured fees minus refunds, per currency.
    LEDGER_REVENUE_MISMATCH = "ledger_revenue_mismatch"
    # A provider refund unknown locally, a local refund unknown to the provider, or one whose
    # amount or outcome differs.
    PROVIDER_REFUND_MISMATCH = "provider_refund_mismatch"
    # An engagement's money step (escrow) decided but still not on the ledger past the grace:
    # the escrow worker keeps failing to post it (ESC-7, ESC-8).
    ESCROW_STEP_STUCK = "escrow_step_stuck"
    # Offer money refunded at the provider after the escrow could no longer give it back (in
    # part while held, or after it was released): booked from the engagement's receivable and
    # owed to the platform. A known state for operators to settle, not a missing booking.
    ESCROW_REFUND_OWED = "escrow_refund_owed"
    # A refund of offer money that failed at the provider after it succeeded, reversed to the
    # engagement's receivable, which now holds money owed to the customer (the refund never
    # reached them). A known state for operators to pay back, not a missing booking.
    ESCROW_REFUND_PAYABLE = "escrow_refund_payable"
    # A withdrawal whose money stays held (or, returned by the bank, owed back) past its grace:
    # a step payments keeps failing, or a payout in transit the bank has not answered (ESC-9).
    WITHDRAWAL_STUCK = "withdrawal_stuck"
    # A payment whose provider payments has not been able to read for longer than its grace
    # (PAYMENTS_RECONCILE_UNREADABLE_GRACE_SECONDS): nobody compares it with the provider.
    PROVIDER_UNREADABLE = "provider_unreadable"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken promise and the id of what breaks it."""

    check: Check
    subject_id: str
    detail: str


@dataclass(frozen=True, slots=True)
class PaymentFact:
    """What payments says about one of its payments (read through ListPayments)."""

    payment_id: str
    global_tx_id: str
    subsystem: str
    state: str  # the payments contract's state name, e.g. CAPTURED
    captured_minor: int
    refunded_minor: int
    created_at: datetime
    updated_at: datetime
    purpose: str = ""  # the payment's metadata `purpose` ("" for a posting fee)


# Payments of the jobs subsystem that pay for something other than a posting: marketplace offers
# and direct job payments (their money ends in an engagement's escrow, not a live posting).
NOT_POSTING_PURPOSES = frozenset({"marketplace", "job_payment"})

# Payment states that are not final: the payment still waits for someone (promise 4).
NON_FINAL_PAYMENT_STATES = frozenset({"REQUIRES_ACTION", "PROCESSING", "AUTHORIZED", "UNKNOWN"})
# Job statuses a posting reaches only after it was live.
_WAS_LIVE = frozenset({JobStatus.ACTIVE, JobStatus.EXPIRED, JobStatus.FILLED})


@dataclass(frozen=True, slots=True)
class BookedPurchaseRefund:
    """A plan purchase's refund made at its provider (one that sends no refund event: Fatora's
    dashboard) that payments' reconciliation found and booked."""

    transaction_id: str
    provider: str
    amount_minor: int
    currency: str
    refunded_in_full: bool


@dataclass(frozen=True, slots=True)
class PurchaseRefunds:
    """A reconciliation's paid plan purchases read for refunds made at a provider that sends no
    refund event: how many were read, how many had refunds not booked (found), those it booked,
    and how many could not be read now."""

    checked: int = 0
    found: int = 0
    booked: tuple[BookedPurchaseRefund, ...] = ()
    unreadable: int = 0


@dataclass(frozen=True, slots=True)
class ProviderRound:
    """Payments' reconciliation with the providers: what disagrees, and its purchases' refunds."""

    violations: list[Violation] = field(default_factory=list)
    purchase_refunds: PurchaseRefunds = field(default_factory=PurchaseRefunds)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """One audit round: every violation found, and when; what its reconciliation found and
    booked of purchases refunded at a provider that sends no refund event (None: not read)."""

    checked_at: datetime
    violations: tuple[Violation, ...] = field(default_factory=tuple)
    purchase_refunds: PurchaseRefunds | None = None

    def counts(self) -> dict[Check, int]:
        """Violations per check, every check present (0 when it holds)."""
        found = Counter(v.check for v in self.violations)
        return {check: found.get(check, 0) for check in Check}


# A payment refunded in part still paid for its posting: a partial refund (the admin's, or one made
# at the provider) leaves the posting live by design (posting/refunded_at_provider.py ends it only
# when refunded in full), so its branch reads REFUNDED with the provider state PARTIALLY_REFUNDED
# and is not a job live without its money.
_KEPT_LIVE_PROVIDER_STATES = frozenset({"PARTIALLY_REFUNDED"})


def _kept_live(branch: TryResult) -> bool:
    return branch.state is TryState.REFUNDED and branch.provider_state in _KEPT_LIVE_PROVIDER_STATES


def active_job_violation(job: Job, branch: TryResult | None) -> Violation | None:
    """An active job must satisfy `may_be_live`, and its branch must show the money taken
    (`branch` is the participant's view; None when it could not be read this round)."""
    if job.status is not JobStatus.ACTIVE:
        return None
    if not may_be_live(job):
        return Violation(
            Check.ACTIVE_JOB_WITHOUT_PAYMENT,
            job.id,
            f"payment_status={job.payment_status} payment_id={job.payment_id or '-'}",
        )
    if branch is not None and branch.state is not TryState.CAPTURED and not _kept_live(branch):
        return Violation(
            Check.ACTIVE_JOB_WITHOUT_PAYMENT,
            job.id,
            f"payment {job.payment_id} is {branch.provider_state or branch.state.value}",
        )
    return None


def owes_a_posting(payment: PaymentFact, *, now: datetime, grace: timedelta) -> bool:
    """Whether money taken by `payment` must be attached to a posting now: a posting fee of the
    jobs subsystem, captured, not refunded in full, and unchanged for `grace` (the rest of
    captured_payment_violation needs its saga and job; a payment this says no to needs neither)."""
    return (
        payment.subsystem == "jobs"
        and payment.captured_minor > 0
        and payment.purpose not in NOT_POSTING_PURPOSES
        and payment.refunded_minor < payment.captured_minor
        and now - payment.updated_at >= grace
    )


def captured_payment_violation(
    payment: PaymentFact, saga: Saga | None, job: Job | None, *, now: datetime, grace: timedelta
) -> Violation | None:
    """Money taken for a posting must end attached to it (live now or before) or returned.

    A payment that changed within `grace` may still be on its way (a capture whose activation
    is being committed, a refund in flight) and is looked at again next round."""
    if not owes_a_posting(payment, now=now, grace=grace):
        return None
    if saga is None:
        return Violation(
            Check.CAPTURED_PAYMENT_WITHOUT_JOB, payment.payment_id, "no saga for this payment"
        )
    # Live, or was live and then expired, filled or cancelled (refunded per the policy).
    if (
        saga.activated
        and job is not None
        and job.saga_id == saga.id
        and (job.status in _WAS_LIVE or job.status is JobStatus.CANCELLED)
    ):
        return None
    return Violation(
        Check.CAPTURED_PAYMENT_WITHOUT_JOB,
        payment.payment_id,
        f"saga {saga.id} is {saga.state.value}, job "
        f"{job.status.value if job is not None else 'missing'}",
    )


def payment_deadline_violation(
    payment: PaymentFact, *, now: datetime, deadline: timedelta
) -> Violation | None:
    """A payment must reach a final state within its deadline (promise 4)."""
    if payment.state not in NON_FINAL_PAYMENT_STATES or now - payment.created_at <= deadline:
        return None
    age = int((now - payment.created_at).total_seconds())
    return Violation(
        Check.PAYMENT_PAST_DEADLINE, payment.payment_id, f"{payment.state} for {age} s"
    )


# Checks whose rounds read only what changed since the last round (between full sweeps): their
# violations found earlier are carried until the next full sweep reads everything again. The
# other checks read current state every round (payments not final, holds, accounts, stuck steps
# and withdrawals, the provider's most recent payments) and replace their findings.
WINDOWED_CHECKS = frozenset(
    {
        Check.ACTIVE_JOB_WITHOUT_PAYMENT,
        Check.CAPTURED_PAYMENT_WITHOUT_JOB,
        Check.UNBALANCED_TRANSACTION,
        Check.LEDGER_BOOKING_MISSING,
        Check.LEDGER_REVENUE_MISMATCH,
    }
)


@dataclass(slots=True)
class AuditCursor:
    """One auditor's memory between its rounds (OPS-3, issue 13): when its last round and its
    last full sweep ran, and the violations of the windowed checks still open.

    A round is a full sweep (every row ever written) when the auditor has none behind it (after a
    start, or after taking the auditor lock over) or when the last one is `full_every` old;
    otherwise it reads only the rows changed since the previous round began, minus `overlap`
    (`since`). Rows are found by their change time, which is taken when the writing transaction
    runs, not when it commits: a row committed up to `overlap` after its time (a transaction in
    flight, a clock apart) is still in the next window; one later still is in the next full sweep.
    A cursor moves only after a round completed (`advance`), so a failed round's window is read
    again by the next one."""

    full_every: timedelta
    overlap: timedelta
    last_round_at: datetime | None = None
    last_full_at: datetime | None = None
    carried: dict[tuple[Check, str], Violation] = field(default_factory=dict)

    def since(self, now: datetime) -> datetime | None:
        """The window of a round starting `now`: rows changed at or after this; None for a full
        sweep."""
        if self.last_round_at is None or self.last_full_at is None:
            return None
        if now - self.last_full_at >= self.full_every:
            return None
        return self.last_round_at - self.overlap

    def carried_subjects(self, check: Check) -> list[str]:
        """The subjects of `check` earlier rounds found and no full sweep has cleared yet."""
        return sorted(subject for kind, subject in self.carried if kind is check)

    def advance(
        self,
        now: datetime,
        since: datetime | None,
        found: list[Violation],
        rechecked: frozenset[tuple[Check, str]] = frozenset(),
    ) -> tuple[Violation, ...]:
        """Record the round that began `now` and read from `since` (None: a full sweep); the
        round's report: its own violations, and the windowed ones earlier rounds found since the
        last full sweep (a window does not read them again, unless it `rechecked` them: those it
        did not find again are repaired)."""
        if since is None:
            self.carried = {}
            self.last_full_at = now
        for key in rechecked:
            self.carried.pop(key, None)
        self.last_round_at = now
        current: list[Violation] = []
        for v in found:
            if v.check in WINDOWED_CHECKS:
                self.carried[(v.check, v.subject_id)] = v
            else:
                current.append(v)
        return (*current, *self.carried.values())
