"""The admin API under `/_sandbox/` (JSON, no auth) that tests use to arm faults, settle
payments and payouts, inspect webhook deliveries, move the clock and reset state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from sandbox_kit.admin import AdminBody, AdvanceClock, common_routes, parse, problem
from sandbox_kit.faults import FaultRegistry
from sandbox_kit.webhooks import WebhookDispatcher
from stripe_sandbox.errors import StripeAPIError
from stripe_sandbox.faults import FAULT_SPEC
from stripe_sandbox.resources import checkout, connect, disputes, payment_intents, refunds
from stripe_sandbox.runtime import Sandbox
from stripe_sandbox.store import StripeObject


class SettleIntent(AdminBody):
    outcome: Literal["succeeded", "failed"] = "succeeded"
    failure_code: str | None = None
    failure_message: str | None = None


class AuthenticateIntent(AdminBody):
    outcome: Literal["succeeded", "failed"] = "succeeded"


class OpenDispute(AdminBody):
    reason: str = "fraudulent"
    inquiry: bool = False
    # The account settles in another currency (e.g. "eur"): the dispute's balance transactions
    # are in it, the amount converted at `exchange_rate`, the fee charged in it.
    settlement_currency: str | None = None
    exchange_rate: float | None = None


class FailRefund(AdminBody):
    failure_reason: str = "expired_or_canceled_card"  # one of refunds.FAILURE_REASONS


class CloseDispute(AdminBody):
    outcome: Literal["won", "lost", "warning_closed"] = "won"


class SettlePayout(AdminBody):
    outcome: Literal["paid", "failed"] = "paid"
    failure_code: str | None = None


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _find(sb: Sandbox, kind: str, object_id: str) -> StripeObject | None:
    return sb.store.objects.get(kind, {}).get(object_id)


async def webhook_endpoints(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    items = [
        {**endpoint, "secret": sb.store.meta(endpoint["id"])["secret"]}
        for endpoint in sb.store.all("webhook_endpoint")
    ]
    return JSONResponse({"endpoints": items})


async def settle_intent(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    body = await parse(request, SettleIntent)
    async with sb.store.lock:
        pi = _find(sb, "payment_intent", request.path_params["intent"])
        if pi is None:
            return problem(404, "No such payment_intent.")
        try:
            payment_intents.settle(
                sb, None, pi, body.outcome, body.failure_code, body.failure_message
            )
        except StripeAPIError as error:
            return problem(409, error.message)
        return JSONResponse(pi)


async def authenticate_intent(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    body = await parse(request, AuthenticateIntent)
    async with sb.store.lock:
        pi = _find(sb, "payment_intent", request.path_params["intent"])
        if pi is None:
            return problem(404, "No such payment_intent.")
        try:
            payment_intents.authenticate(sb, None, pi, approve=body.outcome == "succeeded")
        except StripeAPIError as error:
            return problem(409, error.message)
        return JSONResponse(pi)


async def dispute_intent(request: Request) -> JSONResponse:
    """The cardholder disputes the intent's captured charge (as the dispute test cards do)."""
    sb = _sandbox(request)
    body = await parse(request, OpenDispute)
    async with sb.store.lock:
        pi = _find(sb, "payment_intent", request.path_params["intent"])
        if pi is None or not pi["latest_charge"]:
            return problem(404, "No such payment_intent with a charge.")
        charge = _find(sb, "charge", pi["latest_charge"])
        assert charge is not None
        try:
            settlement = None
            if body.settlement_currency:
                settlement = (body.settlement_currency, body.exchange_rate or 1.0)
            dispute = disputes.open_dispute(
                sb, None, charge, reason=body.reason, inquiry=body.inquiry, settlement=settlement
            )
        except StripeAPIError as error:
            return problem(409, error.message)
        return JSONResponse(dispute)


async def close_dispute(request: Request) -> JSONResponse:
    """The card network decides the dispute: won, lost (or an inquiry closed)."""
    sb = _sandbox(request)
    body = await parse(request, CloseDispute)
    async with sb.store.lock:
        dispute = _find(sb, "dispute", request.path_params["dispute"])
        if dispute is None:
            return problem(404, "No such dispute.")
        try:
            disputes.close(sb, None, dispute, body.outcome)
        except StripeAPIError as error:
            return problem(409, error.message)
        return JSONResponse(dispute)


async def fail_refund(request: Request) -> JSONResponse:
    """A succeeded refund fails since (the card closed: Stripe's succeeded -> failed)."""
    sb = _sandbox(request)
    body = await parse(request, FailRefund)
    async with sb.store.lock:
        refund = _find(sb, "refund", request.path_params["refund"])
        if refund is None:
            return problem(404, "No such refund.")
        try:
            refunds.fail(sb, None, refund, body.failure_reason)
        except StripeAPIError as error:
            return problem(409, error.message)
        return JSONResponse(refund)


async def settle_payout(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    body = await parse(request, SettlePayout)
    async with sb.store.lock:
        payout = _find(sb, "payout", request.path_params["payout"])
        if payout is None:
            return problem(404, "No such payout.")
        try:
            connect.settle_payout(sb, payout, body.outcome, body.failure_code)
        except StripeAPIError as error:
            return problem(409, error.message)
        return JSONResponse(payout)


async def advance_clock(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    body = await parse(request, AdvanceClock)
    async with sb.store.lock:
        sb.store.clock_offset += body.seconds
        checkout.expire_due(sb)
        return JSONResponse({"now": sb.store.now(), "offset": sb.store.clock_offset})


@dataclass
class AdminView:
    """The Stripe sandbox as the kit's admin routes see it (`sandbox_kit.admin.AdminTarget`): its
    faults and webhook sender guarded by the store's lock (the one every Stripe change holds),
    and its reset."""

    sandbox: Sandbox

    @property
    def lock(self) -> asyncio.Lock:
        return self.sandbox.store.lock

    @property
    def faults(self) -> FaultRegistry:
        return self.sandbox.faults

    @property
    def fault_specs(self) -> TypeAdapter[Any]:
        return FAULT_SPEC

    @property
    def webhooks(self) -> WebhookDispatcher:
        return self.sandbox.webhooks

    async def reset(self) -> None:
        await self.sandbox.reset()


def routes() -> list[BaseRoute]:
    """The kit's common admin routes (health, reset, faults, deliveries, backlog, flush) over
    `AdminView` (the app sets `state.kit`), and the Stripe sandbox's own."""
    return common_routes(
        [
            ("GET", "/_sandbox/webhooks/endpoints", webhook_endpoints),
            ("POST", "/_sandbox/payment_intents/{intent}/settle", settle_intent),
            ("POST", "/_sandbox/payment_intents/{intent}/authenticate", authenticate_intent),
            ("POST", "/_sandbox/payouts/{payout}/settle", settle_payout),
            ("POST", "/_sandbox/payment_intents/{intent}/dispute", dispute_intent),
            ("POST", "/_sandbox/disputes/{dispute}/close", close_dispute),
            ("POST", "/_sandbox/refunds/{refund}/fail", fail_refund),
            ("POST", "/_sandbox/clock/advance", advance_clock),
        ]
    )
