"""Calling the provider from a use case: latency metrics, a span and an audit record of every
call.

Provider calls never run inside a database transaction; the records collected here are written in
the transaction that stores the call's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry.trace import SpanKind, StatusCode

from hirepay_platform import tracing
from payments.domain.events import AuditEntry
from payments.domain.provider import Declined, InvalidRequest, OutcomeUnknown
from payments.service_layer import metrics

T = TypeVar("T")

_TRACER = tracing.tracer("hirepay.provider")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One provider call: what, with which idempotency key, how it ended and how long it took."""

    operation: str
    idempotency_key: str
    outcome: str  # ok | declined | refused | timeout | unavailable
    latency_ms: int
    error_code: str = ""
    object_id: str = ""

    def audit(self, actor: str, *, payment_id: str = "", transaction_id: str = "") -> AuditEntry:
        details = {
            "operation": self.operation,
            "idempotency_key": self.idempotency_key,
            "outcome": self.outcome,
            "latency_ms": str(self.latency_ms),
        }
        if self.error_code:
            details["error_code"] = self.error_code
        if self.object_id:
            details["provider_object_id"] = self.object_id
        return AuditEntry(
            action="provider_call",
            actor=actor,
            reason=f"{self.operation} -> {self.outcome}",
            details=details,
            payment_id=payment_id,
            transaction_id=transaction_id,
        )


async def call(
    records: list[CallRecord],
    operation: str,
    idempotency_key: str,
    fn: Callable[[], Awaitable[T]],
) -> T:
    """Run one provider call, timing it and appending its record (whatever the outcome); its own
    CLIENT span ("provider.<operation>"), so a trace shows the provider's share of a request,
    when this process exports spans (a span that goes nowhere costs about as much CPU as the
    rest of this function: issue 13)."""
    if not tracing.exporting():
        return await _timed(records, operation, idempotency_key, fn)
    with _TRACER.start_as_current_span(
        f"provider.{operation}",
        kind=SpanKind.CLIENT,
        attributes={"provider.operation": operation},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            return await _timed(records, operation, idempotency_key, fn)
        except Exception as exc:
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise


async def _timed(
    records: list[CallRecord],
    operation: str,
    idempotency_key: str,
    fn: Callable[[], Awaitable[T]],
) -> T:
    started = time.perf_counter()
    outcome, code, object_id = "ok", "", ""
    try:
        result = await fn()
        object_id = str(getattr(result, "id", "") or "")
        return result
    except Declined as exc:
        outcome, code, object_id = "declined", exc.error.code, exc.payment_id
        raise
    except InvalidRequest as exc:
        outcome, code = "refused", exc.code or f"http_{exc.status}"
        raise
    except OutcomeUnknown as exc:
        outcome = "timeout" if exc.timeout else "unavailable"
        code = exc.message[:60]
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.observe(metrics.PROVIDER_LATENCY, elapsed, operation, outcome)
        records.append(
            CallRecord(operation, idempotency_key, outcome, int(elapsed * 1000), code, object_id)
        )
