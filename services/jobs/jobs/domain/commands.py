"""Commands: what callers ask the jobs service to do, in domain terms (built by the entrypoints)."""

from __future__ import annotations

from dataclasses import dataclass

from hirepay_platform.money import Money
from jobs.domain.model import JobFields
from jobs.domain.posting_saga import SettlementEvent


@dataclass(frozen=True, slots=True)
class Actor:
    """Who calls, as authenticated by the gateway; an empty user_id is anonymous."""

    user_id: str = ""
    role: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_company(self) -> bool:
        return self.role == "company" and bool(self.user_id)

    @property
    def is_customer(self) -> bool:
        return self.role == "customer" and bool(self.user_id)

    @property
    def is_contractor(self) -> bool:
        return self.role == "contractor" and bool(self.user_id)

    @property
    def name(self) -> str:
        return self.user_id or "anonymous"


@dataclass(frozen=True, slots=True)
class CreateDraft:
    actor: Actor
    fields: JobFields
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class UpdateDraft:
    actor: Actor
    job_id: str
    fields: JobFields
    paths: tuple[str, ...] = ()
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class GetJob:
    actor: Actor
    job_id: str


@dataclass(frozen=True, slots=True)
class PreviewJob:
    actor: Actor
    job_id: str


@dataclass(frozen=True, slots=True)
class ListActiveJobs:
    page_size: int = 0
    page_token: str = ""
    category: str = ""


@dataclass(frozen=True, slots=True)
class ListMyJobs:
    actor: Actor
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class CancelJob:
    actor: Actor
    job_id: str
    reason: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class ListJobTransitions:
    actor: Actor
    job_id: str


@dataclass(frozen=True, slots=True)
class PaymentChoice:
    """How the posting is paid; `expected_amount` (optional) is checked against the fee."""

    method: str
    payment_method_token: str = ""
    return_url: str = ""
    cancel_url: str = ""
    expected_amount: Money | None = None


@dataclass(frozen=True, slots=True)
class CreateJobWithPayment:
    """Run the pay-to-post saga for a draft (`draft_id`) or for new fields (`fields`)."""

    request_id: str
    actor: Actor
    payment: PaymentChoice
    accept_terms: bool
    fingerprint: str
    draft_id: str = ""
    fields: JobFields | None = None
    terms_version: str = ""
    email: str = ""
    # The caller's posting rate limit: one attempt (this request_id) is spent first (PAY-14).
    rate_limit: PostingRateLimit | None = None


@dataclass(frozen=True, slots=True)
class DriveCancellation:
    """Drive the Cancel or refund of a cancelled job's saga, under CancelJob's lease."""

    saga_id: str


@dataclass(frozen=True, slots=True)
class ApplySettlementEvent:
    """Apply one event of the payments settlement stream and advance `consumer`'s cursor (PAY-9);
    `record_cursor` False leaves the cursor to a later RecordSettlementCursor (a stream consumer
    records it once per run of events: applying an event twice is harmless)."""

    event: SettlementEvent
    consumer: str
    record_cursor: bool = True


@dataclass(frozen=True, slots=True)
class ApplySettlementEvents:
    """Apply a burst of the payments settlement stream's events, in their order (PAY-9); the
    caller records how far it got (each event is yielded once its effect is durable)."""

    events: tuple[SettlementEvent, ...]


@dataclass(frozen=True, slots=True)
class RecordSettlementCursor:
    """Advance `consumer`'s cursor to `cursor`, the last event it applied (never back)."""

    consumer: str
    cursor: int


@dataclass(frozen=True, slots=True)
class RecoverSagas:
    """Lease up to `limit` unfinished sagas that are due and drive each (the recovery tick)."""

    limit: int = 20


@dataclass(frozen=True, slots=True)
class ExpirePostings:
    """Expire up to `limit` active postings past their period (the expiry tick)."""

    limit: int = 100


@dataclass(frozen=True, slots=True)
class RunAudit:
    """Cross-check the services' data and the provider's once (the consistency auditor, OPS-3)."""

    page_size: int = 200


@dataclass(frozen=True, slots=True)
class GetConsistencyReport:
    """An audit round on demand, for an admin."""

    actor: Actor


