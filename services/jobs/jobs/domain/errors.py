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
from hirepay_platform.reasons import FailureReason

__all__ = [
    "ActivationFailed",
    "AlreadyApplied",
    "ApplicationNotFound",
    "FeeMismatch",
    "IdempotencyMismatch",
    "InsufficientCredits",
    "InvalidApplicationTransition",
    "InvalidSagaTransition",
    "InvalidTransition",
    "JobNotFound",
    "NotAllowed",
    "PaymentCancelled",
    "PaymentExpired",
    "PaymentTimedOut",
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


class InvalidSagaTransition(HirepayError):
    """A saga step the saga's transition table does not allow: a bug, never a client's mistake."""

    kind = ErrorKind.INTERNAL
    reason = "INVALID_SAGA_TRANSITION"

    def __init__(self, saga_id: str, from_state: str, to_state: str) -> None:
        super().__init__(
            f"saga {saga_id} cannot go from {from_state} to {to_state}",
            metadata={"saga_id": saga_id, "from_state": from_state, "to_state": to_state},
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


class PostingRateLimited(HirepayError):
    """The caller's posting attempts are used up for now (PAY-14): nothing was done."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"


class ActivationFailed(PreconditionFailed):
    """Money was reserved but the job could not be activated (PAY-7: the money goes back)."""

    reason = FailureReason.ACTIVATION_FAILED


class PaymentCancelled(PreconditionFailed):
    """The payment was cancelled (by the customer, or because the company cancelled the job)."""

    reason = FailureReason.PAYMENT_CANCELLED


class PaymentTimedOut(HirepayError):
    """The payment did not reach activation before the saga's deadline; nothing was posted."""

    kind = ErrorKind.DEADLINE_EXCEEDED
    reason = FailureReason.PAYMENT_TIMEOUT


class PaymentExpired(PreconditionFailed):
    """A payment that settles later (bank transfer, checkout) was not completed in time."""

    reason = "PAYMENT_EXPIRED"


class ApplicationNotFound(NotFound):
    """No application with this id is visible to the caller (others' look absent too)."""

    reason = "APPLICATION_NOT_FOUND"

    def __init__(self, application_id: str) -> None:
        super().__init__(
            f"application {application_id} not found", metadata={"application_id": application_id}
        )


class AlreadyApplied(AlreadyExists):
    """The applicant has applied to this job before (one application per job and applicant)."""

    reason = "ALREADY_APPLIED"

    def __init__(self, job_id: str, application_id: str) -> None:
        super().__init__(
            f"you have already applied to job {job_id}",
            metadata={"job_id": job_id, "application_id": application_id},
        )


class InvalidApplicationTransition(PreconditionFailed):
    """An application is decided once: pending -> accepted | rejected (ESC-10)."""

    reason = "INVALID_TRANSITION"

    def __init__(self, application_id: str, from_status: str, to_status: str) -> None:
        super().__init__(
            f"application {application_id} cannot go from {from_status} to {to_status}",
            metadata={
                "application_id": application_id,
                "from_status": from_status,
                "to_status": to_status,
            },
        )


class InsufficientCredits(PreconditionFailed):
    """Not enough candidate credits to open an applicant's details (CR-3)."""

    reason = FailureReason.INSUFFICIENT_CREDITS
