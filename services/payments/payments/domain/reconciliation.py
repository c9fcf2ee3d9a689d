"""Reconciliation with the provider: does a payment's local record match what the provider says?

Plain rules over a payment and the provider's current view of it (the consistency auditor, OPS-3).
"""

from __future__ import annotations

from payments.domain.model import TAKEN, Payment, PaymentState
from payments.domain.provider import ProviderPayment, ProviderStatus


def in_flight(payment: Payment) -> bool:
    """A provider call is owed or its outcome unknown: the records may differ for a moment."""
    return payment.pending_op is not None or payment.state is PaymentState.UNKNOWN


def provider_mismatch(payment: Payment, intent: ProviderPayment) -> str:
    """What differs between our record and the provider's ("" when they agree)."""
    taken_there = intent.status is ProviderStatus.CAPTURED
    taken_here = payment.state in TAKEN
    if taken_there and not taken_here:
        return f"provider captured {intent.amount_received}, local state {payment.state.value}"
    if taken_here and not taken_there:
        return (
            f"local {payment.state.value} {payment.captured_minor}, provider {intent.status.value}"
        )
    if taken_here and intent.amount_received != payment.captured_minor:
        return f"provider captured {intent.amount_received}, local {payment.captured_minor}"
    held_there = intent.status is ProviderStatus.AUTHORIZED
    if held_there and payment.state in (PaymentState.VOIDED, PaymentState.FAILED):
        return f"provider still holds {intent.amount_capturable}, local {payment.state.value}"
    return ""
