"""The admin API under `/_sandbox/` (JSON, no auth) that tests use to arm faults, settle
payments and payouts, inspect webhook deliveries, move the clock and reset state."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from stripe_sandbox.errors import StripeAPIError
from stripe_sandbox.faults import FAULT_SPEC
from stripe_sandbox.resources import checkout, connect, payment_intents
from stripe_sandbox.runtime import Sandbox
from stripe_sandbox.store import StripeObject


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SettleIntent(_Body):
    outcome: Literal["succeeded", "failed"] = "succeeded"
    failure_code: str | None = None
    failure_message: str | None = None


class AuthenticateIntent(_Body):
    outcome: Literal["succeeded", "failed"] = "succeeded"


class SettlePayout(_Body):
    outcome: Literal["paid", "failed"] = "paid"
    failure_code: str | None = None


class AdvanceClock(_Body):
    seconds: float = Field(ge=0)


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _problem(status: int, message: str, detail: Any = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message}
    if detail is not None:
        error["detail"] = detail
    return JSONResponse({"error": error}, status_code=status)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return await request.json()


Body = TypeVar("Body", bound=BaseModel)


async def _parse(request: Request, model: type[Body]) -> Body:
    return model.model_validate(await _json(request))


def _find(sb: Sandbox, kind: str, object_id: str) -> StripeObject | None:
    return sb.store.objects.get(kind, {}).get(object_id)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def reset(request: Request) -> JSONResponse:
    await _sandbox(request).reset()
    return JSONResponse({"reset": True})


async def list_faults(request: Request) -> JSONResponse:
    return JSONResponse({"faults": _sandbox(request).faults.describe()})


async def add_fault(request: Request) -> JSONResponse:
    try:
        spec = FAULT_SPEC.validate_python(await _json(request))
    except ValidationError as error:
        return _problem(400, "Invalid fault.", error.errors(include_url=False))
    fault = _sandbox(request).faults.add(spec)
    return JSONResponse(fault.describe(), status_code=201)


async def clear_faults(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    async with sb.store.lock:
        sb.faults.clear()
        released = sb.webhooks.release_held()
    return JSONResponse({"cleared": True, "released_webhooks": released})


async def delete_fault(request: Request) -> JSONResponse:
    if not _sandbox(request).faults.remove(request.path_params["fault_id"]):
        return _problem(404, "No such fault.")
    return JSONResponse({"deleted": True})


async def deliveries(request: Request) -> JSONResponse:
    query = request.query_params
    items = _sandbox(request).webhooks.describe(query.get("event_id"), query.get("type"))
    return JSONResponse({"deliveries": items})


async def webhook_backlog(request: Request) -> JSONResponse:
    """Deliveries by status and how many wait in the schedule: is the sender keeping up?"""
    return JSONResponse(_sandbox(request).webhooks.backlog())


async def flush_webhooks(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    async with sb.store.lock:
        released = sb.webhooks.flush()
    return JSONResponse({"released": released})


async def webhook_endpoints(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    items = [
        {**endpoint, "secret": sb.store.meta(endpoint["id"])["secret"]}
        for endpoint in sb.store.all("webhook_endpoint")
    ]
    return JSONResponse({"endpoints": items})


async def settle_intent(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    body = await _parse(request, SettleIntent)
    async with sb.store.lock:
        pi = _find(sb, "payment_intent", request.path_params["intent"])
        if pi is None:
            return _problem(404, "No such payment_intent.")
        try:
            payment_intents.settle(
                sb, None, pi, body.outcome, body.failure_code, body.failure_message
            )
        except StripeAPIError as error:
            return _problem(409, error.message)
        return JSONResponse(pi)


async def authenticate_intent(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    body = await _parse(request, AuthenticateIntent)
    async with sb.store.lock:
        pi = _find(sb, "payment_intent", request.path_params["intent"])
        if pi is None:
            return _problem(404, "No such payment_intent.")
        try:
            payment_intents.authenticate(sb, None, pi, approve=body.outcome == "succeeded")
        except StripeAPIError as error:
            return _problem(409, error.message)
        return JSONResponse(pi)


async def settle_payout(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    body = await _parse(request, SettlePayout)
    async with sb.store.lock:
        payout = _find(sb, "payout", request.path_params["payout"])
        if payout is None:
            return _problem(404, "No such payout.")
        try:
            connect.settle_payout(sb, payout, body.outcome, body.failure_code)
        except StripeAPIError as error:
            return _problem(409, error.message)
        return JSONResponse(payout)


async def advance_clock(request: Request) -> JSONResponse:
    sb = _sandbox(request)
    body = await _parse(request, AdvanceClock)
    async with sb.store.lock:
        sb.store.clock_offset += body.seconds
        checkout.expire_due(sb)
        return JSONResponse({"now": sb.store.now(), "offset": sb.store.clock_offset})


def _guard(endpoint: Any) -> Any:
    """Answer malformed admin bodies with 400 instead of a server error."""

    async def guarded(request: Request) -> JSONResponse:
        try:
            response: JSONResponse = await endpoint(request)
        except ValidationError as error:
            return _problem(400, "Invalid request body.", error.errors(include_url=False))
        except ValueError as error:  # malformed JSON
            return _problem(400, f"Invalid JSON: {error}")
        return response

    guarded.__name__ = endpoint.__name__
    return guarded


def routes() -> list[BaseRoute]:
    table: list[tuple[str, str, Any]] = [
        ("GET", "/_sandbox/health", health),
        ("POST", "/_sandbox/reset", reset),
        ("GET", "/_sandbox/faults", list_faults),
        ("POST", "/_sandbox/faults", add_fault),
        ("DELETE", "/_sandbox/faults", clear_faults),
        ("DELETE", "/_sandbox/faults/{fault_id}", delete_fault),
        ("GET", "/_sandbox/webhooks/deliveries", deliveries),
        ("GET", "/_sandbox/webhooks/backlog", webhook_backlog),
        ("POST", "/_sandbox/webhooks/flush", flush_webhooks),
        ("GET", "/_sandbox/webhooks/endpoints", webhook_endpoints),
        ("POST", "/_sandbox/payment_intents/{intent}/settle", settle_intent),
        ("POST", "/_sandbox/payment_intents/{intent}/authenticate", authenticate_intent),
        ("POST", "/_sandbox/payouts/{payout}/settle", settle_payout),
        ("POST", "/_sandbox/clock/advance", advance_clock),
    ]
    return [Route(path, _guard(endpoint), methods=[method]) for method, path, endpoint in table]
