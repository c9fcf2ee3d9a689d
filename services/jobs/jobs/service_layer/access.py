"""Who may do what with a job: companies manage their own postings, active jobs are public (SEC-2)."""

from __future__ import annotations

from jobs.domain.commands import Actor
from jobs.domain.errors import JobNotFound, NotAllowed
from jobs.domain.model import Job, JobStatus
from jobs.service_layer.ports import JobsUnitOfWork


def require_company(actor: Actor) -> None:
    """Only companies create and pay for postings."""
    if not actor.is_company:
        raise NotAllowed("only a company may manage job postings", metadata={"role": actor.role})


def can_read(actor: Actor, job: Job) -> bool:
    """Active jobs are public; others only for their company and for admins (SEC-2)."""
    return job.status is JobStatus.ACTIVE or actor.is_admin or job.company_id == actor.user_id


def owns_or_admin(actor: Actor, job: Job) -> bool:
    """The job's company and admins see a job in any status."""
    return actor.is_admin or job.company_id == actor.user_id


async def load_own(uow: JobsUnitOfWork, actor: Actor, job_id: str, *, for_update: bool) -> Job:
    """The caller's own job; another company's job is reported as absent (no existence leak)."""
    job = await uow.jobs.get(job_id, for_update=for_update) if job_id else None
    if job is None or job.company_id != actor.user_id:
        raise JobNotFound(job_id)
    return job
