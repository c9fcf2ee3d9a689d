"""The escrow after funding (ESC-7, ESC-8): who gets what when an engagement completes, is
cancelled or its dispute is resolved, and the money step that moves it on the ledger.

Pure rules (standard library and the marketplace model only). A payout names every amount that
leaves the escrow (and the fee that goes back from revenue on a full refund); it always empties
the escrow and its parts always sum to the engagement amount with what was taken at funding.
A money step is the one ledger transfer (deterministic id `engagement:<id>:<step>`, or for a card
refund `payment:<pid>:refund:<refund_id>`) that carries a payout out; it is recorded pending in
the transaction that decides the change and driven until done (idempotent by its transfer id).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime

from hirepay_platform.errors import ErrorKind, HirepayError, ValidationError
from jobs.domain.marketplace import (
    COIN_UNIT,
    Engagement,
    EngagementState,
    FundingSource,
    completion_split,
    engagement_transfer_id,
    escrow_owner,
    refund_transfer_id,
)

PLATFORM_OWNER = "platform"

# --------------------------------------------------------------------------- errors


class EngagementNotFound(HirepayError):
    """No engagement with this id is visible to the caller (others' look absent too)."""

    kind = ErrorKind.NOT_FOUND
    reason = "ENGAGEMENT_NOT_FOUND"

    def __init__(self, engagement_id: str) -> None:
        super().__init__(
            f"engagement {engagement_id} not found", metadata={"engagement_id": engagement_id}
        )


class DisputeNotFound(HirepayError):
    kind = ErrorKind.NOT_FOUND
    reason = "DISPUTE_NOT_FOUND"

    def __init__(self, dispute_id: str) -> None:
        super().__init__(f"dispute {dispute_id} not found", metadata={"dispute_id": dispute_id})


class EscrowFrozen(HirepayError):
    """A dispute is open: nothing leaves the escrow until an admin resolves it (ESC-8)."""

    kind = ErrorKind.FAILED_PRECONDITION
    reason = "ESCROW_FROZEN"

    def __init__(self, engagement_id: str) -> None:
        super().__init__(
            f"engagement {engagement_id} is disputed: its escrow is frozen",
            metadata={"engagement_id": engagement_id},
        )


class DisputeAlreadyResolved(HirepayError):
    kind = ErrorKind.FAILED_PRECONDITION
    reason = "DISPUTE_ALREADY_RESOLVED"

    def __init__(self, dispute_id: str) -> None:
        super().__init__(
            f"dispute {dispute_id} is already resolved", metadata={"dispute_id": dispute_id}
        )


# --------------------------------------------------------------------------- policy and payouts


@dataclass(frozen=True, slots=True)
class CancelPolicy:
    """Whether a cancellation gives the acceptance fee back too (ESC-8 clarification: before
    work starts everything back, the fee too; after, the escrow back and the fee kept)."""

    refund_fee_before_start: bool = True
    refund_fee_after_start: bool = False
    # Whether a customer may cancel once the contractor started (else only a dispute helps).
    cancel_after_start: bool = True


class Resolution(enum.StrEnum):
    """An admin's decision on a dispute (exactly once)."""

    RELEASE = "release"  # the normal completion split: fee2 to revenue, the rest to the contractor
    REFUND = "refund"  # the escrow back to the customer; the acceptance fee kept
    SPLIT = "split"  # contractor_minor to the contractor, the rest of the escrow back; no fee2


@dataclass(frozen=True, slots=True)
class Payout:
    """Where an engagement's money goes when it ends. `escrow_minor` leaves the escrow in full:
    to_revenue + to_contractor + to_customer == escrow_minor; `fee_back_minor` returns the
    acceptance fee from revenue to the customer."""

    escrow_minor: int
    to_revenue: int = 0
    to_contractor: int = 0
    to_customer: int = 0
    fee_back_minor: int = 0

    def __post_init__(self) -> None:
        parts = (self.to_revenue, self.to_contractor, self.to_customer, self.fee_back_minor)
        if any(p < 0 for p in parts):
            raise ValueError("payout parts must not be negative")
        if self.to_revenue + self.to_contractor + self.to_customer != self.escrow_minor:
            raise ValueError("a payout must empty the escrow exactly")

    @property
    def refunded_minor(self) -> int:
        """What the customer gets back in all."""
        return self.to_customer + self.fee_back_minor


def completion_payout(engagement: Engagement, completion_fee_bps: int) -> Payout:
    """ESC-7: fee2 = floor(A * bps / 10000) to revenue, the rest of the escrow to the contractor."""
    split = completion_split(engagement.amount_minor, engagement.escrow_minor, completion_fee_bps)
    return Payout(
        split.escrow_minor, to_revenue=split.fee_minor, to_contractor=split.contractor_minor
    )


def cancel_payout(engagement: Engagement, policy: CancelPolicy) -> Payout:
    """ESC-8: the escrow back to the customer, and the acceptance fee too if the policy says so
    for the engagement's state (started = in progress)."""
    started = engagement.state is EngagementState.IN_PROGRESS
    fee_back = policy.refund_fee_after_start if started else policy.refund_fee_before_start
    return Payout(
        engagement.escrow_minor,
        to_customer=engagement.escrow_minor,
        fee_back_minor=engagement.fee1_minor if fee_back else 0,
    )


def resolution_payout(
    engagement: Engagement, resolution: Resolution, contractor_minor: int, completion_fee_bps: int
) -> Payout:
    """An admin's resolution of a dispute as a payout (MARKETPLACE.md "Dispute")."""
    escrow = engagement.escrow_minor
    if resolution is Resolution.RELEASE:
        return completion_payout(engagement, completion_fee_bps)
    if resolution is Resolution.REFUND:
        return Payout(escrow, to_customer=escrow)
    if isinstance(contractor_minor, bool) or not isinstance(contractor_minor, int):
        raise ValidationError(
            "contractor_minor must be an integer", fields={"contractor_minor": "integer"}
        )
    if not 0 <= contractor_minor <= escrow:
        raise ValidationError(
            "a split gives the contractor between 0 and the escrow",
            fields={"contractor_minor": f"must be 0..{escrow}"},
        )
    return Payout(escrow, to_contractor=contractor_minor, to_customer=escrow - contractor_minor)


# --------------------------------------------------------------------------- ledger legs


class AccountKind(enum.StrEnum):
    """The wallet account kinds the escrow touches (MARKETPLACE.md "Ledger conventions")."""

    USER = "user"
    PLATFORM_REVENUE = "platform_revenue"
    ESCROW = "escrow"
    PROVIDER_CLEARING = "provider_clearing"


@dataclass(frozen=True, slots=True)
class AccountRef:
    """A wallet account by what it is (opened idempotently on owner + unit + kind)."""

    owner: str
    unit: str
    kind: AccountKind

    @classmethod
    def user(cls, owner: str, unit: str) -> AccountRef:
        return cls(owner, unit, AccountKind.USER)

    @classmethod
    def revenue(cls, unit: str) -> AccountRef:
        return cls(PLATFORM_OWNER, unit, AccountKind.PLATFORM_REVENUE)

    @classmethod
    def escrow(cls, engagement_id: str, unit: str) -> AccountRef:
        return cls(escrow_owner(engagement_id), unit, AccountKind.ESCROW)

    @classmethod
    def clearing(cls, provider: str, unit: str) -> AccountRef:
        return cls(f"provider:{provider}", unit, AccountKind.PROVIDER_CLEARING)


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of a transfer: an amount from one account to another (same unit)."""

    source: AccountRef
    target: AccountRef
    amount_minor: int


def payout_legs(engagement: Engagement, payout: Payout, provider: str = "") -> tuple[Leg, ...]:
    """The legs that carry a payout out. What goes back to the customer goes the way it was paid:
    coins (a coin offer, a coin or direct job payment) to the customer's COIN wallet; a card to
    the provider clearing account (`provider` names it), the provider refunding the card."""
    unit = engagement.unit
    escrow = AccountRef.escrow(engagement.id, unit)
    revenue = AccountRef.revenue(unit)
    if engagement.funding is FundingSource.CARD:
        back = AccountRef.clearing(provider, unit)
    else:
        back = AccountRef.user(engagement.customer_id, unit)
    contractor = AccountRef.user(engagement.contractor_id, unit)
    legs = (
        Leg(escrow, revenue, payout.to_revenue),
        Leg(escrow, contractor, payout.to_contractor),
        Leg(escrow, back, payout.to_customer),
        Leg(revenue, back, payout.fee_back_minor),
    )
    return tuple(leg for leg in legs if leg.amount_minor > 0)


def funding_legs(engagement: Engagement) -> tuple[Leg, ...]:
    """A coin job payment (ESC-4): the customer's coins, fee1 to revenue(COIN), the rest to the
    engagement's escrow, in one transfer."""
    customer = AccountRef.user(engagement.customer_id, COIN_UNIT)
    legs = (
        Leg(customer, AccountRef.revenue(COIN_UNIT), engagement.fee1_minor),
        Leg(customer, AccountRef.escrow(engagement.id, COIN_UNIT), engagement.escrow_minor),
    )
    return tuple(leg for leg in legs if leg.amount_minor > 0)


# --------------------------------------------------------------------------- money steps


class StepKind(enum.StrEnum):
    FUND = "fund"  # a coin job payment's funding transfer (ESC-4)
    COMPLETE = "complete"
    CANCEL = "cancel"
    RESOLVE = "resolve"


class StepState(enum.StrEnum):
    PENDING = "pending"  # decided; the transfer (and a card refund) not yet confirmed
    DONE = "done"  # posted on the ledger
    REFUSED = "refused"  # the ledger refused it for good (a coin payment short of coins)
    # Posted, but its card refund was refused outright by the provider (PAY-11: nothing
    # refunded): what it gave back went to the engagement's receivable, owed to the customer.
    REFUND_REFUSED = "refund_refused"


# The states of a step whose legs stand on the ledger.
POSTED = frozenset({StepState.DONE, StepState.REFUND_REFUSED})


@dataclass(slots=True)
class MoneyStep:
    """One engagement's money movement, recorded before it is made and driven until done.

    Its legs are booked under `transfer_id` (`engagement:<id>:<step>`), except a card refund's:
    the provider refund comes first (payments' Refund, idempotent on the step's request id), then
    its legs to provider clearing are booked under `payment:<pid>:refund:<refund_id>`."""

    engagement_id: str
    kind: StepKind
    transfer_id: str
    legs: tuple[Leg, ...]
    created_at: datetime
    updated_at: datetime
    state: StepState = StepState.PENDING
    payment_id: str = ""  # card: the payment to refund
    refund_minor: int = 0  # card: what the provider gives back
    refund_id: str = ""  # card: the refund once payments answered
    attempts: int = 0
    next_attempt_at: datetime | None = None
    failure: str = ""
    payout: Payout | None = field(default=None, compare=False)
    # card: the refund the provider refused outright, booked to the receivable instead.
    refused_minor: int = 0

    @property
    def request_id(self) -> str:
        """The idempotency key of the step's provider refund. A step netted against refunds made
        at the provider asks for less, so under another key (`...:net:<netted>`): payments'
        Refund refuses one key with two amounts, and a refused refund moved no money."""
        base = engagement_transfer_id(self.engagement_id, self.kind.value)
        netted = self.netted_minor
        return f"{base}:net:{netted}" if netted else base

    @property
    def needs_refund(self) -> bool:
        return self.refund_minor > 0 and not self.refund_id

    @property
    def netted_minor(self) -> int:
        """What the step settles on the engagement's receivable instead of refunding it: money
        the provider already gave the customer back (refunds made at the provider, owed)."""
        return sum(leg.amount_minor for leg in self.legs if is_receivable(leg.target))

    @property
    def ledger_legs(self) -> tuple[Leg, ...]:
        """The legs booked under `transfer_id` (all but a card refund's: the netted part too)."""
        return tuple(leg for leg in self.legs if not _to_provider(leg))

    @property
    def refund_legs(self) -> tuple[Leg, ...]:
        """A card refund's legs, to provider clearing, booked under `refund_transfer_id`."""
        return tuple(leg for leg in self.legs if _to_provider(leg))

    def net(self, refunds: list[EscrowRefund], now: datetime) -> bool:
        """Take what refunds made at the provider left owed on the engagement's receivable (and
        not netted yet) out of the step's card refund: that much of the customer's money is back
        with them already, so it settles the debt (escrow / revenue -> receivable) instead of
        being refunded twice, and the provider is asked only for the rest (ESC-1, ESC-8).
        Only before the step's refund exists; whether the step changed."""
        if self.state is not StepState.PENDING or not self.needs_refund:
            return False
        extra = min(sum(r.owed_minor for r in refunds) - self.netted_minor, self.refund_minor)
        if extra <= 0:
            return False
        left = extra
        moved: dict[tuple[AccountRef, AccountRef], int] = {}
        for leg in self.legs:  # the escrow's legs first, then the fee given back
            take = min(left, leg.amount_minor) if _to_provider(leg) else 0
            left -= take
            owed = receivable(self.engagement_id, leg.source.unit)
            for key, amount in (
                ((leg.source, owed), take),
                ((leg.source, leg.target), leg.amount_minor - take),
            ):
                moved[key] = moved.get(key, 0) + amount
        self.legs = tuple(Leg(s, t, n) for (s, t), n in moved.items() if n > 0)
        self.refund_minor -= extra
        self.updated_at = now
        return True

    @property
    def refund_transfer_id(self) -> str:
        return f"payment:{self.payment_id}:refund:{self.refund_id}"

    def refunded(self, refund_id: str, now: datetime) -> None:
        """The provider refund exists: its booking is keyed by it."""
        self.refund_id = refund_id
        self.updated_at = now

    def refuse_refund(self, why: str, now: datetime) -> bool:
        """The provider refused the step's card refund outright (a definitive refusal, nothing
        refunded, no booked refund at the provider explaining it): the customer did not get the
        money back, so what the step gave back (escrow / revenue -> provider clearing) goes to
        the engagement's receivable instead, owed to the customer (above zero) for operators to
        pay back (ESC-1, ESC-8). The step then ends (no more retries): posted, REFUND_REFUSED.
        Only before the step's refund exists; whether the step changed."""
        if self.state is not StepState.PENDING or not self.needs_refund:
            return False
        moved: dict[tuple[AccountRef, AccountRef], int] = {}
        for leg in self.legs:
            target = (
                receivable(self.engagement_id, leg.source.unit) if _to_provider(leg) else leg.target
            )
            moved[(leg.source, target)] = moved.get((leg.source, target), 0) + leg.amount_minor
        self.legs = tuple(Leg(s, t, n) for (s, t), n in moved.items() if n > 0)
        self.refused_minor += self.refund_minor
        self.refund_minor = 0
        self.failure = f"refund refused by the provider: {why}"[:200]
        self.updated_at = now
        return True

    def done(self, now: datetime) -> None:
        """Posted: DONE, or REFUND_REFUSED when its refund was refused (the failure kept)."""
        self.state = StepState.REFUND_REFUSED if self.refused_minor else StepState.DONE
        if not self.refused_minor:
            self.failure = ""
        self.next_attempt_at = None
        self.updated_at = now

    def refused(self, why: str, now: datetime) -> None:
        self.state = StepState.REFUSED
        self.failure = why[:200]
        self.next_attempt_at = None
        self.updated_at = now

    def retry_at(self, at: datetime, why: str, now: datetime) -> None:
        self.attempts += 1
        self.failure = why[:200]
        self.next_attempt_at = at
        self.updated_at = now


def _to_provider(leg: Leg) -> bool:
    """A leg back to the provider's clearing account (a card refund's, not a receivable's)."""
    return leg.target.kind is AccountKind.PROVIDER_CLEARING and not is_receivable(leg.target)


def plan_step(
    engagement: Engagement, kind: StepKind, payout: Payout, now: datetime, provider: str = ""
) -> MoneyStep:
    """The money step of an engagement's end (complete, cancel, resolve)."""
    refund = payout.refunded_minor if engagement.funding is FundingSource.CARD else 0
    return MoneyStep(
        engagement_id=engagement.id,
        kind=kind,
        transfer_id=engagement_transfer_id(engagement.id, kind.value),
        legs=payout_legs(engagement, payout, provider),
        created_at=now,
        updated_at=now,
        payment_id=engagement.payment_id if refund else "",
        refund_minor=refund,
        next_attempt_at=now,
        payout=payout,
    )


def funding_step(engagement: Engagement, now: datetime) -> MoneyStep:
    """The funding step of a coin job payment."""
    return MoneyStep(
        engagement_id=engagement.id,
        kind=StepKind.FUND,
        transfer_id=engagement_transfer_id(engagement.id, StepKind.FUND.value),
        legs=funding_legs(engagement),
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
    )


# --------------------------------------------------------------------------- disputes


class DisputeState(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


@dataclass(slots=True)
class Dispute:
    """A dispute on an assigned or in-progress engagement: its escrow frozen until resolved."""

    id: str
    engagement_id: str
    opened_by: str
    reason: str
    state: DisputeState
    opened_at: datetime
    # The engagement's state when it was opened (work started or not).
    engagement_state: EngagementState = EngagementState.ASSIGNED
    resolution: Resolution | None = None
    contractor_minor: int = 0
    resolved_by: str = ""
    note: str = ""
    resolved_at: datetime | None = None

    def resolve(
        self, resolution: Resolution, contractor_minor: int, admin: str, note: str, now: datetime
    ) -> None:
        if self.state is DisputeState.RESOLVED:
            raise DisputeAlreadyResolved(self.id)
        self.state = DisputeState.RESOLVED
        self.resolution = resolution
        self.contractor_minor = contractor_minor
        self.resolved_by = admin
        self.note = note
        self.resolved_at = now


DISPUTABLE = frozenset({EngagementState.ASSIGNED, EngagementState.IN_PROGRESS})


def with_state(engagement: Engagement, state: EngagementState) -> Engagement:
    """A copy of the engagement in another state (payout rules that depend on where it was)."""
    return replace(engagement, state=state, pending=[])


def validate_reason(text: str, name: str = "reason", limit: int = 2_000) -> str:
    text = (text or "").strip()
    if not text or len(text) > limit:
        raise ValidationError(f"the {name} is required", fields={name: f"1-{limit} characters"})
    return text


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """Payments' answer to a refund: its id and status (PENDING, SUCCEEDED or FAILED)."""

    refund_id: str
    status: str


@dataclass(frozen=True, slots=True)
class JobPaymentCheckout:
    """What payments needs to open a direct job payment's checkout (ESC-5)."""

    engagement_id: str
    job_id: str
    customer_id: str
    freelancer_id: str
    amount_minor: int
    currency: str
    return_url: str = ""
    cancel_url: str = ""
    email: str = ""
    provider: str = ""

    @property
    def metadata(self) -> dict[str, str]:
        """MARKETPLACE.md: the payment's metadata, carried to its settlement event."""
        return {
            "type": "job_payment",
            "purpose": "job_payment",
            "subsystem": "jobs",
            "engagement_id": self.engagement_id,
            "job_id": self.job_id,
            "freelancer_id": self.freelancer_id,
        }


@dataclass(frozen=True, slots=True)
class JobPaymentSession:
    """Payments' answer: the payment and where the customer pays."""

    payment_id: str
    checkout_url: str
    # The coins the payment issues at payments' rate: the funding fee and the escrow.
    coins: int = 0
    fee_coins: int = 0
    escrow_coins: int = 0


# --------------------------------------------------------------------------- refunds at the provider
#
# Offer money refunded at the provider, outside the escrow (a refund from the provider's
# dashboard, or the provider refunding on its own): payments records and publishes it, and jobs
# books it under payments' id for it, `payment:<pid>:refund:<refund_id>`, from wherever the money
# now is (README "Refunds of offer money made at the provider"). The customer has the money back
# from the provider, so it leaves towards provider clearing, never to the customer's wallet.

# Where an engagement's escrow still holds its money (nothing decided to move it out yet).
HELD = frozenset({EngagementState.ASSIGNED, EngagementState.IN_PROGRESS, EngagementState.DISPUTED})
# Refunds jobs asked for itself (a money step's request id, `engagement:<id>:<step>`).
OWN_REFUND_PREFIX = "engagement:"
SYSTEM_ACTOR = "system"
REFUNDED_AT_PROVIDER = "payment refunded at the provider"
RECEIVABLE_SUFFIX = ":receivable"


class AtProviderOutcome(enum.StrEnum):
    """What a refund made at the provider did to its engagement's money."""

    # In full while the escrow held it: the escrow and the acceptance fee go to provider clearing
    # (what the provider paid back), the engagement is cancelled: nothing is owed.
    UNWOUND = "unwound"
    # In part while the escrow holds it: the refund is owed (booked from the engagement's
    # receivable) and the escrow is frozen by a dispute for an admin to decide (ESC-8).
    FROZEN = "frozen"
    # After the escrow was released (completed, cancelled, resolved): owed, from the receivable.
    OWED = "owed"
    # Not a refund: the reversal of one jobs booked (made at the provider, or the engagement's
    # own) that the provider reports failed since (Stripe: the card closed). The money never
    # reached the customer and is back with the provider: clearing -> receivable, which settles
    # what the refund left owed or, beyond it, holds what is owed to the customer.
    REVERSED = "reversed"
    # Not a refund either: an operator recorded that money owed to the customer on the
    # receivable was paid back outside Hirepay (a bank transfer): receivable -> outside.
    SETTLED = "settled"


@dataclass(frozen=True, slots=True)
class PaymentRefund:
    """A refund payments recorded of an engagement's card payment, as jobs reads it."""

    refund_id: str
    request_id: str
    amount_minor: int
    status: str

    @property
    def outside_escrow(self) -> bool:
        """Succeeded and not asked for by a money step of jobs (those book themselves)."""
        return self.status == "SUCCEEDED" and not self.request_id.startswith(OWN_REFUND_PREFIX)


# The suffix of a reversal's id (and so of its transfer): payments' name for the booking that
# reverses a refund failed after success, `payment:<pid>:refund:<refund_id>:failed`.
FAILED_SUFFIX = ":failed"
# payments' status of a refund that failed (before or, here, after it succeeded).
REFUND_STATUS_FAILED = "FAILED"


def refunded_at_provider_minor(refunds: list[EscrowRefund]) -> int:
    """What the refunds made at the provider gave back and kept (those reversed since left out)."""
    reversed_ = {r.refund_id for r in refunds if r.outcome is AtProviderOutcome.REVERSED}
    return sum(
        r.amount_minor
        for r in refunds
        if r.outcome not in (AtProviderOutcome.REVERSED, AtProviderOutcome.SETTLED)
        and f"{r.refund_id}{FAILED_SUFFIX}" not in reversed_
    )


def failed_bookings(
    refunds: list[PaymentRefund], booked: list[EscrowRefund], steps: list[MoneyStep]
) -> list[tuple[PaymentRefund, MoneyStep | None]]:
    """The refunds jobs booked as made that payments now reports FAILED and that are not
    reversed yet: one made at the provider (its escrow refund row), or a money step's own card
    refund (by its refund id, or by its request id when the step has not recorded the refund's
    id yet), with that step. A refund that failed before jobs booked it moved nothing here."""
    rows = {r.refund_id: r for r in booked}
    found: list[tuple[PaymentRefund, MoneyStep | None]] = []
    for refund in refunds:
        if refund.status != REFUND_STATUS_FAILED or f"{refund.refund_id}{FAILED_SUFFIX}" in rows:
            continue
        row = rows.get(refund.refund_id)
        if row is not None and row.outcome is not AtProviderOutcome.REVERSED:
            found.append((refund, None))
            continue
        for step in steps:
            if not step.payment_id or step.refund_minor <= 0:
                continue
            if step.refund_id == refund.refund_id or (
                not step.refund_id and step.request_id == refund.request_id
            ):
                found.append((refund, step))
                break
    return found


def refund_reversal(
    engagement: Engagement, refund: PaymentRefund, provider: str, now: datetime
) -> EscrowRefund:
    """The booking that reverses a refund jobs booked and the provider reports failed since:
    what provider clearing received for it goes to the engagement's receivable. The customer
    still has not the money: where the refund had left money owed to the platform (in part
    while held, after the release), that debt is gone; where it came out of the escrow and the
    fee (unwound, or the engagement's own refund), the receivable holds it, owed to the
    customer (above zero), for operators to pay back. Never back into the escrow: by then the
    engagement ended (cancelled, completed, resolved), or (frozen) the escrow still holds it."""
    unit = engagement.unit
    return EscrowRefund(
        refund_id=f"{refund.refund_id}{FAILED_SUFFIX}",
        engagement_id=engagement.id,
        payment_id=engagement.payment_id,
        unit=unit,
        amount_minor=refund.amount_minor,
        outcome=AtProviderOutcome.REVERSED,
        legs=(
            Leg(
                AccountRef.clearing(provider, unit),
                receivable(engagement.id, unit),
                refund.amount_minor,
            ),
        ),
        created_at=now,
        updated_at=now,
    )


def receivable(engagement_id: str, unit: str) -> AccountRef:
    """What is owed to the platform for an engagement's money refunded at the provider after it
    could no longer come out of the escrow: a clearing-kind account, so it may go below zero
    (minus what is owed), one per engagement so that each debt is traceable."""
    return AccountRef(
        f"{escrow_owner(engagement_id)}{RECEIVABLE_SUFFIX}", unit, AccountKind.PROVIDER_CLEARING
    )


def is_receivable(ref: AccountRef) -> bool:
    """Whether the account is an engagement's receivable (what is owed for it)."""
    return ref.kind is AccountKind.PROVIDER_CLEARING and ref.owner.endswith(RECEIVABLE_SUFFIX)


def still_owed(refunds: list[EscrowRefund], steps: list[MoneyStep]) -> int:
    """What an engagement's refunds made at the provider leave owed once its posted money
    steps netted them (MoneyStep.net): the auditor reports the refunds while this is positive;
    below zero, refunds that failed after success (reversed) left that much owed to the
    customer (the receivable holds it)."""
    netted = sum(s.netted_minor for s in steps if s.state in POSTED)
    return sum(r.owed_minor for r in refunds) - netted


@dataclass(slots=True)
class EscrowRefund:
    """One refund made at the provider of an engagement's money, recorded once (insert-first on
    the refund id, under the engagement's lock) with the legs that book it, then posted."""

    refund_id: str
    engagement_id: str
    payment_id: str
    unit: str
    amount_minor: int
    outcome: AtProviderOutcome
    legs: tuple[Leg, ...]
    created_at: datetime
    updated_at: datetime
    state: StepState = StepState.PENDING
    attempts: int = 0
    failure: str = ""

    # An operator's settlement: the record's own id (`engagement:<id>:settled:<request id>`).
    reference: str = ""
    actor: str = ""

    @property
    def transfer_id(self) -> str:
        """payments' id of the refund's booking: the ledger auditor expects it on clearing (an
        operator's settlement: its own id, never on clearing)."""
        if self.outcome is AtProviderOutcome.SETTLED:
            return self.refund_id
        return refund_transfer_id(self.payment_id, self.refund_id)

    @property
    def owed_minor(self) -> int:
        """What the refund left owed to the platform (negative: an earlier debt it settled)."""
        owed = receivable(self.engagement_id, self.unit)
        return sum(leg.amount_minor for leg in self.legs if leg.source == owed) - sum(
            leg.amount_minor for leg in self.legs if leg.target == owed
        )

    def done(self, now: datetime) -> None:
        self.state = StepState.DONE
        self.failure = ""
        self.updated_at = now

    def failed(self, why: str, now: datetime) -> None:
        self.attempts += 1
        self.failure = why[:200]
        self.updated_at = now


def refund_at_provider(
    engagement: Engagement,
    refund: PaymentRefund,
    provider: str,
    earlier: list[EscrowRefund],
    now: datetime,
) -> EscrowRefund:
    """How a refund made at the provider is booked, given the engagement as it is now (locked)
    and the refunds at the provider booked before it. Every transfer balances and provider
    clearing receives exactly the refunded amount:

    - held, and the refunds reach the amount paid: UNWOUND, escrow -> clearing (the escrow),
      revenue -> clearing (the acceptance fee), and clearing -> receivable what earlier partial
      refunds left owed (they were taken from the receivable: settled now);
    - held, in part: FROZEN, receivable -> clearing (owed until an admin decides);
    - released: OWED, receivable -> clearing."""
    unit = engagement.unit
    clearing = AccountRef.clearing(provider, unit)
    owed = receivable(engagement.id, unit)
    before = refunded_at_provider_minor(earlier)
    if engagement.state in HELD and before + refund.amount_minor >= engagement.amount_minor:
        outcome = AtProviderOutcome.UNWOUND
        legs: tuple[Leg, ...] = (
            Leg(AccountRef.escrow(engagement.id, unit), clearing, engagement.escrow_minor),
            Leg(AccountRef.revenue(unit), clearing, engagement.fee1_minor),
            Leg(clearing, owed, sum(r.owed_minor for r in earlier)),
        )
    else:
        held = engagement.state in HELD
        outcome = AtProviderOutcome.FROZEN if held else AtProviderOutcome.OWED
        legs = (Leg(owed, clearing, refund.amount_minor),)
    return EscrowRefund(
        refund_id=refund.refund_id,
        engagement_id=engagement.id,
        payment_id=engagement.payment_id,
        unit=unit,
        amount_minor=refund.amount_minor,
        outcome=outcome,
        legs=tuple(leg for leg in legs if leg.amount_minor > 0),
        created_at=now,
        updated_at=now,
    )


# --------------------------------------------------------------------------- receivables settled
#
# Money owed to the customer on an engagement's receivable (a refund refused outright by the
# provider, or one that failed after it succeeded) paid back outside Hirepay (a bank transfer):
# an operator records it once, and it leaves the receivable for the `outside` account.

OUTSIDE = "outside"
SETTLED_INFIX = ":settled:"


class SettlementExceedsOwed(HirepayError):
    """More than the engagement's receivable holds for the customer (PAY-11; nothing changed)."""

    kind = ErrorKind.FAILED_PRECONDITION
    reason = "SETTLEMENT_EXCEEDS_OWED"

    def __init__(self, engagement_id: str, requested: int, owed: int, unit: str) -> None:
        super().__init__(
            f"{requested} {unit} is more than the {owed} {unit} owed to the customer of"
            f" engagement {engagement_id}",
            metadata={
                "engagement_id": engagement_id,
                "requested_minor": str(requested),
                "owed_minor": str(owed),
                "currency": unit,
            },
        )


def outside(unit: str) -> AccountRef:
    """Where money paid back outside Hirepay goes (a clearing-kind account, as a provider's)."""
    return AccountRef.clearing(OUTSIDE, unit)


def owed_to_customer(refunds: list[EscrowRefund], steps: list[MoneyStep]) -> int:
    """What the engagement's receivable holds for the customer (0 when it owes nothing)."""
    return max(-still_owed(refunds, steps), 0)


def settlement_id(engagement_id: str, request_id: str) -> str:
    """The settlement's record and transfer id; a long request id by its digest (the id fits
    the record's 128 characters)."""
    key = request_id if len(request_id) <= 64 else hashlib.sha256(request_id.encode()).hexdigest()
    return f"{escrow_owner(engagement_id)}{SETTLED_INFIX}{key}"


def receivable_settlement(
    engagement: Engagement,
    amount_minor: int,
    request_id: str,
    reference: str,
    actor: str,
    now: datetime,
) -> EscrowRefund:
    """The record and the booking of money owed to the customer paid back outside: receivable ->
    outside (its owed_minor is +amount: the receivable holds that much less for the customer)."""
    unit = engagement.unit
    return EscrowRefund(
        refund_id=settlement_id(engagement.id, request_id),
        engagement_id=engagement.id,
        payment_id=engagement.payment_id,
        unit=unit,
        amount_minor=amount_minor,
        outcome=AtProviderOutcome.SETTLED,
        legs=(Leg(receivable(engagement.id, unit), outside(unit), amount_minor),),
        created_at=now,
        updated_at=now,
        reference=reference,
        actor=actor,
    )
