"""Named conversions between the HTTP models and the gRPC messages (no proto leaks outward)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2, timestamp_pb2

from gateway.api import models
from gateway.service_layer.auth import Principal
from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.money import Money

_EMPLOYMENT_TO_PROTO = {
    "full_time": jobs_pb.FULL_TIME,
    "part_time": jobs_pb.PART_TIME,
    "contract": jobs_pb.CONTRACT,
    "internship": jobs_pb.INTERNSHIP,
    "temporary": jobs_pb.TEMPORARY,
}
_EMPLOYMENT_FROM_PROTO = {v: k for k, v in _EMPLOYMENT_TO_PROTO.items()}


# A Timestamp's instant is the epoch plus its seconds and nanos (as Timestamp.ToDatetime makes it),
# within the range protobuf accepts.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS_MIN = -62135596800
_SECONDS_MAX = 253402300799
_NANOS_PER_SECOND = 1_000_000_000


def timestamp_to_iso(ts: timestamp_pb2.Timestamp, present: bool = True) -> str | None:
    """RFC 3339 UTC with a Z, or None for an unset timestamp."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    seconds, nanos = ts.seconds, ts.nanos
    if _SECONDS_MIN <= seconds <= _SECONDS_MAX and 0 <= nanos < _NANOS_PER_SECOND:
        # ToDatetime(tzinfo=UTC)'s datetime for a valid timestamp, made without its range
        # check, rounding and astimezone calls: 7 -> 3 Python calls per timestamp, four per job
        # answered (issue 13).
        instant = _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    else:
        instant = ts.ToDatetime(tzinfo=UTC)  # (refused with protobuf's own error)
    return instant.isoformat().replace("+00:00", "Z")


def actor_to_proto(principal: Principal | None) -> common_pb2.Actor:
    """The caller as the services see it (anonymous: empty user id and role)."""
    if principal is None:
        return common_pb2.Actor()
    return common_pb2.Actor(user_id=principal.user_id, role=principal.role)


def money_to_http(money: common_pb2.Money, present: bool = True) -> models.MoneyOut | None:
    if not present or not money.currency:
        return None
    return models.MoneyOut(amount_minor=money.amount_minor, currency=money.currency)


def money_to_proto(money: models.MoneyIn) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=money.amount_minor, currency=money.currency.upper())


# --- Jobs ----------------------------------------------------------------------------------------

# JobFields paths replaced by each HTTP field of a PATCH.
_MASK_PATHS: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "description": ("description",),
    "location": ("location",),
    "employment_type": ("employment_type",),
    "category": ("category",),
    "salary_range": ("salary_min_minor", "salary_max_minor", "salary_currency"),
}


def job_fields_to_proto(fields: models.JobFieldsIn) -> jobs_pb.JobFields:
    """The editable fields of a job as the jobs service takes them."""
    salary = fields.salary_range
    return jobs_pb.JobFields(
        title=fields.title or "",
        description=fields.description or "",
        location=fields.location or "",
        employment_type=_EMPLOYMENT_TO_PROTO.get(fields.employment_type or "", 0),
        category=fields.category or "",
        salary_min_minor=(salary.min_minor or 0) if salary else 0,
        salary_max_minor=(salary.max_minor or 0) if salary else 0,
        salary_currency=((salary.currency or "").upper()) if salary else "",
    )


def update_mask_for(fields: models.JobFieldsIn) -> field_mask_pb2.FieldMask:
    """The FieldMask of a PATCH: exactly the fields the client sent."""
    paths = [p for name in sorted(fields.model_fields_set) for p in _MASK_PATHS[name]]
    return field_mask_pb2.FieldMask(paths=paths)


# A job's and its payment's status by number, as HTTP names them (the enum's name, lowered): looked
# up, not asked of the enum's Python wrapper and lowered per answer (issue 13). Unspecified: None.
_JOB_STATUS_TO_HTTP: dict[int, str | None] = {
    number: name.lower() for name, number in jobs_pb.Job.Status.items()
} | {jobs_pb.Job.STATUS_UNSPECIFIED: None}
_PAYMENT_STATUS_TO_HTTP: dict[int, str | None] = {
    number: name.lower() for name, number in jobs_pb.Job.PaymentStatus.items()
} | {jobs_pb.Job.PAYMENT_STATUS_UNSPECIFIED: None}


def job_status_to_http(status: int) -> Any:
    try:
        return _JOB_STATUS_TO_HTTP[status]
    except KeyError:  # (a number the enum does not name: its own ValueError)
        return jobs_pb.Job.Status.Name(status).lower()


def _payment_status_to_http(status: int) -> Any:
    try:
        return _PAYMENT_STATUS_TO_HTTP[status]
    except KeyError:
        return jobs_pb.Job.PaymentStatus.Name(status).lower()


