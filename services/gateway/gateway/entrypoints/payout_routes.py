"""Payouts over HTTP (ESC-9): a contractor connects a payout account and withdraws available
wallet money to it; each reads only their own withdrawals (admins read everyone's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, status

from gateway.api import payout_convert as pc
from gateway.api import payout_models as m
from gateway.api.convert import money_to_proto
from gateway.api.errors import error_responses, forbidden
from gateway.entrypoints.deps import BackendsDep, require_roles
from gateway.service_layer.auth import Principal
from gateway.service_layer.idempotency import HEADER, require_key, scoped_request_id
from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.ids import new_id

router = APIRouter(prefix="/api/wallet", tags=["payouts"])

Contractor = Annotated[Principal, Depends(require_roles("contractor"))]
# An admin reads a contractor's payout account and withdrawals by naming them.
UserQuery = Annotated[str | None, Query(alias="userId", min_length=1, max_length=200)]


def _own(principal: Principal) -> str:
    """Payout accounts and withdrawals are made by the contractor themselves."""
    if principal.is_admin:
        raise forbidden("Payout accounts and withdrawals belong to a contractor; act as them")
    return principal.user_id


def _whose(principal: Principal, user_id: str | None) -> str:
    """The contractor a read is about: the caller, or for an admin the one `userId` names."""
    if user_id is None or user_id == principal.user_id:
        return principal.user_id
    if not principal.is_admin:
        raise forbidden("userId must be your own user id")
    return user_id


@router.post(
    "/payout-account",
    response_model=m.PayoutAccountOut,
    summary="Connect a payout account (Stripe Connect)",
    responses=error_responses(400, 401, 403, 502, 503, 504),
)
async def connect_payout_account(
    principal: Contractor, backends: BackendsDep, body: m.PayoutAccountIn | None = None
) -> m.PayoutAccountOut:
    """Opens the contractor's Connect account (once; a repeat answers the same account). With
    real Stripe the answer is `onboarding` with an `onboardingUrl` to finish at Stripe; the
    sandbox's accounts are `active` at once."""
    user = _own(principal)
    fields = body or m.PayoutAccountIn()
    reply = await backends.payments.create_payout_account(
        pay_pb.CreatePayoutAccountRequest(
            request_id=new_id("pacct"),
            user_id=user,
            email=fields.email or "",
            country=(fields.country or "").upper(),
        )
    )
    return pc.payout_account_to_http(reply.account)


@router.get(
    "/payout-account",
    response_model=m.PayoutAccountOut,
    summary="The caller's payout account",
    responses=error_responses(401, 403, 404, 503),
)
async def get_payout_account(
    principal: Contractor, backends: BackendsDep, user_id: UserQuery = None
) -> m.PayoutAccountOut:
    """The account and its state (an `onboarding` one is re-read from the provider; POST again
    for a fresh onboarding link). 404 when none is connected. An admin names the contractor
    with `userId`."""
    reply = await backends.payments.get_payout_account(
        pay_pb.GetPayoutAccountRequest(user_id=_whose(principal, user_id))
    )
    return pc.payout_account_to_http(reply.account)


@router.post(
    "/withdrawals",
    response_model=m.WithdrawalOut,
    status_code=status.HTTP_201_CREATED,
    summary="Withdraw available wallet money to the payout account",
    responses=error_responses(400, 401, 402, 403, 409, 422, 502, 503, 504),
)
async def request_withdrawal(
    body: m.WithdrawalIn,
    principal: Contractor,
    backends: BackendsDep,
    idempotency_key: Annotated[str | None, Header(alias=HEADER)] = None,
) -> m.WithdrawalOut:
    """The amount is held on the contractor's wallet at once (`402 INSUFFICIENT_FUNDS` when the
    available balance is short: concurrent withdrawals never overdraw), sent as a Connect
    transfer and payout, and posted once the bank has paid (`paid`); a failed transfer or payout
    returns the money to the wallet (`failed`, with `failureCode`). `Idempotency-Key` is
    required: a repeat answers the same withdrawal, the same key with another amount is 422."""
    user = _own(principal)
    key = require_key(idempotency_key)
    reply = await backends.payments.request_withdrawal(
        pay_pb.RequestWithdrawalRequest(
            request_id=scoped_request_id(user, "withdrawal", key),
            user_id=user,
            amount=money_to_proto(body.amount),
        )
    )
    return pc.withdrawal_to_http(reply.withdrawal)


@router.get(
    "/withdrawals",
    response_model=m.WithdrawalsOut,
    summary="The caller's withdrawals, newest first",
    responses=error_responses(400, 401, 403, 503),
)
async def list_withdrawals(
    principal: Contractor,
    backends: BackendsDep,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
    page_token: Annotated[str, Query(max_length=200)] = "",
    user_id: UserQuery = None,
) -> m.WithdrawalsOut:
    """A contractor's own withdrawals; an admin names the contractor with `userId`."""
    reply = await backends.payments.list_withdrawals(
        pay_pb.ListWithdrawalsRequest(
            user_id=_whose(principal, user_id),
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
    )
    return m.WithdrawalsOut(
        withdrawals=[pc.withdrawal_to_http(w) for w in reply.withdrawals],
        next_page_token=reply.next_page_token or None,
    )


@router.get(
    "/withdrawals/{withdrawal_id}",
    response_model=m.WithdrawalOut,
    summary="One withdrawal and where it stands",
    responses=error_responses(401, 403, 404, 503),
)
async def get_withdrawal(
    withdrawal_id: Annotated[str, Path(min_length=1, max_length=200)],
    principal: Contractor,
    backends: BackendsDep,
) -> m.WithdrawalOut:
    """The owner's (or, for an admin, anyone's) withdrawal; another user's is 404."""
    reply = await backends.payments.get_withdrawal(
        pay_pb.GetWithdrawalRequest(withdrawal_id=withdrawal_id)
    )
    return pc.withdrawal_to_http(reply.withdrawal)
