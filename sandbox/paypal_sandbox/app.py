"""The PayPal sandbox application: the REST API, the approval page and the `/_sandbox/` admin
API (the kit's plus approving orders and settling pending captures), wrapped in the fault
middleware."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from paypal_sandbox import api, hosted, money, orders, payments
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
        ],
        api_prefixes=("/v1/", "/v2/"),
    )
