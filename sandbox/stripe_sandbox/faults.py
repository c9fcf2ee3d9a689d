"""Stripe's faults: the kit's (slow, failing, hanging or dropped API calls; lost, duplicated or
reordered webhooks) plus payouts that fail and refunds refused outright, and the 5xx body Stripe
answers for them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import TypeAdapter

from sandbox_kit.faults import ErrorReply, Fault, FaultRegistry, fault_adapter
from sandbox_kit.jsondata import dumps_indented
from stripe_sandbox import ids
from stripe_sandbox.errors import api_error


class PayoutFailureFault(Fault):
    """The next payouts fail with `failure_code` instead of being paid; with `after_paid` they
    are paid first and fail afterwards (the bank returned them: `payout.paid`, then
    `payout.failed`, as Stripe warns "some payouts that fail might initially show as paid")."""

    kind: Literal["payout_failure"]
    failure_code: str = "account_closed"
    after_paid: bool = False


class RefundRefusalFault(Fault):
    """The next refunds (of `payment_intent` only, when given) are refused as Stripe refuses a
    refund it will not make: a 400 `invalid_request_error` with `code` (charge_not_refundable: a
    payment method that cannot be refunded; charge_already_refunded; amount_too_large), nothing
    refunded, no event."""

    kind: Literal["refund_refusal"]
    code: str = "charge_not_refundable"
    message: str = "This charge cannot be refunded: its payment method does not support refunds."
    payment_intent: str | None = None


FAULT_SPEC: TypeAdapter[Any] = fault_adapter(PayoutFailureFault, RefundRefusalFault)


class StripeFaults(FaultRegistry):
    """The kit's registry, with the payout fault Stripe's Connect resources ask for."""

    def take_payout_failure(self) -> PayoutFailureFault | None:
        failure: PayoutFailureFault | None = self.take(PayoutFailureFault)
        return failure

    def take_refund_refusal(self, payment_intent: str) -> RefundRefusalFault | None:
        refusal: RefundRefusalFault | None = self.take(
            RefundRefusalFault,
            lambda spec: spec.payment_intent in (None, payment_intent),
        )
        return refusal


def render_error(status: int, message: str | None) -> ErrorReply:
    """Stripe's `api_error` body and a `Request-Id`, for 5xx faults."""
    body = dumps_indented(api_error(status, message).body()).encode()
    return ErrorReply(body, (("Request-Id", ids.new_id("req")),))
