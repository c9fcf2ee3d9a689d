"""The jobs service's domain errors, each with its kind and the stable reason named in the contract."""

from __future__ import annotations

from hirepay_platform.errors import (
    AlreadyExists,
    Conflict,
    ErrorKind,
    HirepayError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationError,
)

__all__ = [
    "ActivationFailed",
    "FeeMismatch",
    "IdempotencyMismatch",
    "InvalidTransition",
    "JobNotFound",
    "NotAllowed",
    "PaymentCancelled",
    "PostingBlocked",
    "RequestInProgress",
    "TermsNotAccepted",
    "TermsOutdated",
    "ValidationError",
]


class JobNotFound(NotFound):
    """No job with this id is visible to the caller (others' jobs look absent too)."""

    reason = "JOB_NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found", metadata={"job_id": job_id})


class NotAllowed(PermissionDenied):
    """The caller's role may not perform this operation."""

    reason = "PERMISSION_DENIED"


class InvalidTransition(PreconditionFailed):
    """The job's status does not allow the requested change (PAY-5 transition table)."""

    reason = "INVALID_TRANSITION"

    def __init__(self, job_id: str, from_status: str, to_status: str) -> None:
        super().__init__(
            f"job {job_id} cannot go from {from_status} to {to_status}",
            metadata={"job_id": job_id, "from_status": from_status, "to_status": to_status},
        )


class TermsNotAccepted(HirepayError):
    """Posting requires accepting the current terms (PAY-3)."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "TERMS_NOT_ACCEPTED"


class TermsOutdated(HirepayError):
    """The accepted terms version is not the current one (PAY-3)."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "TERMS_OUTDATED"


class FeeMismatch(HirepayError):
    """The amount the client expects differs from the fee of the price list (PAY-10)."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "FEE_MISMATCH"


class IdempotencyMismatch(AlreadyExists):
    """The idempotency key was used before with a different request body (PAY-8)."""

    reason = "IDEMPOTENCY_MISMATCH"


class RequestInProgress(Conflict):
    """A request with the same idempotency key is still running (PAY-8)."""

    reason = "REQUEST_IN_PROGRESS"


class PostingBlocked(HirepayError):
    """Too many failed payments in a short time: posting is blocked for review (PAY-14)."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    reason = "POSTING_BLOCKED"


class ActivationFailed(PreconditionFailed):
    """Money was reserved but the job could not be activated (PAY-7: the money goes back)."""

    reason = "ACTIVATION_FAILED"


class PaymentCancelled(PreconditionFailed):
    """The payment was cancelled (by the customer, or because the company cancelled the job)."""

    reason = "PAYMENT_CANCELLED"
