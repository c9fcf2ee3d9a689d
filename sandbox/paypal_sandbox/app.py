"""The PayPal sandbox application: the REST API, the approval page and the `/_sandbox/` admin
API (the kit's plus approving orders and settling pending captures), wrapped in the fault
middleware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from paypal_sandbox import api, disputes, hosted, money, orders, payments
from paypal_sandbox.config import PayPalConfig
from paypal_sandbox.errors import PayPalError
from paypal_sandbox.state import PayPalObject, PayPalState
from sandbox_kit.admin import AdminBody, parse, problem
from sandbox_kit.app import build_app


class ApproveOrder(AdminBody):
    funding: Literal["balance", "declined", "denied", "pending"] = "balance"


class SettleCapture(AdminBody):
    outcome: Literal["COMPLETED", "DECLINED"] = "COMPLETED"


class DashboardRefund(AdminBody):
    amount_minor: int | None = Field(default=None, gt=0)  # None: what is left of the capture
    note_to_payer: str | None = Field(default=None, max_length=255)


class OpenDispute(AdminBody):
    amount_minor: int | None = Field(default=None, gt=0)  # None: the whole capture
    reason: str = Field(default="MERCHANDISE_OR_SERVICE_NOT_RECEIVED", max_length=64)
    stage: Literal["INQUIRY", "CHARGEBACK", "PRE_ARBITRATION", "ARBITRATION"] = "CHARGEBACK"
    fee_minor: int = Field(default=0, ge=0)  # a chargeback fee PayPal debits the seller
    # More captures the same dispute is about (PayPal's several disputed transactions).
    also_captures: list[str] = Field(default_factory=list, max_length=10)
    # Each disputed capture's item's disputed amount (the capture, then `also_captures`):
    # PayPal's `disputed_transactions[].items[].dispute_amount`, the dispute's amount their sum.
    items_minor: list[int] | None = Field(default=None, max_length=11)


class UpdateDispute(AdminBody):
    status: Literal[
        "OPEN", "WAITING_FOR_SELLER_RESPONSE", "WAITING_FOR_BUYER_RESPONSE", "UNDER_REVIEW"
    ] = "UNDER_REVIEW"
    # The chargeback fee's new total (None: unchanged): the difference is debited or credited.
    fee_minor: int | None = Field(default=None, ge=0)


class ResolveDispute(AdminBody):
    outcome: Literal[
        "RESOLVED_BUYER_FAVOUR",
        "RESOLVED_SELLER_FAVOUR",
        "RESOLVED_WITH_PAYOUT",
        "CANCELED_BY_BUYER",
        "ACCEPTED",
        "DENIED",
    ] = "RESOLVED_BUYER_FAVOUR"
    amount_refunded_minor: int | None = Field(default=None, gt=0)  # None: all of it
    # The refund's currency (None: the dispute's); in another one nothing is released.
    amount_refunded_currency: str | None = Field(default=None, min_length=3, max_length=3)


async def approve_order(request: Request) -> JSONResponse:
    """Approve as the buyer would on the page, without the page."""
    st: PayPalState = request.app.state.sandbox
    body = await parse(request, ApproveOrder)
    async with st.kit.lock:
        order = st.objects.get("order", {}).get(request.path_params["order_id"])
        if order is None:
            return problem(404, "No such order.")
        st.base_url = st.kit.base_url(request)
        try:
            orders.approve(st, order, body.funding, st.base_url)
        except PayPalError as error:
            return problem(409, str(error))
        return JSONResponse(order)


B = TypeVar("B", bound=AdminBody)


async def _admin_step(
    request: Request,
    body_type: type[B],
    kind: str,
    step: Callable[[PayPalState, str, B], PayPalObject],
) -> JSONResponse:
    """One admin step on an existing object (`kind`, named by the route's only path parameter):
    404 if PayPal has no such object, PayPal's refusal as 409, else the object `step` answers."""
    st: PayPalState = request.app.state.sandbox
    body = await parse(request, body_type)
    [object_id] = request.path_params.values()
    async with st.kit.lock:
        if object_id not in st.objects.get(kind, {}):
            return problem(404, f"No such {kind}.")
        st.base_url = st.kit.base_url(request)
        try:
            return JSONResponse(step(st, object_id, body))
        except PayPalError as error:
            return problem(409, str(error))


async def settle_capture(request: Request) -> JSONResponse:
    return await _admin_step(
        request,
        SettleCapture,
        "capture",
        lambda st, capture_id, body: payments.settle_capture(st, capture_id, body.outcome),
    )


def _refund(st: PayPalState, capture_id: str, body: DashboardRefund) -> PayPalObject:
    asked: dict[str, Any] = {}
    if body.amount_minor is not None:
        asked["amount"] = money.amount(body.amount_minor, st.facts(capture_id)["currency"])
    if body.note_to_payer:
        asked["note_to_payer"] = body.note_to_payer
    return payments.refund_capture(st, capture_id, orders.Call(st.base_url, asked))


async def dashboard_refund(request: Request) -> JSONResponse:
    """A refund made in PayPal's dashboard (the merchant's Activity page), not through the API:
    the same refund, refusals and `PAYMENT.CAPTURE.REFUNDED` webhook as the API's, with no
    `custom_id` and no PayPal-Request-Id."""
    return await _admin_step(request, DashboardRefund, "capture", _refund)


async def open_dispute(request: Request) -> JSONResponse:
    """A buyer disputes a capture (with PayPal, or a chargeback at their card issuer): the
    dispute and its `CUSTOMER.DISPUTE.CREATED` webhook."""
    return await _admin_step(
        request,
        OpenDispute,
        "capture",
        lambda st, capture_id, body: disputes.open_dispute(
            st,
            capture_id,
            body.amount_minor,
            body.reason,
            body.stage,
            body.fee_minor,
            body.also_captures,
            body.items_minor,
        ),
    )


async def update_dispute(request: Request) -> JSONResponse:
    """A dispute moves on undecided (`CUSTOMER.DISPUTE.UPDATED`)."""
    return await _admin_step(
        request,
        UpdateDispute,
        "dispute",
        lambda st, dispute_id, body: disputes.update_dispute(
            st, dispute_id, body.status, body.fee_minor
        ),
    )


async def resolve_dispute(request: Request) -> JSONResponse:
    """PayPal decides a dispute (`CUSTOMER.DISPUTE.RESOLVED`)."""
    return await _admin_step(
        request,
        ResolveDispute,
        "dispute",
        lambda st, dispute_id, body: disputes.resolve_dispute(
            st,
            dispute_id,
            body.outcome,
            body.amount_refunded_minor,
            body.amount_refunded_currency,
        ),
    )


def create_app(config: PayPalConfig) -> ASGIApp:
    """Build the application for `config`; state lives in `app.state.sandbox`."""
    st = PayPalState.create(config)
    return build_app(
        st.kit,
        st,
        [*api.routes(), *hosted.routes()],
        admin_routes=[
            ("POST", "/_sandbox/orders/{order_id}/approve", approve_order),
            ("POST", "/_sandbox/captures/{capture_id}/settle", settle_capture),
            ("POST", "/_sandbox/captures/{capture_id}/refund", dashboard_refund),
            ("POST", "/_sandbox/captures/{capture_id}/dispute", open_dispute),
            ("POST", "/_sandbox/disputes/{dispute_id}/update", update_dispute),
            ("POST", "/_sandbox/disputes/{dispute_id}/resolve", resolve_dispute),
        ],
        api_prefixes=("/v1/", "/v2/"),
    )
