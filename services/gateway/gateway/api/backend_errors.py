"""Backend errors in the PAY-11 contract: a RemoteError from jobs, payments or wallet (rebuilt from
the callee's google.rpc.ErrorInfo) becomes the one HTTP answer a client can act on."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping

from gateway.api.errors import ApiError
from hirepay_platform.errors import ErrorKind, RemoteError
from hirepay_platform.reasons import FailureReason

R = FailureReason  # short name for the tables below

# Reasons with a fixed public answer: (HTTP status, error code, message).
_REASONS: dict[str, tuple[int, str, str]] = {
    R.PAYMENT_DECLINED: (402, R.PAYMENT_DECLINED, "Your payment method was declined"),
    R.INSUFFICIENT_FUNDS: (402, R.INSUFFICIENT_FUNDS, "Insufficient funds in account"),
    R.INSUFFICIENT_CREDITS: (
        402,
        R.INSUFFICIENT_CREDITS,
        "Not enough credits (a job post takes 500 job credits, an applicant view 1 candidate "
        "credit); buy a plan to get more",
    ),
    R.PAYMENT_TIMEOUT: (504, R.PAYMENT_TIMEOUT, "Payment provider did not respond in time"),
    R.PAYMENT_PROVIDER_UNAVAILABLE: (
        502,
        R.PAYMENT_PROVIDER_UNAVAILABLE,
        "The payment provider is unavailable; nothing was charged, please try again later",
    ),
    R.INVALID_PAYMENT_DETAILS: (400, R.INVALID_PAYMENT_DETAILS, "The payment details are invalid"),
    "ALREADY_SUBSCRIBED": (409, "ALREADY_SUBSCRIBED", "User already has an active subscription"),
    "COINS_NOT_AVAILABLE": (
        409,
        "COINS_NOT_AVAILABLE",
        "The coins this payment bought are spent or held, so it cannot be refunded",
    ),
    "ALREADY_APPLIED": (409, "ALREADY_APPLIED", "You have already applied to this job"),
    "IDEMPOTENCY_MISMATCH": (
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "This Idempotency-Key was already used with a different request body",
    ),
    "REQUEST_IN_PROGRESS": (
        409,
        "IDEMPOTENCY_KEY_IN_USE",
        "A request with this Idempotency-Key is still being processed; retry shortly",
    ),
    # Webhooks, Razorpay's Checkout.js verify and the providers' return pages share this refusal.
    "INVALID_SIGNATURE": (400, "INVALID_SIGNATURE", "The signature is invalid or stale"),
    "PROVIDER_NOT_AVAILABLE": (
        400,
        "PROVIDER_NOT_AVAILABLE",
        "This payment provider is not available here",
    ),
    "EVENT_NOT_APPLICABLE_YET": (
        503,
        "SERVICE_UNAVAILABLE",
        "The event cannot be applied yet; deliver it again later",
    ),
    "PAYOUT_ACCOUNT_REQUIRED": (
        409,
        "PAYOUT_ACCOUNT_REQUIRED",
        "Connect a payout account (POST /api/wallet/payout-account) before withdrawing",
    ),
    "PAYOUT_ACCOUNT_NOT_READY": (
        409,
        "PAYOUT_ACCOUNT_NOT_READY",
        "Finish the payout account's onboarding (GET /api/wallet/payout-account) first",
    ),
    "TERMS_NOT_ACCEPTED": (400, "TERMS_NOT_ACCEPTED", "The posting terms must be accepted"),
    "TERMS_OUTDATED": (400, "TERMS_OUTDATED", "The accepted terms version is not the current one"),
    "FEE_MISMATCH": (400, "FEE_MISMATCH", "The amount does not match the posting fee"),
    "INVALID_TRANSITION": (409, "INVALID_TRANSITION", "The job cannot change to that status now"),
    "ESCROW_FROZEN": (
        409,
        "ESCROW_FROZEN",
        "A dispute is open: nothing leaves the escrow until an admin resolves it",
    ),
    "JOB_ALREADY_TAKEN": (
        409,
        "JOB_ALREADY_TAKEN",
        "Another offer on this job was accepted first; this offer is rejected and released",
    ),
    "DISPUTE_ALREADY_RESOLVED": (
        409,
        "DISPUTE_ALREADY_RESOLVED",
        "This dispute has already been resolved",
    ),
    "SETTLEMENT_EXCEEDS_OWED": (
        409,
        "SETTLEMENT_EXCEEDS_OWED",
        "More than the engagement's receivable holds for the customer; nothing was recorded",
    ),
    "PLAN_NOT_FOUND": (400, R.VALIDATION_FAILED, "The plan does not exist"),
    R.PAYMENT_CANCELLED: (
        402,
        R.PAYMENT_CANCELLED,
        "The payment was cancelled; nothing was charged",
    ),
    "PAYMENT_EXPIRED": (
        402,
        "PAYMENT_EXPIRED",
        "The payment was not completed in time; nothing was posted",
    ),
    R.ACTIVATION_FAILED: (
        409,
        R.ACTIVATION_FAILED,
        "The job could not be activated; any money taken is refunded automatically",
    ),
    "POSTING_BLOCKED": (
        429,
        "POSTING_BLOCKED",
        "Posting is blocked for review after too many failed payments; "
        "retry after the time in Retry-After",
    ),
}

# Provider decline codes -> what to tell the customer (Stripe's codes).
_DECLINE_MESSAGES = {
    "card_declined": "Your card was declined",
    "expired_card": "Your card has expired",
    "incorrect_cvc": "Your card's security code is incorrect",
    "processing_error": "An error occurred while processing your card; try again",
    "incorrect_number": "Your card number is incorrect",
    "lost_card": "Your card was declined",
    "stolen_card": "Your card was declined",
}

# Fallbacks by kind, for reasons the gateway does not know by name.
_KINDS: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.INVALID_ARGUMENT: (400, R.VALIDATION_FAILED, "The request is invalid"),
    ErrorKind.NOT_FOUND: (404, "NOT_FOUND", "The resource was not found"),
    ErrorKind.ALREADY_EXISTS: (409, "CONFLICT", "The resource already exists"),
    ErrorKind.FAILED_PRECONDITION: (409, "CONFLICT", "The operation is not allowed now"),
    ErrorKind.ABORTED: (409, "CONFLICT", "A concurrent change won; retry the request"),
    ErrorKind.UNAVAILABLE: (503, "SERVICE_UNAVAILABLE", "A service is unavailable; retry later"),
    ErrorKind.PERMISSION_DENIED: (403, "FORBIDDEN", "You are not allowed to do this"),
    ErrorKind.UNAUTHENTICATED: (401, "UNAUTHENTICATED", "Authentication required"),
    ErrorKind.RESOURCE_EXHAUSTED: (429, "RATE_LIMITED", "Too many requests; retry later"),
    ErrorKind.DEADLINE_EXCEEDED: (
        504,
        "UPSTREAM_TIMEOUT",
        "A service did not answer in time; retry with the same Idempotency-Key",
    ),
    ErrorKind.INTERNAL: (500, "INTERNAL_ERROR", "Something went wrong on our side"),
}

# Reasons whose message was written for people by our own services (kinds below 500).
_SAFE_MESSAGE_KINDS = {
    ErrorKind.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION,
    ErrorKind.ABORTED,
    ErrorKind.PERMISSION_DENIED,
}


# ErrorInfo metadata keys that identify things rather than name a bad field.
_NOT_FIELDS = frozenset(
    {
        "transaction_id",
        "payment_id",
        "saga_id",
        "retry",
        "code",
        "decline_code",
        "message",
        "key",
        "field",
        "refunded",
        "expires_at",
    }
)
# Contract (proto) field names -> the names the HTTP API uses.
_HTTP_FIELD_NAMES = {
    "salary_min_minor": "salary_range.min_minor",
    "salary_max_minor": "salary_range.max_minor",
    "salary_currency": "salary_range.currency",
    "payment_method_token": "payment.payment_method",
    "request_id": "Idempotency-Key",
}


def _http_field(name: str) -> str:
    if name.startswith("payment.expected_amount"):
        return "payment.amount" + name.removeprefix("payment.expected_amount")
    return _HTTP_FIELD_NAMES.get(name, name)


def _fields(metadata: Mapping[str, str]) -> dict[str, str]:
    """Field problems from ErrorInfo metadata: a JSON `fields` entry, or the field entries."""
    raw = metadata.get("fields")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return {_http_field(str(k)): str(v) for k, v in parsed.items()}
    return {
        _http_field(k): v for k, v in metadata.items() if k != "fields" and k not in _NOT_FIELDS
    }


def _retry_after(raw: str | None) -> str | None:
    """A Retry-After value (whole seconds, rounded up) from metadata; None if missing or unusable."""
    try:
        seconds = math.ceil(float(raw or ""))
    except (ValueError, OverflowError):  # not a number, NaN or infinite
        return None
    return str(seconds) if seconds > 0 else None


def _has_error_info(error: RemoteError) -> bool:
    # from_rpc_error falls back to the status code name when the callee sent no ErrorInfo,
    # which means a transport fault (connection refused, deadline) rather than a domain answer.
    return error.reason != error.kind.name or bool(error.metadata)


# --- One builder per reason whose answer carries more than status, code and message ---------------
# Each takes the error and its public (status, code, message) and returns the full answer.

_Answer = tuple[int, str, str]
_Builder = Callable[[RemoteError, _Answer], ApiError]


def _declined(error: RemoteError, answer: _Answer) -> ApiError:
    status, code, message = answer
    meta = error.metadata
    provider_code = meta.get("code") or meta.get("decline_code") or "card_declined"
    return ApiError(status, code, _DECLINE_MESSAGES.get(provider_code, message), code=provider_code)


def _insufficient_funds(error: RemoteError, answer: _Answer) -> ApiError:
    return ApiError(*answer, code="insufficient_funds")


def _payment_timeout(error: RemoteError, answer: _Answer) -> ApiError:
    txn = error.metadata.get("payment_id") or error.metadata.get("transaction_id")
    return ApiError(*answer, transactionId=txn, retry=True)


def _provider_unavailable(error: RemoteError, answer: _Answer) -> ApiError:
    return ApiError(*answer, retry=True, headers={"Retry-After": "5"})


def _already_subscribed(error: RemoteError, answer: _Answer) -> ApiError:
    return ApiError(*answer, expiresAt=error.metadata.get("expires_at") or None)


def _plan_not_found(error: RemoteError, answer: _Answer) -> ApiError:
    return ApiError(*answer, fields={"plan": "unknown plan"})


def _in_progress(error: RemoteError, answer: _Answer) -> ApiError:
    return ApiError(*answer, retry=True, headers={"Retry-After": "1"})


def _fee_mismatch(error: RemoteError, answer: _Answer) -> ApiError:
    status, code, message = answer
    fields = _fields(error.metadata) or {"payment.amount": "does not match the posting fee"}
    return ApiError(status, code, error.message or message, fields=fields)


def _invalid_fields(error: RemoteError, answer: _Answer) -> ApiError:
    """VALIDATION_FAILED and the terms checks: the service's own message and its field problems."""
    status, code, message = answer
    fields = _fields(error.metadata)
    if _has_error_info(error) and error.message:
        message = error.message
    return ApiError(status, code, message, fields=fields or None)


