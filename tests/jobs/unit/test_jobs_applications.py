"""Applications (ESC-10) and paid candidate views (CR-3) against fakes: applying only to live
postings, once; a free list without details; one credit per applicant per company, never two
and never a free view, also when the wallet's answer is lost; deciding once; SEC-2."""

from __future__ import annotations

import dataclasses

import pytest

from jobs.domain import commands
from jobs.domain.applications import ApplicationStatus, ViewState, view_transfer_id
from jobs.domain.errors import (
    AlreadyApplied,
    ApplicationNotFound,
    InsufficientCredits,
    InvalidApplicationTransition,
    JobNotFound,
    NotAllowed,
    ValidationError,
)
from jobs.domain.model import JobStatus
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import applications
from tests.support.jobs_fakes import FakeCandidateCredits
from tests.support.jobs_world import COMPANY, World

OTHER_COMPANY = commands.Actor("co_2", "company")


def applicant(n: int) -> commands.Actor:
    return commands.Actor(f"ap_{n}", "applicant")


class Hiring:
    def __init__(self, credits: int) -> None:
        self.world = World()
        self.wallet = FakeCandidateCredits({COMPANY.user_id: credits})

    @property
    def deps(self) -> Deps:
        return dataclasses.replace(self.world.deps, candidate_credits=self.wallet)

    async def job(self) -> str:
        answer = await self.world.post(key=f"post-{len(self.world.store.jobs)}")
        assert answer.job.status is JobStatus.ACTIVE
        return answer.job.id

    async def apply(self, job_id: str, n: int) -> str:
        cmd = commands.Apply(applicant(n), job_id, f"Applicant {n}", f"ap{n}@example.test")
        return (await applications.apply(cmd, self.deps)).application.id

    async def view(self, application_id: str, actor: commands.Actor = COMPANY):
        return await applications.view_applicant(
            commands.ViewApplicant(actor, application_id), self.deps
        )


async def test_applicants_apply_once_to_live_postings_and_follow_their_applications() -> None:
    h = Hiring(credits=0)
    job_id = await h.job()
    first = await h.apply(job_id, 1)
    with pytest.raises(AlreadyApplied) as again:
        await h.apply(job_id, 1)
    assert again.value.metadata["application_id"] == first
    with pytest.raises(JobNotFound):
        await h.apply("job_missing", 1)
    with pytest.raises(NotAllowed):
        await applications.apply(
            commands.Apply(COMPANY, job_id, "A company", "co@example.test"), h.deps
        )
    with pytest.raises(ValidationError) as bad:
        await applications.apply(commands.Apply(applicant(2), job_id, "", "nope"), h.deps)
    assert set(bad.value.fields) == {"name", "email"}
    mine = await applications.list_my_applications(
        commands.ListMyApplications(applicant(1)), h.deps
    )
    assert [(v.application.id, v.application.status) for v in mine] == [
        (first, ApplicationStatus.PENDING)
    ]
    assert mine[0].details_included and mine[0].job_title
    others = await applications.list_my_applications(
        commands.ListMyApplications(applicant(2)), h.deps
    )
    assert others == []


async def test_the_list_is_free_and_shows_no_details_until_paid() -> None:
    h = Hiring(credits=5)
    job_id = await h.job()
    await h.apply(job_id, 1)
    listed = await applications.list_job_applications(
        commands.ListJobApplications(COMPANY, job_id), h.deps
    )
    assert [v.details_included for v in listed] == [False]
    assert h.wallet.balances[COMPANY.user_id] == 5
    with pytest.raises(JobNotFound):  # another company's job looks absent
        await applications.list_job_applications(
            commands.ListJobApplications(OTHER_COMPANY, job_id), h.deps
        )


async def test_one_credit_per_applicant_per_company_and_nothing_shown_without_it() -> None:
    h = Hiring(credits=1)
    job_a, job_b = await h.job(), await h.job()
    app_a = await h.apply(job_a, 1)
    app_b = await h.apply(job_b, 1)  # the same applicant, another job of the same company
    other = await h.apply(job_a, 2)
    first = await h.view(app_a)
    assert first.charged and first.details_included
    assert first.application.details.email == "ap1@example.test"
    again = await h.view(app_a)
    same_applicant = await h.view(app_b)
    assert not again.charged and not same_applicant.charged
    assert h.wallet.balances[COMPANY.user_id] == 0
    with pytest.raises(InsufficientCredits):
        await h.view(other)
    assert h.world.store.views.get((COMPANY.user_id, "ap_2")) is None  # the claim is forgotten
    listed = await applications.list_job_applications(
        commands.ListJobApplications(COMPANY, job_a), h.deps
    )
    assert {v.application.applicant_id: v.details_included for v in listed} == {
        "ap_1": True,
        "ap_2": False,
    }
    with pytest.raises(ApplicationNotFound):
        await h.view(app_a, OTHER_COMPANY)


async def test_a_lost_wallet_answer_never_charges_twice_nor_shows_for_free() -> None:
    h = Hiring(credits=3)
    job_id = await h.job()
    app = await h.apply(job_id, 1)
    h.wallet.fail_after_debit = True  # the credit is taken, the answer is lost
    with pytest.raises(Exception, match="lost"):
        await h.view(app)
    assert h.world.store.views[(COMPANY.user_id, "ap_1")] is ViewState.CHARGING
    retried = await h.view(app)  # the same transfer again: answered, not repeated
    assert retried.details_included
    assert h.wallet.balances[COMPANY.user_id] == 2
    assert h.wallet.transfers == {view_transfer_id(COMPANY.user_id, "ap_1")}
    assert not (await h.view(app)).charged


async def test_a_company_decides_once() -> None:
    h = Hiring(credits=0)
    job_id = await h.job()
    app = await h.apply(job_id, 1)
    decided = await applications.decide_application(
        commands.DecideApplication(COMPANY, app, accept=True), h.deps
    )
    assert decided.application.status is ApplicationStatus.ACCEPTED
    assert not decided.details_included  # deciding does not reveal the applicant
    repeat = await applications.decide_application(
        commands.DecideApplication(COMPANY, app, accept=True), h.deps
    )
    assert repeat.application.status is ApplicationStatus.ACCEPTED
    with pytest.raises(InvalidApplicationTransition):
        await applications.decide_application(
            commands.DecideApplication(COMPANY, app, accept=False), h.deps
        )
    with pytest.raises(ApplicationNotFound):
        await applications.decide_application(
            commands.DecideApplication(OTHER_COMPANY, app, accept=False), h.deps
        )
    mine = await applications.list_my_applications(
        commands.ListMyApplications(applicant(1)), h.deps
    )
    assert mine[0].application.status is ApplicationStatus.ACCEPTED
