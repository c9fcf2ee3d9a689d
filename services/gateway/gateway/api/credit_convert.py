"""Named conversions of plans, credits, subscription status, refunds and applications between the
HTTP models and the gRPC messages."""

from __future__ import annotations

from datetime import UTC, date, datetime

from gateway.api import credit_models as m
from gateway.api.convert import timestamp_to_iso
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.money import Money

FREE_PLAN = "FREE_LAUNCHPAD"
JOB_CREDIT = "JOB_CREDIT"
CANDIDATE_CREDIT = "CANDIDATE_CREDIT"


def user_type_name(value: int) -> str:
    return pay_pb.UserType.Name(value).removeprefix("USER_TYPE_")


def plan_to_http(plan: pay_pb.Plan, credits_per_post: int) -> m.PlanOut:
    return m.PlanOut(
        code=plan.code,
        userType=user_type_name(plan.user_type),
        name=plan.name,
        prices=[
            m.PriceOut(
                amountMinor=p.amount_minor,
                currency=p.currency,
                amount=Money(p.amount_minor, p.currency).to_decimal_string(),
            )
            for p in plan.prices
        ],
        periodDays=plan.period_days,
        jobCredits=plan.job_credits,
        candidateCredits=plan.candidate_credits,
        maxJobPosts=plan.job_credits // max(1, credits_per_post),
        free=plan.free,
    )


def _today() -> date:
    return datetime.now(UTC).date()


def subscription_to_http(txn: pay_pb.Transaction) -> m.SubscriptionOut:
    start = txn.subscription_start_date
    return m.SubscriptionOut(
        transactionId=txn.transaction_id,
        plan=txn.plan,
        status="Scheduled" if start and date.fromisoformat(start) > _today() else "Active",
        startDate=start,
        endDate=txn.subscription_end_date,
        expiresAt=f"{txn.subscription_end_date}T00:00:00Z",
    )


def credits_to_http(status: pay_pb.GetSubscriptionStatusResponse) -> m.CreditsOut:
    active = status.active if status.HasField("active") else None
    return m.CreditsOut(
        jobCredits=status.job_credits,
        candidateCredits=status.candidate_credits,
        maxJobPosts=status.max_job_posts,
        creditsPerJobPost=status.job_credits_per_post,
        plan=active.plan if active else FREE_PLAN,
        subscription=subscription_to_http(active) if active else None,
    )


def status_to_http(status: pay_pb.GetSubscriptionStatusResponse, user_type: str) -> m.StatusOut:
    active = status.active if status.HasField("active") else None
    company = user_type == "COMPANY"
    return m.StatusOut(
        userType=user_type,
        premium=status.premium,
        plan=active.plan if active else (FREE_PLAN if company else None),
        subscription=subscription_to_http(active) if active else None,
        jobCredits=status.job_credits if company else None,
        candidateCredits=status.candidate_credits if company else None,
        maxJobPosts=status.max_job_posts if company else None,
    )


def _moved(amounts: list[pay_pb.CreditAmount]) -> m.CreditsMoved:
    by_unit = {a.unit: a.amount for a in amounts}
    return m.CreditsMoved(
        jobCredits=by_unit.get(JOB_CREDIT, 0), candidateCredits=by_unit.get(CANDIDATE_CREDIT, 0)
    )


def refund_to_http(reply: pay_pb.RefundTransactionResponse) -> m.RefundOut:
    txn = reply.transaction
    done = reply.revocation_done
    return m.RefundOut(
        transactionId=txn.transaction_id,
        status=pay_pb.Transaction.Status.Name(txn.status),
        revocationDone=done,
        revoked=_moved(list(reply.revoked)) if done else None,
        used=_moved(list(reply.used)) if done else None,
    )


_APPLICATION_STATUS = {
    jobs_pb.Application.PENDING: "pending",
    jobs_pb.Application.ACCEPTED: "accepted",
    jobs_pb.Application.REJECTED: "rejected",
}


def application_to_http(a: jobs_pb.Application) -> m.ApplicationOut:
    applicant = None
    if a.details_included:
        applicant = m.ApplicantOut(
            applicantId=a.applicant_id,
            name=a.applicant_name,
            email=a.applicant_email,
            coverLetter=a.cover_letter,
            resumeUrl=a.resume_url or None,
        )
    return m.ApplicationOut(
        id=a.application_id,
        jobId=a.job_id,
        jobTitle=a.job_title,
        status=_APPLICATION_STATUS.get(a.status, "pending"),  # type: ignore[arg-type]
        createdAt=timestamp_to_iso(a.created_at, a.HasField("created_at")),
        decidedAt=timestamp_to_iso(a.decided_at, a.HasField("decided_at")),
        applicant=applicant,
    )


def applications_to_http(reply: jobs_pb.ListApplicationsResponse) -> m.ApplicationsOut:
    return m.ApplicationsOut(applications=[application_to_http(a) for a in reply.applications])
