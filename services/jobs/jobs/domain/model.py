"""Jobs and their lifecycle: fields, validation with field-level errors, and the PAY-5 state machine."""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hirepay_platform import money
from hirepay_platform.errors import ValidationError
from hirepay_platform.untrusted import visible_length
from jobs.domain.errors import InvalidTransition

TITLE_MIN, TITLE_MAX = 3, 200
DESCRIPTION_MIN, DESCRIPTION_MAX = 20, 20_000
LOCATION_MAX = 200


class JobStatus(enum.StrEnum):
    """Statuses of a job posting (PAY-5)."""

    DRAFT = "draft"
    PENDING_PAYMENT = "pending_payment"
    PAYMENT_FAILED = "payment_failed"
    ACTIVE = "active"
    EXPIRED = "expired"
    FILLED = "filled"
    CANCELLED = "cancelled"


class PaymentStatus(enum.StrEnum):
    """Payment status carried by a job (PAY-5)."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"


class EmploymentType(enum.StrEnum):
    """Employment types a job may have."""

    FULL_TIME = "full_time"
    PART_TIME = "part_time"
    CONTRACT = "contract"
    INTERNSHIP = "internship"
    TEMPORARY = "temporary"


# The explicit transition table of PAY-5. `None` is "not yet existing" (creation of a draft).
# A job reaches active only from pending_payment and only once `may_be_live` holds (its money is
# captured), so nothing ever has to take a live job down for want of money.
# pending_payment -> cancelled is the company (or an admin) giving up while the payment is still
# pending (a bank transfer processing, 3-D Secure or checkout not completed): the saga is cancelled
# with it, money that settles anyway is returned (PAY-7), and the job never goes live.
TRANSITIONS: dict[JobStatus | None, frozenset[JobStatus]] = {
    None: frozenset({JobStatus.DRAFT}),
    JobStatus.DRAFT: frozenset({JobStatus.PENDING_PAYMENT, JobStatus.CANCELLED}),
    JobStatus.PENDING_PAYMENT: frozenset(
        {JobStatus.ACTIVE, JobStatus.PAYMENT_FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.PAYMENT_FAILED: frozenset({JobStatus.PENDING_PAYMENT, JobStatus.CANCELLED}),
    JobStatus.ACTIVE: frozenset({JobStatus.EXPIRED, JobStatus.FILLED, JobStatus.CANCELLED}),
    JobStatus.EXPIRED: frozenset(),
    JobStatus.FILLED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

# Statuses whose fields may still be edited: the draft is kept after a failed payment (PAY-6).
EDITABLE: frozenset[JobStatus] = frozenset({JobStatus.DRAFT, JobStatus.PAYMENT_FAILED})
# Statuses from which a posting may be paid for.
POSTABLE: frozenset[JobStatus] = frozenset({JobStatus.DRAFT, JobStatus.PAYMENT_FAILED})


def can_transition(from_status: JobStatus | None, to_status: JobStatus) -> bool:
    """Whether the table allows going from `from_status` to `to_status`."""
    return to_status in TRANSITIONS.get(from_status, frozenset())


@dataclass(frozen=True, slots=True)
class JobFields:
    """The editable fields of a job; salary bounds are minor units (0 = not set)."""

    title: str = ""
    description: str = ""
    location: str = ""
    employment_type: str = ""
    category: str = ""
    salary_min_minor: int = 0
    salary_max_minor: int = 0
    salary_currency: str = ""

    FIELD_NAMES = (
        "title",
        "description",
        "location",
        "employment_type",
        "category",
        "salary_min_minor",
        "salary_max_minor",
        "salary_currency",
    )

    def normalized(self) -> JobFields:
        """Trim whitespace and upper-case the currency, so what is validated is what is stored.
        Every field named (not `dataclasses.replace`, a look-up per field: about 9 Python calls
        per posting; issue 13); tests/jobs/unit/test_no_replace_jobs14.py checks none is left."""
        return JobFields(
            title=self.title.strip(),
            description=self.description.strip(),
            location=self.location.strip(),
            employment_type=self.employment_type.strip().lower(),
            category=self.category.strip().lower(),
            salary_min_minor=self.salary_min_minor,
            salary_max_minor=self.salary_max_minor,
            salary_currency=self.salary_currency.strip().upper(),
        )

    def values(self) -> dict[str, str | int]:
        """The fields by name (a stored answer, a row's columns). Named one by one, not
        dataclasses.asdict: that walks and deep-copies each value, about a hundred Python calls
        per job, for strings and ints (issue 13)."""
        return {
            "title": self.title,
            "description": self.description,
            "location": self.location,
            "employment_type": self.employment_type,
            "category": self.category,
            "salary_min_minor": self.salary_min_minor,
            "salary_max_minor": self.salary_max_minor,
            "salary_currency": self.salary_currency,
        }

    def merged(self, other: JobFields, paths: Collection[str]) -> JobFields:
        """These fields with those named in `paths` taken from `other` (all when `paths` is empty)."""
        unknown = [p for p in paths if p not in self.FIELD_NAMES]
        if unknown:
            raise ValidationError(
                "update_mask names unknown fields",
                fields={"update_mask": f"unknown field {unknown[0]}"},
            )
        if not paths:
            return other
        return replace(self, **{p: getattr(other, p) for p in paths})


def validate_fields(fields: JobFields, categories: Collection[str]) -> JobFields:
    """Normalize and validate job fields; every problem is reported at once, by field (PAY-1)."""
    f = fields.normalized()
    problems = {**_text_problems(f), **_choice_problems(f, categories), **_salary_problems(f)}
    if problems:
        raise ValidationError("the job has invalid fields", fields=problems)
    return f


def _text_problems(f: JobFields) -> dict[str, str]:
    """Problems of the free-text fields (title, description, location). One loop with each
    length checked in it, not a helper per field and two comprehensions around them: 9 Python
    calls per posting fewer (issue 13)."""
    problems: dict[str, str] = {}
    for name, value, low, high in (
        ("title", f.title, TITLE_MIN, TITLE_MAX),
        ("description", f.description, DESCRIPTION_MIN, DESCRIPTION_MAX),
        ("location", f.location, 1, LOCATION_MAX),
    ):
        # Invisible characters (zero-width spaces, joiners, BOMs) do not count toward the minimum.
        if visible_length(value) < low:
            # A lower bound of one character is plain "required".
            problems[name] = "is required" if low == 1 else f"must be at least {low} characters"
        elif len(value) > high:
            problems[name] = f"must be at most {high} characters"
    return problems


# Made once, not per validation (issue 13).
_EMPLOYMENT_TYPES = tuple(e.value for e in EmploymentType)


def _choice_problems(f: JobFields, categories: Collection[str]) -> dict[str, str]:
    """Problems of the fields chosen from a list (employment type, category)."""
    problems: dict[str, str] = {}
    if not f.employment_type:
        problems["employment_type"] = "is required"
    elif f.employment_type not in _EMPLOYMENT_TYPES:
        problems["employment_type"] = "must be one of " + ", ".join(_EMPLOYMENT_TYPES)
    if not f.category:
        problems["category"] = "is required"
    elif f.category not in categories:
        problems["category"] = "must be one of " + ", ".join(sorted(categories))
    return problems


def _salary_problems(f: JobFields) -> dict[str, str]:
    """Problems of the optional salary range (minor units, min <= max, currency with a bound)."""
    problems: dict[str, str] = {}
    for name, value in (
        ("salary_min_minor", f.salary_min_minor),
        ("salary_max_minor", f.salary_max_minor),
    ):
        if value < 0:
            problems[name] = "must not be negative"
        elif value > money.MAX_AMOUNT_MINOR:
            problems[name] = "is too large"
    has_bound = f.salary_min_minor > 0 or f.salary_max_minor > 0
    if (
        f.salary_min_minor > 0
        and f.salary_max_minor > 0
        and f.salary_min_minor > f.salary_max_minor
        and "salary_min_minor" not in problems
    ):
        problems["salary_min_minor"] = "must not exceed salary_max_minor"
    if has_bound and not f.salary_currency:
        problems["salary_currency"] = "is required with a salary bound"
    elif f.salary_currency and not money.is_cash(f.salary_currency):
        problems["salary_currency"] = "must be an ISO 4217 currency code"
    return problems


@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded status change of a job (append-only audit trail, PAY-15)."""

    job_id: str
    from_status: JobStatus | None
    to_status: JobStatus
    actor: str
    reason: str
    at: datetime


@dataclass(slots=True)
class Job:
    """A job posting: its fields, status and payment facts."""

    id: str
    company_id: str
    fields: JobFields
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    payment_id: str = ""
    payment_status: PaymentStatus | None = None
    payment_amount_minor: int = 0
    payment_currency: str = ""
    payment_method: str = ""
    posted_at: datetime | None = None
    expires_at: datetime | None = None
    terms_version: str = ""
    failure_reason: str = ""
    saga_id: str = ""
    # The caller's request_id of CreateDraft (AIP-155): a retried create returns this job.
    create_request_id: str = ""
    pending: list[Transition] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def new_draft(
        cls,
        job_id: str,
        company_id: str,
        fields: JobFields,
        actor: str,
        now: datetime,
        *,
        create_request_id: str = "",
    ) -> Job:
        """A new draft, with its creation recorded as the first transition."""
        job = cls(
            id=job_id,
            company_id=company_id,
            fields=fields,
            status=JobStatus.DRAFT,
            created_at=now,
            updated_at=now,
            create_request_id=create_request_id,
        )
        job.pending.append(Transition(job_id, None, JobStatus.DRAFT, actor, "draft created", now))
        return job

    def transition(self, to_status: JobStatus, *, actor: str, reason: str, now: datetime) -> None:
        """Change status if the table allows it, recording who, when and why."""
        if not can_transition(self.status, to_status):
            raise InvalidTransition(self.id, self.status.value, to_status.value)
        self.pending.append(Transition(self.id, self.status, to_status, actor, reason, now))
        self.status = to_status
        self.updated_at = now

    def edit(self, fields: JobFields, now: datetime) -> None:
        """Replace the fields of a draft (or of a job whose payment failed)."""
        if self.status not in EDITABLE:
            raise InvalidTransition(self.id, self.status.value, "edited")
        self.fields = fields
        self.updated_at = now

    def start_payment(
        self,
        *,
        saga_id: str,
        method: str,
        amount_minor: int,
        currency: str,
        terms_version: str,
        actor: str,
        now: datetime,
    ) -> None:
        """Move to pending_payment for one saga; the job records what it is being paid with."""
        self.transition(JobStatus.PENDING_PAYMENT, actor=actor, reason=f"saga {saga_id}", now=now)
        self.saga_id = saga_id
        self.payment_id = ""
        self.payment_status = PaymentStatus.PENDING
        self.payment_method = method
        self.payment_amount_minor = amount_minor
        self.payment_currency = currency
        self.terms_version = terms_version
        self.failure_reason = ""

    def activation_problem(self, saga_id: str) -> str:
        """Why the job cannot go live for the saga `saga_id` ("" when it can, once paid).

        The saga asks this before it captures (a job that cannot go live is voided, never
        charged) and again when it activates after the capture."""
        if self.status is not JobStatus.PENDING_PAYMENT or self.saga_id != saga_id:
            return f"the job is {self.status.value}, no longer waiting for this payment"
        return ""

    def activate(self, *, payment_id: str, posting_days: int, actor: str, now: datetime) -> None:
        """Go live once the saga's money is taken: captured, or the credits hold posted (PAY-4).

        Records the completed payment first; `may_be_live` must hold for the job to go live."""
        self.payment_id = payment_id or self.payment_id
        self.payment_status = PaymentStatus.COMPLETED
        if not may_be_live(self):
            raise InvalidTransition(self.id, self.status.value, JobStatus.ACTIVE.value)
        self.transition(JobStatus.ACTIVE, actor=actor, reason="payment captured", now=now)
        self.posted_at = now
        self.expires_at = now + timedelta(days=posting_days)

    def fail_payment(
        self, *, reason: str, refunded: bool, actor: str, now: datetime, payment_id: str = ""
    ) -> None:
        """The payment did not go through (or was returned): the job is kept, not posted (PAY-6)."""
        self.transition(JobStatus.PAYMENT_FAILED, actor=actor, reason=reason, now=now)
        self.payment_status = PaymentStatus.REFUNDED if refunded else PaymentStatus.FAILED
        self.failure_reason = reason
        self.payment_id = payment_id or self.payment_id
        self.posted_at = None
        self.expires_at = None

    def drain_transitions(self) -> list[Transition]:
        """The transitions not yet stored (repositories persist and clear them)."""
        out, self.pending = self.pending, []
        return out


def may_be_live(job: Job) -> bool:
    """PAY-4, promise 1: a job may be active (and publicly listed) only once its money is taken.

    "Taken" is the saga's Confirm having succeeded: the card payment captured, the settled payment
    confirmed, or the credits hold posted; the job then carries `payment_status=completed` and
    the id of the payment (or hold) that paid for it. The saga activates only when this holds,
    and the consistency auditor reports every active job for which it does not (OPS-3).
    """
    return job.payment_status is PaymentStatus.COMPLETED and bool(job.payment_id)
