"""The pay-to-post saga: its state machine, its payment methods, and how participant failures read.

The saga is a Try-Confirm-Cancel global transaction with one branch ("payment"). Its row in the
jobs database is the durable log: each step is persisted before it acts, so after a crash the
recovery worker resumes from the last persisted state. Its states change only through the methods
of `Saga`, each checked against the transition table `Saga.TRANSITIONS`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from hirepay_platform.errors import ErrorKind, HirepayError
from hirepay_platform.reasons import PAYMENT_METHOD_FAILURES, FailureReason
from jobs.domain.errors import InvalidSagaTransition

BRANCH_ID = "payment"
# Lease owners ending with this are requests in flight (of any replica), which drive their saga:
# a settlement event arriving meanwhile only records what it says (no second driver racing them).
REQUEST_HOLDER_SUFFIX = "/request"


class SagaState(enum.StrEnum):
    """Where a saga is. Non-final states are driven forward by requests, events and recovery."""

    TRYING = "trying"  # job pending_payment; Try sent or about to be sent
    AWAITING_SETTLEMENT = "awaiting_settlement"  # Try accepted; the provider settles later
    # Reserved and checked: the job (still pending_payment) can go live. Confirm is driven until
    # it takes the money, and the job goes live in the transaction that records it; a Confirm
    # that cannot succeed (a bounded number of refusals) cancels instead.
    CONFIRMING = "confirming"
    CANCELLING = "cancelling"  # job payment_failed; Cancel is driven until it succeeds
    REFUNDING = "refunding"  # money was taken and must go back (PAY-7, PAY-13)
    COMPLETED = "completed"  # final: paid and active
    FAILED = "failed"  # final: nothing held, nothing taken
    REFUNDED = "refunded"  # final: money returned
    # Kind `offer` only: the offer's money is reserved and waits for the contractor's decision
    # (due at the offer's expiry, when recovery cancels it).
    OFFERED = "offered"
    # Kind `offer` only: captured; the fee and escrow are being booked on the ledger and the job
    # assigned (driven until done: money taken is never left unbooked).
    BOOKING = "booking"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


# The final states: `state in FINAL_STATES` is `state.final` without the property's Python call
# (the saga's hot paths ask it several times per posting and per settlement event; issue 13).
FINAL_STATES = frozenset({SagaState.COMPLETED, SagaState.FAILED, SagaState.REFUNDED})
# States before the activation checks passed: a deadline may still cancel these.
BEFORE_ACTIVATION = frozenset({SagaState.TRYING, SagaState.AWAITING_SETTLEMENT})
# States in which the job waits, pending_payment, for its money: a cancel of the job cancels these.
BEFORE_LIVE = BEFORE_ACTIVATION | {SagaState.CONFIRMING}

# Where each state may go. Before the Confirm the Try's outcome decides (a further "still pending"
# answer keeps the saga waiting); a Confirm that can never succeed cancels; money found taken after
# the saga gave up (a late bank transfer) or a cancelled live posting is refunded (PAY-7, PAY-13).
_UNSETTLED = frozenset(
    {
        SagaState.AWAITING_SETTLEMENT,
        SagaState.CONFIRMING,
        SagaState.CANCELLING,
        SagaState.REFUNDING,
    }
)
SAGA_TRANSITIONS: dict[SagaState, frozenset[SagaState]] = {
    SagaState.TRYING: _UNSETTLED,
    SagaState.AWAITING_SETTLEMENT: _UNSETTLED,
    SagaState.CONFIRMING: frozenset(
        {SagaState.COMPLETED, SagaState.REFUNDING, SagaState.CANCELLING}
    ),
    SagaState.CANCELLING: frozenset({SagaState.FAILED, SagaState.REFUNDED, SagaState.REFUNDING}),
    SagaState.REFUNDING: frozenset({SagaState.REFUNDED}),
    SagaState.COMPLETED: frozenset({SagaState.REFUNDING}),
    SagaState.FAILED: frozenset({SagaState.REFUNDING}),
    SagaState.REFUNDED: frozenset(),
    SagaState.OFFERED: frozenset(),
    SagaState.BOOKING: frozenset(),
}


# Kind `offer` (a marketplace offer, ESC-6): Try = reserve the offer's money when it is sent;
# Confirm = capture it when the contractor accepts (the job locked for this offer), then book the
# fee and the escrow and assign the job; Cancel = release it (rejected, expired, withdrawn, lost).
OFFER_SAGA_TRANSITIONS: dict[SagaState, frozenset[SagaState]] = {
    SagaState.TRYING: frozenset({SagaState.OFFERED, SagaState.CANCELLING}),
    SagaState.OFFERED: frozenset({SagaState.CONFIRMING, SagaState.CANCELLING}),
    SagaState.CONFIRMING: frozenset({SagaState.BOOKING, SagaState.CANCELLING}),
    SagaState.BOOKING: frozenset({SagaState.COMPLETED}),
    SagaState.CANCELLING: frozenset({SagaState.FAILED}),
    SagaState.COMPLETED: frozenset(),
    SagaState.FAILED: frozenset(),
    SagaState.REFUNDED: frozenset(),
    SagaState.AWAITING_SETTLEMENT: frozenset(),
    SagaState.REFUNDING: frozenset(),
}


class SagaKind(enum.StrEnum):
    """Which global transaction a saga row is: one engine (log, leases, recovery) drives both."""

    POSTING = "posting"  # pay-to-post (PAY-4)
    OFFER = "offer"  # a marketplace offer, from its reservation to acceptance or release


TRANSITIONS_BY_KIND: dict[SagaKind, dict[SagaState, frozenset[SagaState]]] = {
    SagaKind.POSTING: SAGA_TRANSITIONS,
    SagaKind.OFFER: OFFER_SAGA_TRANSITIONS,
}


class PaymentMethod(enum.StrEnum):
    """How a saga's money is paid (PaymentChoice.method; an offer's funding)."""

    CARD = "card"
    CREDITS = "credits"
    BANK_TRANSFER = "bank_transfer"
    CHECKOUT = "checkout"
    COINS = "coins"  # a hold on the customer's COIN wallet (offers)


class TryState(enum.StrEnum):
    """What a participant says about the Try of a branch, in the saga's words."""

    RESERVED = "reserved"  # authorized / hold pending: Confirm may capture
    CAPTURED = "captured"  # money already taken (bank transfer, checkout): Confirm is a formality
    ACTION_REQUIRED = "action_required"  # waiting for the customer (3-D Secure, checkout)
    PROCESSING = "processing"  # waiting for the provider (bank transfer)
    UNKNOWN = "unknown"  # the provider did not answer; being polled
    FAILED = "failed"  # declined / failed: nothing taken
    CANCELLED = "cancelled"  # voided or released: nothing taken
    REFUNDED = "refunded"  # money was taken and returned
    ABSENT = "absent"  # no Try was ever recorded for the branch


