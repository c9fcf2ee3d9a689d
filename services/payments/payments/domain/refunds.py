"""Refunds of a captured payment: the amount is reserved on the payment before the provider call."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class RefundStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(slots=True)
class Refund:
    id: str
    payment_id: str
    request_id: str
    amount_minor: int
    currency: str
    reason: str
    status: RefundStatus
    idempotency_key: str
    created_at: datetime
    updated_at: datetime
    requested_minor: int = 0  # as asked (0 = everything left), for replay checks
    provider_refund_id: str = ""
    failure_message: str = ""
    next_poll_at: datetime | None = None
    poll_attempts: int = 0
