"""The PayPal sandbox application: the REST API, the approval page and the `/_sandbox/` admin
API (the kit's plus approving orders and settling pending captures), wrapped in the fault
middleware."""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from paypal_sandbox import api, hosted, orders, payments
from paypal_sandbox.config import PayPalConfig
from paypal_sandbox.errors import PayPalError
from paypal_sandbox.state import PayPalState
from sandbox_kit.admin import AdminBody, parse, problem
from sandbox_kit.app import build_app


class ApproveOrder(AdminBody):
    funding: Literal["balance", "declined", "denied", "pending"] = "balance"


class SettleCapture(AdminBody):
    outcome: Literal["COMPLETED", "DECLINED"] = "COMPLETED"


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
        ],
        api_prefixes=("/v1/", "/v2/"),
    )
