"""The ports the handlers need: repositories, the unit of work, and the saga's participants.

Adapters implement them against PostgreSQL and gRPC; unit tests implement them in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, Self

from jobs.domain.applications import Application, ViewState
from jobs.domain.audit import PaymentFact, ProviderRound, Violation
from jobs.domain.escrow import (
    AccountRef,
    Dispute,
    DisputeState,
    EscrowRefund,
    JobPaymentCheckout,
    JobPaymentSession,
    Leg,
    MoneyStep,
    PaymentRefund,
    RefundOutcome,
    StepKind,
)
from jobs.domain.events import MarketplaceEvent
from jobs.domain.marketplace import Engagement, FundingSplit, JobRequest, MarketJob, Offer
from jobs.domain.model import Job, Transition
from jobs.domain.posting_saga import PaymentMethod, Saga, TryResult
from jobs.domain.rate_limits import PostingAttempt


class JobRepository(Protocol):
    async def add(self, job: Job) -> None:
        """Insert a new job and its pending transitions."""

    async def add_if_absent(self, job: Job) -> bool:
        """Insert-first on (company_id, create_request_id): False if that create happened before."""

    async def get_by_create_request(self, company_id: str, request_id: str) -> Job | None: ...

    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None:
        """One job; `for_update` locks it until the transaction ends."""

    async def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs of `job_ids` that exist, by id (one query)."""

    async def save(self, job: Job) -> None:
        """Persist the job's current values and append its pending transitions."""

    async def list_active(
        self, category: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Job]:
        """Active jobs, newest posting first, strictly after the (posted_at, id) cursor."""

    async def list_by_company(
        self, company_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Job]:
        """A company's jobs in any status, newest first, strictly after the (created_at, id) cursor."""

    async def transitions(self, job_id: str) -> list[Transition]:
        """A job's recorded transitions, oldest first."""

    async def lock_expired(self, now: datetime, limit: int) -> list[Job]:
        """Up to `limit` active jobs past their expiry, locked, skipping rows other workers hold."""


