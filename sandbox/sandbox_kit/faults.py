"""Faults on demand: slow, failing, hanging or dropped API calls and lost, duplicated or
reordered webhooks, armed through the admin API by tests.

Network faults (`error`, `down` and the `*_after_commit` kinds) run in `FaultMiddleware`, outside
the provider's API: `error`/`down` mean nothing happened at the provider; a fault "after commit"
lets the operation take effect (and be saved for its idempotency key) and then loses or breaks the
answer. Slowness (`latency`, `timeout`) is applied by `api.perform` once the request holds its
idempotency key, so that a retry sent while the first attempt still hangs meets the key in flight.

A provider adds faults of its own (say, payouts that fail) by passing more pydantic models with a
`kind` literal to `fault_adapter` and reading them with `FaultRegistry.take`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox_kit import ids

log = logging.getLogger("sandbox_kit.faults")


class Fault(BaseModel):
    """Base of every fault: how many times it fires."""

    model_config = ConfigDict(extra="forbid")

    count: int | None = Field(default=None, ge=1, description="uses left; None: until cleared")


class ApiFault(Fault):
    path_prefix: str | None = Field(
        default=None,
        description="path prefix, `*` wildcards allowed: /v2/checkout/orders/*/capture",
    )
    method: str | None = Field(default=None, description="HTTP method, e.g. POST")


class LatencyFault(ApiFault):
    kind: Literal["latency"]
    ms: int = Field(ge=0)


class TimeoutFault(ApiFault):
    """Hang before doing anything; if the client gave up meanwhile nothing is done, else the
    request then runs normally (just late)."""

    kind: Literal["timeout"]
    seconds: float = Field(default=30.0, ge=0)


class ErrorFault(ApiFault):
    kind: Literal["error"]
    status: Literal[500, 502, 503, 504] = 500
    message: str | None = None


class DownFault(ApiFault):
    """Close the TCP connection without answering; nothing happens."""

    kind: Literal["down"]


class TimeoutAfterCommitFault(ApiFault):
    """Do the operation, then hold the answer for `seconds` and close without answering."""

    kind: Literal["timeout_after_commit"]
    seconds: float = Field(default=30.0, ge=0)


class DownAfterCommitFault(ApiFault):
    """Do the operation, then close the connection without answering."""

    kind: Literal["down_after_commit"]


class ErrorAfterCommitFault(ApiFault):
    """Do the operation, then answer a 5xx instead of its result."""

    kind: Literal["error_after_commit"]
    status: Literal[500, 502, 503, 504] = 500


class WebhookFault(Fault):
    event_type: str | None = Field(default=None, description="only events of this type (glob)")


class WebhookDropFault(WebhookFault):
    """The next events are never delivered (to any endpoint)."""

    kind: Literal["webhook_drop"]


class WebhookDuplicateFault(WebhookFault):
    """The next events are each delivered `times` times."""

    kind: Literal["webhook_duplicate"]
    times: int = Field(default=2, ge=2)


class WebhookReorderFault(WebhookFault):
    """Hold the next `count` events (or all until flushed), then deliver them newest first."""

    kind: Literal["webhook_reorder"]


COMMON_FAULTS: tuple[type[Fault], ...] = (
    LatencyFault,
    TimeoutFault,
    ErrorFault,
    DownFault,
    TimeoutAfterCommitFault,
    DownAfterCommitFault,
    ErrorAfterCommitFault,
    WebhookDropFault,
    WebhookDuplicateFault,
    WebhookReorderFault,
)

BEFORE_COMMIT = (ErrorFault, DownFault)
AFTER_COMMIT = (TimeoutAfterCommitFault, DownAfterCommitFault, ErrorAfterCommitFault)


def fault_adapter(*extra: type[Fault]) -> TypeAdapter[Any]:
    """A validator for `{"kind": ...}` bodies: the common faults plus a provider's own."""
    models = (*COMMON_FAULTS, *extra)
    union = Union[models]  # noqa: UP007 - a runtime-built union needs typing.Union
    return TypeAdapter(Annotated[union, Field(discriminator="kind")])


@dataclass
class ActiveFault:
    """An armed fault and how many more times it fires."""

    spec: Any
    id: str = field(default_factory=lambda: ids.new_id("flt"))
    remaining: int | None = None
    fired: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.spec.model_dump(exclude_none=True),
            "remaining": self.remaining,
            "fired": self.fired,
        }


