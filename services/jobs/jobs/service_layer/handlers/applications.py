"""Applications (ESC-10) and paid candidate views (CR-3): applicants apply to active postings and
follow their applications; a company lists its applicants for free, opens an applicant's details
for one candidate credit (once per applicant per company) and accepts or rejects."""

from __future__ import annotations

from dataclasses import dataclass

from hirepay_platform.errors import Unavailable
from hirepay_platform.ids import new_id
from jobs.domain import commands
from jobs.domain.applications import (
    ApplicantDetails,
    Application,
    ApplicationStatus,
    ViewState,
    view_transfer_id,
)
from jobs.domain.commands import Actor
from jobs.domain.errors import (
    AlreadyApplied,
    ApplicationNotFound,
    InsufficientCredits,
    JobNotFound,
    NotAllowed,
)
from jobs.domain.model import JobStatus
from jobs.service_layer.access import load_own, require_company
from jobs.service_layer.deps import Deps
from jobs.service_layer.ports import JobsUnitOfWork

LIST_LIMIT = 200


@dataclass(frozen=True, slots=True)
class ApplicationView:
    """An application as its reader may see it: details only for the applicant themself and for
    a company that paid to view this applicant."""

    application: Application
    job_title: str
    details_included: bool
    charged: bool = False


def _require_applicant(actor: Actor) -> None:
    if actor.role != "applicant" or not actor.user_id:
        raise NotAllowed("only an applicant may do this", metadata={"role": actor.role})


async def apply(cmd: commands.Apply, deps: Deps) -> ApplicationView:
    """Apply to an active posting, once per job (AlreadyApplied names the first application)."""
    _require_applicant(cmd.actor)
    details = ApplicantDetails(cmd.name, cmd.email, cmd.cover_letter, cmd.resume_url).validate()
    async with deps.uow as uow:
        job = await uow.jobs.get(cmd.job_id) if cmd.job_id else None
        if job is None or job.status is not JobStatus.ACTIVE:
            raise JobNotFound(cmd.job_id)  # only live postings take applications
        now = deps.clock()
        application = Application(
            id=new_id("app"),
            job_id=job.id,
            company_id=job.company_id,
            applicant_id=cmd.actor.user_id,
            details=details,
            status=ApplicationStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        if not await uow.applications.add_if_absent(application):
            first = await uow.applications.get_for(job.id, cmd.actor.user_id)
            raise AlreadyApplied(job.id, first.id if first else "")
        await uow.commit()
    return ApplicationView(application, job.fields.title, details_included=True)


async def list_my_applications(
    cmd: commands.ListMyApplications, deps: Deps
) -> list[ApplicationView]:
    _require_applicant(cmd.actor)
    async with deps.uow as uow:
        found = await uow.applications.list_by_applicant(cmd.actor.user_id, LIST_LIMIT)
        titles = await _titles(uow, {a.job_id for a in found})
    return [ApplicationView(a, titles.get(a.job_id, ""), details_included=True) for a in found]


async def list_job_applications(
    cmd: commands.ListJobApplications, deps: Deps
) -> list[ApplicationView]:
    """Free for the job's company: who applied is hidden until the company pays to view them."""
    require_company(cmd.actor)
    async with deps.uow as uow:
        job = await load_own(uow, cmd.actor, cmd.job_id, for_update=False)
        found = await uow.applications.list_by_job(job.id, LIST_LIMIT)
        viewed = await uow.candidate_views.viewed(
            cmd.actor.user_id, sorted({a.applicant_id for a in found})
        )
    return [ApplicationView(a, job.fields.title, a.applicant_id in viewed) for a in found]


async def decide_application(cmd: commands.DecideApplication, deps: Deps) -> ApplicationView:
    require_company(cmd.actor)
    async with deps.uow as uow:
        application = await _own_application(uow, cmd.actor, cmd.application_id, for_update=True)
        application.decide(cmd.accept, deps.clock())
        await uow.applications.save(application)
        viewed = await uow.candidate_views.viewed(cmd.actor.user_id, [application.applicant_id])
        titles = await _titles(uow, {application.job_id})
        await uow.commit()
    return ApplicationView(application, titles.get(application.job_id, ""), bool(viewed))


async def view_applicant(cmd: commands.ViewApplicant, deps: Deps) -> ApplicationView:
    """Open an applicant's details for 1 candidate credit, the first time this company opens this
    applicant; later views are free. Nothing is shown unless the credit is taken.

    The view is recorded first (insert-first, CHARGING) and committed; then the wallet debits the
    credit with a transfer id derived from (company, applicant), so every attempt — a retry, a
    concurrent twin, the next view after a crash between the debit and the record — asks for the
    same transfer, which the wallet performs once. Only then is the view marked CHARGED. A refused
    debit (no credits) forgets the claim and shows nothing."""
    require_company(cmd.actor)
    credits = deps.candidate_credits
    if credits is None:  # not wired: never show details that could not be paid for
        raise Unavailable("candidate credits are not available")
    company = cmd.actor.user_id
    async with deps.uow as uow:
        application = await _own_application(uow, cmd.actor, cmd.application_id, for_update=False)
        applicant = application.applicant_id
        transfer_id = view_transfer_id(company, applicant)
        state = await uow.candidate_views.claim(company, applicant, transfer_id, deps.clock())
        titles = await _titles(uow, {application.job_id})
        await uow.commit()
    title = titles.get(application.job_id, "")
    if state is ViewState.CHARGED:
        return ApplicationView(application, title, details_included=True, charged=False)
    try:
        await credits.debit_view(company, applicant, transfer_id)
    except InsufficientCredits:
        async with deps.uow as uow:
            await uow.candidate_views.release(company, applicant)
            await uow.commit()
        raise
    async with deps.uow as uow:
        # Whether this view is the one that charged: decided by the upsert itself, not by a read
        # before it (two racing views would both read CHARGING).
        charged = await uow.candidate_views.mark_charged(
            company, applicant, transfer_id, deps.clock()
        )
        await uow.commit()
    return ApplicationView(application, title, details_included=True, charged=charged)


async def _own_application(
    uow: JobsUnitOfWork, actor: Actor, application_id: str, *, for_update: bool
) -> Application:
    """An application to one of the caller's jobs; others' are reported as absent (SEC-2)."""
    application = (
        await uow.applications.get(application_id, for_update=for_update)
        if application_id
        else None
    )
    if application is None or application.company_id != actor.user_id:
        raise ApplicationNotFound(application_id)
    return application


async def _titles(uow: JobsUnitOfWork, job_ids: set[str]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for job_id in sorted(job_ids):
        job = await uow.jobs.get(job_id)
        if job is not None:
            titles[job_id] = job.fields.title
    return titles