def _salary_to_http(fields: jobs_pb.JobFields) -> models.SalaryRangeOut | None:
    if not (fields.salary_min_minor or fields.salary_max_minor or fields.salary_currency):
        return None
    return models.SalaryRangeOut(
        min_minor=fields.salary_min_minor or None,
        max_minor=fields.salary_max_minor or None,
        currency=fields.salary_currency or None,
    )


def job_to_http(job: jobs_pb.Job, *, with_payment: bool = True) -> models.JobOut:
    """A job as JSON; `with_payment=False` hides the payment of a job the viewer does not own."""
    f = job.fields
    # The payment fields go into the one validating construction, not assigned afterwards: each
    # assignment is pydantic's Python __setattr__ (three calls apiece on every posting's answer;
    # issue 13). The model is the same, its unset fields the same defaults.
    payment: dict[str, Any] = (
        {
            "payment_id": job.payment_id or None,
            "payment_status": _payment_status_to_http(job.payment_status),
            "payment_amount": money_to_http(job.payment_amount, job.HasField("payment_amount")),
            "payment_method": job.payment_method or None,
            "failure_reason": job.failure_reason or None,
        }
        if with_payment
        else {}
    )
    return models.JobOut(
        id=job.job_id,
        status=job_status_to_http(job.status),
        title=f.title,
        description=f.description,
        location=f.location,
        employment_type=_EMPLOYMENT_FROM_PROTO.get(f.employment_type),
        category=f.category,
        salary_range=_salary_to_http(f),
        posted_at=timestamp_to_iso(job.posted_at, job.HasField("posted_at")),
        expires_at=timestamp_to_iso(job.expires_at, job.HasField("expires_at")),
        terms_version=job.terms_version or None,
        created_at=timestamp_to_iso(job.created_at, job.HasField("created_at")),
        updated_at=timestamp_to_iso(job.updated_at, job.HasField("updated_at")),
        **payment,
    )


def job_visible_to(job: jobs_pb.Job, principal: Principal | None) -> bool:
    """SEC-2: the owner and admins see any status; everybody else only active postings."""
    if principal is not None and principal.owns(job.company_id):
        return True
    return job.status == jobs_pb.Job.ACTIVE


def job_for_viewer(job: jobs_pb.Job, principal: Principal | None) -> models.JobOut:
    """A job as a given viewer may see it (payment details only for its owner or an admin)."""
    owner = principal is not None and principal.owns(job.company_id)
    return job_to_http(job, with_payment=owner)


def job_list_to_http(
    response: jobs_pb.ListJobsResponse, principal: Principal | None
) -> models.JobListOut:
    return models.JobListOut(
        jobs=[job_for_viewer(j, principal) for j in response.jobs],
        next_page_token=response.next_page_token or None,
    )


def preview_to_http(response: jobs_pb.PreviewJobResponse) -> models.PreviewOut:
    return models.PreviewOut(
        job=job_to_http(response.job),
        fee=money_to_http(response.fee, response.HasField("fee")),
        fee_credits=response.fee_credits,
        terms_version=response.terms_version,
        posting_days=response.posting_days,
    )


def transitions_to_http(response: jobs_pb.ListJobTransitionsResponse) -> models.TransitionListOut:
    return models.TransitionListOut(
        transitions=[
            models.TransitionOut(
                from_status=job_status_to_http(t.from_status),
                to_status=job_status_to_http(t.to_status),
                actor=t.actor,
                reason=t.reason,
                at=timestamp_to_iso(t.at, t.HasField("at")),
            )
            for t in response.transitions
        ]
    )


def create_with_payment_to_proto(
    body: models.CreateWithPaymentIn,
    *,
    principal: Principal,
    idempotency_key: str,
    request_fingerprint: str,
) -> jobs_pb.CreateJobWithPaymentRequest:
    """The saga request: the key becomes request_id, the caller the actor (PAY-4, PAY-8)."""
    pay = body.payment
    request = jobs_pb.CreateJobWithPaymentRequest(
        request_id=idempotency_key,
        actor=actor_to_proto(principal),
        payment=jobs_pb.PaymentChoice(
            method=pay.method,
            payment_method=pay.payment_method or "",
            return_url=pay.return_url or "",
            cancel_url=pay.cancel_url or "",
        ),
        accept_terms=body.accept_terms,
        terms_version=body.terms_version or "",
        request_fingerprint=request_fingerprint,
        email=principal.email,
    )
    if pay.amount is not None:
        request.payment.expected_amount.CopyFrom(money_to_proto(pay.amount))
    if body.draft_id is not None:
        request.draft_id = body.draft_id
    elif body.job is not None:
        request.job.CopyFrom(job_fields_to_proto(body.job))
    return request


