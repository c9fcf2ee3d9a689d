"""The payments service's domain errors, each with its kind and the reason named in the contract."""

from __future__ import annotations

from hirepay_platform.errors import (
    AlreadyExists,
    ErrorKind,
    HirepayError,
    NotFound,
    PreconditionFailed,
    Unavailable,
    ValidationError,
)
from hirepay_platform.reasons import FailureReason

__all__ = [
    "AlreadySubscribed",
    "CoinsNotAvailable",
    "EventNotApplicableYet",
    "InsufficientFunds",
    "InvalidPaymentDetails",
    "InvalidSignature",
    "NoPayoutAccount",
    "OperationInProgress",
    "PaymentDeclined",
    "PaymentNotCapturable",
    "PaymentNotFound",
    "PaymentNotRefundable",
    "PaymentNotVoidable",
    "PaymentTimeout",
    "PaymentVoided",
    "PayoutAccountNotFound",
    "PayoutAccountNotReady",
    "PlanNotFound",
    "ProviderNotAvailable",
    "ProviderUnavailable",
    "RefundExceedsCaptured",
    "TransactionNotFound",
    "ValidationError",
    "WithdrawalNotFound",
    "invalid",
]


def invalid(field: str, problem: str) -> ValidationError:
    """A VALIDATION_FAILED error about one field."""
    return ValidationError(f"{field} {problem}", fields={field: problem})


class PaymentDeclined(PreconditionFailed):
    """The provider declined the payment (card_declined, expired_card, incorrect_cvc, ...)."""

    reason = FailureReason.PAYMENT_DECLINED


class InsufficientFunds(PreconditionFailed):
    """The card or account has insufficient funds."""

    reason = FailureReason.INSUFFICIENT_FUNDS


class InvalidPaymentDetails(HirepayError):
    """The payment method token is unknown, malformed or unusable."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = FailureReason.INVALID_PAYMENT_DETAILS


class PaymentTimeout(HirepayError):
    """The provider did not answer in time: the outcome is UNKNOWN and the payment is polled."""

    kind = ErrorKind.DEADLINE_EXCEEDED
    reason = FailureReason.PAYMENT_TIMEOUT


class ProviderUnavailable(Unavailable):
    """The provider is down or answered 5xx; the outcome (if any) is polled."""

    reason = FailureReason.PAYMENT_PROVIDER_UNAVAILABLE


class PaymentNotFound(NotFound):
    reason = "PAYMENT_NOT_FOUND"

    def __init__(self, what: str) -> None:
        super().__init__(f"payment {what} not found", metadata={"payment": what})


class TransactionNotFound(NotFound):
    reason = "TRANSACTION_NOT_FOUND"

    def __init__(self, transaction_id: str) -> None:
        super().__init__(
            f"transaction {transaction_id} not found", metadata={"transaction_id": transaction_id}
        )


class PlanNotFound(NotFound):
    reason = "PLAN_NOT_FOUND"

    def __init__(self, plan: str, user_type: str, currency: str) -> None:
        super().__init__(
            f"no plan {plan} for {user_type} in {currency or 'the default currency'}",
            metadata={"plan": plan, "user_type": user_type, "currency": currency},
        )


class PaymentVoided(PreconditionFailed):
    """The branch was voided (or its Void came first): nothing may be authorized or captured."""

    reason = FailureReason.PAYMENT_VOIDED

    def __init__(self, global_tx_id: str, branch_id: str, payment_id: str = "") -> None:
        super().__init__(
            f"payment of branch {global_tx_id}/{branch_id} was voided",
            metadata={
                "global_tx_id": global_tx_id,
                "branch_id": branch_id,
                **({"payment_id": payment_id} if payment_id else {}),
            },
        )


class PaymentNotCapturable(PreconditionFailed):
    reason = "PAYMENT_NOT_CAPTURABLE"

    def __init__(self, payment_id: str, state: str, why: str = "") -> None:
        super().__init__(
            why or f"payment {payment_id} cannot be captured in state {state}",
            metadata={"payment_id": payment_id, "state": state},
        )


class PaymentNotVoidable(PreconditionFailed):
    """A Void of a payment already captured: refund it instead."""

    reason = "PAYMENT_NOT_VOIDABLE"

    def __init__(self, payment_id: str, state: str) -> None:
        super().__init__(
            f"payment {payment_id} cannot be voided in state {state}; refund it instead",
            metadata={"payment_id": payment_id, "state": state},
        )


class PaymentNotRefundable(PreconditionFailed):
    reason = "PAYMENT_NOT_REFUNDABLE"

    def __init__(self, payment_id: str, state: str, why: str = "") -> None:
        super().__init__(
            why or f"payment {payment_id} cannot be refunded in state {state}",
            metadata={"payment_id": payment_id, "state": state},
        )


class RefundExceedsCaptured(PreconditionFailed):
    reason = "REFUND_EXCEEDS_CAPTURED"

    def __init__(self, payment_id: str, requested: int, refundable: int) -> None:
        super().__init__(
            f"refund of {requested} exceeds the {refundable} still refundable on {payment_id}",
            metadata={
                "payment_id": payment_id,
                "requested_minor": str(requested),
                "refundable_minor": str(refundable),
            },
        )


class CoinsNotAvailable(PreconditionFailed):
    """A refund of a payment that issued coins is refused: the coins it would take back are no
    longer on the buyer's coin wallet (spent, or held by an offer or a withdrawal)."""

    reason = "COINS_NOT_AVAILABLE"

    def __init__(self, payment_id: str, coins: int, why: str = "") -> None:
        super().__init__(
            f"refund of {payment_id} refused: the {coins} coins it bought are no longer"
            f" available on the buyer's wallet{': ' + why if why else ''}",
            metadata={"payment_id": payment_id, "coins": str(coins)},
        )


