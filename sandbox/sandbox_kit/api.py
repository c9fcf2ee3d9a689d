"""Running one provider API call the way every sandbox does: idempotency key, slowness faults,
the state lock, and never a crash on the wire."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox_kit.faults import wait_for_disconnect
from sandbox_kit.idempotency import IdempotencyConflict, SavedResponse, fingerprint
from sandbox_kit.runtime import Kit

log = logging.getLogger("sandbox_kit.api")


def json_object(raw: bytes) -> dict[str, Any] | None:
    """A JSON request body as a dict: `{}` when empty, None when it is not a JSON object."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


@dataclass
class Reply:
    """A provider answer; `keep` says whether an idempotent request saves it for replay."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    keep: bool = True
    media_type: str | None = "application/json"

    def response(self, extra: dict[str, str] | None = None) -> Response:
        return Response(
            self.body,
            status_code=self.status,
            media_type=self.media_type if self.body else None,
            headers={**self.headers, **(extra or {})},
        )


@dataclass(frozen=True)
class IdempotentRequest:
    """An idempotency key as the provider scopes it, and how the provider words replays and
    conflicts."""

    scope: str
    key: str
    conflict: Callable[[IdempotencyConflict], Reply]
    replay_headers: Callable[[SavedResponse], dict[str, str]] = lambda saved: {}
    strict: bool = True  # False: a different request under a used key replays the first answer
    replay_status: Callable[[int], int] = lambda status: status  # PayPal answers replays 200


async def perform(
    kit: Kit,
    request: Request,
    run: Callable[[], Reply],
    idempotent: IdempotentRequest | None = None,
    body: bytes = b"",
) -> Response:
    """Run `run()` under the state lock with the idempotency and slowness faults applied."""
    method, path = request.method, request.url.path
    if idempotent is not None:
        try:
            saved = kit.idempotency.begin(
                idempotent.scope,
                idempotent.key,
                fingerprint(method, path, body),
                strict=idempotent.strict,
            )
        except IdempotencyConflict as conflict:
            return idempotent.conflict(conflict).response()
        if saved is not None:
            return Response(
                saved.body,
                status_code=idempotent.replay_status(saved.status),
                headers={**saved.headers, **idempotent.replay_headers(saved)},
            )

    kept: SavedResponse | None = None
    try:
        latency, hang = kit.faults.take_slowness(method, path)
        if latency:
            await asyncio.sleep(latency)
        if hang is not None and await wait_for_disconnect(request.receive, hang):
            log.info("timeout fault: client gave up on %s %s; nothing done", method, path)
            return Response(b"", status_code=499)  # nobody is listening any more
        async with kit.lock:
            try:
                reply = run()
            except Exception:
                log.exception("unexpected error in %s %s", method, path)
                error = kit.render_error(500, "Unexpected sandbox error.")
                reply = Reply(500, error.body, dict(error.headers), keep=False)
        if reply.keep and reply.status < 500:
            headers = dict(reply.headers)
            if reply.body and reply.media_type:
                headers["content-type"] = reply.media_type
            kept = SavedResponse(reply.status, reply.body, headers)
        return reply.response()
    finally:
        if idempotent is not None:
            kit.idempotency.finish(idempotent.scope, idempotent.key, kept)
