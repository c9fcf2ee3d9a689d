"""The shared failure reasons: the UPPER_SNAKE codes a payment or posting fails with (PAY-11).

Services put them in ErrorInfo.reason and in stored failure reasons; the gateway maps them to HTTP.
Standard library only, so every domain may import it.
"""

from __future__ import annotations

import enum


class FailureReason(enum.StrEnum):
    """Why money was not taken (or a posting not made): one code per cause the client can act on."""

    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    INVALID_PAYMENT_DETAILS = "INVALID_PAYMENT_DETAILS"
    PAYMENT_TIMEOUT = "PAYMENT_TIMEOUT"
    PAYMENT_PROVIDER_UNAVAILABLE = "PAYMENT_PROVIDER_UNAVAILABLE"
    PAYMENT_VOIDED = "PAYMENT_VOIDED"
    PAYMENT_CANCELLED = "PAYMENT_CANCELLED"
    HOLD_CANCELLED = "HOLD_CANCELLED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    ACTIVATION_FAILED = "ACTIVATION_FAILED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


# Failures that are the customer's payment method's fault: they count towards abuse rules (PAY-14)
# and are final (retrying the same request cannot succeed).
PAYMENT_METHOD_FAILURES = frozenset(
    {
        FailureReason.PAYMENT_DECLINED,
        FailureReason.INSUFFICIENT_FUNDS,
        FailureReason.INSUFFICIENT_CREDITS,
        FailureReason.INVALID_PAYMENT_DETAILS,
    }
)
