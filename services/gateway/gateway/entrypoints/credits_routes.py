"""Plans and credits over HTTP (CR-1..3, API-6): the catalogue, a company's credits, the caller's
premium status, and an admin's refund of a purchase."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from gateway.api import credit_convert as cc
from gateway.api import credit_models as m
from gateway.api.errors import error_responses, forbidden, not_found
from gateway.entrypoints.deps import Admin, AnyUser, BackendsDep, Company, OptionalUser
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.errors import ErrorKind, RemoteError
from hirepay_platform.ids import new_id

router = APIRouter(tags=["plans and credits"])

_USER_TYPES = {"COMPANY": pay_pb.USER_TYPE_COMPANY, "APPLICANT": pay_pb.USER_TYPE_APPLICANT}
_USER_TYPE_OF_ROLE = {"company": "COMPANY", "applicant": "APPLICANT"}
CREDITS_PER_POST = 500  # shown per plan as maxJobPosts; the account's own comes from payments


@router.get(
    "/api/payments/plans",
    response_model=m.PlansOut,
    summary="The plan catalogue (CR-1, API-1)",
    responses=error_responses(400, 401, 503),
)
async def list_plans(
    principal: OptionalUser,
    backends: BackendsDep,
    user_type: Annotated[
        str | None, Query(alias="userType", pattern="^(COMPANY|APPLICANT)$")
    ] = None,
) -> m.PlansOut:
    """What the caller can buy: a company's plans for a company, an applicant's for an applicant
    (anyone else, or `userType`, picks the audience). Free plans are listed with `free: true`."""
    audience = user_type
    if principal is not None and principal.role in _USER_TYPE_OF_ROLE:
        audience = _USER_TYPE_OF_ROLE[principal.role]
    request = pay_pb.ListPlansRequest(
        user_type=_USER_TYPES.get(audience or "", pay_pb.USER_TYPE_UNSPECIFIED)
    )
    reply = await backends.payments.list_plans(request)
    return m.PlansOut(plans=[cc.plan_to_http(p, CREDITS_PER_POST) for p in reply.plans])


async def _status(
    backends: BackendsDep, user_type: str, user_id: str
) -> pay_pb.GetSubscriptionStatusResponse:
    return await backends.payments.get_subscription_status(
        pay_pb.GetSubscriptionStatusRequest(user_type=_USER_TYPES[user_type], user_id=user_id)
    )


@router.get(
    "/api/credits",
    response_model=m.CreditsOut,
    summary="A company's credits and subscription (CR-3)",
    responses=error_responses(400, 401, 403, 503),
)
async def my_credits(principal: Company, backends: BackendsDep) -> m.CreditsOut:
    """Job credits, candidate credits, max job posts (job credits / 500, rounded down), and the
    active subscription with its expiry; a company on Free Launchpad sees 0."""
    if principal.is_admin:
        raise forbidden("Credits belong to a company; read them as that company")
    return cc.credits_to_http(await _status(backends, "COMPANY", principal.user_id))


@router.get(
    "/api/payments/status",
    response_model=m.StatusOut,
    summary="The caller's subscription and premium status (API-6)",
    responses=error_responses(400, 401, 403, 503),
)
async def my_status(principal: AnyUser, backends: BackendsDep) -> m.StatusOut:
    """For the caller only (a company or an applicant); premium is on only after a verified
    payment and until the subscription's end date."""
    user_type = _USER_TYPE_OF_ROLE.get(principal.role)
    if user_type is None:
        raise forbidden("Only companies and applicants have subscriptions")
    status = await _status(backends, user_type, principal.user_id)
    return cc.status_to_http(status, user_type)


@router.post(
    "/api/payments/transactions/{transaction_id}/refund",
    response_model=m.RefundOut,
    summary="Refund a subscription purchase (admin)",
    responses=error_responses(400, 401, 403, 404, 409, 502, 503, 504),
)
async def refund_purchase(
    transaction_id: Annotated[str, Path(min_length=1, max_length=200)],
    principal: Admin,
    backends: BackendsDep,
    body: m.RefundIn | None = None,
) -> m.RefundOut:
    """Refunds the purchase in full at the provider; the transaction becomes REFUNDED, its unused
    credits are revoked and its used credits reported. A repeat refunds nothing more."""
    if not principal.is_admin:
        raise forbidden("Only an admin may refund a purchase")
    request = pay_pb.RefundTransactionRequest(
        request_id=new_id("rfd"),
        transaction_id=transaction_id,
        reason=(body or m.RefundIn()).reason,
        actor=principal.user_id,
    )
    try:
        reply = await backends.payments.refund_transaction(request)
    except RemoteError as exc:
        if exc.kind == ErrorKind.NOT_FOUND:
            raise not_found("transaction") from None
        raise
    return cc.refund_to_http(reply)
