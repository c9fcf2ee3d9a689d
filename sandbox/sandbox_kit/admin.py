"""The provider-neutral admin API under `/_sandbox/` (JSON, no auth) that tests use: health,
reset, faults, webhook endpoints and deliveries, and the clock. Providers append their own
routes (settling pending payments and the like) with `json_route`.

The handlers read `request.app.state.kit`: a Kit, or (the Stripe sandbox, whose state predates
the kit) anything with the `AdminTarget` shape, which mounts `common_routes()` only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from sandbox_kit import ids
from sandbox_kit.faults import FaultRegistry
from sandbox_kit.runtime import Kit
from sandbox_kit.webhooks import Endpoint, WebhookDispatcher


class AdminBody(BaseModel):
    """Base of admin request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class AdvanceClock(AdminBody):
    seconds: float = Field(ge=0)


class NewEndpoint(AdminBody):
    url: str = Field(pattern=r"^https?://\S+$")
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    secret: str | None = None


Body = TypeVar("Body", bound=BaseModel)
Handler = Callable[[Request], Awaitable[JSONResponse]]


class AdminTarget(Protocol):
    """What the common admin routes use: faults, the webhook sender, the lock that guards both,
    and a full reset."""

    lock: asyncio.Lock
    faults: FaultRegistry
    fault_specs: TypeAdapter[Any]
    webhooks: WebhookDispatcher

    async def reset(self) -> None: ...


def kit_of(request: Request) -> Kit:
    kit: Kit = request.app.state.kit
    return kit


def target_of(request: Request) -> AdminTarget:
    target: AdminTarget = request.app.state.kit
    return target


def problem(status: int, message: str, detail: Any = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message}
    if detail is not None:
        error["detail"] = detail
    return JSONResponse({"error": error}, status_code=status)


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return await request.json()


async def parse(request: Request, model: type[Body]) -> Body:
    return model.model_validate(await read_json(request))


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def reset(request: Request) -> JSONResponse:
    await target_of(request).reset()
    return JSONResponse({"reset": True})


async def list_faults(request: Request) -> JSONResponse:
    return JSONResponse({"faults": target_of(request).faults.describe()})


async def add_fault(request: Request) -> JSONResponse:
    kit = target_of(request)
    try:
        spec = kit.fault_specs.validate_python(await read_json(request))
    except ValidationError as error:
        return problem(400, "Invalid fault.", error.errors(include_url=False))
    return JSONResponse(kit.faults.add(spec).describe(), status_code=201)


async def clear_faults(request: Request) -> JSONResponse:
    kit = target_of(request)
    async with kit.lock:
        kit.faults.clear()
        released = kit.webhooks.release_held()
    return JSONResponse({"cleared": True, "released_webhooks": released})


async def delete_fault(request: Request) -> JSONResponse:
    if not target_of(request).faults.remove(request.path_params["fault_id"]):
        return problem(404, "No such fault.")
    return JSONResponse({"deleted": True})


async def deliveries(request: Request) -> JSONResponse:
    query = request.query_params
    items = target_of(request).webhooks.describe(query.get("event_id"), query.get("type"))
    return JSONResponse({"deliveries": items})


async def webhook_backlog(request: Request) -> JSONResponse:
    """Deliveries by status and how many wait in the schedule: is the sender keeping up?"""
    return JSONResponse(target_of(request).webhooks.backlog())


async def flush_webhooks(request: Request) -> JSONResponse:
    kit = target_of(request)
    async with kit.lock:
        released = kit.webhooks.flush()
    return JSONResponse({"released": released})


async def list_endpoints(request: Request) -> JSONResponse:
    endpoints = kit_of(request).webhooks.endpoints.values()
    return JSONResponse({"endpoints": [e.describe() for e in endpoints]})


async def add_endpoint(request: Request) -> JSONResponse:
    kit = kit_of(request)
    body = await parse(request, NewEndpoint)
    secret = body.secret or kit.config.webhook_secret or ids.new_id("whsec", 32)
    async with kit.lock:
        endpoint = kit.webhooks.register(
            Endpoint(url=body.url, secret=secret, events=tuple(body.events), source="admin")
        )
    return JSONResponse(endpoint.describe(), status_code=201)


async def delete_endpoint(request: Request) -> JSONResponse:
    kit = kit_of(request)
    async with kit.lock:
        if not kit.webhooks.unregister(request.path_params["endpoint_id"]):
            return problem(404, "No such webhook endpoint.")
    return JSONResponse({"deleted": True})


async def advance_clock(request: Request) -> JSONResponse:
    kit = kit_of(request)
    body = await parse(request, AdvanceClock)
    async with kit.lock:
        kit.clock.advance(body.seconds)
        for hook in kit.on_clock:
            hook()
        return JSONResponse({"now": kit.clock.now(), "offset": kit.clock.offset})


def guard(endpoint: Handler) -> Handler:
    """Answer malformed admin bodies with 400 instead of a server error."""

    async def guarded(request: Request) -> JSONResponse:
        try:
            return await endpoint(request)
        except ValidationError as error:
            return problem(400, "Invalid request body.", error.errors(include_url=False))
        except ValueError as error:  # malformed JSON
            return problem(400, f"Invalid JSON: {error}")

    guarded.__name__ = endpoint.__name__
    return guarded


def json_route(method: str, path: str, endpoint: Handler) -> Route:
    """An admin route with malformed bodies answered 400."""
    return Route(path, guard(endpoint), methods=[method])


COMMON: list[tuple[str, str, Handler]] = [
    ("GET", "/_sandbox/health", health),
    ("POST", "/_sandbox/reset", reset),
    ("GET", "/_sandbox/faults", list_faults),
    ("POST", "/_sandbox/faults", add_fault),
    ("DELETE", "/_sandbox/faults", clear_faults),
    ("DELETE", "/_sandbox/faults/{fault_id}", delete_fault),
    ("GET", "/_sandbox/webhooks/deliveries", deliveries),
    ("GET", "/_sandbox/webhooks/backlog", webhook_backlog),
    ("POST", "/_sandbox/webhooks/flush", flush_webhooks),
]


def common_routes(extra: Sequence[tuple[str, str, Handler]] = ()) -> list[BaseRoute]:
    """Health, reset, faults and the webhook sender's deliveries, backlog and flush (any
    `AdminTarget`), then `extra`."""
    return [json_route(method, path, endpoint) for method, path, endpoint in [*COMMON, *extra]]


def routes(extra: Sequence[tuple[str, str, Handler]] = ()) -> list[BaseRoute]:
    table: list[tuple[str, str, Handler]] = [
        *COMMON,
        ("GET", "/_sandbox/webhooks/endpoints", list_endpoints),
        ("POST", "/_sandbox/webhooks/endpoints", add_endpoint),
        ("DELETE", "/_sandbox/webhooks/endpoints/{endpoint_id}", delete_endpoint),
        ("POST", "/_sandbox/clock/advance", advance_clock),
        *extra,
    ]
    return [json_route(method, path, endpoint) for method, path, endpoint in table]