@dataclass(frozen=True, slots=True)
class Apply:
    """An applicant applies to an active job posting (ESC-10)."""

    actor: Actor
    job_id: str
    name: str
    email: str
    cover_letter: str = ""
    resume_url: str = ""


@dataclass(frozen=True, slots=True)
class ListMyApplications:
    """An applicant's own applications, newest first."""

    actor: Actor


@dataclass(frozen=True, slots=True)
class ListJobApplications:
    """A company lists the applications to its job: free, without the applicants' details."""

    actor: Actor
    job_id: str


@dataclass(frozen=True, slots=True)
class ViewApplicant:
    """A company opens an application's applicant details: 1 candidate credit per applicant
    per company, the first time (CR-3)."""

    actor: Actor
    application_id: str


@dataclass(frozen=True, slots=True)
class DecideApplication:
    """A company accepts or rejects a pending application to its job."""

    actor: Actor
    application_id: str
    accept: bool


@dataclass(frozen=True, slots=True)
class PostingRateLimit:
    """A posting rate limit: `limit` attempts per `window_seconds`, per user (PAY-14)."""

    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class TakePostingAttempt:
    """Spend one posting attempt of the actor's rate limit; a repeated `attempt_id` spends none."""

    actor: Actor
    attempt_id: str
    limit: int
    window_seconds: int


# --------------------------------------------------------------------------- marketplace


@dataclass(frozen=True, slots=True)
class PostMarketJob:
    actor: Actor
    title: str
    description: str
    category: str = ""
    budget_minor: int = 0
    currency: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class GetMarketJob:
    actor: Actor
    job_id: str


@dataclass(frozen=True, slots=True)
class ListMarketJobs:
    """The caller's own jobs (`mine`, customers) or the open ones (contractors, admins)."""

    actor: Actor
    mine: bool
    page_size: int = 0
    page_token: str = ""
    category: str = ""


@dataclass(frozen=True, slots=True)
class RequestJob:
    actor: Actor
    job_id: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ListJobRequests:
    actor: Actor
    job_id: str = ""


@dataclass(frozen=True, slots=True)
class DecideJobRequest:
    actor: Actor
    job_request_id: str
    accept: bool


@dataclass(frozen=True, slots=True)
class SendOffer:
    actor: Actor
    job_id: str
    contractor_id: str
    amount_minor: int
    unit: str
    funding: str
    payment_token: str = ""
    message: str = ""
    request_id: str = ""
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class OfferCommand:
    """Get, accept, reject or withdraw one offer."""

    actor: Actor
    offer_id: str


@dataclass(frozen=True, slots=True)
class ListOffers:
    actor: Actor
    job_id: str = ""


# --------------------------------------------------------------------------- escrow (mk-escrow)


@dataclass(frozen=True, slots=True)
class EngagementCommand:
    """Get, start, complete or cancel one engagement."""

    actor: Actor
    engagement_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OpenDispute:
    actor: Actor
    engagement_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ResolveDispute:
    actor: Actor
    dispute_id: str
    resolution: str  # release | refund | split
    contractor_minor: int = 0
    note: str = ""


@dataclass(frozen=True, slots=True)
class SettleReceivable:
    """An operator records that money owed to an engagement's customer (on its receivable) was
    paid back outside Hirepay, e.g. by bank transfer; once per request id."""

    actor: Actor
    engagement_id: str
    request_id: str
    amount_minor: int
    currency: str
    reference: str  # the operator's reference, e.g. the bank transfer's
    note: str = ""


@dataclass(frozen=True, slots=True)
class ListDisputes:
    actor: Actor
    state: str = ""  # open | resolved | "" (all)
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class PayJobWithCoins:
    """ESC-4: the job's customer pays `amount_minor` COIN for the freelancer's work."""

    actor: Actor
    job_id: str
    freelancer_id: str
    amount_minor: int
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class StartJobPayment:
    """ESC-5: the job's customer opens a provider checkout paying the freelancer's work."""

    actor: Actor
    job_id: str
    freelancer_id: str
    amount_minor: int
    currency: str
    request_id: str = ""
    return_url: str = ""
    cancel_url: str = ""
    email: str = ""
    provider: str = ""
