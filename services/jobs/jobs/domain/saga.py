"""The pay-to-post saga: its states, its payment methods, and how participant failures are read.

The saga is a Try-Confirm-Cancel global transaction with one branch ("payment"). Its row in the
jobs database is the durable log: each step is persisted before it acts, so after a crash the
recovery worker resumes from the last persisted state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hirepay_platform.errors import ErrorKind, HirepayError

BRANCH_ID = "payment"


class SagaState(enum.StrEnum):
    """Where a saga is. Non-final states are driven forward by requests, events and recovery."""

    TRYING = "trying"  # job pending_payment; Try sent or about to be sent
    AWAITING_SETTLEMENT = "awaiting_settlement"  # Try accepted; the provider settles later
    CONFIRMING = "confirming"  # job active; Confirm is driven until it succeeds
    CANCELLING = "cancelling"  # job payment_failed; Cancel is driven until it succeeds
    REFUNDING = "refunding"  # money was taken and must go back (PAY-7, PAY-13)
    COMPLETED = "completed"  # final: paid and active
    FAILED = "failed"  # final: nothing held, nothing taken
    REFUNDED = "refunded"  # final: money returned

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({SagaState.COMPLETED, SagaState.FAILED, SagaState.REFUNDED})
# States before activation: a deadline may still cancel these.
BEFORE_ACTIVATION = frozenset({SagaState.TRYING, SagaState.AWAITING_SETTLEMENT})


class PaymentMethod(enum.StrEnum):
    """How a posting is paid (PaymentChoice.method)."""

    CARD = "card"
    CREDITS = "credits"
    BANK_TRANSFER = "bank_transfer"
    CHECKOUT = "checkout"


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


@dataclass(slots=True)
class Saga:
    """One pay-to-post attempt: the durable log row of its global transaction."""

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

    @property
    def branch_id(self) -> str:
        return BRANCH_ID

    @property
    def answered(self) -> bool:
        """Whether the request has its final answer (a response or an error) stored."""
        return self.response is not None or self.failure is not None


# Failures that count as suspicious when they pile up for one company (PAY-14).
ABUSE_REASONS = frozenset(
    {"PAYMENT_DECLINED", "INSUFFICIENT_FUNDS", "INVALID_PAYMENT_DETAILS", "INSUFFICIENT_CREDITS"}
)

# The reasons the client sees (PAY-11), from what a participant answered.
_WALLET_REASONS = {"INSUFFICIENT_FUNDS": "INSUFFICIENT_CREDITS"}
_DEFINITE_FAILURES = frozenset(
    {
        "PAYMENT_DECLINED",
        "INSUFFICIENT_FUNDS",
        "INSUFFICIENT_CREDITS",
        "INVALID_PAYMENT_DETAILS",
        "VALIDATION_FAILED",
        "PAYMENT_VOIDED",
        "HOLD_CANCELLED",
    }
)


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
    elif reason == "PAYMENT_TIMEOUT" or kind is ErrorKind.DEADLINE_EXCEEDED:
        reason, kind = "PAYMENT_TIMEOUT", ErrorKind.DEADLINE_EXCEEDED
        metadata.setdefault("payment_id", "")
        metadata["retry"] = "true"
        message = "the payment provider did not answer in time; nothing was posted"
    elif reason == "PAYMENT_PROVIDER_UNAVAILABLE" or kind is ErrorKind.UNAVAILABLE:
        reason, kind = "PAYMENT_PROVIDER_UNAVAILABLE", ErrorKind.UNAVAILABLE
        metadata["retry"] = "true"
    return HirepayError(message, reason=reason, kind=kind, metadata=metadata)


def try_is_definitely_absent(error: HirepayError) -> bool:
    """True when a failed Try certainly reserved nothing (a refusal, not a timeout or a fault).

    The saga cancels the branch in every case anyway; this only tells metrics and logs apart.
    """
    return error.reason in _DEFINITE_FAILURES or error.kind in (
        ErrorKind.INVALID_ARGUMENT,
        ErrorKind.FAILED_PRECONDITION,
    )


def is_permanent_confirm_error(error: HirepayError) -> bool:
    """A Confirm that can never succeed (authorization voided or expired, hold released)."""
    return error.kind in (ErrorKind.FAILED_PRECONDITION, ErrorKind.NOT_FOUND)
