"""Applications to job postings (ESC-10) and candidate views (CR-3): the application's state
machine, its fields' validation, and the one-view-per-(company, applicant) record."""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from jobs.domain.errors import InvalidApplicationTransition, ValidationError

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_COVER_LETTER = 5_000


class ApplicationStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


# ESC-10: pending -> accepted | rejected, once.
TRANSITIONS: dict[ApplicationStatus, frozenset[ApplicationStatus]] = {
    ApplicationStatus.PENDING: frozenset({ApplicationStatus.ACCEPTED, ApplicationStatus.REJECTED}),
    ApplicationStatus.ACCEPTED: frozenset(),
    ApplicationStatus.REJECTED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class ApplicantDetails:
    """What an applicant sends with an application: shown to a company only through a paid view."""

    name: str
    email: str
    cover_letter: str = ""
    resume_url: str = ""

    def validate(self) -> ApplicantDetails:
        problems: dict[str, str] = {}
        if not 1 <= len(self.name.strip()) <= 200:
            problems["name"] = "must be 1-200 characters"
        if len(self.email) > 320 or not _EMAIL.fullmatch(self.email):
            problems["email"] = "is not a valid email address"
        if len(self.cover_letter) > MAX_COVER_LETTER:
            problems["cover_letter"] = f"must be at most {MAX_COVER_LETTER} characters"
        if self.resume_url and (
            len(self.resume_url) > 2_000 or not self.resume_url.startswith(("https://", "http://"))
        ):
            problems["resume_url"] = "must be an http(s) URL"
        if problems:
            raise ValidationError("the application is invalid", fields=problems)
        return ApplicantDetails(self.name.strip(), self.email, self.cover_letter, self.resume_url)


@dataclass(slots=True)
class Application:
    """One applicant's application to one job posting."""

    id: str
    job_id: str
    company_id: str
    applicant_id: str
    details: ApplicantDetails
    status: ApplicationStatus
    created_at: datetime
    updated_at: datetime
    decided_at: datetime | None = None

    def decide(self, accept: bool, now: datetime) -> None:
        """The company accepts or rejects a pending application (a repeat of the same is a no-op)."""
        target = ApplicationStatus.ACCEPTED if accept else ApplicationStatus.REJECTED
        if self.status is target:
            return
        if target not in TRANSITIONS[self.status]:
            raise InvalidApplicationTransition(self.id, self.status.value, target.value)
        self.status = target
        self.decided_at = now
        self.updated_at = now


class ViewState(enum.StrEnum):
    # Recorded before the wallet is asked to debit the credit: a crash leaves this, and the next
    # view finishes the same (idempotent) debit instead of starting another.
    CHARGING = "charging"
    CHARGED = "charged"  # the credit is taken: every later view of this applicant is free


def view_transfer_id(company_id: str, applicant_id: str) -> str:
    """The wallet transfer of one (company, applicant) view: the same for every attempt, so the
    credit is taken once whatever the retries, crashes or concurrent views."""
    digest = hashlib.sha256(f"{company_id}\n{applicant_id}".encode()).hexdigest()[:48]
    return f"candidate-view:{digest}"
