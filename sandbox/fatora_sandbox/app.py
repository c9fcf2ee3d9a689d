"""The Fatora sandbox application: the payments API, the hosted checkout page and the
`/_sandbox/` admin API (the kit's plus settling a PENDING payment and the merchant's dashboard
refund), wrapped in the fault middleware."""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from fatora_sandbox import api, hosted
from fatora_sandbox.config import FatoraConfig
from fatora_sandbox.state import FatoraError, FatoraState
from sandbox_kit.admin import AdminBody, parse, problem
from sandbox_kit.app import build_app


class SettlePayment(AdminBody):
    outcome: Literal["SUCCESS", "FAILURE"] = "SUCCESS"


async def settle_payment(request: Request) -> JSONResponse:
    st: FatoraState = request.app.state.sandbox
    body = await parse(request, SettlePayment)
    async with st.kit.lock:
        payment = st.payments.get(st.by_order.get(request.path_params["order_id"], ""))
        if payment is None:
            return problem(404, "No such order.")
        if payment["payment_status"] != "PENDING":
            return problem(409, f"The payment is {payment['payment_status']}, not PENDING.")
        description = (
            "Transaction Successful - Approved"
            if body.outcome == "SUCCESS"
            else "Transaction Declined - Timed out"
        )
        st.settle(payment, body.outcome, description)
        return JSONResponse(st.result(payment))


async def dashboard_refund(request: Request) -> JSONResponse:
    """The merchant refunds the order in Fatora's dashboard: the whole payment, once, as the
    API's refund does; Fatora documents no refund notification, so no webhook is sent (verify's
    `refund_status` is the only word of it)."""
    st: FatoraState = request.app.state.sandbox
    async with st.kit.lock:
        payment = st.payments.get(st.by_order.get(request.path_params["order_id"], ""))
        if payment is None:
            return problem(404, "No such order.")
        try:
            st.refund_whole(payment)
        except FatoraError as error:
            return problem(error.status, error.message)
        return JSONResponse(st.result(payment))


def create_app(config: FatoraConfig) -> ASGIApp:
    """Build the application for `config`; state lives in `app.state.sandbox`."""
    st = FatoraState.create(config)
    return build_app(
        st.kit,
        st,
        [*api.routes(), *hosted.routes()],
        admin_routes=[
            ("POST", "/_sandbox/orders/{order_id}/settle", settle_payment),
            ("POST", "/_sandbox/orders/{order_id}/refund", dashboard_refund),
        ],
        api_prefixes=("/v1/",),
    )