# How far along a branch's payment is, by the state its participant names (payments'
# Payment.State, the wallet's Hold.State; recorded as the saga's `provider_state`). Answers and
# settlement events arrive out of order, so a state is recorded (and acted on) only when it is
# further along than the one recorded: a stale or repeated one changes nothing. The conflicts are
# decided for the money:
# - a failure after an authorization is news (a capture declined, the authorization voided); an
#   authorization after a failure is not (the saga gave up on the failure and cancels the branch);
# - FAILED ranks below the voids: a hosted checkout that failed may still be voided by our Cancel;
# - money taken ranks above every outcome that took nothing: a capture after a failure or a void
#   (a late bank transfer) is applied and refunded (PAY-7), while a stale authorization, failure
#   or void arriving after a capture never undoes it;
# - refunds end the branch: nothing leaves REFUNDED.
# A name outside the order (no real participant sends one) tells nothing, like UNKNOWN.
PROVIDER_STATE_ORDER: tuple[frozenset[str], ...] = (
    frozenset({"UNKNOWN"}),  # the provider did not answer: no progress to record
    frozenset({"REQUIRES_ACTION"}),  # waiting for the customer (3-D Secure, a checkout page)
    frozenset({"PROCESSING"}),  # submitted; the provider settles it later (bank transfer)
    frozenset({"AUTHORIZED", "PENDING"}),  # reserved: a card authorization, a wallet hold
    frozenset({"FAILED"}),  # declined: nothing taken
    frozenset({"VOIDED", "CANCELLED", "EXPIRED"}),  # released: nothing taken, nothing held
    frozenset({"CAPTURED", "CONFIRMED"}),  # money taken
    frozenset({"PARTIALLY_REFUNDED"}),
    frozenset({"REFUNDED"}),  # terminal
)
_PROVIDER_RANK: dict[str, int] = {
    name: rank for rank, names in enumerate(PROVIDER_STATE_ORDER) for name in names
}


