"""Applications and candidate views on real PostgreSQL: one application per job and applicant under
concurrency, one charge when the same company opens the same applicant from many requests at once,
and a lost wallet answer finished by the next view without a second charge."""

from __future__ import annotations

import asyncio

import pytest

from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.applications import ViewState
from jobs.domain.errors import AlreadyApplied, InsufficientCredits
from jobs.domain.model import JobStatus
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import applications, pay_to_post
from tests.support.jobs_fakes import FakeCandidateCredits, FakeParticipants, make_config
from tests.support.jobs_world import COMPANY, FIELDS


def deps_of(sessions, wallet: FakeCandidateCredits) -> Deps:
    return Deps.build(
        lambda: SqlJobsUnitOfWork(sessions),
        make_config(),
        FakeParticipants(),
        candidate_credits=wallet,
    )


async def active_job(deps: Deps) -> str:
    answer = await pay_to_post.create_job_with_payment(
        commands.CreateJobWithPayment(
            request_id="post-1",
            actor=COMPANY,
            payment=commands.PaymentChoice(method="card", payment_method_token="pm_card_visa"),
            accept_terms=True,
            fingerprint="fp",
            fields=FIELDS,
        ),
        deps,
    )
    assert answer.job.status is JobStatus.ACTIVE
    return answer.job.id


def apply_cmd(job_id: str, applicant: str) -> commands.Apply:
    return commands.Apply(
        commands.Actor(applicant, "applicant"), job_id, "Ada", f"{applicant}@example.test"
    )


async def test_concurrent_applications_of_one_applicant_make_one(sessions) -> None:
    deps = deps_of(sessions, FakeCandidateCredits())
    job_id = await active_job(deps)
    results = await asyncio.gather(
        *[applications.apply(apply_cmd(job_id, "ap_1"), deps.fresh()) for _ in range(10)],
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    assert len(made) == 1
    assert all(isinstance(r, AlreadyApplied) for r in results if r not in made)


async def test_concurrent_views_of_one_applicant_charge_once(sessions) -> None:
    wallet = FakeCandidateCredits({COMPANY.user_id: 5})
    deps = deps_of(sessions, wallet)
    job_id = await active_job(deps)
    app = (await applications.apply(apply_cmd(job_id, "ap_1"), deps)).application.id
    views = await asyncio.gather(
        *[
            applications.view_applicant(commands.ViewApplicant(COMPANY, app), deps.fresh())
            for _ in range(10)
        ]
    )
    assert all(v.details_included for v in views)
    assert sum(v.charged for v in views) == 1
    assert wallet.balances[COMPANY.user_id] == 4
    async with SqlJobsUnitOfWork(sessions) as uow:
        assert await uow.candidate_views.state(COMPANY.user_id, "ap_1") is ViewState.CHARGED


async def test_a_lost_answer_is_finished_by_the_next_view_and_a_refusal_leaves_nothing(
    sessions,
) -> None:
    wallet = FakeCandidateCredits({COMPANY.user_id: 1})
    deps = deps_of(sessions, wallet)
    job_id = await active_job(deps)
    first = (await applications.apply(apply_cmd(job_id, "ap_1"), deps)).application.id
    second = (await applications.apply(apply_cmd(job_id, "ap_2"), deps)).application.id
    wallet.fail_after_debit = True
    with pytest.raises(Exception, match="lost"):
        await applications.view_applicant(commands.ViewApplicant(COMPANY, first), deps.fresh())
    async with SqlJobsUnitOfWork(sessions) as uow:
        assert await uow.candidate_views.state(COMPANY.user_id, "ap_1") is ViewState.CHARGING
    finished = await applications.view_applicant(
        commands.ViewApplicant(COMPANY, first), deps.fresh()
    )
    assert finished.details_included and wallet.balances[COMPANY.user_id] == 0
    with pytest.raises(InsufficientCredits):
        await applications.view_applicant(commands.ViewApplicant(COMPANY, second), deps.fresh())
    async with SqlJobsUnitOfWork(sessions) as uow:
        assert await uow.candidate_views.state(COMPANY.user_id, "ap_2") is None
        assert await uow.candidate_views.viewed(COMPANY.user_id, ["ap_1", "ap_2"]) == {"ap_1"}
