"""The PayPal sandbox application: the REST API, the approval page and the `/_sandbox/` admin
API (the kit's plus approving orders and settling pending captures), wrapped in the fault
middleware."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from paypal_sandbox import api, disputes, hosted, money, orders, payments
from paypal_sandbox.config import PayPalConfig
from paypal_sandbox.errors import PayPalError
from paypal_sandbox.state import PayPalState
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


class UpdateDispute(AdminBody):
    status: Literal[
        "OPEN", "WAITING_FOR_SELLER_RESPONSE", "WAITING_FOR_BUYER_RESPONSE", "UNDER_REVIEW"
    ] = "UNDER_REVIEW"


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


async def settle_capture(request: Request) -> JSONResponse:
    st: PayPalState = request.app.state.sandbox
    body = await parse(request, SettleCapture)
    async with st.kit.lock:
        if request.path_params["capture_id"] not in st.objects.get("capture", {}):
            return problem(404, "No such capture.")
        st.base_url = st.kit.base_url(request)
        try:
            capture = payments.settle_capture(st, request.path_params["capture_id"], body.outcome)
        except PayPalError as error:
            return problem(409, str(error))
        return JSONResponse(capture)


async def dashboard_refund(request: Request) -> JSONResponse:
    """A refund made in PayPal's dashboard (the merchant's Activity page), not through the API:
    the same refund, refusals and `PAYMENT.CAPTURE.REFUNDED` webhook as the API's, with no
    `custom_id` and no PayPal-Request-Id."""
    st: PayPalState = request.app.state.sandbox
    body = await parse(request, DashboardRefund)
    capture_id = request.path_params["capture_id"]
    async with st.kit.lock:
        if capture_id not in st.objects.get("capture", {}):
            return problem(404, "No such capture.")
        st.base_url = st.kit.base_url(request)
        asked: dict[str, Any] = {}
        if body.amount_minor is not None:
            asked["amount"] = money.amount(body.amount_minor, st.facts(capture_id)["currency"])
        if body.note_to_payer:
            asked["note_to_payer"] = body.note_to_payer
        try:
            refund = payments.refund_capture(st, capture_id, orders.Call(st.base_url, asked))
        except PayPalError as error:
            return problem(409, str(error))
        return JSONResponse(refund)


async def open_dispute(request: Request) -> JSONResponse:
    """A buyer disputes a capture (with PayPal, or a chargeback at their card issuer): the
    dispute and its `CUSTOMER.DISPUTE.CREATED` webhook."""
    st: PayPalState = request.app.state.sandbox
    body = await parse(request, OpenDispute)
    async with st.kit.lock:
        if request.path_params["capture_id"] not in st.objects.get("capture", {}):
            return problem(404, "No such capture.")
        st.base_url = st.kit.base_url(request)
        try:
            made = disputes.open_dispute(
                st,
                request.path_params["capture_id"],
                body.amount_minor,
                body.reason,
                body.stage,
                body.fee_minor,
            )
        except PayPalError as error:
            return problem(409, str(error))
        return JSONResponse(made)


async def update_dispute(request: Request) -> JSONResponse:
    """A dispute moves on undecided (`CUSTOMER.DISPUTE.UPDATED`)."""
    st: PayPalState = request.app.state.sandbox
    body = await parse(request, UpdateDispute)
    async with st.kit.lock:
        if request.path_params["dispute_id"] not in st.objects.get("dispute", {}):
            return problem(404, "No such dispute.")
        st.base_url = st.kit.base_url(request)
        try:
            found = disputes.update_dispute(st, request.path_params["dispute_id"], body.status)
        except PayPalError as error:
            return problem(409, str(error))
        return JSONResponse(found)


async def resolve_dispute(request: Request) -> JSONResponse:
    """PayPal decides a dispute (`CUSTOMER.DISPUTE.RESOLVED`)."""
    st: PayPalState = request.app.state.sandbox
    body = await parse(request, ResolveDispute)
    async with st.kit.lock:
        if request.path_params["dispute_id"] not in st.objects.get("dispute", {}):
            return problem(404, "No such dispute.")
        st.base_url = st.kit.base_url(request)
        try:
            found = disputes.resolve_dispute(
                st, request.path_params["dispute_id"], body.outcome, body.amount_refunded_minor
            )
        except PayPalError as error:
            return problem(409, str(error))
        return JSONResponse(found)


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