def provider_rank(provider_state: str) -> int:
    """Where a provider state stands in PROVIDER_STATE_ORDER; -1 for none recorded yet."""
    if not provider_state:
        return -1
    return _PROVIDER_RANK.get(provider_state, 0)


def provider_state_advances(recorded: str, incoming: str) -> bool:
    """Whether `incoming` is further along than `recorded` (any state is, when none is recorded;
    an empty one never is: it says nothing). provider_rank's look-ups made here: each answer
    and event of a saga asks (two Python calls fewer each, issue 13)."""
    if not incoming:
        return False
    return _PROVIDER_RANK.get(incoming, 0) > (_PROVIDER_RANK.get(recorded, 0) if recorded else -1)


@dataclass(frozen=True, slots=True)
class TryResult:
    """A participant's view of the branch after a Try or a read."""

    state: TryState
    payment_id: str = ""
    provider_state: str = ""
    next_action_url: str = ""
    failure_reason: str = ""
    failure_code: str = ""


@dataclass(frozen=True, slots=True)
class SagaError:
    """A failure stored with the saga, so a replay fails exactly like the original request."""

    kind: str
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, error: HirepayError) -> SagaError:
        return cls(error.kind.value, error.reason, error.message, dict(error.metadata))

    def to_error(self) -> HirepayError:
        try:
            kind = ErrorKind(self.kind)
        except ValueError:
            kind = ErrorKind.INTERNAL
        return HirepayError(self.message, reason=self.reason, kind=kind, metadata=self.metadata)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "message": self.message,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SagaError:
        return cls(data["kind"], data["reason"], data["message"], dict(data.get("metadata", {})))


@dataclass(frozen=True, slots=True)
class SettlementEvent:
    """A settlement event of the payments service, in the saga's terms."""

    event_id: str
    cursor: int
    type: str
    global_tx_id: str
    branch_id: str
    result: TryResult
    # The payment's metadata (a direct job payment names its engagement and escrow here).
    metadata: dict[str, str] = field(default_factory=dict)


class SettlementStep(enum.Enum):
    """What a settlement event asks of its saga, judged on the saga as read without a lock
    (settlement_step): most events ask nothing, the request having driven the saga already."""

    NONE = "none"  # nothing to record and nothing to drive: no statement at all
    OBSERVE = "observe"  # news: recorded under the saga's lock (observe), then the saga driven
    DRIVE = "drive"  # nothing new, but the saga is left to drive (no live request drives it)
    # The money of a completed posting was all returned outside the saga (a refund made at the
    # provider: its dashboard, or the provider on its own): the posting ends (refunded_at_provider)
    REFUNDED_AT_PROVIDER = "refunded_at_provider"


