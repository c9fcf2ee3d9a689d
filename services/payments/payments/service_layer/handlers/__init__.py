"""The payments use cases, one module per seam: Try/Confirm/Cancel (tcc), the provider-work engine,
refunds, the poller, read queries, subscriptions and provider webhooks. Every use case takes
`(cmd, deps)` (or a query value and `deps`)."""

from payments.service_layer.handlers.engine import drive
from payments.service_layer.handlers.poller import poll_due
from payments.service_layer.handlers.queries import (
    get_payment,
    get_payment_by_branch,
    list_attempts,
    settlement_events_after,
)
from payments.service_layer.handlers.refunds import RefundResult, advance_refund, refund
from payments.service_layer.handlers.shared import PaymentResult
from payments.service_layer.handlers.tcc import authorize, capture, void

__all__ = [
    "PaymentResult",
    "RefundResult",
    "advance_refund",
    "authorize",
    "capture",
    "drive",
    "get_payment",
    "get_payment_by_branch",
    "list_attempts",
    "poll_due",
    "refund",
    "settlement_events_after",
    "void",
]
