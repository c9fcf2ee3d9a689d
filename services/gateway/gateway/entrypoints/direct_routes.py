"""The operations every posting brings, answered without FastAPI's per-request machinery (issue 13):
create-with-payment, and the provider's webhooks relayed to payments.

FastAPI's routing, dependency solving, body reading and response handling were about half of the
gateway's CPU per posting. A direct answer runs the operation's own endpoint code on a request that
FastAPI would hand to that endpoint unchanged (well-formed JSON of its body model, a good token of
an allowed role); it declines any other request, which then takes FastAPI's route as before. So
every refusal (400, 401, 403, 413, ...) is still decided and worded in one place, the OpenAPI
schema is the routes' own, and the errors an endpoint raises are rendered by the same handlers
(error_handlers.HANDLERS). The edge middlewares (trace context, metrics, access log, security
headers, the input guard) run around both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.entrypoints.error_handlers import HANDLERS

DirectAnswer = Callable[..., Awaitable[Response | None]]

_JSON = (b"content-type", b"application/json")


class JsonAnswer(Response):
    """A JSON answer whose body and headers are bytes already: the answer, byte for byte, of
    `Response(body, status_code, headers, media_type="application/json")` with `raw_headers` its
    `headers` lowered and encoded, made without Response's rendering and header encoding (about
    15 Python calls per answer; issue 13). For a status with a body (not 1xx, 204 or 304)."""

    media_type = "application/json"

    def __init__(
        self, body: bytes, status_code: int = 200, raw_headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [*raw_headers, (b"content-length", b"%d" % len(body)), _JSON]


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """An operation answered directly: `answer(request, **params)` gives the response of a request
    it takes, None for one it declines. `endpoint` is the operation's FastAPI endpoint: its route
    gives the method and the path (its parameters filled in from `params`) and labels the metrics."""

    endpoint: Callable[..., Any]
    answer: DirectAnswer
    params: Mapping[str, str] = field(default_factory=dict)


class DirectRoutesMiddleware:
    """Pure ASGI: a request for an operation with a direct answer (its method, its exact path) is
    answered by it unless it declines; everything else goes on to FastAPI."""

    def __init__(
        self, app: ASGIApp, routes: Sequence[DirectRoute], api_routes: Iterable[BaseRoute]
    ) -> None:
        self.app = app
        self._routes = _by_target(routes, api_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = (
            self._routes.get((scope["method"], scope["path"]))
            if scope["type"] == "http" and not scope.get("root_path")
            else None
        )
        if direct is None:
            await self.app(scope, receive, send)
            return
        route, answer, params = direct
        request = Request(scope, receive, send)
        try:
            response = await answer(request, **params)
        except Exception as exc:
            handler = _handler_for(exc)
            if handler is None:
                raise  # unexpected: the edge middleware's last-resort 500, as behind FastAPI
            response = await handler(request, exc)
        if response is None:
            await self.app(scope, receive, send)
            return
        # As FastAPI's routing does: the route template labels the request's metrics and log.
        scope["route"] = route
        await response(scope, receive, send)


def _by_target(
    routes: Sequence[DirectRoute], api_routes: Iterable[BaseRoute]
) -> dict[tuple[str, str], tuple[APIRoute, DirectAnswer, Mapping[str, str]]]:
    """(method, path) -> the operation's route, its direct answer and the answer's parameters."""
    by_endpoint = {r.endpoint: r for r in api_routes if isinstance(r, APIRoute)}
    table: dict[tuple[str, str], tuple[APIRoute, DirectAnswer, Mapping[str, str]]] = {}
    for direct in routes:
        route = by_endpoint[direct.endpoint]
        (method,) = route.methods
        path = route.path_format.format(**direct.params)
        if "{" in path or (method, path) in table:
            raise ValueError(f"{method} {path}: a direct answer needs one exact path of its own")
        table[(method, path)] = (route, direct.answer, direct.params)
    return table


def _handler_for(exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The handler FastAPI would pick for `exc`: the nearest registered class in its MRO."""
    for kind in type(exc).__mro__:
        handler = HANDLERS.get(kind)
        if handler is not None:
            return handler
    return None