def _invalid_payment_details(error: RemoteError, answer: _Answer) -> ApiError:
    meta = error.metadata
    fields = _fields(meta)
    if meta.get("field"):
        fields.setdefault(_http_field(meta["field"]), "invalid")
    return ApiError(*answer, code=meta.get("code") or None, fields=fields or None)


def _provider_not_available(error: RemoteError, answer: _Answer) -> ApiError:
    status, code, _ = answer
    provider = error.metadata.get("provider", "")
    offered = [p.upper() for p in error.metadata.get("offered", "").split(",") if p]
    message = f"The payment provider {provider.upper()} is not available here"
    return ApiError(status, code, message, provider=provider.upper(), offered=offered)


def _activation_failed(error: RemoteError, answer: _Answer) -> ApiError:
    return ApiError(*answer, refunded=error.metadata.get("refunded") == "true" or None)


def _posting_blocked(error: RemoteError, answer: _Answer) -> ApiError:
    # PAY-14: the block lifts once the failed-payments window has passed.
    retry_after = _retry_after(error.metadata.get("retry_after_seconds"))
    headers = {"Retry-After": retry_after} if retry_after else None
    return ApiError(*answer, retry=True, headers=headers)


_BUILDERS: dict[str, _Builder] = {
    R.PAYMENT_DECLINED: _declined,
    R.INSUFFICIENT_FUNDS: _insufficient_funds,
    R.PAYMENT_TIMEOUT: _payment_timeout,
    R.PAYMENT_PROVIDER_UNAVAILABLE: _provider_unavailable,
    "ALREADY_SUBSCRIBED": _already_subscribed,
    "PLAN_NOT_FOUND": _plan_not_found,
    "REQUEST_IN_PROGRESS": _in_progress,
    "FEE_MISMATCH": _fee_mismatch,
    "TERMS_NOT_ACCEPTED": _invalid_fields,
    "TERMS_OUTDATED": _invalid_fields,
    R.INVALID_PAYMENT_DETAILS: _invalid_payment_details,
    R.ACTIVATION_FAILED: _activation_failed,
    "PROVIDER_NOT_AVAILABLE": _provider_not_available,
    "POSTING_BLOCKED": _posting_blocked,
}