class FaultRegistry:
    """The armed faults, in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[ActiveFault] = []

    def add(self, spec: Any) -> ActiveFault:
        fault = ActiveFault(spec=spec, remaining=spec.count)
        self._faults.append(fault)
        log.info("fault armed: %s", fault.describe())
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def remove(self, fault_id: str) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    def describe(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self._faults]

    def _fire(self, fault: ActiveFault) -> Any:
        fault.fired += 1
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        return fault.spec

    def take(
        self, kinds: type | tuple[type, ...], where: Callable[[Any], bool] | None = None
    ) -> Any:
        """Fire the first armed fault of one of `kinds` (that `where` accepts), or None."""
        if not self._faults:  # (none armed, as nearly always: nothing to look at)
            return None
        for fault in list(self._faults):
            if isinstance(fault.spec, kinds) and (where is None or where(fault.spec)):
                return self._fire(fault)
        return None

    def take_api(self, kinds: tuple[type, ...], method: str, path: str) -> Any | None:
        """Fire the first armed API fault of one of `kinds` that matches the request."""
        if not self._faults:
            return None
        return self.take(kinds, lambda spec: api_matches(spec, method, path))

    def take_slowness(self, method: str, path: str) -> tuple[float, float | None]:
        """(seconds of latency, seconds to hang or None) for a request about to run.

        Every matching latency fault fires and their delays add up; one timeout fault fires.
        """
        if not self._faults:
            return 0.0, None
        latency = 0.0
        for fault in list(self._faults):
            if isinstance(fault.spec, LatencyFault) and api_matches(fault.spec, method, path):
                latency += self._fire(fault).ms / 1000
        timeout = self.take_api((TimeoutFault,), method, path)
        return latency, timeout.seconds if timeout is not None else None

    def take_webhook(self, kind: type, event_type: str) -> Any | None:
        if not self._faults:
            return None
        return self.take(kind, lambda spec: _event_matches(spec, event_type))

    def reorder(self, event_type: str | None = None) -> ActiveFault | None:
        """The armed reorder fault for this event type, if any (the dispatcher counts held
        events itself)."""
        for fault in self._faults:
            if isinstance(fault.spec, WebhookReorderFault) and (
                event_type is None or _event_matches(fault.spec, event_type)
            ):
                return fault
        return None


def _event_matches(spec: WebhookFault, event_type: str) -> bool:
    return spec.event_type is None or fnmatch.fnmatchcase(event_type, spec.event_type)


def api_matches(spec: ApiFault, method: str, path: str) -> bool:
    if spec.method and spec.method.upper() != method.upper():
        return False
    if spec.path_prefix:
        pattern = spec.path_prefix if spec.path_prefix.endswith("*") else spec.path_prefix + "*"
        return fnmatch.fnmatchcase(path, pattern)
    return True


async def drop_connection(send: Send) -> None:
    """Close the client's TCP connection without an HTTP response.

    uvicorn (httptools or h11) hands the application the `send` of its request cycle, which holds the
    transport; an outer middleware receives it unwrapped. If that is not available (another
    server), start a response and fail it, which makes the server close the connection.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
        for _ in range(3):  # let the server notice the connection is gone
            await asyncio.sleep(0)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ConnectionAbortedError("sandbox fault: connection dropped")


async def wait_for_disconnect(receive: Receive, seconds: float) -> bool:
    """True if the client went away within `seconds`; unread request body is skipped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), timeout=left)
        except TimeoutError:
            return False
        if message["type"] == "http.disconnect":
            return True
    return False


@dataclass(frozen=True)
class ErrorReply:
    """A provider's answer to a server-side failure, as bytes on the wire."""

    body: bytes
    headers: Sequence[tuple[str, str]] = ()
    content_type: str = "application/json"


ErrorRenderer = Callable[[int, str | None], ErrorReply]
"""Renders the provider's 5xx body for a status and optional message."""


async def send_error(send: Send, status: int, reply: ErrorReply) -> None:
    headers = [
        (b"content-type", reply.content_type.encode()),
        (b"content-length", str(len(reply.body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in reply.headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


class FaultMiddleware:
    """Applies armed API faults to requests under `api_prefixes`; must wrap the app outermost."""

    def __init__(
        self,
        app: ASGIApp,
        registry: FaultRegistry,
        render_error: ErrorRenderer,
        api_prefixes: Sequence[str] = ("/v1/",),
    ) -> None:
        self.app = app
        self.registry = registry
        self.render_error = render_error
        self.api_prefixes = tuple(api_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.api_prefixes):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]

        before = self.registry.take_api(BEFORE_COMMIT, method, path)
        if before is not None:
            log.info("%s fault on %s %s", before.kind, method, path)
        if isinstance(before, ErrorFault):
            await send_error(send, before.status, self.render_error(before.status, before.message))
            return
        if isinstance(before, DownFault):
            await drop_connection(send)
            return

        after = self.registry.take_api(AFTER_COMMIT, method, path)
        if after is None:
            await self.app(scope, receive, send)
            return

        async def lose_answer(message: Message) -> None:
            """The operation's response never reaches the client."""

        await self.app(scope, receive, lose_answer)
        log.info("%s fault after %s %s committed", after.kind, method, path)
        if isinstance(after, ErrorAfterCommitFault):
            await send_error(send, after.status, self.render_error(after.status, None))
        elif isinstance(after, TimeoutAfterCommitFault):
            if not await wait_for_disconnect(receive, after.seconds):
                await drop_connection(send)
        else:
            await drop_connection(send)
