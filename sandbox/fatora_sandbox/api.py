"""Fatora's payment REST API: `POST /v1/payments/checkout`, `/verify` and `/refund`, each
authenticated with the merchant's `api_key` header and answering `{"status": "SUCCESS",
"result": ...}` or `{"status": "ERROR", "error": "..."}`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fatora_sandbox.state import FatoraError, FatoraState
from sandbox_kit.api import Reply, json_object, perform

Operation = Callable[[FatoraState, dict[str, Any], str], dict[str, Any]]


def state_of(request: Request) -> FatoraState:
    st: FatoraState = request.app.state.sandbox
    return st


def endpoint(operation: Operation) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        st = state_of(request)
        if request.headers.get("api_key", "").strip() != st.config.api_key:
            return JSONResponse(FatoraError("Invalid API Key", 401).body(), status_code=401)
        raw = await request.body()
        body = json_object(raw)
        base = st.kit.base_url(request)

        def run() -> Reply:
            try:
                if body is None:
                    raise FatoraError("The request body must be a JSON object", keep=False)
                result = operation(st, body, base)
            except FatoraError as error:
                return Reply(error.status, json.dumps(error.body()).encode(), keep=error.keep)
            return Reply(200, json.dumps({"status": "SUCCESS", "result": result}).encode())

        return await perform(st.kit, request, run)

    handle.__name__ = getattr(operation, "__name__", "operation")
    return handle


def checkout(st: FatoraState, body: dict[str, Any], base: str) -> dict[str, Any]:
    return st.checkout(body, base)


def verify(st: FatoraState, body: dict[str, Any], base: str) -> dict[str, Any]:
    return st.verify(body)


def refund(st: FatoraState, body: dict[str, Any], base: str) -> dict[str, Any]:
    return st.refund(body)


async def unknown_url(request: Request) -> Response:
    return JSONResponse(FatoraError("Not found", 404).body(), status_code=404)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/payments/checkout", endpoint(checkout), methods=["POST"]),
        Route("/v1/payments/verify", endpoint(verify), methods=["POST"]),
        Route("/v1/payments/refund", endpoint(refund), methods=["POST"]),
        Route("/v1/{rest:path}", unknown_url, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
