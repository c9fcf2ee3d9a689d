"""Named conversions between the jobs contract (protobuf) and the domain."""

from __future__ import annotations

import hashlib

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay_platform.identity import current_caller
from hirepay_platform.money import Money
from hirepay_platform.wire import timestamp
from jobs.adapters.participants import try_result_from_payment
from jobs.domain import commands
from jobs.domain.applications import ApplicationStatus
from jobs.domain.audit import AuditReport, PurchaseRefunds
from jobs.domain.model import EmploymentType, Job, JobFields, JobStatus, PaymentStatus, Transition
from jobs.domain.posting_saga import CHARGED_BACK, SettlementEvent, TryResult, TryState
from jobs.service_layer.answers import SagaAnswer
from jobs.service_layer.handlers.applications import ApplicationView
from jobs.service_layer.handlers.drafts import JobPage, Preview

_EMPLOYMENT_TO_DOMAIN = {
    pb.FULL_TIME: EmploymentType.FULL_TIME.value,
    pb.PART_TIME: EmploymentType.PART_TIME.value,
    pb.CONTRACT: EmploymentType.CONTRACT.value,
    pb.INTERNSHIP: EmploymentType.INTERNSHIP.value,
    pb.TEMPORARY: EmploymentType.TEMPORARY.value,
}
_EMPLOYMENT_TO_PROTO = {v: k for k, v in _EMPLOYMENT_TO_DOMAIN.items()}
_STATUS_TO_PROTO = {
    JobStatus.DRAFT: pb.Job.DRAFT,
    JobStatus.PENDING_PAYMENT: pb.Job.PENDING_PAYMENT,
    JobStatus.PAYMENT_FAILED: pb.Job.PAYMENT_FAILED,
    JobStatus.ACTIVE: pb.Job.ACTIVE,
    JobStatus.EXPIRED: pb.Job.EXPIRED,
    JobStatus.FILLED: pb.Job.FILLED,
    JobStatus.CANCELLED: pb.Job.CANCELLED,
}
_PAYMENT_STATUS_TO_PROTO = {
    PaymentStatus.PENDING: pb.Job.PENDING,
    PaymentStatus.COMPLETED: pb.Job.COMPLETED,
    PaymentStatus.FAILED: pb.Job.FAILED,
    PaymentStatus.REFUNDED: pb.Job.REFUNDED,
}
# Settlement event types of the payments service and what they say about the branch.
_EVENT_STATES = {
    "payment.authorized": TryState.RESERVED,
    "payment.captured": TryState.CAPTURED,
    "payment.failed": TryState.FAILED,
    "payment.voided": TryState.CANCELLED,
    "payment.refunded": TryState.REFUNDED,
    # A chargeback lost in full: the money is the customer's again, as after a full refund (the
    # payment itself stays CAPTURED at payments; refunded_at_provider reads the event's type).
    CHARGED_BACK: TryState.REFUNDED,
}


def caller_actor() -> commands.Actor:
    """The end user behind the call, as the gateway signed it (verified by the platform
    interceptor); anonymous when none. The requests' deprecated `actor` fields are never read."""
    user = current_caller().user
    return commands.Actor(user_id=user.user_id.strip(), role=user.role.strip().lower())


def actor_from_proto(_ignored: common_pb2.Actor) -> commands.Actor:
    """Deprecated: the request's `actor` field is never read; this is `caller_actor()`, kept so
    that call sites written before issue 12 (other branches' new RPCs) stay correct when merged."""
    return caller_actor()


def fields_from_proto(fields: pb.JobFields) -> JobFields:
    """Domain fields; an unspecified or unknown employment type becomes "" (refused by validation)."""
    return JobFields(
        title=fields.title,
        description=fields.description,
        location=fields.location,
        employment_type=_EMPLOYMENT_TO_DOMAIN.get(fields.employment_type, ""),
        category=fields.category,
        salary_min_minor=fields.salary_min_minor,
        salary_max_minor=fields.salary_max_minor,
        salary_currency=fields.salary_currency,
    )


