"""Card disputes (chargebacks) of captured payments: the provider's view of a dispute, the record
Hirepay keeps of it, and what each of its balance transactions owes the ledger (ESC-1).

A dispute does not change the payment's state: what was captured stays captured (a disputed
charge cannot be refunded on top: the provider already took the money back). The money moves by
the dispute's money movements (Stripe's balance transactions: zero, one or two — the withdrawal
when it opens, the reinstatement when it is won; PayPal's hold, release and fees; Razorpay's
deduction, when lost or at onset, and its reversal when won), each booked once under its own transfer id whatever the event that
brought it. A dispute of several payments (PayPal's disputed captures of several orders) is
recorded and booked per payment, each its share (`ProviderDispute.shares`, split_exactly).
Pure: no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


class DisputeStatus(enum.StrEnum):
    """Where a dispute stands (Stripe's statuses, which other providers' map onto)."""

    WARNING_NEEDS_RESPONSE = "warning_needs_response"  # an inquiry: no money moved yet
    WARNING_UNDER_REVIEW = "warning_under_review"
    WARNING_CLOSED = "warning_closed"  # the inquiry ended without a chargeback
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"
    PREVENTED = "prevented"  # resolved before it became a chargeback (e.g. by a refund)


STATUS_OF = {s.value: s for s in DisputeStatus}
# Between a provider's dispute id and the payment a share of it is recorded against (the record
# of a dispute of several payments, `<dispute>/<payment>`): no provider's id holds it.
SHARE_SEPARATOR = "/"
CLOSED = frozenset(
    {DisputeStatus.WARNING_CLOSED, DisputeStatus.WON, DisputeStatus.LOST, DisputeStatus.PREVENTED}
)


@dataclass(frozen=True, slots=True)
class DisputeMoney:
    """One money movement of a dispute (Stripe: a balance transaction; PayPal, Razorpay: one the
    adapter derives, its id from the dispute's): money the provider withdrew or held
    (`amount_minor` < 0) or reinstated or released (> 0), and its dispute fee (> 0 charged, < 0
    given back)."""

    id: str
    amount_minor: int
    fee_minor: int
    currency: str
    # The provider's rate when it converted the money into `currency` (Stripe's
    # `exchange_rate`, kept as its text for the audit trail only: nothing is converted by it).
    exchange_rate: str = ""
    # A running total the provider may still change (PayPal's fee of one reason: a later view
    # may show another amount; Razorpay's deduction and reversal, which only grow). Its first
    # amount is booked under `id`; each later change books the difference under an id of its
    # own (`adjustment`), so the ledger ends at the provider's final amount. A balance
    # transaction (Stripe's) never changes: False.
    running: bool = False
    # A running total that only grows (Razorpay's; its amount and fee each away from zero): a
    # view showing less than was booked is an older one applied late (Razorpay gives no update
    # time) and books nothing.
    growing: bool = False

    def adjustment(self, booked: list[tuple[int, int]]) -> DisputeMoney | None:
        """What a running total still owes the ledger, given the (amount, fee) pairs already
        booked for it (its first booking and each adjustment, in any order): itself if nothing
        was booked yet, else the difference under `<id>:<n>` (n: the bookings so far plus one),
        None if the ledger already holds this much (for a growing total: at least this much)."""
        if not booked:
            return self
        amount = self.amount_minor - sum(a for a, _ in booked)
        fee = self.fee_minor - sum(f for _, f in booked)
        if self.growing:  # only more of it (away from zero, its own sign) is owed
            amount = amount if amount * self.amount_minor > 0 else 0
            fee = fee if fee * self.fee_minor > 0 else 0
        if not amount and not fee:
            return None
        return DisputeMoney(f"{self.id}:{len(booked) + 1}", amount, fee, self.currency)


def split_exactly(total: int, weights: list[int]) -> list[int]:
    """`total` (minor units, >= 0) split in proportion to `weights` (>= 0, not all 0) by largest
    remainder: each part floor(total * w / sum), then one unit more to the parts with the
    largest remainders (ties: the earlier part) until the parts sum to `total` exactly. A part
    never exceeds its weight when `total` <= the weights' sum."""
    whole = sum(weights)
    if whole <= 0:
        raise ValueError("weights must not all be zero")
    parts = [total * w // whole for w in weights]
    left = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


@dataclass(frozen=True, slots=True)
class ProviderDispute:
    """A dispute as the provider reports it (re-fetched, never an event's copy)."""

    id: str
    payment_id: str  # the provider's payment (Stripe: the PaymentIntent)
    amount_minor: int
    currency: str
    status: DisputeStatus
    reason: str
    money: tuple[DisputeMoney, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    # When the provider last changed the dispute (PayPal's `update_time`), None if it does not
    # say: a view older than one already applied changes no running fee (see Dispute.stale).
    updated_at: datetime | None = None
    # Money the provider reports that Hirepay cannot book exactly (e.g. a refund to the buyer
    # in another currency than the held amount, with nothing saying what it was in that
    # currency): never guessed by a conversion, named in the audit entry and counted instead.
    unbooked: tuple[str, ...] = ()
    # Every payment the dispute is about when it is about more than one (PayPal's disputed
    # transactions of several orders; "" for a capture whose order is unknown): then
    # `payment_id` is "" and the dispute's own money is not booked: each payment's share is
    # (`shares`; one payment's money is never booked against another's).
    payment_ids: tuple[str, ...] = ()
    # A dispute of several payments: one view per payment whose share is exact (its
    # `payment_id`, its share of the amount and of each money movement under ids of its own,
    # its record `<dispute>/<payment>`); a payment whose share is not known has none (named in
    # `unbooked`).
    shares: tuple[ProviderDispute, ...] = ()
    # How the shares were split (the rule's name, for the audit entry; "" for one payment).
    split: str = ""
    # Why `unbooked` money is not booked (the metric's label).
    unbooked_why: str = "refund_currency"

    def same_currency(self, money: DisputeMoney) -> bool:
        """Whether a balance transaction is in the dispute's currency (or names none)."""
        return not money.currency or money.currency == self.currency

    def in_dispute_currency(self, money: DisputeMoney) -> int:
        """A balance transaction's amount in the dispute's currency: as it is, or, settled in
        another currency (converted by the provider), the dispute's amount with its sign —
        exact, never converted back at a rate."""
        if self.same_currency(money) or not money.amount_minor:
            return money.amount_minor
        return self.amount_minor if money.amount_minor > 0 else -self.amount_minor


@runtime_checkable
class DisputeSource(Protocol):
    """A provider whose disputes Hirepay follows (Stripe, PayPal, Razorpay): its adapter reads
    the provider's dispute, `payment_id` the provider id Hirepay's payment record holds."""

    async def retrieve_dispute(self, dispute_id: str) -> ProviderDispute: ...


@dataclass(slots=True)
class Dispute:
    """Hirepay's record of one provider dispute of one payment."""

    id: str  # the provider's dispute id (Stripe dp_..., PayPal PP-D-..., Razorpay disp_...)
    provider: str
    payment_id: str
    amount_minor: int
    currency: str
    reason: str
    status: DisputeStatus
    created_at: datetime
    updated_at: datetime
    withdrawn_minor: int = 0  # disputed money the provider took back so far
    reinstated_minor: int = 0  # ... and gave back
    fee_minor: int = 0  # the provider's dispute fees, net
    closed_at: datetime | None = None
    # The provider's update time of the newest view applied (migration 0022); None if unknown.
    provider_updated_at: datetime | None = None

    @property
    def provider_dispute_id(self) -> str:
        """The provider's id of the dispute (a share's record `<dispute>/<payment>`: its first
        part)."""
        return self.id.partition(SHARE_SEPARATOR)[0]

    def stale(self, view: ProviderDispute) -> bool:
        """Whether the view is older than one already applied (two events of one dispute
        re-fetched at different times, applied in the other order): it must not set back a
        running fee a newer view booked."""
        return (
            view.updated_at is not None
            and self.provider_updated_at is not None
            and view.updated_at < self.provider_updated_at
        )

    @property
    def closed(self) -> bool:
        return self.status in CLOSED

    @property
    def outcome(self) -> str:
        """ "open" while it runs, else how it closed (won, lost, warning_closed, prevented)."""
        return self.status.value if self.closed else "open"

    @classmethod
    def opened(
        cls, view: ProviderDispute, provider: str, payment_id: str, now: datetime
    ) -> Dispute:
        """The record of a dispute seen for the first time (its money observed separately)."""
        return cls(
            id=view.id,
            provider=provider,
            payment_id=payment_id,
            amount_minor=view.amount_minor,
            currency=view.currency,
            reason=view.reason,
            status=view.status,
            created_at=now,
            updated_at=now,
        )

    def charges_back_in_full(self, captured_minor: int, refunded_minor: int) -> bool:
        """Whether the dispute, lost, took back all the money the payment still held (with the
        refunds made before it): the customer has it all again, as after a full refund. A lost
        dispute of less leaves the rest paid (like a partial refund), and so does one whose
        provider gave part of the money back (PayPal's release when the buyer got less): what
        it took is what it withdrew less what it reinstated, at most its amount (its amount if
        it shows no money)."""
        taken = self.amount_minor
        if self.withdrawn_minor:
            taken = min(taken, self.withdrawn_minor - self.reinstated_minor)
        return (
            self.status is DisputeStatus.LOST
            and captured_minor > 0
            and taken + refunded_minor >= captured_minor
        )

    def observe(self, view: ProviderDispute, now: datetime) -> bool:
        """Take the provider's current view (status and money); whether anything changed. A
        closed dispute stays closed (a late, stale view never reopens it)."""
        before = self._seen()
        stale = self.stale(view)
        if view.updated_at is not None and not stale:
            self.provider_updated_at = view.updated_at
        if not self.closed and not stale:
            self.status = view.status
        self.amount_minor = view.amount_minor or self.amount_minor
        self.reason = view.reason or self.reason
        # In the dispute's currency: a balance transaction settled in another (converted by the
        # provider) counts as the dispute's amount, as its booking does (CreditGrant.dispute).
        withdrawn = sum(-view.in_dispute_currency(m) for m in view.money if m.amount_minor < 0)
        reinstated = sum(view.in_dispute_currency(m) for m in view.money if m.amount_minor > 0)
        # Two events of one dispute may be applied out of order: an older view (fewer balance
        # transactions) never takes back what a newer one recorded.
        if withdrawn >= self.withdrawn_minor and reinstated >= self.reinstated_minor and not stale:
            self.withdrawn_minor, self.reinstated_minor = withdrawn, reinstated
            # The fees charged in the dispute's currency; one in another is on the ledger in
            # its own unit and named in the dispute's audit entry.
            self.fee_minor = sum(m.fee_minor for m in view.money if view.same_currency(m))
        if self.closed and self.closed_at is None:
            self.closed_at = now
        changed = before != self._seen()
        if changed:
            self.updated_at = now
        return changed

    def _seen(self) -> tuple[object, ...]:
        """What a view can change (the provider's update time too: saved so that an older view
        applied later is known as older)."""
        return (
            self.status,
            self.withdrawn_minor,
            self.reinstated_minor,
            self.fee_minor,
            self.provider_updated_at,
        )