@dataclass(slots=True)
class Saga:
    """One pay-to-post attempt: the durable log row of its global transaction."""

    TRANSITIONS: ClassVar[dict[SagaState, frozenset[SagaState]]] = SAGA_TRANSITIONS

    id: str
    company_id: str
    request_id: str
    fingerprint: str
    actor: str
    state: SagaState
    method: PaymentMethod
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime
    job_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    terms_version: str = ""
    payment_token: str = ""
    return_url: str = ""
    cancel_url: str = ""
    email: str = ""
    payment_id: str = ""
    provider_state: str = ""
    next_action_url: str = ""
    activated: bool = False
    captured: bool = False
    refund_amount_minor: int = 0
    refund_reason: str = ""
    failure: SagaError | None = None
    response: dict[str, Any] | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_owner: str = ""
    lease_until: datetime | None = None
    finished_at: datetime | None = None
    kind: SagaKind = SagaKind.POSTING

    @property
    def transitions(self) -> dict[SagaState, frozenset[SagaState]]:
        """The transition table of this saga's kind."""
        if self.kind is SagaKind.POSTING:
            return self.TRANSITIONS
        return TRANSITIONS_BY_KIND[self.kind]

    @property
    def branch_id(self) -> str:
        return BRANCH_ID

    @property
    def answered(self) -> bool:
        """Whether the request has its final answer (a response or an error) stored."""
        return self.response is not None or self.failure is not None

    def is_stale(self, result: TryResult) -> bool:
        """Whether a participant's answer or event is behind (or level with) the provider state
        the saga records: it then changes nothing (an answer naming no state is not judged)."""
        return bool(result.provider_state) and not provider_state_advances(
            self.provider_state, result.provider_state
        )

    def note_provider_state(self, provider_state: str) -> bool:
        """Record the branch's provider state if it is further along; whether it was."""
        if not provider_state_advances(self.provider_state, provider_state):
            return False
        self.provider_state = provider_state
        return True

    def _move(self, to: SagaState, now: datetime) -> None:
        """Change state if the table allows it; each state counts its own failed attempts."""
        if to not in self.transitions[self.state]:
            raise InvalidSagaTransition(self.id, self.state.value, to.value)
        if to is not self.state:
            self.attempts = 0
        self.state = to
        self.updated_at = now

    def await_settlement(self, next_action_url: str, poll_at: datetime, now: datetime) -> None:
        """The Try was accepted but settles later (3-D Secure, checkout, bank transfer)."""
        self._move(SagaState.AWAITING_SETTLEMENT, now)
        self.next_action_url = next_action_url or self.next_action_url
        self.next_attempt_at = poll_at

    def start_confirming(self, now: datetime) -> None:
        """Reserved, and nothing stops the job going live: take the money (PAY-4)."""
        self._move(SagaState.CONFIRMING, now)
        self.next_attempt_at = now

    def hold_offer(self, due_at: datetime, now: datetime) -> None:
        """Kind offer: the money is reserved; due again at the offer's expiry."""
        self._move(SagaState.OFFERED, now)
        self.next_attempt_at = due_at

    def start_booking(self, now: datetime) -> None:
        """Kind offer: captured; the fee and escrow are booked and the job assigned next."""
        self._move(SagaState.BOOKING, now)
        self.captured = True
        self.next_attempt_at = now

    def complete(self, now: datetime) -> None:
        """The money is taken and the job went live (same transaction); a refund the company
        asked for meanwhile starts now, else the saga is done."""
        self.captured = True
        self.activated = True
        if self.refund_amount_minor > 0:
            self.start_refunding(now)
            self.next_attempt_at = now
        else:
            self.finish(SagaState.COMPLETED, now)

    def start_cancelling(self, failure: SagaError, now: datetime) -> None:
        """Give up: Cancel the branch; the first failure recorded is the one the client sees."""
        self._move(SagaState.CANCELLING, now)
        self.failure = self.failure or failure

    def start_refunding(self, now: datetime, *, reason: str = "") -> None:
        """Money was taken and goes back (a refund reason already recorded is kept)."""
        self._move(SagaState.REFUNDING, now)
        self.refund_reason = self.refund_reason or reason
        self.finished_at = None

    def request_refund(self, amount_minor: int, reason: str, now: datetime) -> None:
        """A refund of a live posting: driven now if the saga is done, else after its Confirm."""
        self.refund_amount_minor = amount_minor
        self.refund_reason = reason
        if self.state is SagaState.COMPLETED:
            self.start_refunding(now)
            self.next_attempt_at = now
        self.updated_at = now

    def finish(self, state: SagaState, now: datetime) -> None:
        """Move to a final state: nothing is left to drive, so no one holds it either (the
        driver that ends it needs no transaction of its own to give its lease up)."""
        if state not in FINAL_STATES:
            raise InvalidSagaTransition(self.id, self.state.value, state.value)
        self._move(state, now)
        self.finished_at = now
        self.next_attempt_at = None
        self.lease_owner = ""
        self.lease_until = None

    def take_lease(self, owner: str, until: datetime, now: datetime) -> bool:
        """Lease the saga to `owner` unless another live holder has it (caller holds the row)."""
        if self.lease_owner and self.lease_until is not None and self.lease_until > now:
            return self.lease_owner == owner
        self.lease_owner = owner
        self.lease_until = until
        return True

    def release_lease(self, owner: str) -> bool:
        """Give up `owner`'s lease; False when someone else holds it now."""
        if self.lease_owner != owner:
            return False
        self.lease_owner = ""
        self.lease_until = None
        return True

    def held_by_live_request(self, now: datetime) -> bool:
        """A request in flight (of any replica) holds the saga and drives it itself."""
        return (
            self.lease_until is not None
            and self.lease_until > now
            and self.lease_owner.endswith(REQUEST_HOLDER_SUFFIX)
        )


