"""Payments and how provider facts move their states.

Plain Python: the state machine decides what a provider's answer means for a payment and which
settlement events it causes; handlers only load, call, apply and save.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from operator import attrgetter

from hirepay_platform.reasons import FailureReason
from hirepay_platform.tcc import TccBranch
from payments.domain import errors
from payments.domain.events import EventType
from payments.domain.provider import (
    CheckoutState,
    ProviderCheckout,
    ProviderErrorInfo,
    ProviderPayment,
    ProviderStatus,
)

MAX_METADATA_KEYS = 40
MAX_METADATA_VALUE = 500


class Method(enum.StrEnum):
    CARD = "CARD"
    BANK_TRANSFER = "BANK_TRANSFER"
    CHECKOUT = "CHECKOUT"


class PaymentState(enum.StrEnum):
    REQUIRES_ACTION = "REQUIRES_ACTION"
    PROCESSING = "PROCESSING"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    UNKNOWN = "UNKNOWN"


class PendingOp(enum.StrEnum):
    """A provider operation requested but whose outcome is not recorded yet."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"


# Each enum's members by their stored text: a dict look-up where a row or snapshot is read, not
# the enum's own call (two Python calls per value, several values per step; issue 13). Writers
# use str(member), a StrEnum's value as a plain str, not the `value` property (two calls more).
METHOD_OF = {m.value: m for m in Method}
STATE_OF = {s.value: s for s in PaymentState}
PENDING_OP_OF = {o.value: o for o in PendingOp}

TAKEN = frozenset({PaymentState.CAPTURED, PaymentState.REFUNDED, PaymentState.PARTIALLY_REFUNDED})
# Not final, and only the provider (or the customer there) moves them on: watched by the poller.
AWAITING_PROVIDER = frozenset({PaymentState.REQUIRES_ACTION, PaymentState.PROCESSING})
# The provider's error code for an object it does not know (Stripe's resource_missing, HTTP 404).
PROVIDER_OBJECT_MISSING = "resource_missing"
# States in which an authorization (or a request for one) still holds money or may yet do so.
VOIDABLE = frozenset(
    {
        PaymentState.REQUIRES_ACTION,
        PaymentState.PROCESSING,
        PaymentState.AUTHORIZED,
        PaymentState.UNKNOWN,
    }
)


# How far along a payment is; the provider's answers only ever move it forward. A failed payment
# may still succeed (a customer retrying on a hosted page), so FAILED ranks with the open states.
_RANK: dict[PaymentState, int] = {
    PaymentState.UNKNOWN: 0,
    PaymentState.REQUIRES_ACTION: 1,
    PaymentState.PROCESSING: 1,
    PaymentState.FAILED: 1,
    PaymentState.AUTHORIZED: 2,
    PaymentState.CAPTURED: 3,
    PaymentState.VOIDED: 3,
    PaymentState.PARTIALLY_REFUNDED: 4,
    PaymentState.REFUNDED: 4,
}
_SETTLED = frozenset({PaymentState.CAPTURED, PaymentState.VOIDED})
_INTENT_STATE: dict[ProviderStatus, PaymentState] = {
    ProviderStatus.AWAITING_PAYMENT: PaymentState.REQUIRES_ACTION,
    ProviderStatus.FAILED: PaymentState.FAILED,
    ProviderStatus.ACTION_REQUIRED: PaymentState.REQUIRES_ACTION,
    ProviderStatus.PROCESSING: PaymentState.PROCESSING,
    ProviderStatus.AUTHORIZED: PaymentState.AUTHORIZED,
    ProviderStatus.CANCELED: PaymentState.VOIDED,
    ProviderStatus.CAPTURED: PaymentState.CAPTURED,
}

# Intent statuses that move a payment to one state with nothing else to record.
_DIRECT_STATE: dict[ProviderStatus, PaymentState] = {
    ProviderStatus.AUTHORIZED: PaymentState.AUTHORIZED,
    ProviderStatus.PROCESSING: PaymentState.PROCESSING,
    ProviderStatus.CANCELED: PaymentState.VOIDED,
}