def fields_to_proto(fields: JobFields) -> pb.JobFields:
    return pb.JobFields(
        title=fields.title,
        description=fields.description,
        location=fields.location,
        employment_type=_EMPLOYMENT_TO_PROTO.get(
            fields.employment_type, pb.EMPLOYMENT_TYPE_UNSPECIFIED
        ),
        category=fields.category,
        salary_min_minor=fields.salary_min_minor,
        salary_max_minor=fields.salary_max_minor,
        salary_currency=fields.salary_currency,
    )


def money_to_proto(money: Money) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=money.amount_minor, currency=money.currency)


def job_to_proto(job: Job) -> pb.Job:
    """The contract's Job from a domain job."""
    message = pb.Job(
        job_id=job.id,
        company_id=job.company_id,
        fields=fields_to_proto(job.fields),
        status=_STATUS_TO_PROTO[job.status],
        payment_id=job.payment_id,
        payment_status=_PAYMENT_STATUS_TO_PROTO.get(
            job.payment_status, pb.Job.PAYMENT_STATUS_UNSPECIFIED
        )
        if job.payment_status
        else pb.Job.PAYMENT_STATUS_UNSPECIFIED,
        payment_method=job.payment_method,
        terms_version=job.terms_version,
        failure_reason=job.failure_reason,
        # Sub-messages given to the constructor (None: left unset), not copied in one by one
        # after it: a getattr and a CopyFrom less for each (issue 13).
        payment_amount=common_pb2.Money(
            amount_minor=job.payment_amount_minor, currency=job.payment_currency
        )
        if job.payment_currency
        else None,
        posted_at=timestamp(job.posted_at),
        expires_at=timestamp(job.expires_at),
        created_at=timestamp(job.created_at),
        updated_at=timestamp(job.updated_at),
    )
    return message


def transition_to_proto(t: Transition) -> pb.JobTransition:
    return pb.JobTransition(
        from_status=_STATUS_TO_PROTO[t.from_status] if t.from_status else pb.Job.STATUS_UNSPECIFIED,
        to_status=_STATUS_TO_PROTO[t.to_status],
        actor=t.actor,
        reason=t.reason,
        at=timestamp(t.at),
    )


def page_to_proto(page: JobPage) -> pb.ListJobsResponse:
    return pb.ListJobsResponse(
        jobs=[job_to_proto(j) for j in page.jobs], next_page_token=page.next_page_token
    )


def preview_to_proto(preview: Preview) -> pb.PreviewJobResponse:
    return pb.PreviewJobResponse(
        job=job_to_proto(preview.job),
        fee=money_to_proto(preview.fee),
        fee_credits=preview.fee_credits,
        terms_version=preview.terms_version,
        posting_days=preview.posting_days,
    )


def request_fingerprint(request: pb.CreateJobWithPaymentRequest) -> str:
    """The caller's body fingerprint, or one computed from the request without its key and actor."""
    if request.request_fingerprint:
        return request.request_fingerprint
    body = pb.CreateJobWithPaymentRequest()
    body.CopyFrom(request)
    body.ClearField("request_id")
    body.ClearField("actor")
    body.ClearField("rate_limit")
    return "sha256:" + hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


def create_with_payment_from_proto(
    request: pb.CreateJobWithPaymentRequest,
) -> commands.CreateJobWithPayment:
    payment = request.payment
    expected = None
    if payment.HasField("expected_amount"):
        expected = Money(
            payment.expected_amount.amount_minor, payment.expected_amount.currency.upper()
        )
    subject = request.WhichOneof("subject")
    return commands.CreateJobWithPayment(
        request_id=request.request_id.strip(),
        actor=caller_actor(),
        payment=commands.PaymentChoice(
            method=payment.method,
            payment_method_token=payment.payment_method,
            return_url=payment.return_url,
            cancel_url=payment.cancel_url,
            expected_amount=expected,
        ),
        accept_terms=request.accept_terms,
        fingerprint=request_fingerprint(request),
        draft_id=request.draft_id if subject == "draft_id" else "",
        fields=fields_from_proto(request.job) if subject == "job" else None,
        terms_version=request.terms_version.strip(),
        email=request.email,
        rate_limit=commands.PostingRateLimit(
            request.rate_limit.limit, request.rate_limit.window_seconds
        )
        if request.HasField("rate_limit")
        else None,
    )


