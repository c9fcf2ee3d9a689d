"""The Razorpay sandbox application: the REST API, the hosted checkout and mock bank pages and
the `/_sandbox/` admin API (the kit's plus deciding a pending payment without the page),
wrapped in the fault middleware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from razorpay_sandbox import api, disputes, hosted, resources
from razorpay_sandbox.config import RazorpayConfig
from razorpay_sandbox.errors import RazorpayError
from razorpay_sandbox.state import Entity, RazorpayState
from sandbox_kit.admin import AdminBody, parse, problem
from sandbox_kit.app import build_app

AUTO_REFUND_SWEEP_SECONDS = 1.0


class DecidePayment(AdminBody):
    outcome: Literal["success", "failure"] = "success"


class DashboardRefund(AdminBody):
    amount: int | None = Field(default=None, gt=0)  # the smallest unit; None: what is left
    notes: dict[str, str] = Field(default_factory=dict)


class OpenDispute(AdminBody):
    amount: int | None = Field(default=None, gt=0)  # the smallest unit; None: the whole payment
    reason_code: str = Field(default="chargeback", max_length=64)
    phase: Literal["chargeback", "pre_arbitration", "arbitration", "retrieval", "fraud"] = (
        "chargeback"
    )
    # Razorpay's deduct at onset (DAO): the disputed amount is taken from the balance when the
    # dispute opens, given back if it is won.
    deduct_at_onset: bool = False
    # The dispute's fee (smallest unit), deducted with the disputed amount (at onset with DAO,
    # else when lost) and kept whatever the outcome.
    fee: int = Field(default=0, ge=0)


class StepDispute(AdminBody):
    to: Literal["under_review", "action_required", "won", "lost", "closed"]
    # Won or closed after a deduction: what the credit adjustment gives back (smallest unit;
    # None: the disputed amount deducted, the fee kept), less for a partial reversal.
    reversed_amount: int | None = Field(default=None, gt=0)


async def decide_payment(request: Request) -> JSONResponse:
    """Answer the mock bank page for a `created` (pending) payment."""
    st: RazorpayState = request.app.state.sandbox
    body = await parse(request, DecidePayment)
    async with st.kit.lock:
        payment = st.entities.get("payment", {}).get(request.path_params["payment_id"])
        if payment is None:
            return problem(404, "No such payment.")
        if payment["status"] != "created":
            return problem(409, f"The payment is {payment['status']}, not created.")
        hosted.decide(st, payment, body.outcome)
        return JSONResponse(payment)


B = TypeVar("B", bound=AdminBody)


async def _admin_step(
    request: Request,
    body_type: type[B],
    kind: str,
    step: Callable[[RazorpayState, str, B], Entity],
) -> JSONResponse:
    """One admin step on an existing entity (`kind`, named by the route's only path parameter):
    404 if Razorpay has no such entity, Razorpay's refusal as 409, else what `step` answers."""
    st: RazorpayState = request.app.state.sandbox
    body = await parse(request, body_type)
    [entity_id] = request.path_params.values()
    async with st.kit.lock:
        if entity_id not in st.entities.get(kind, {}):
            return problem(404, f"No such {kind}.")
        try:
            return JSONResponse(step(st, entity_id, body))
        except RazorpayError as error:
            return problem(409, error.description)


def _refund(st: RazorpayState, payment_id: str, body: DashboardRefund) -> Entity:
    asked: dict[str, object] = {"notes": body.notes}
    if body.amount is not None:
        asked["amount"] = body.amount
    return resources.refund(st, payment_id, asked)


async def dashboard_refund(request: Request) -> JSONResponse:
    """A refund made on Razorpay's dashboard, not through the API: the same refund, refusals
    and webhooks (`refund.created`, `refund.processed`) as the API's, with no notes of the
    merchant's integration (unless given) and no idempotency key."""
    return await _admin_step(request, DashboardRefund, "payment", _refund)


async def open_dispute(request: Request) -> JSONResponse:
    """The customer's bank disputes a captured payment (deducted at onset if asked): the
    dispute and its `payment.dispute.created` webhook."""
    return await _admin_step(
        request,
        OpenDispute,
        "payment",
        lambda st, payment_id, body: disputes.open_dispute(
            st,
            payment_id,
            body.amount,
            body.reason_code,
            body.phase,
            body.deduct_at_onset,
            body.fee,
        ),
    )


async def step_dispute(request: Request) -> JSONResponse:
    """A dispute moves on (contested, evidence asked again, won, lost, closed), with its
    `payment.dispute.*` webhook."""
    return await _admin_step(
        request,
        StepDispute,
        "dispute",
        lambda st, dispute_id, body: disputes.step(st, dispute_id, body.to, body.reversed_amount),
    )


def create_app(config: RazorpayConfig) -> ASGIApp:
    """Build the application for `config`; state lives in `app.state.sandbox`."""
    st = RazorpayState.create(config)
    st.kit.on_clock.append(lambda: resources.refund_uncaptured(st))
    return build_app(
        st.kit,
        st,
        [*api.routes(), *hosted.routes()],
        admin_routes=[
            ("POST", "/_sandbox/payments/{payment_id}/decide", decide_payment),
            ("POST", "/_sandbox/payments/{payment_id}/refund", dashboard_refund),
            ("POST", "/_sandbox/payments/{payment_id}/dispute", open_dispute),
            ("POST", "/_sandbox/disputes/{dispute_id}/step", step_dispute),
        ],
        api_prefixes=("/v1/",),
        sweeps=[(AUTO_REFUND_SWEEP_SECONDS, lambda: resources.refund_uncaptured(st))],
    )
