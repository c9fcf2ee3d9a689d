"""The marketplace (ESC-6..10): jobs customers post for contractors, job requests, offers, and the
engagement that carries the money from acceptance to completion; and its pure money rules.

Every amount is an integer in the unit's minor unit (a currency's, or COIN). The money rules are
one pure function each (MARKETPLACE.md "Money rules"): a split always sums to the whole.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from hirepay_platform import money
from hirepay_platform.errors import ErrorKind, HirepayError, ValidationError
from hirepay_platform.untrusted import visible_length

COIN_UNIT = "COIN"
BPS = 10_000  # basis points in a whole
DEFAULT_ACCEPTANCE_FEE_BPS = 1_000  # 10% to platform revenue when the escrow is funded
DEFAULT_COMPLETION_FEE_BPS = 2_000  # 20% to platform revenue at completion
ESCROW_OWNER_PREFIX = "engagement:"
TITLE_MIN, TITLE_MAX = 3, 200
DESCRIPTION_MIN, DESCRIPTION_MAX = 10, 20_000
MESSAGE_MAX = 2_000


# --------------------------------------------------------------------------- errors


class InvalidMarketTransition(HirepayError):
    """A marketplace object's state does not allow the requested change."""

    kind = ErrorKind.FAILED_PRECONDITION
    reason = "INVALID_TRANSITION"

    def __init__(self, what: str, object_id: str, from_state: str, to_state: str) -> None:
        super().__init__(
            f"{what} {object_id} cannot go from {from_state} to {to_state}",
            metadata={f"{what}_id": object_id, "from_state": from_state, "to_state": to_state},
        )


class JobNotOpen(HirepayError):
    """The job takes no offers or acceptances now (assigned, being accepted, or closed)."""

    kind = ErrorKind.FAILED_PRECONDITION
    reason = "JOB_NOT_OPEN"

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(
            f"job {job_id} is not open ({status})", metadata={"job_id": job_id, "status": status}
        )


class JobTaken(HirepayError):
    """Another offer's acceptance holds (or won) the job: this acceptance lost the race."""

    kind = ErrorKind.ABORTED
    reason = "JOB_ALREADY_TAKEN"

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job {job_id} has been taken by another offer", metadata={"job_id": job_id}
        )


class MarketJobNotFound(HirepayError):
    """No marketplace job with this id is visible to the caller (others' look absent too)."""

    kind = ErrorKind.NOT_FOUND
    reason = "MARKET_JOB_NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found", metadata={"job_id": job_id})


class JobRequestNotFound(HirepayError):
    """No job request with this id is visible to the caller."""

    kind = ErrorKind.NOT_FOUND
    reason = "JOB_REQUEST_NOT_FOUND"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"job request {request_id} not found", metadata={"job_request_id": request_id}
        )


class AlreadyRequested(HirepayError):
    """The contractor has asked for this job before (one request per job and contractor)."""

    kind = ErrorKind.ALREADY_EXISTS
    reason = "ALREADY_REQUESTED"

    def __init__(self, job_id: str, request_id: str) -> None:
        super().__init__(
            f"you have already asked for job {job_id}",
            metadata={"job_id": job_id, "job_request_id": request_id},
        )


class OfferExpired(HirepayError):
    """The offer was not accepted within its validity; its money is released."""

    kind = ErrorKind.FAILED_PRECONDITION
    reason = "OFFER_EXPIRED"

    def __init__(self, offer_id: str) -> None:
        super().__init__(f"offer {offer_id} has expired", metadata={"offer_id": offer_id})


# --------------------------------------------------------------------------- money rules


@dataclass(frozen=True, slots=True)
class FundingSplit:
    """How an engagement amount A is funded: fee1 to platform revenue, the rest into escrow."""

    amount_minor: int
    fee_minor: int
    escrow_minor: int