def answer_to_proto(answer: SagaAnswer) -> pb.CreateJobWithPaymentResponse:
    decision = answer.rate_limit
    return pb.CreateJobWithPaymentResponse(
        job=job_to_proto(answer.job),
        payment_id=answer.payment_id,
        payment_state=answer.payment_state,
        next_action_url=answer.next_action_url,
        replayed=answer.replayed,
        saga_id=answer.saga_id,
        # (None: unset; given here, not copied in after: issue 13)
        rate_limit=pb.PostingRateDecision(
            allowed=decision.allowed,
            limit=decision.limit,
            remaining=decision.remaining,
            reset_seconds=decision.reset_seconds,
            retry_after_seconds=decision.retry_after_seconds,
        )
        if decision is not None
        else None,
    )


def settlement_event_from_proto(event: ppb.SettlementEvent) -> SettlementEvent:
    """A payments settlement event in the saga's terms (the event type says what happened)."""
    if event.HasField("payment"):
        seen = try_result_from_payment(event.payment)
        state = _EVENT_STATES.get(event.type, seen.state)
        result = TryResult(
            state=state,
            payment_id=seen.payment_id,
            provider_state=seen.provider_state,
            next_action_url=seen.next_action_url,
            failure_reason=seen.failure_reason,
            failure_code=seen.failure_code,
        )
        branch = event.payment.branch
        metadata = event.payment.metadata
        return SettlementEvent(
            event.event_id,
            event.cursor,
            event.type,
            branch.global_tx_id,
            branch.branch_id,
            result,
            # Copied by its keys in one comprehension: dict() of a protobuf map goes through
            # the Mapping ABC's keys view, a Python generator step per key (issue 13).
            {key: metadata[key] for key in metadata},
        )
    return SettlementEvent(
        event.event_id, event.cursor, event.type, "", "", TryResult(state=TryState.ABSENT)
    )


def audit_report_to_proto(report: AuditReport) -> pb.ConsistencyReport:
    """An audit round on the wire."""
    return pb.ConsistencyReport(
        checked_at=timestamp(report.checked_at),
        counts={check.value: count for check, count in report.counts().items()},
        violations=[
            pb.ConsistencyViolation(check=v.check.value, subject_id=v.subject_id, detail=v.detail)
            for v in report.violations
        ],
        purchase_refunds=_purchase_refunds_msg(report.purchase_refunds),
    )


def _purchase_refunds_msg(found: PurchaseRefunds | None) -> pb.PurchaseRefundReconciliation | None:
    if found is None:
        return None
    return pb.PurchaseRefundReconciliation(
        purchases_checked=found.checked,
        refunds_found=found.found,
        refunds_booked=[
            pb.BookedPurchaseRefund(
                transaction_id=b.transaction_id,
                provider=b.provider,
                amount_minor=b.amount_minor,
                currency=b.currency,
                refunded_in_full=b.refunded_in_full,
            )
            for b in found.booked
        ],
        purchases_unreadable=found.unreadable,
    )


_APPLICATION_STATUSES = {
    ApplicationStatus.PENDING: pb.Application.PENDING,
    ApplicationStatus.ACCEPTED: pb.Application.ACCEPTED,
    ApplicationStatus.REJECTED: pb.Application.REJECTED,
}


def application_to_proto(view: ApplicationView) -> pb.Application:
    """An application; the applicant's identity and details only when the reader may see them."""
    a = view.application
    message = pb.Application(
        application_id=a.id,
        job_id=a.job_id,
        job_title=view.job_title,
        status=_APPLICATION_STATUSES[a.status],
        created_at=timestamp(a.created_at),
        details_included=view.details_included,
    )
    if a.decided_at is not None:
        message.decided_at.CopyFrom(timestamp(a.decided_at))
    if view.details_included:
        message.applicant_id = a.applicant_id
        message.applicant_name = a.details.name
        message.applicant_email = a.details.email
        message.cover_letter = a.details.cover_letter
        message.resume_url = a.details.resume_url
    return message


def application_response(view: ApplicationView) -> pb.ApplicationResponse:
    return pb.ApplicationResponse(application=application_to_proto(view), charged=view.charged)


def applications_response(views: list[ApplicationView]) -> pb.ListApplicationsResponse:
    return pb.ListApplicationsResponse(applications=[application_to_proto(v) for v in views])