def _public_answer(error: RemoteError) -> _Answer:
    """(status, code, message): by reason when known, else by kind (with the service's own words
    when they were written for people)."""
    if error.reason in _REASONS:
        return _REASONS[error.reason]
    status, code, message = _KINDS.get(error.kind, _KINDS[ErrorKind.INTERNAL])
    if error.kind in _SAFE_MESSAGE_KINDS and _has_error_info(error) and error.message:
        message = error.message
    return status, code, message


def api_error_from_remote(error: RemoteError) -> ApiError:
    """The HTTP answer for an error returned by jobs, payments or wallet."""
    answer = _public_answer(error)
    status, code, message = answer
    build = _BUILDERS.get(error.reason)
    if build is not None:
        return build(error, answer)
    if code == R.VALIDATION_FAILED:
        return _invalid_fields(error, answer)
    if status == 503:
        return ApiError(status, code, message, retry=True, headers={"Retry-After": "1"})
    if status == 504:
        return ApiError(status, code, message, retry=True)
    return ApiError(status, code, message)


def api_error_from_reason(reason: str) -> ApiError:
    """The HTTP answer for a failure known only by its reason (e.g. a job's failure_reason)."""
    kind = ErrorKind.FAILED_PRECONDITION
    return api_error_from_remote(RemoteError("", reason=reason, kind=kind, metadata={}))