def decline_reason(error: ProviderErrorInfo) -> FailureReason:
    """The contract's reason for a provider decline."""
    if "insufficient_funds" in (error.code, error.decline_code):
        return FailureReason.INSUFFICIENT_FUNDS
    return FailureReason.PAYMENT_DECLINED


def decline_error(error: ProviderErrorInfo, payment_id: str) -> errors.HirepayError:
    """The domain error a caller gets for a decline, with the provider's codes."""
    metadata = {
        "payment_id": payment_id,
        "code": error.code,
        "decline_code": error.decline_code,
    }
    message = error.message or "Your payment method was declined"
    if decline_reason(error) is FailureReason.INSUFFICIENT_FUNDS:
        return errors.InsufficientFunds(message, metadata=metadata)
    return errors.PaymentDeclined(message, metadata=metadata)


def validate_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_KEYS:
        raise errors.invalid("metadata", f"has more than {MAX_METADATA_KEYS} keys")
    for key, value in metadata.items():
        if not key or len(key) > 40:
            raise errors.invalid("metadata", "keys must have 1..40 characters")
        if len(value) > MAX_METADATA_VALUE:
            raise errors.invalid(f"metadata.{key}", f"is longer than {MAX_METADATA_VALUE}")
    return dict(metadata)


@dataclass(slots=True)
class Payment:
    """A payment with the provider for one TCC branch."""

    id: str
    branch: TccBranch
    owner_id: str
    amount_minor: int
    currency: str
    method: Method
    provider: str
    state: PaymentState
    created_at: datetime
    updated_at: datetime
    fingerprint: str = ""
    payment_method_token: str = ""
    description: str = ""
    email: str = ""
    return_url: str = ""
    cancel_url: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    captured_minor: int = 0
    refunded_minor: int = 0  # includes refunds reserved and not yet settled
    provider_payment_id: str = ""
    provider_checkout_id: str = ""
    provider_customer_id: str = ""
    next_action_url: str = ""
    failure_reason: str = ""
    failure_code: str = ""
    decline_code: str = ""
    failure_message: str = ""
    authorize_key: str = ""
    capture_key: str = ""
    void_key: str = ""
    capture_amount_minor: int = 0
    pending_op: PendingOp | None = None
    void_requested: bool = False
    void_reason: str = ""
    next_poll_at: datetime | None = None
    poll_attempts: int = 0

    # --- what the service asks --------------------------------------------------------------

    @property
    def subsystem(self) -> str:
        return self.metadata.get("subsystem", "")

    @property
    def provider_metadata(self) -> dict[str, str]:
        """Metadata sent to the provider: the caller's plus our own ids (never secrets)."""
        return {
            **self.metadata,
            "hirepay_payment_id": self.id,
            "global_tx_id": self.branch.global_tx_id,
            "branch_id": self.branch.branch_id,
        }

    @property
    def voidable(self) -> bool:
        """Whether money may still be reserved or taken: an open authorization, or a hosted
        checkout whose page is still open (a declined attempt there can be retried)."""
        return self.state in VOIDABLE or (
            self.method is Method.CHECKOUT and self.state is PaymentState.FAILED
        )

    def lease(self, now: datetime, seconds: float) -> None:
        """Keep other workers off this payment while one provider call is in flight."""
        self.next_poll_at = now + timedelta(seconds=seconds)

    def request_capture(self, amount_minor: int, now: datetime) -> None:
        if self.void_requested or self.state is PaymentState.VOIDED:
            raise errors.PaymentVoided(self.branch.global_tx_id, self.branch.branch_id, self.id)
        if self.state is not PaymentState.AUTHORIZED:
            raise errors.PaymentNotCapturable(self.id, self.state.value)
        amount = amount_minor or self.amount_minor
        if amount > self.amount_minor:
            raise errors.PaymentNotCapturable(
                self.id,
                self.state.value,
                f"cannot capture {amount}: only {self.amount_minor} was authorized",
            )
        self.capture_amount_minor = amount
        self.capture_key = self.branch.key("capture")
        self.pending_op = PendingOp.CAPTURE
        self.updated_at = now

    def request_void(self, reason: str, now: datetime) -> bool:
        """Record a Void; True if the provider must still be told (cancel or expire)."""
        if self.state in TAKEN:
            raise errors.PaymentNotVoidable(self.id, self.state.value)
        self.void_requested = True
        self.void_reason = reason
        self.void_key = self.branch.key("void")
        self.updated_at = now
        if self.voidable:
            if self.pending_op is None:
                self.pending_op = PendingOp.VOID
            return True
        return False

    # --- what the provider says ---------------------------------------------------------------

    def apply_intent(self, intent: ProviderPayment, now: datetime) -> list[EventType]:
        """Take the provider's current view of the payment; return the settlement events caused."""
        before = self.state
        if intent.id:
            self.provider_payment_id = intent.id
        if intent.customer_id:
            self.provider_customer_id = intent.customer_id
        if self._is_stale(_INTENT_STATE[intent.status]):
            # A stale view (an older answer or event arriving late) never moves a payment back,
            # and a settled payment (captured or voided) never flips to the other outcome.
            return []
        seen = self._facts()
        self._take_intent_status(intent)
        self._settle_pending()
        if self._facts() != seen:
            # Only a change counts: re-reading an unchanged payment (the watch poller) does not
            # make it "recently changed" (reconciliation picks the most recently changed).
            self.updated_at = now
        return self._events(before)

    def _facts(self) -> tuple[object, ...]:
        """What a provider answer can change."""
        return (
            self.state,
            self.captured_minor,
            self.pending_op,
            self.next_action_url,
            self.failure_reason,
        )

    def apply_checkout(self, session: ProviderCheckout, now: datetime) -> list[EventType]:
        """Take a checkout session's state (when no payment intent settles it by itself)."""
        before = self.state
        seen = self._facts()
        self.provider_checkout_id = session.id
        if session.customer_id:
            self.provider_customer_id = session.customer_id
        if session.state is CheckoutState.OPEN:
            if self.state is PaymentState.UNKNOWN:
                self._set(PaymentState.REQUIRES_ACTION)
            self.next_action_url = session.url
        elif session.state is CheckoutState.EXPIRED and self.state not in (
            *TAKEN,
            PaymentState.AUTHORIZED,
        ):
            self._set(PaymentState.VOIDED)
        self._settle_pending()
        if self._facts() != seen:
            self.updated_at = now
        return self._events(before)

    def fail(self, error: ProviderErrorInfo, reason: FailureReason | None = None) -> None:
        self._set(PaymentState.FAILED)
        self.failure_reason = reason or decline_reason(error)
        self.failure_code = error.code
        self.decline_code = error.decline_code
        self.failure_message = error.message

    def decline(
        self, error: ProviderErrorInfo, now: datetime, reason: FailureReason | None = None
    ) -> list[EventType]:
        before = self.state
        self.fail(error, reason)
        self._settle_pending()
        self.updated_at = now
        return self._events(before)

    def mark_unknown(self, *, timeout: bool, message: str, now: datetime) -> None:
        """The provider did not answer: the state is UNKNOWN until a poll learns the outcome."""
        self.state = PaymentState.UNKNOWN
        self.failure_reason = (
            FailureReason.PAYMENT_TIMEOUT if timeout else FailureReason.PAYMENT_PROVIDER_UNAVAILABLE
        )
        self.failure_code = ""
        self.decline_code = ""
        self.failure_message = message
        self.updated_at = now

    def schedule_poll(self, now: datetime, base: float, maximum: float) -> None:
        """Back off exponentially before the next poll."""
        delay = min(maximum, base * (2 ** min(self.poll_attempts, 20)))
        self.poll_attempts += 1
        self.next_poll_at = now + timedelta(seconds=delay)

    def snapshot(self) -> Payment:
        """A copy that shares nothing changed in place: every field is immutable but `metadata`
        (strings to strings), which is copied (a deep copy of the whole payment cost ten times
        as much: issue 13)."""
        twin = self._shallow_copy()
        twin.metadata = dict(self.metadata)
        return twin

    def _shallow_copy(self) -> Payment:
        """A shallow copy, built by the constructor from every field read at once: copy.copy
        of a slotted dataclass goes through __reduce_ex__ and a setattr per field (36), about
        five times the cost, for the two or three copies a posting makes (issue 13)."""
        return Payment(*_EVERY_FIELD(self))

    def tells_nothing_new(self, view: ProviderPayment) -> bool:
        """Whether taking `view` (the payment as a webhook event carried it, maybe stale) would
        change nothing: the payment needs nothing more from the provider and no fact moves.

        Such an event's change is recorded already (the request's own call brought it back);
        any later change at the provider comes with its own event, re-fetched as usual, and
        the watch poller stays the backstop: the event need not be re-fetched."""
        if self.needs_provider_work() or view.id != self.provider_payment_id:
            return False
        # A shallow copy suffices: apply_intent only assigns fields, never mutates one in place
        # (a deep copy of every webhook's payment was most of this check's cost).
        probe = self._shallow_copy()
        return not probe.apply_intent(view, self.updated_at) and probe._facts() == self._facts()

    def needs_provider_work(self) -> bool:
        """Whether the provider must still be asked something (a pending op or a void to do)."""
        if self.pending_op is not None or self.state is PaymentState.UNKNOWN:
            return True
        return self.void_requested and self.voidable

    @property
    def final(self) -> bool:
        """Whether the payment reached its outcome: money taken (captured, maybe refunded since),
        or nothing taken and nothing held any more (voided, failed for good)."""
        return (
            self.state in TAKEN
            or self.state is PaymentState.VOIDED
            or (self.state is PaymentState.FAILED and not self.voidable)
        )

    @property
    def awaiting_provider(self) -> bool:
        """Not final and waiting for the provider or the customer (a bank transfer processing,
        3-D Secure or a checkout page open): only the provider can say when it settles."""
        return self.state in AWAITING_PROVIDER

    def finish_step(self, now: datetime, *, watch_base: float, watch_max: float) -> None:
        """After recording an outcome: poll again when a provider call is still owed (the
        caller's backoff), watch a payment that waits for the provider, else stop polling.

        Watching re-fetches the payment with backoff from `watch_base` up to `watch_max`
        seconds, so a lost webhook delays its settlement by at most about `watch_max`."""
        if self.needs_provider_work():
            return
        if self.awaiting_provider:
            delay = min(watch_max, watch_base * (2 ** min(self.poll_attempts, 20)))
            self.poll_attempts += 1
            self.next_poll_at = now + timedelta(seconds=delay)
            return
        self.next_poll_at = None
        self.poll_attempts = 0

    def vanish(self, now: datetime) -> list[EventType]:
        """The provider says it knows no such payment: nothing is held or taken there, so the
        payment is final now (voided if it was authorized, else failed), never retried."""
        before = self.state
        if self.state in TAKEN or self.state in (PaymentState.VOIDED, PaymentState.FAILED):
            return []
        if self.state is PaymentState.AUTHORIZED:
            self._set(PaymentState.VOIDED)
        else:
            self._set(PaymentState.FAILED)
            self.failure_reason = FailureReason.PAYMENT_CANCELLED
            self.failure_message = "the provider does not know this payment"
        self.failure_code = PROVIDER_OBJECT_MISSING
        self.pending_op = None
        self.updated_at = now
        return self._events(before)

    # --- refunds --------------------------------------------------------------------------------

    @property
    def refundable_minor(self) -> int:
        return self.captured_minor - self.refunded_minor

    def reserve_refund(self, amount_minor: int, now: datetime) -> int:
        """Reserve an amount for a refund (0 = everything left) before the provider call."""
        if self.state not in TAKEN:
            raise errors.PaymentNotRefundable(self.id, self.state.value)
        amount = amount_minor or self.refundable_minor
        if amount <= 0 or amount > self.refundable_minor:
            raise errors.RefundExceedsCaptured(self.id, amount, self.refundable_minor)
        self.refunded_minor += amount
        self.updated_at = now
        return amount

    def record_provider_refund(self, amount_minor: int, now: datetime) -> None:
        """A refund made at the provider, outside Hirepay (its dashboard, or the provider on its
        own): already done there, so it is recorded as it is, never refused. The provider never
        refunds beyond the capture; a refund of Hirepay's still reserved meanwhile is refused
        by the provider and gives its reservation back (release_refund)."""
        if self.state not in TAKEN:
            raise errors.PaymentNotRefundable(self.id, self.state.value)
        self.refunded_minor += amount_minor
        self.updated_at = now

    def release_refund(self, amount_minor: int, now: datetime) -> None:
        """The provider refused a refund: give its reservation back."""
        self.refunded_minor -= amount_minor
        self.updated_at = now

    def reverse_refund(self, amount_minor: int, settled_refunded_minor: int, now: datetime) -> None:
        """A refund that had succeeded failed at the provider afterwards (Stripe: a refund's
        status can go succeeded -> failed, the card closed since): its amount is refundable
        again and the state follows the succeeded refunds left (`settled_refunded_minor`, their
        total without it): REFUNDED, PARTIALLY_REFUNDED or CAPTURED again."""
        self.refunded_minor -= amount_minor
        if settled_refunded_minor >= self.captured_minor:
            self.state = PaymentState.REFUNDED
        elif settled_refunded_minor > 0:
            self.state = PaymentState.PARTIALLY_REFUNDED
        else:
            self.state = PaymentState.CAPTURED
        self.updated_at = now

    def settle_refund(self, settled_refunded_minor: int, now: datetime) -> list[EventType]:
        """A refund succeeded; `settled_refunded_minor` is the total of succeeded refunds."""
        if settled_refunded_minor >= self.captured_minor:
            self.state = PaymentState.REFUNDED
        elif settled_refunded_minor > 0:
            self.state = PaymentState.PARTIALLY_REFUNDED
        self.updated_at = now
        return [EventType.PAYMENT_REFUNDED]

    # --- internals ------------------------------------------------------------------------------

    def _is_stale(self, target: PaymentState) -> bool:
        """Whether moving to `target` would go backwards (or flip a settled outcome)."""
        return _RANK[target] < _RANK[self.state] or (
            self.state in _SETTLED
            and target is not self.state
            and _RANK[target] == _RANK[self.state]
        )

    def _take_intent_status(self, intent: ProviderPayment) -> None:
        """Move to the state an intent's (not stale) status means."""
        status = intent.status
        if status in _DIRECT_STATE:
            self._set(_DIRECT_STATE[status])
        elif status is ProviderStatus.CAPTURED:
            self.captured_minor = intent.amount_received or intent.amount_minor
            if self.state not in TAKEN:
                self._set(PaymentState.CAPTURED)
        elif status is ProviderStatus.ACTION_REQUIRED:
            self._set(PaymentState.REQUIRES_ACTION)
            if intent.next_action_url:
                self.next_action_url = intent.next_action_url
        elif status is ProviderStatus.FAILED and intent.last_error is not None:
            self.fail(intent.last_error)
        elif self.state is PaymentState.UNKNOWN:  # awaiting payment (or failed, no reason)
            self._set(PaymentState.REQUIRES_ACTION)

    def _set(self, state: PaymentState) -> None:
        if state is not PaymentState.FAILED:
            self.failure_reason = self.failure_code = self.decline_code = ""
            self.failure_message = ""
        if state is not PaymentState.REQUIRES_ACTION:
            self.next_action_url = ""
        self.state = state

    def _settle_pending(self) -> None:
        """Clear the pending operation once the state shows its outcome."""
        op = self.pending_op
        if op is PendingOp.AUTHORIZE and self.state is not PaymentState.UNKNOWN:
            self.pending_op = None
        elif op is PendingOp.CAPTURE and self.state is not PaymentState.AUTHORIZED:
            self.pending_op = None if self.state is not PaymentState.UNKNOWN else op
        elif op is PendingOp.VOID and not self.voidable:
            self.pending_op = None
        if self.pending_op is None and self.void_requested and self.voidable:
            self.pending_op = PendingOp.VOID

    def _events(self, before: PaymentState) -> list[EventType]:
        if before is self.state:
            return []
        return {
            PaymentState.AUTHORIZED: [EventType.PAYMENT_AUTHORIZED],
            PaymentState.CAPTURED: [EventType.PAYMENT_CAPTURED],
            PaymentState.FAILED: [EventType.PAYMENT_FAILED],
            PaymentState.VOIDED: [EventType.PAYMENT_VOIDED],
        }.get(self.state, [])


# Every field of a Payment in constructor order, read in one call (Payment._shallow_copy).
_EVERY_FIELD = attrgetter(*(f.name for f in fields(Payment)))