def create_with_payment_to_http(
    response: jobs_pb.CreateJobWithPaymentResponse, method: str
) -> tuple[int, models.CreateWithPaymentOut]:
    """201 with an active job, or 202 with pending_payment and the next action."""
    job = response.job
    payment = models.PaymentOut(
        id=response.payment_id or job.payment_id or None,
        status=response.payment_state.lower() or None,
        amount=money_to_http(job.payment_amount, job.HasField("payment_amount")),
        method=job.payment_method or method,
    )
    out = models.CreateWithPaymentOut(job=job_to_http(job), payment=payment)
    if job.status == jobs_pb.Job.ACTIVE:
        return 201, out
    if response.next_action_url:
        out.next_action = models.NextAction(url=response.next_action_url)
    return 202, out


# --- Subscriptions -------------------------------------------------------------------------------

_USER_TYPES = {"COMPANY": pay_pb.USER_TYPE_COMPANY, "APPLICANT": pay_pb.USER_TYPE_APPLICANT}


def subscribe_to_proto(body: models.SubscribeIn, request_id: str) -> pay_pb.SubscribeRequest:
    return pay_pb.SubscribeRequest(
        request_id=request_id,
        user_type=_USER_TYPES[body.userType],
        user_id=body.userId,
        email=body.email,
        plan=body.plan,
        payment_method=body.paymentMethod,
        return_url=body.returnUrl,
        cancel_url=body.cancelUrl,
        currency=(body.currency or "").upper(),
    )


def _transaction_status(txn: pay_pb.Transaction) -> str:
    return pay_pb.Transaction.Status.Name(txn.status).removeprefix("STATUS_")


def subscribe_to_http(txn: pay_pb.Transaction) -> models.SubscribeOut:
    subscription_status, payment_status = subscription_state(txn)
    return models.SubscribeOut(
        transactionId=txn.transaction_id,
        status=_transaction_status(txn),
        checkoutUrl=txn.checkout_url or None,
        expiresAt=timestamp_to_iso(txn.expires_at, txn.HasField("expires_at")),
        subscriptionStatus=subscription_status,
        paymentStatus=payment_status,
    )


def subscription_state(txn: pay_pb.Transaction) -> tuple[str, str]:
    """Seed 003's (subscription status, paymentStatus) of a purchase: Hold/created until a
    verified payment makes it Active/paid; a failed payment leaves it Failed/failed."""
    status = txn.status
    if status == pay_pb.Transaction.PENDING:
        return "Hold", "created"
    if status == pay_pb.Transaction.FAILED:
        return "Failed", "failed"
    if status == pay_pb.Transaction.CANCELLED:
        return "Cancelled", "cancelled"
    if status == pay_pb.Transaction.REFUNDED:
        return "Refunded", "refunded"
    today = datetime.now(UTC).date()
    if txn.subscription_end_date and date.fromisoformat(txn.subscription_end_date) <= today:
        return "Expired", "paid"
    if txn.subscription_start_date and date.fromisoformat(txn.subscription_start_date) > today:
        return "Scheduled", "paid"
    return "Active", "paid"


def verify_to_http(
    txn: pay_pb.Transaction, disputes: Sequence[pay_pb.PaymentDispute] = ()
) -> models.VerifyOut:
    """API-2: the amount as a decimal string with the currency's exponent (3000 USD -> "30.00");
    the purchase's card disputes (GetTransaction's; a checkout's return has none yet)."""
    amount = Money(txn.amount.amount_minor, txn.amount.currency or "USD")
    when = txn.updated_at if txn.HasField("updated_at") else txn.created_at
    subscription_status, payment_status = subscription_state(txn)
    return models.VerifyOut(
        transactionId=txn.transaction_id,
        status=_transaction_status(txn),
        email=txn.email,
        amount=amount.to_decimal_string(),
        amountMinor=txn.amount.amount_minor,
        currency=txn.amount.currency,
        plan=txn.plan or None,
        timestamp=timestamp_to_iso(when),
        subscriptionStartDate=txn.subscription_start_date or None,
        subscriptionEndDate=txn.subscription_end_date or None,
        subscriptionStatus=subscription_status,
        paymentStatus=payment_status,
        jobCredits=int(txn.metadata.get("job_credits") or 0),
        candidateCredits=int(txn.metadata.get("candidate_credits") or 0),
        disputes=[_dispute_to_http(d) for d in disputes],
    )


def _dispute_to_http(dispute: pay_pb.PaymentDispute) -> models.PurchaseDisputeOut:
    """A purchase's dispute for its buyer: status, reason and money; the provider's dispute id
    and fees stay inside (the merchant's, not the buyer's)."""
    status = pay_pb.PaymentDispute.Status.Name(dispute.status).lower()
    return models.PurchaseDisputeOut(
        status="unknown" if status == "status_unspecified" else status,
        reason=dispute.reason,
        amountMinor=dispute.amount.amount_minor,
        currency=dispute.amount.currency,
        withdrawnMinor=dispute.withdrawn_minor,
        reinstatedMinor=dispute.reinstated_minor,
        openedAt=timestamp_to_iso(dispute.created_at, dispute.HasField("created_at")),
        closedAt=timestamp_to_iso(dispute.closed_at, dispute.HasField("closed_at")),
    )