@dataclass(frozen=True, slots=True)
class CompletionSplit:
    """How a funded escrow is paid out at completion: fee2 to platform revenue, the rest to the
    contractor (the remainder goes to the contractor, so fee1 + fee2 + contractor == A)."""

    escrow_minor: int
    fee_minor: int
    contractor_minor: int


def _check_bps(bps: int, name: str) -> int:
    if isinstance(bps, bool) or not isinstance(bps, int) or not 0 <= bps <= BPS:
        raise ValueError(f"{name} must be an integer number of basis points in 0..{BPS}")
    return bps


def fee_of(amount_minor: int, bps: int) -> int:
    """`bps` basis points of an amount, rounded down (the platform never takes a fraction)."""
    return amount_minor * _check_bps(bps, "fee") // BPS


def funding_split(amount_minor: int, fee_bps: int = DEFAULT_ACCEPTANCE_FEE_BPS) -> FundingSplit:
    """fee1 = floor(A * bps / 10000) to platform revenue; escrow = A - fee1."""
    amount = money.validate_amount(amount_minor)
    fee = fee_of(amount, fee_bps)
    return FundingSplit(amount, fee, amount - fee)


def completion_split(
    amount_minor: int,
    escrow_minor: int,
    fee_bps: int = DEFAULT_COMPLETION_FEE_BPS,
) -> CompletionSplit:
    """fee2 = floor(A * bps / 10000) out of the escrow to platform revenue; the contractor gets
    the rest of the escrow. A fee2 larger than the escrow is refused (rates misconfigured)."""
    amount = money.validate_amount(amount_minor)
    if isinstance(escrow_minor, bool) or not isinstance(escrow_minor, int):
        raise ValueError("escrow_minor must be an integer")
    if not 0 <= escrow_minor <= amount:
        raise ValueError("the escrow must be between 0 and the engagement amount")
    fee = fee_of(amount, fee_bps)
    if fee > escrow_minor:
        raise ValueError("the completion fee exceeds the escrow: check the fee rates")
    return CompletionSplit(escrow_minor, fee, escrow_minor - fee)


def escrow_owner(engagement_id: str) -> str:
    """The wallet owner id of one engagement's escrow account."""
    return f"{ESCROW_OWNER_PREFIX}{engagement_id}"


def capture_transfer_id(payment_id: str) -> str:
    """The ledger transfer booking a captured payment (shared convention with payments)."""
    return f"payment:{payment_id}:capture"


def refund_transfer_id(payment_id: str, refund_id: str) -> str:
    """The ledger transfer booking a refund of a payment."""
    return f"payment:{payment_id}:refund:{refund_id}"


def engagement_transfer_id(engagement_id: str, step: str) -> str:
    """The ledger transfer of one engagement step: fund, complete, cancel, resolve."""
    return f"engagement:{engagement_id}:{step}"


def engagement_id_for(offer_id: str) -> str:
    """The engagement an accepted offer creates: one per offer, named after it, so every retry
    of the acceptance funds the same escrow account."""
    return f"eng_{offer_id.removeprefix('offer_')}"


def validate_unit(unit: str) -> str:
    """An offer's unit: an ISO 4217 currency or COIN (credits are not money for offers)."""
    unit = (unit or "").strip().upper()
    if unit == COIN_UNIT:
        return unit
    return money.validate_unit(unit, field="currency", cash_only=True)


# --------------------------------------------------------------------------- marketplace jobs


class MarketJobStatus(enum.StrEnum):
    """A marketplace job: open for requests and offers, assigned to one contractor, or closed."""

    OPEN = "open"
    ASSIGNED = "assigned"
    CLOSED = "closed"