# Failures that count as suspicious when they pile up for one company (PAY-14).
ABUSE_REASONS: frozenset[str] = PAYMENT_METHOD_FAILURES

# The reasons the client sees (PAY-11), from what a participant answered.
_WALLET_REASONS = {FailureReason.INSUFFICIENT_FUNDS: FailureReason.INSUFFICIENT_CREDITS}


def client_error(error: HirepayError, method: PaymentMethod, saga_id: str) -> HirepayError:
    """The error the caller gets for a failed Try, keeping the participant's reason and metadata.

    A timeout is UNKNOWN, never a decline: PAYMENT_TIMEOUT with the payment and transaction ids so
    the client can read the state and retry. A participant that is down is
    PAYMENT_PROVIDER_UNAVAILABLE. Wallet's INSUFFICIENT_FUNDS on credits is INSUFFICIENT_CREDITS.
    """
    metadata = {**error.metadata, "transaction_id": saga_id}
    reason = error.reason
    kind = error.kind
    message = error.message
    if method is PaymentMethod.CREDITS and reason in _WALLET_REASONS:
        reason = _WALLET_REASONS[reason]
        kind = ErrorKind.FAILED_PRECONDITION
        message = "not enough job credits to post this job"
    elif reason == FailureReason.PAYMENT_TIMEOUT or kind is ErrorKind.DEADLINE_EXCEEDED:
        reason, kind = FailureReason.PAYMENT_TIMEOUT, ErrorKind.DEADLINE_EXCEEDED
        metadata.setdefault("payment_id", "")
        metadata["retry"] = "true"
        message = "the payment provider did not answer in time; nothing was posted"
    elif reason == FailureReason.PAYMENT_PROVIDER_UNAVAILABLE or kind is ErrorKind.UNAVAILABLE:
        reason, kind = FailureReason.PAYMENT_PROVIDER_UNAVAILABLE, ErrorKind.UNAVAILABLE
        metadata["retry"] = "true"
    return HirepayError(message, reason=reason, kind=kind, metadata=metadata)


def is_permanent_confirm_error(error: HirepayError) -> bool:
    """A Confirm refusal that will not pass by waiting: the authorization voided or expired, the
    hold released, the provider knowing no such payment. Retried only a bounded number of times
    (the branch is read each time: money may have been taken after all)."""
    return error.kind in (ErrorKind.FAILED_PRECONDITION, ErrorKind.NOT_FOUND)


def confirm_exhausted(
    saga: Saga, *, permanent: bool, max_refusals: int, give_up_at: datetime, now: datetime
) -> bool:
    """Whether a failed Confirm ends the saga instead of being retried.

    A refusal that will not pass by waiting ends it on its `max_refusals`-th occurrence; any
    failure ends it at `give_up_at` (the payment must reach a final state in bounded time,
    promise 4). `saga.attempts` counts the Confirm's failures so far."""
    if permanent and saga.attempts + 1 >= max_refusals:
        return True
    return now >= give_up_at


def settlement_nothing_left(saga: Saga, event: SettlementEvent) -> bool:
    """Whether the event can no longer change its saga: the saga is final and answered, the event
    names no payment the saga does not know, and it is not money arriving for a saga that gave up
    (which is refunded, PAY-7). Most events find their saga so: the request drove it already."""
    return (
        saga.state in FINAL_STATES
        and saga.answered
        and (not event.result.payment_id or event.result.payment_id == saga.payment_id)
        and not (saga.state is SagaState.FAILED and event.result.state is TryState.CAPTURED)
    )


