"""The wallet over HTTP (issue 9 §6 and §8, ESC-11, SEC-2): a user's own balances and history, and
for admins the commission earned, every wallet and every transaction. Read-only: money moves on
the ledger only through jobs and payments.

Every user reads only their own wallet: the owner is the verified caller, never a parameter (and
the wallet checks it again). The admin reports answer 403 to anyone but an admin."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Query

from gateway.api import wallet_convert as wc
from gateway.api import wallet_models as m
from gateway.api.errors import error_responses, validation_failed
from gateway.entrypoints.deps import Admin, AnyUser, BackendsDep
from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as wallet_pb
from hirepay_platform.errors import ErrorKind, RemoteError

router = APIRouter()

Cursor = Annotated[
    str | None,
    Query(max_length=1000, description="`nextCursor` of the previous page; absent: the newest."),
]
Limit = Annotated[int, Query(ge=1, le=200, description="Entries per page.")]
Unit = Annotated[
    str | None,
    Query(
        pattern="^[A-Z_]{3,16}$",
        description="Only this unit: an ISO 4217 currency, COIN, JOB_CREDIT or CANDIDATE_CREDIT.",
        examples=["USD"],
    ),
]
Since = Annotated[
    datetime | None, Query(description="Only entries posted at or after this time (RFC 3339).")
]
Until = Annotated[datetime | None, Query(description="Only entries posted before this time.")]
Kind = Annotated[m.AccountKindName | None, Query(description="Only accounts of this kind.")]
Owner = Annotated[
    str | None, Query(min_length=1, max_length=128, description="Only this owner's accounts.")
]

# The wallet's field names -> the query parameters they came from.
_QUERY_NAMES = {"page_token": "cursor", "owner_id": "owner", "account_kind": "kind"}


T = TypeVar("T")


async def _asked(call: Awaitable[T], names: Mapping[str, str] = _QUERY_NAMES) -> T:
    """The wallet's answer; its field errors renamed to the query parameters (400)."""
    try:
        return await call
    except RemoteError as exc:
        if exc.kind is ErrorKind.INVALID_ARGUMENT and exc.reason == "VALIDATION_FAILED":
            fields = {names.get(k, k): v for k, v in exc.metadata.items()}
            raise validation_failed(fields) from None
        raise


def _page(cursor: str | None, limit: int) -> common_pb2.PageRequest:
    return common_pb2.PageRequest(page_size=limit, page_token=cursor or "")


@router.get(
    "/api/wallet",
    tags=["wallet"],
    response_model=m.WalletOut,
    summary="The caller's wallet: available and held, per currency, coins and credits",
    responses=error_responses(400, 401, 503, 504),
)
async def my_wallet(principal: AnyUser, backends: BackendsDep) -> m.WalletOut:
    """Every unit the caller holds: cash per currency, coins, job and candidate credits. `held`
    is reserved by pending holds (an offer paid in coins, a withdrawal on its way) and is not
    available until released."""
    request = wallet_pb.GetWalletSummaryRequest(owner_id=principal.user_id)
    reply = await _asked(backends.wallet.get_wallet_summary(request))
    return wc.wallet_to_http(principal.user_id, reply)


@router.get(
    "/api/wallet/transactions",
    tags=["wallet"],
    response_model=m.TransactionsOut,
    summary="The caller's wallet history, newest first (paged)",
    responses=error_responses(400, 401, 503, 504),
)
async def my_transactions(
    principal: AnyUser,
    backends: BackendsDep,
    cursor: Cursor = None,
    limit: Limit = 50,
    unit: Unit = None,
    since: Since = None,
    until: Until = None,
) -> m.TransactionsOut:
    """Entries of the caller's own accounts across every unit (or `unit`), each with its
    transaction, signed amount, counter-party kind and description. Pages are stable while new
    entries are posted: pass `nextCursor` as `cursor`; a cursor belongs to its filters."""
    request = wallet_pb.ListWalletTransactionsRequest(
        owner_id=principal.user_id,
        page=_page(cursor, limit),
        unit=unit or "",
        since=wc.timestamp(since, "since"),
        until=wc.timestamp(until, "until"),
    )
    reply = await _asked(backends.wallet.list_wallet_transactions(request))
    return wc.transactions_to_http(reply)


@router.get(
    "/api/admin/earnings",
    tags=["admin"],
    response_model=m.EarningsOut,
    response_model_by_alias=True,
    summary="Commission earnings by period and currency, net of refunds (admin)",
    responses=error_responses(400, 401, 403, 503, 504),
)
async def earnings(
    principal: Admin,
    backends: BackendsDep,
    since: Annotated[datetime, Query(alias="from", description="First instant counted.")],
    until: Annotated[datetime, Query(alias="to", description="First instant not counted.")],
    period: Annotated[Literal["day", "month"], Query(description="UTC days or months.")] = "day",
) -> m.EarningsOut:
    """What the platform's revenue accounts earned per UTC day or month and per unit (currencies
    and COIN): fees and commissions credited, refunded fees debited, and the net. At most 400
    periods per request."""
    request = wallet_pb.GetCommissionEarningsRequest(
        since=wc.timestamp(since, "from"),
        until=wc.timestamp(until, "to"),
        period=wc.PERIOD_TO_PROTO[period],
    )
    names = {"since": "from", "until": "to"}
    reply = await _asked(backends.wallet.get_commission_earnings(request), names)
    return wc.earnings_to_http(since, until, period, reply)


@router.get(
    "/api/admin/wallets",
    tags=["admin"],
    response_model=m.AdminWalletsOut,
    summary="Every wallet with its balance, filtered (admin)",
    responses=error_responses(400, 401, 403, 503, 504),
)
async def wallets(
    principal: Admin,
    backends: BackendsDep,
    kind: Kind = None,
    unit: Unit = None,
    owner: Owner = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> m.AdminWalletsOut:
    """Every account of the ledger (users' wallets, escrows, platform revenue, provider clearing,
    payouts, issuance) in opening order, with posted, held and available balances."""
    request = wallet_pb.ListBalancesRequest(
        kind=wc.KIND_TO_PROTO[kind] if kind else wallet_pb.ACCOUNT_KIND_UNSPECIFIED,
        unit=unit or "",
        owner_id=owner or "",
        page=_page(cursor, limit),
    )
    return wc.wallets_to_http(await _asked(backends.wallet.list_balances(request)))


@router.get(
    "/api/admin/transactions",
    tags=["admin"],
    response_model=m.TransactionsOut,
    summary="Every ledger entry, filtered, newest first (admin)",
    responses=error_responses(400, 401, 403, 503, 504),
)
async def transactions(
    principal: Admin,
    backends: BackendsDep,
    owner: Owner = None,
    unit: Unit = None,
    kind: Kind = None,
    since: Since = None,
    until: Until = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> m.TransactionsOut:
    """Entries of every account, or of one owner, unit, account kind or time window."""
    request = wallet_pb.ListTransactionsRequest(
        owner_id=owner or "",
        unit=unit or "",
        account_kind=wc.KIND_TO_PROTO[kind] if kind else wallet_pb.ACCOUNT_KIND_UNSPECIFIED,
        since=wc.timestamp(since, "since"),
        until=wc.timestamp(until, "until"),
        page=_page(cursor, limit),
    )
    return wc.transactions_to_http(await _asked(backends.wallet.list_transactions(request)))