class AlreadySubscribed(AlreadyExists):
    reason = "ALREADY_SUBSCRIBED"

    def __init__(self, expires_at: str, transaction_id: str) -> None:
        super().__init__(
            f"an active subscription runs until {expires_at}",
            metadata={"expires_at": expires_at, "transaction_id": transaction_id},
        )


class InvalidSignature(HirepayError):
    """A webhook whose signature is missing, forged or stale: nothing is stored."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "INVALID_SIGNATURE"


class OperationInProgress(Unavailable):
    """A twin of this call is talking to the provider right now; retry shortly (same request)."""

    reason = "OPERATION_IN_PROGRESS"

    def __init__(self, payment_id: str, operation: str) -> None:
        super().__init__(
            f"{operation} of payment {payment_id} is in progress; retry shortly",
            metadata={"payment_id": payment_id, "operation": operation},
        )


class EventNotApplicableYet(Unavailable):
    """A webhook about a payment we do not know yet: answer non-2xx so the provider retries."""

    reason = "EVENT_NOT_APPLICABLE_YET"


class ProviderNotAvailable(HirepayError):
    """A provider this service is not configured for (no credentials): it is not offered."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "PROVIDER_NOT_AVAILABLE"

    def __init__(self, provider: str, offered: list[str]) -> None:
        super().__init__(
            f"payment provider {provider or '(none)'} is not available here"
            f" (offered: {', '.join(offered) or 'none'})",
            metadata={"provider": provider, "offered": ",".join(offered)},
        )


class PayoutAccountNotFound(PreconditionFailed):
    """A withdrawal by a user who has not connected a payout account (ESC-9)."""

    reason = "PAYOUT_ACCOUNT_REQUIRED"

    def __init__(self, user_id: str) -> None:
        super().__init__(
            "connect a payout account before withdrawing", metadata={"user_id": user_id}
        )


class PayoutAccountNotReady(PreconditionFailed):
    """The provider does not let the account receive payouts yet (onboarding unfinished)."""

    reason = "PAYOUT_ACCOUNT_NOT_READY"

    def __init__(self, user_id: str, onboarding_url: str) -> None:
        super().__init__(
            "finish the payout account's onboarding before withdrawing",
            metadata={"user_id": user_id, "onboarding_url": onboarding_url},
        )


class WithdrawalNotFound(NotFound):
    reason = "WITHDRAWAL_NOT_FOUND"

    def __init__(self, withdrawal_id: str) -> None:
        super().__init__(
            f"withdrawal {withdrawal_id} not found", metadata={"withdrawal_id": withdrawal_id}
        )


class NoPayoutAccount(NotFound):
    """GetPayoutAccount for a user who has none."""

    reason = "PAYOUT_ACCOUNT_NOT_FOUND"

    def __init__(self, user_id: str) -> None:
        super().__init__("no payout account", metadata={"user_id": user_id})