def settlement_nothing_left_after_completion(payment_id: str, event: SettlementEvent) -> bool:
    """Whether the event asks nothing of a saga known COMPLETED with `payment_id` (the request
    that completed it committed so, moments ago; issue 13): it authorizes or captures that very
    payment, what the saga did already. Judged on the saga as completed, without reading it
    again: a completed saga is final and answered (settlement_nothing_left then holds), or, once
    a cancellation of its job moved it on, REFUNDING, which its CancelJob drives under its lease
    and the recovery worker drives when due (such an event would at most drive it early), or
    REFUNDED (final). An event of another payment, a refund or a failure is judged on a read."""
    result = event.result
    return result.state in _AUTHORIZED_OR_CAPTURED and result.payment_id in ("", payment_id)


_AUTHORIZED_OR_CAPTURED = frozenset({TryState.RESERVED, TryState.CAPTURED})


def settlement_nothing_new(saga: Saga, event: SettlementEvent) -> bool:
    """Whether the event tells the saga (as read, without a lock) nothing it does not know: past
    the Try, observe only records a new payment id or a provider state further along, or refunds
    money that arrives for a saga that gave up (PAY-7; money taken is therefore never skipped).
    A later version of the saga only knows more (its provider state only moves forward, a saga
    never returns before its activation, a payment id once set stays), so observe's locked read
    would find nothing to do: e.g. the authorized event of a card posting whose request has
    applied the Try's answer already, or a stale one after its capture."""
    result = event.result
    return (
        saga.state not in BEFORE_ACTIVATION
        and result.state is not TryState.CAPTURED
        and (not result.payment_id or result.payment_id == saga.payment_id)
        and not provider_state_advances(saga.provider_state, result.provider_state)
    )


def drives_after_settlement(saga: Saga | None, event: SettlementEvent, now: datetime) -> bool:
    """Whether the saga (as read after the event was recorded) is left for the event to drive: a
    live holder (a request) drives its own saga (no second Confirm racing it), and a refund event
    only matters to a saga waiting for its money to be returned."""
    refund_event = event.result.state is TryState.REFUNDED
    held = saga is not None and saga.held_by_live_request(now)
    waiting = saga is not None and saga.state is SagaState.REFUNDING
    return not held and (waiting or not refund_event)


# The payment state (payments' Payment.State) of money returned in full.
FULLY_REFUNDED = "REFUNDED"
# The settlement event of a posting fee's chargeback lost in full (payments publishes it only
# then; the payment stays CAPTURED there: the dispute, not a refund, took the money back).
CHARGED_BACK = "payment.charged_back"


def refunded_at_provider(saga: Saga, event: SettlementEvent) -> bool:
    """Whether the event says the payment of a completed posting (its job went live; no refund
    of the saga's own under way) is returned in full outside the saga: by a refund made at the
    provider (payments books it, ESC-1), or by a chargeback lost in full. A partial refund (or
    a partial chargeback, never published) leaves the posting paid."""
    result = event.result
    return (
        saga.kind is SagaKind.POSTING
        and saga.state is SagaState.COMPLETED
        and result.state is TryState.REFUNDED
        and (result.provider_state == FULLY_REFUNDED or event.type == CHARGED_BACK)
        and bool(saga.payment_id)
        and result.payment_id == saga.payment_id
    )


def settlement_step(saga: Saga | None, event: SettlementEvent, now: datetime) -> SettlementStep:
    """What the settlement event asks of its saga (`saga` as read without a lock after the event
    arrived; None: no such saga). Offer sagas are driven by their requests and the recovery worker
    (their payments are not in the jobs subsystem's stream). A NONE judged on any read made after
    the event arrived is the one a later read would give (settlement_nothing_new; a held saga is
    driven by its holder, or by recovery once the lease runs out), so the events of a burst may
    be judged on one read of all their sagas (issue 13)."""
    if saga is not None and refunded_at_provider(saga, event):
        return SettlementStep.REFUNDED_AT_PROVIDER
    if saga is None or saga.kind is not SagaKind.POSTING or settlement_nothing_left(saga, event):
        return SettlementStep.NONE
    if event.result.state is not TryState.REFUNDED and not settlement_nothing_new(saga, event):
        return SettlementStep.OBSERVE
    return (
        SettlementStep.DRIVE if drives_after_settlement(saga, event, now) else SettlementStep.NONE
    )