class SagaRepository(Protocol):
    async def insert(self, saga: Saga) -> bool:
        """Insert-first on (company_id, request_id): True if inserted, False if the key exists."""

    async def insert_counting_failures(
        self, saga: Saga, since: datetime, reasons: frozenset[str]
    ) -> int | None:
        """insert, and in the same round trip the company's sagas started since `since` that
        failed with one of `reasons` (before this one): None if the key exists."""

    async def insert_posting(
        self,
        saga: Saga,
        job: Job,
        detail: str,
        *,
        failures_since: datetime | None = None,
        reasons: frozenset[str] = frozenset(),
        max_failures: int = 0,
        attempt: PostingAttempt | None = None,
    ) -> tuple[bool, int]:
        """A posting's first step as a transaction of its own, in one round trip: the saga
        inserted first on its key and, only then, its new job (with its pending transitions) and
        the saga's first log line `detail`; (inserted, the company's failed payments since
        `failures_since` with one of `reasons`, before this one). With `failures_since`, nothing
        is inserted unless they are below `max_failures`. `attempt`: the posting's rate-limit
        attempt, spent first in the same round trip as PostingRateRepository.take spends it
        (charged whatever the insert does), its outcome recorded on it (none when the user has
        no bucket yet: then nothing is spent or inserted); nothing is inserted unless its
        bucket had a token. Durable when this returns."""

    async def get(self, saga_id: str, *, for_update: bool = False) -> Saga | None: ...

    async def lock_with_job(
        self, saga_id: str, *, lock_job: bool = True, assumed: object | None = None
    ) -> tuple[Saga | None, Job | None]:
        """The saga, locked, and its job (locked too unless `lock_job` is False; None when the
        saga has none), read in one round trip. `assumed` (from `stored`, after the unit of
        work that last wrote them committed): the saga and job as they were then, not read; the
        commit then writes only if both still are, else raises StaleRow and writes nothing.
        A repository may ignore `assumed` and read them."""

    def stored(self, saga_id: str) -> object | None:
        """The saga and its job as this unit of work read or wrote them together (opaque), for
        a later unit of work's lock_with_job to assume; None when unknown."""

    async def get_by_key(self, company_id: str, request_id: str) -> Saga | None: ...

    async def get_many(self, saga_ids: Sequence[str]) -> dict[str, Saga]:
        """The sagas of `saga_ids` that exist, by id (one query)."""

    async def save(self, saga: Saga) -> None:
        """Persist the saga's current values."""

    async def log(self, saga_id: str, step: str, detail: str, at: datetime) -> None:
        """Append one entry to the saga's durable log (append-only)."""

    async def claim_due(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[Saga]:
        """Lease up to `limit` unfinished sagas that nobody holds and that are due, skipping rows
        another worker is claiming (FOR UPDATE SKIP LOCKED): no two workers take the same saga."""

    async def count_stuck(self, now: datetime) -> int:
        """Unfinished sagas past their deadline (not counting those waiting for settlement)."""


class SettlementRepository(Protocol):
    async def cursor(self, consumer: str) -> int:
        """The last settlement-event cursor the consumer has applied (0 if none)."""

    async def advance(self, consumer: str, cursor: int) -> None:
        """Record that events up to `cursor` are applied (in the same transaction as their effect)."""


class ApplicationRepository(Protocol):
    async def add_if_absent(self, application: Application) -> bool:
        """Insert-first on (job, applicant): False if this applicant applied to the job before."""

    async def get(self, application_id: str, *, for_update: bool = False) -> Application | None: ...

    async def get_for(self, job_id: str, applicant_id: str) -> Application | None: ...

    async def save(self, application: Application) -> None: ...

    async def list_by_applicant(self, applicant_id: str, limit: int) -> list[Application]: ...

    async def list_by_job(self, job_id: str, limit: int) -> list[Application]: ...


class CandidateViewRepository(Protocol):
    async def claim(
        self, company_id: str, applicant_id: str, transfer_id: str, now: datetime
    ) -> ViewState:
        """Insert-first the view as CHARGING; the row's state afterwards (CHARGED: paid before)."""

    async def state(self, company_id: str, applicant_id: str) -> ViewState | None: ...

    async def mark_charged(
        self, company_id: str, applicant_id: str, transfer_id: str, now: datetime
    ) -> bool:
        """Record the view as charged; True only for the one call that made it so."""

    async def release(self, company_id: str, applicant_id: str) -> None:
        """Forget a CHARGING claim whose debit the wallet refused (it took nothing)."""

    async def viewed(self, company_id: str, applicant_ids: list[str]) -> set[str]: ...


class CandidateCredits(Protocol):
    """The wallet's candidate credits (CR-3). The debit is one idempotent transfer per
    (company, applicant): a repeat is answered with the first and takes nothing more."""

    async def debit_view(self, company_id: str, applicant_id: str, transfer_id: str) -> None:
        """Take 1 CANDIDATE_CREDIT; InsufficientCredits when the company has none left."""


class PostingRateRepository(Protocol):
    async def take(
        self,
        user_id: str,
        attempt_id: str,
        *,
        limit: int,
        window_seconds: int,
        now: datetime,
        forget_before: datetime,
    ) -> tuple[float, bool]:
        """Refill the user's bucket (created full) and spend a token for the attempt unless it
        was charged before; remember a charged attempt and forget those charged before
        `forget_before`: (tokens left, allowed), decided one attempt at a time per user."""


class MarketJobRepository(Protocol):
    async def add_if_absent(self, job: MarketJob, request_id: str) -> MarketJob:
        """Insert-first on (customer, request_id) when a key is given; the job stored under it."""

    async def get(self, job_id: str, *, for_update: bool = False) -> MarketJob | None: ...

    async def save(self, job: MarketJob) -> None: ...

    async def list_open(
        self, category: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[MarketJob]: ...

    async def list_by_customer(
        self, customer_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[MarketJob]: ...


class JobRequestRepository(Protocol):
    async def add_if_absent(self, request: JobRequest) -> bool:
        """Insert-first on (job, contractor): False if this contractor asked for the job before."""

    async def get(self, request_id: str, *, for_update: bool = False) -> JobRequest | None: ...

    async def get_for(self, job_id: str, contractor_id: str) -> JobRequest | None: ...

    async def save(self, request: JobRequest) -> None: ...

    async def list_by_job(self, job_id: str, limit: int) -> list[JobRequest]: ...

    async def list_by_contractor(self, contractor_id: str, limit: int) -> list[JobRequest]: ...


class OfferRepository(Protocol):
    async def add(self, offer: Offer) -> None: ...

    async def get(self, offer_id: str, *, for_update: bool = False) -> Offer | None: ...

    async def get_by_saga(self, saga_id: str, *, for_update: bool = False) -> Offer | None: ...

    async def get_by_request(self, customer_id: str, request_id: str) -> Offer | None: ...

    async def save(self, offer: Offer) -> None: ...

    async def open_on_job(self, job_id: str, *, for_update: bool = False) -> list[Offer]:
        """The job's offers that are not final, oldest first."""

    async def list_by(
        self, *, job_id: str = "", customer_id: str = "", contractor_id: str = "", limit: int
    ) -> list[Offer]: ...


class EngagementRepository(Protocol):
    async def add(self, engagement: Engagement) -> None:
        """Insert the engagement and its pending transitions."""

    async def get(self, engagement_id: str, *, for_update: bool = False) -> Engagement | None: ...

    async def save(self, engagement: Engagement) -> None:
        """Persist its current values and append its pending transitions."""


class MarketplaceOutbox(Protocol):
    """Marketplace events to tell subsystems (the notifier relay delivers them)."""

    async def add(self, event: MarketplaceEvent) -> bool:
        """Insert-first on the event id: False if this event was recorded before."""

    async def for_subject(self, subject_id: str) -> list[MarketplaceEvent]:
        """The events about one offer or engagement, oldest first."""


class MoneyStepRepository(Protocol):
    async def add(self, step: MoneyStep) -> bool:
        """Insert-first on (engagement, kind): False if that step was recorded before."""

    async def get(
        self, engagement_id: str, kind: StepKind, *, for_update: bool = False
    ) -> MoneyStep | None: ...

    async def for_engagement(self, engagement_id: str) -> list[MoneyStep]: ...

    async def for_engagements(self, engagement_ids: list[str]) -> list[MoneyStep]:
        """The steps of several engagements in one read (the auditor)."""

    async def save(self, step: MoneyStep) -> None: ...

    async def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[MoneyStep]:
        """Pending steps due by `now`, not due again before `lease_until` (FOR UPDATE SKIP
        LOCKED: two workers never take the same step at once)."""

    async def pending_since(self, before: datetime, limit: int) -> list[MoneyStep]:
        """Steps still pending that were decided before `before`, oldest first (the auditor)."""

    async def refund_refused(self, limit: int) -> list[MoneyStep]:
        """Steps whose card refund the provider refused outright, oldest first (the auditor)."""


class DisputeRepository(Protocol):
    async def add(self, dispute: Dispute) -> None: ...

    async def get(self, dispute_id: str, *, for_update: bool = False) -> Dispute | None: ...

    async def for_engagement(self, engagement_id: str) -> Dispute | None: ...

    async def save(self, dispute: Dispute) -> None: ...

    async def list(
        self, state: DisputeState | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[Dispute]: ...


class EscrowRefundRepository(Protocol):
    """Refunds of engagements' money made at the provider, one per payments refund id."""

    async def add(self, refund: EscrowRefund) -> bool:
        """Insert-first on the refund id: False if it was recorded before."""

    async def for_engagement(self, engagement_id: str) -> list[EscrowRefund]:
        """The engagement's refunds at the provider, oldest first."""

    async def for_engagements(self, engagement_ids: list[str]) -> list[EscrowRefund]:
        """The refunds at the provider of several engagements in one read, oldest first."""

    async def save(self, refund: EscrowRefund) -> None: ...

    async def unsettled(self, limit: int) -> list[EscrowRefund]:
        """Refunds not yet posted or that left money owed, oldest first (the auditor)."""


class EscrowLedger(Protocol):
    """The wallet as the escrow's ledger: accounts by what they are, transfers by their id."""

    async def post(self, transfer_id: str, legs: tuple[Leg, ...], metadata: dict[str, str]) -> None:
        """Post the legs as one transfer (idempotent on `transfer_id`); INSUFFICIENT_FUNDS when
        the source cannot pay (nothing posted)."""

    async def account_id(self, ref: AccountRef) -> str:
        """The account's id (opened idempotently)."""

    async def credits_of(self, transfer_id: str) -> dict[str, int]:
        """What a posted transfer credited, by account id (empty if no such transfer)."""


class CardRefunds(Protocol):
    """Payments' Refund of a card-funded engagement."""

    async def refund(
        self, payment_id: str, amount_minor: int, request_id: str, reason: str
    ) -> RefundOutcome:
        """Refund (idempotent on `request_id`): the refund id and its status."""

    async def provider_of(self, payment_id: str) -> str:
        """The provider that took the payment (its clearing account books the refund)."""

    async def refunds_of(self, payment_id: str) -> tuple[str, list[PaymentRefund]]:
        """The payment's provider and every refund payments recorded of it, oldest first (read
        again on each refund event: the event itself is never trusted)."""


class JobPayments(Protocol):
    """Payments' direct job payment (ESC-5): a provider checkout whose success books the coins
    and the escrow on the ledger and publishes `payment.captured` with the engagement id."""

    async def create_checkout(self, request: JobPaymentCheckout) -> JobPaymentSession:
        """Open (idempotently on the engagement) the checkout of one engagement's payment."""


class JobsUnitOfWork(Protocol):
    """One local transaction over the jobs repositories; rolls back unless committed.

    Entering it again after it exits opens a new transaction (a saga spans several)."""

    jobs: JobRepository
    sagas: SagaRepository
    settlements: SettlementRepository
    applications: ApplicationRepository
    candidate_views: CandidateViewRepository

    rate_limits: PostingRateRepository
    market_jobs: MarketJobRepository
    job_requests: JobRequestRepository
    offers: OfferRepository
    engagements: EngagementRepository
    outbox: MarketplaceOutbox
    money_steps: MoneyStepRepository
    disputes: DisputeRepository
    escrow_refunds: EscrowRefundRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def commit(self) -> None: ...


class Participant(Protocol):
    """One Try-Confirm-Cancel participant (payments for money, the wallet for credits).

    Every call is idempotent on the saga's branch; errors are HirepayError with the participant's
    reason (RemoteError from the gRPC adapters)."""

    async def try_(self, saga: Saga) -> TryResult:
        """Reserve the saga's amount (Authorize / ReserveHold)."""

    async def confirm(self, saga: Saga) -> TryResult:
        """Take the reserved money (Capture / ConfirmHold)."""

    async def cancel(self, saga: Saga, reason: str) -> TryResult:
        """Release the reservation (Void / CancelHold); succeeds even if no Try ever arrived."""

    async def refund(self, saga: Saga, amount_minor: int, reason: str) -> None:
        """Return taken money (Refund / a reversal transfer)."""

    async def inspect(self, saga: Saga) -> TryResult:
        """Read the branch's state (GetPaymentByBranch / GetHold); ABSENT if no Try is recorded."""

    async def inspect_many(self, sagas: Sequence[Saga]) -> dict[str, TryResult]:
        """`inspect` of many sagas, by saga id, in as few calls as the participant allows (the
        auditor's page of active jobs)."""


class Participants(Protocol):
    def for_method(self, method: PaymentMethod) -> Participant: ...


class OfferFunds(Protocol):
    """The money of a marketplace offer (saga kind `offer`): the same TCC participants as
    pay-to-post (payments for cards, the wallet for coins), each call idempotent on the saga's
    branch, plus the ledger booking of the fee and the escrow."""

    async def reserve(self, saga: Saga, offer: Offer, hold_seconds: int) -> TryResult:
        """Try: authorize the card (not captured) or hold the customer's coins."""

    async def capture(
        self, saga: Saga, split: FundingSplit, escrow_account_id: str, fee_bps: int
    ) -> TryResult:
        """Confirm: capture the authorization, or post the coin hold split fee -> platform
        revenue, rest -> the escrow account."""

    async def book(self, saga: Saga, split: FundingSplit, escrow_account_id: str) -> None:
        """After a card capture: the one ledger transfer `payment:<pid>:capture` from provider
        clearing to revenue (fee) and escrow (rest). Coins: nothing (the capture booked it)."""

    async def release(self, saga: Saga, reason: str) -> TryResult:
        """Cancel: void the authorization or release the hold (null compensation if no Try)."""

    async def inspect(self, saga: Saga) -> TryResult:
        """Read the branch; ABSENT if no Try is recorded."""

    async def escrow_account(self, engagement_id: str, unit: str) -> str:
        """Open (idempotently) the engagement's escrow account `engagement:<id>` in `unit`."""


class OfferFundsByMethod(Protocol):
    def for_method(self, method: PaymentMethod) -> OfferFunds: ...


class ConsistencySources(Protocol):
    """What the consistency auditor reads from the other services, through their gRPC contracts
    only (read-only calls; no service reads another's tables)."""

    async def payments(
        self, states: frozenset[str], updated_since: datetime | None = None
    ) -> list[PaymentFact]:
        """Payments of the jobs subsystem in one of `states` (payments' ListPayments); with
        `updated_since`, only those changed at or after it."""

    async def ledger(self, now: datetime, since: datetime | None = None) -> list[Violation]:
        """The wallet's own ledger checks (AuditLedger): unbalanced transfers, balances past their
        limits, expired holds still reserving money; and payments' bookings on it
        (AuditLedgerBookings). With `since` (an incremental round) the history checks read only
        what changed since then (the bookings: what came due since then, after their grace)."""

    async def provider(self) -> ProviderRound:
        """Payments' reconciliation of its records with the provider's (ReconcileProvider): what
        disagrees, and what it found and booked of purchases refunded at a provider that sends
        no refund event."""