# assigned -> open: the engagement was cancelled and the customer reopens the job (mk-escrow).
MARKET_JOB_TRANSITIONS: dict[MarketJobStatus, frozenset[MarketJobStatus]] = {
    MarketJobStatus.OPEN: frozenset({MarketJobStatus.ASSIGNED, MarketJobStatus.CLOSED}),
    MarketJobStatus.ASSIGNED: frozenset({MarketJobStatus.OPEN, MarketJobStatus.CLOSED}),
    MarketJobStatus.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class MarketJobFields:
    """What a customer writes about the work; the budget is a hint (offers carry the amount)."""

    title: str
    description: str
    category: str = ""
    budget_minor: int = 0
    currency: str = ""

    def validate(self) -> MarketJobFields:
        """Normalized fields, or every problem at once, by field."""
        title, description = self.title.strip(), self.description.strip()
        currency = (self.currency or "").strip().upper()
        problems: dict[str, str] = {}
        if not TITLE_MIN <= visible_length(title) <= TITLE_MAX:
            problems["title"] = f"must be {TITLE_MIN}-{TITLE_MAX} characters"
        if not DESCRIPTION_MIN <= visible_length(description) <= DESCRIPTION_MAX:
            problems["description"] = f"must be {DESCRIPTION_MIN}-{DESCRIPTION_MAX} characters"
        if len(self.category) > 64:
            problems["category"] = "must be at most 64 characters"
        if self.budget_minor < 0 or self.budget_minor > money.MAX_AMOUNT_MINOR:
            problems["budget_minor"] = "must be between 0 and the maximum amount"
        if self.budget_minor and not currency:
            problems["currency"] = "is required with a budget"
        if currency:
            try:
                validate_unit(currency)
            except ValidationError:
                problems["currency"] = "must be an ISO 4217 code or COIN"
        if problems:
            raise ValidationError("the job has invalid fields", fields=problems)
        return MarketJobFields(
            title, description, self.category.strip().lower(), self.budget_minor, currency
        )


@dataclass(slots=True)
class MarketJob:
    """A job a customer posts for contractors (no posting fee).

    `accepting_offer_id` is the acceptance lock: set (under the row lock) by the one acceptance
    that wins the job; every other acceptance sees it and loses (ESC-6, exactly one winner)."""

    id: str
    customer_id: str
    fields: MarketJobFields
    status: MarketJobStatus
    created_at: datetime
    updated_at: datetime
    contractor_id: str = ""
    engagement_id: str = ""
    accepting_offer_id: str = ""

    def _move(self, to: MarketJobStatus, now: datetime) -> None:
        if to not in MARKET_JOB_TRANSITIONS[self.status]:
            raise InvalidMarketTransition("job", self.id, self.status.value, to.value)
        self.status = to
        self.updated_at = now

    def ensure_open(self) -> None:
        """Offers and requests are taken only while the job is open and no acceptance holds it."""
        if self.status is not MarketJobStatus.OPEN:
            raise JobNotOpen(self.id, self.status.value)
        if self.accepting_offer_id:
            raise JobNotOpen(self.id, "accepting")

    def lock_for(self, offer_id: str, now: datetime) -> None:
        """The acceptance of `offer_id` takes the job (a repeat by the same offer is a no-op)."""
        if self.accepting_offer_id == offer_id:
            return
        if self.status is not MarketJobStatus.OPEN or self.accepting_offer_id:
            raise JobTaken(self.id)
        self.accepting_offer_id = offer_id
        self.updated_at = now

    def unlock(self, offer_id: str, now: datetime) -> None:
        """The acceptance of `offer_id` could not take the money: the job is open again."""
        if self.accepting_offer_id == offer_id:
            self.accepting_offer_id = ""
            self.updated_at = now

    def assign(self, offer_id: str, contractor_id: str, engagement_id: str, now: datetime) -> None:
        """The acceptance holding the job has funded its engagement: assigned to the contractor."""
        if self.accepting_offer_id != offer_id:
            raise JobTaken(self.id)
        self._move(MarketJobStatus.ASSIGNED, now)
        self.contractor_id = contractor_id
        self.engagement_id = engagement_id
        self.accepting_offer_id = ""

    def assign_directly(self, contractor_id: str, engagement_id: str, now: datetime) -> None:
        """An engagement funded without an offer (coin or direct job payment) takes the job."""
        self.ensure_open()
        self._move(MarketJobStatus.ASSIGNED, now)
        self.contractor_id = contractor_id
        self.engagement_id = engagement_id

    def reopen(self, now: datetime) -> None:
        """The engagement ended without completion and the job takes offers again."""
        self._move(MarketJobStatus.OPEN, now)
        self.contractor_id = ""
        self.engagement_id = ""

    def close(self, now: datetime) -> None:
        """The customer withdraws the job (not while an acceptance holds it)."""
        if self.accepting_offer_id:
            raise JobNotOpen(self.id, "accepting")
        self._move(MarketJobStatus.CLOSED, now)


# --------------------------------------------------------------------------- job requests


class JobRequestStatus(enum.StrEnum):
    """A contractor's request to work on a job (ESC-10): pending -> accepted | rejected, once."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


JOB_REQUEST_TRANSITIONS: dict[JobRequestStatus, frozenset[JobRequestStatus]] = {
    JobRequestStatus.PENDING: frozenset({JobRequestStatus.ACCEPTED, JobRequestStatus.REJECTED}),
    JobRequestStatus.ACCEPTED: frozenset(),
    JobRequestStatus.REJECTED: frozenset(),
}


@dataclass(slots=True)
class JobRequest:
    """One contractor's request for one marketplace job (one per job and contractor)."""

    id: str
    job_id: str
    customer_id: str
    contractor_id: str
    message: str
    status: JobRequestStatus
    created_at: datetime
    updated_at: datetime
    decided_at: datetime | None = None

    def decide(self, accept: bool, now: datetime) -> None:
        """The customer accepts or rejects; repeating the same decision is a no-op."""
        target = JobRequestStatus.ACCEPTED if accept else JobRequestStatus.REJECTED
        if self.status is target:
            return
        if target not in JOB_REQUEST_TRANSITIONS[self.status]:
            raise InvalidMarketTransition("request", self.id, self.status.value, target.value)
        self.status = target
        self.decided_at = now
        self.updated_at = now


def validate_message(message: str) -> str:
    """A free-text note of a request or offer."""
    if len(message) > MESSAGE_MAX:
        raise ValidationError(
            "the message is too long", fields={"message": f"at most {MESSAGE_MAX} characters"}
        )
    return message.strip()


# --------------------------------------------------------------------------- offers


class FundingSource(enum.StrEnum):
    """How an engagement's escrow is paid."""

    CARD = "card"  # a card authorization (payments), captured on acceptance
    COINS = "coins"  # a hold on the customer's COIN wallet, confirmed on acceptance
    JOB_PAYMENT = "job_payment"  # a provider checkout issuing coins straight into escrow (ESC-5)


class OfferState(enum.StrEnum):
    """An offer of a customer to a contractor for a job."""

    RESERVING = "reserving"  # the money is being reserved; not yet shown to the contractor
    PENDING = "pending"  # reserved; waiting for the contractor
    ACCEPTING = "accepting"  # the contractor accepted; the money is being captured and booked
    ACCEPTED = "accepted"  # captured, booked; the job is assigned (final)
    REJECTED = "rejected"  # by the contractor, or another offer won the job (released; final)
    EXPIRED = "expired"  # not accepted in time, or its money could not be taken (released; final)
    WITHDRAWN = "withdrawn"  # the customer took it back (released; final)
    FAILED = "failed"  # the reservation failed (declined, insufficient coins); nothing held


OFFER_FINAL = frozenset(
    {
        OfferState.ACCEPTED,
        OfferState.REJECTED,
        OfferState.EXPIRED,
        OfferState.WITHDRAWN,
        OfferState.FAILED,
    }
)
_CLOSING = frozenset({OfferState.REJECTED, OfferState.EXPIRED, OfferState.WITHDRAWN})
OFFER_TRANSITIONS: dict[OfferState, frozenset[OfferState]] = {
    OfferState.RESERVING: frozenset({OfferState.PENDING, OfferState.FAILED, *_CLOSING}),
    OfferState.PENDING: frozenset({OfferState.ACCEPTING, *_CLOSING}),
    # An acceptance whose money cannot be taken (authorization expired) ends expired.
    OfferState.ACCEPTING: frozenset({OfferState.ACCEPTED, OfferState.EXPIRED}),
    OfferState.ACCEPTED: frozenset(),
    OfferState.REJECTED: frozenset(),
    OfferState.EXPIRED: frozenset(),
    OfferState.WITHDRAWN: frozenset(),
    OfferState.FAILED: frozenset(),
}


class OfferNotFound(HirepayError):
    """No offer with this id is visible to the caller (others' offers look absent too)."""

    kind = ErrorKind.NOT_FOUND
    reason = "OFFER_NOT_FOUND"

    def __init__(self, offer_id: str) -> None:
        super().__init__(f"offer {offer_id} not found", metadata={"offer_id": offer_id})


@dataclass(slots=True)
class Offer:
    """An offer: the amount the customer reserves for the contractor until a decision.

    Its money is one saga (kind `offer`, `saga_id`): the reservation is the Try, the acceptance
    the Confirm (capture + booking), a rejection, expiry or withdrawal the Cancel."""

    id: str
    job_id: str
    customer_id: str
    contractor_id: str
    amount_minor: int
    unit: str
    funding: FundingSource
    state: OfferState
    saga_id: str
    request_id: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    message: str = ""
    payment_id: str = ""  # card: the payments id; coins: the wallet hold's branch
    engagement_id: str = ""
    reason: str = ""  # why it ended (rejected_by_contractor, another_offer_accepted, ...)
    decided_at: datetime | None = None
    released_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.state in OFFER_FINAL

    @property
    def visible_to_contractor(self) -> bool:
        """The contractor sees an offer once its money is reserved (never a failed one)."""
        return self.state not in (OfferState.RESERVING, OfferState.FAILED)

    def _move(self, to: OfferState, now: datetime, reason: str = "") -> None:
        if to not in OFFER_TRANSITIONS[self.state]:
            raise InvalidMarketTransition("offer", self.id, self.state.value, to.value)
        self.state = to
        self.updated_at = now
        if reason:
            self.reason = reason
        if to in OFFER_FINAL or to is OfferState.ACCEPTING:
            self.decided_at = self.decided_at or now

    def reserved(self, payment_id: str, now: datetime) -> None:
        self.payment_id = payment_id or self.payment_id
        self._move(OfferState.PENDING, now)

    def reservation_failed(self, reason: str, now: datetime) -> None:
        self._move(OfferState.FAILED, now, reason)

    def accept(self, now: datetime) -> None:
        self._move(OfferState.ACCEPTING, now)

    def accepted(self, engagement_id: str, now: datetime) -> None:
        self.engagement_id = engagement_id
        self._move(OfferState.ACCEPTED, now)

    def close(self, to: OfferState, reason: str, now: datetime) -> None:
        """Rejected, expired or withdrawn: the reservation is released by the saga's Cancel."""
        self._move(to, now, reason)

    def expired_at(self, now: datetime) -> bool:
        return self.state in (OfferState.RESERVING, OfferState.PENDING) and now >= self.expires_at


# --------------------------------------------------------------------------- engagements


class EngagementState(enum.StrEnum):
    """ESC-7: open -> assigned -> in_progress -> completed | cancelled, and disputed."""

    OPEN = "open"  # created, its funding pending (a direct job payment in checkout)
    ASSIGNED = "assigned"  # funded: the escrow holds the money, the contractor is assigned
    IN_PROGRESS = "in_progress"  # the contractor started
    COMPLETED = "completed"  # paid out (final)
    CANCELLED = "cancelled"  # refunded per policy (final)
    DISPUTED = "disputed"  # escrow frozen until an admin resolves it


ENGAGEMENT_TRANSITIONS: dict[EngagementState, frozenset[EngagementState]] = {
    EngagementState.OPEN: frozenset({EngagementState.ASSIGNED, EngagementState.CANCELLED}),
    EngagementState.ASSIGNED: frozenset(
        {EngagementState.IN_PROGRESS, EngagementState.CANCELLED, EngagementState.DISPUTED}
    ),
    EngagementState.IN_PROGRESS: frozenset(
        {EngagementState.COMPLETED, EngagementState.CANCELLED, EngagementState.DISPUTED}
    ),
    # An admin's resolution: release (completed), refund or split (cancelled).
    EngagementState.DISPUTED: frozenset({EngagementState.COMPLETED, EngagementState.CANCELLED}),
    EngagementState.COMPLETED: frozenset(),
    EngagementState.CANCELLED: frozenset(),
}


class FundingState(enum.StrEnum):
    PENDING = "pending"  # not yet in escrow (direct job payment waiting for its webhook)
    FUNDED = "funded"  # fee1 booked to revenue, the rest in the escrow account


@dataclass(frozen=True, slots=True)
class EngagementTransition:
    """One recorded state change of an engagement (append-only audit)."""

    engagement_id: str
    from_state: EngagementState | None
    to_state: EngagementState
    actor: str
    reason: str
    at: datetime


@dataclass(slots=True)
class Engagement:
    """The money of one piece of work: amount A, fee1 taken at funding, the escrow, and who.

    `payment_id` is the card payment (payments' id) or, for coins, the wallet hold's branch
    (`<global_tx_id>/<branch_id>`); `escrow_account_id` the wallet account `engagement:<id>`."""

    id: str
    job_id: str
    customer_id: str
    contractor_id: str
    unit: str
    amount_minor: int
    fee1_minor: int
    escrow_minor: int
    funding: FundingSource
    state: EngagementState
    created_at: datetime
    updated_at: datetime
    funding_state: FundingState = FundingState.PENDING
    offer_id: str = ""
    escrow_account_id: str = ""
    payment_id: str = ""
    assigned_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pending: list[EngagementTransition] = field(default_factory=list)

    @classmethod
    def funded_by_offer(
        cls,
        engagement_id: str,
        offer: Offer,
        split: FundingSplit,
        escrow_account_id: str,
        now: datetime,
    ) -> Engagement:
        """The engagement of an accepted offer: funded and assigned at once."""
        engagement = cls(
            id=engagement_id,
            job_id=offer.job_id,
            customer_id=offer.customer_id,
            contractor_id=offer.contractor_id,
            unit=offer.unit,
            amount_minor=split.amount_minor,
            fee1_minor=split.fee_minor,
            escrow_minor=split.escrow_minor,
            funding=offer.funding,
            state=EngagementState.ASSIGNED,
            created_at=now,
            updated_at=now,
            funding_state=FundingState.FUNDED,
            offer_id=offer.id,
            escrow_account_id=escrow_account_id,
            payment_id=offer.payment_id,
            assigned_at=now,
        )
        engagement.pending.append(
            EngagementTransition(
                engagement_id, None, EngagementState.ASSIGNED, "saga", f"offer {offer.id}", now
            )
        )
        return engagement

    def move(self, to: EngagementState, actor: str, reason: str, now: datetime) -> None:
        """Change state if the table allows it, recording who and why."""
        if to not in ENGAGEMENT_TRANSITIONS[self.state]:
            raise InvalidMarketTransition("engagement", self.id, self.state.value, to.value)
        self.pending.append(EngagementTransition(self.id, self.state, to, actor, reason, now))
        self.state = to
        self.updated_at = now
        if to is EngagementState.ASSIGNED:
            self.assigned_at = now
        elif to is EngagementState.IN_PROGRESS:
            self.started_at = now
        elif to in (EngagementState.COMPLETED, EngagementState.CANCELLED):
            self.finished_at = now

    def drain_transitions(self) -> list[EngagementTransition]:
        out, self.pending = self.pending, []
        return out
