"""The server wrapper's trace context (tracing.attach_context/detach_context, the ContextVar's
own set and reset since grpc17) and its caller never outlive a call, whatever the call does, and
tokens picked inline are refused on every call whatever else was accepted before (rev17e).

Calls are run one after another in ONE task (as no grpc.aio task would run them: each RPC has
its own), so a context or caller left behind by any outcome (answered, a domain error, a crash,
cancelled, refused before the handler) would show in the next call and after the last one; and
many at once, each of its own trace, interleaved at every await."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

from hirepay_dev.procs import ensure_service_token_secret
from hirepay_platform import identity
from hirepay_platform.errors import HirepayError
from hirepay_platform.identity import Actor
from hirepay_platform.server import PlatformInterceptor


class _Context:
    """What the wrapper asks of grpc.aio's servicer context."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)
        self.status: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, trailing: Any) -> None:
        pass

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = code

    def set_details(self, details: str) -> None:
        pass

    def code(self) -> grpc.StatusCode | None:
        return self.status


def _traceparent(trace_id: int) -> str:
    return f"00-{trace_id:032x}-b7ad6b7169203331-01"


def _current_trace_id() -> int:
    return trace.get_current_span().get_span_context().trace_id


class _Refused(HirepayError):
    reason = "REFUSED"


async def _handler(request: str, context: Any) -> str:
    """Records the trace and caller it ran as; then does what `request` says."""
    context.seen = (_current_trace_id(), identity.current_caller().user)
    for _ in range(3):
        await asyncio.sleep(0)  # (other calls run meanwhile)
        assert (_current_trace_id(), identity.current_caller().user) == context.seen
    if request == "domain error":
        raise _Refused("refused")
    if request == "crash":
        raise RuntimeError("boom")
    if request == "cancelled":
        raise asyncio.CancelledError
    return "ok"


@pytest.fixture
def wrapper() -> Any:
    secret = ensure_service_token_secret()
    platform = PlatformInterceptor(
        "ctxwallet", identity.ServiceAuthenticator("wallet", secret), carry_context=True
    )
    return platform._wrap_unary(_handler, "GetAccount", screened=True)


def _metadata(trace_id: int, user: str) -> list[tuple[str, str]]:
    edge = identity.TokenMinter("gateway", ensure_service_token_secret())
    return [
        *edge.metadata("wallet", Actor(user, "company")),
        ("traceparent", _traceparent(trace_id)),
    ]


async def _outcome(wrapper: Any, request: str, context: _Context) -> Any:
    try:
        return await wrapper(request, context)
    except asyncio.CancelledError:
        return "cancelled"


async def test_no_outcome_leaves_its_trace_or_caller_to_the_next_call_in_the_task(
    wrapper: Any,
) -> None:
    outer = otel_context.get_current()
    wrong_audience = identity.TokenMinter("gateway", ensure_service_token_secret()).metadata(
        "payments", Actor("mallory", "company")
    )
    calls = [
        ("ok", _metadata(1, "u1"), "ok"),
        ("domain error", _metadata(2, "u2"), None),
        ("crash", _metadata(3, "u3"), None),
        ("cancelled", _metadata(4, "u4"), "cancelled"),
        ("ok", [*wrong_audience, ("traceparent", _traceparent(5))], None),  # refused first
        ("ok", _metadata(6, "u6"), "ok"),
    ]
    for round_ in range(2):
        for number, (request, metadata, expected) in enumerate(calls, start=1):
            context = _Context(metadata)
            assert await _outcome(wrapper, request, context) == expected, (round_, request)
            if number != 5:  # (the refused call never reached the handler)
                assert context.seen == (number, Actor(f"u{number}", "company"))  # type: ignore[attr-defined]
            else:
                assert context.status is grpc.StatusCode.UNAUTHENTICATED
                assert not hasattr(context, "seen")
            assert otel_context.get_current() is outer, (round_, request)
            with pytest.raises(identity.Unauthenticated):
                identity.current_caller()


async def test_concurrent_calls_each_run_in_their_own_trace_and_leave_none(wrapper: Any) -> None:
    outer = otel_context.get_current()
    rng = random.Random(17)
    requests = [rng.choice(["ok", "ok", "domain error", "crash", "cancelled"]) for _ in range(60)]
    contexts = [_Context(_metadata(1000 + n, f"u{n}")) for n in range(len(requests))]
    await asyncio.gather(
        *(_outcome(wrapper, r, c) for r, c in zip(requests, contexts, strict=True))
    )
    for n, context in enumerate(contexts):
        assert context.seen == (1000 + n, Actor(f"u{n}", "company"))  # type: ignore[attr-defined]
    assert otel_context.get_current() is outer


def test_tokens_are_refused_on_every_call_after_the_good_ones_were_remembered() -> None:
    """A call's good tokens remembered; then, in any order and any key case, a second service
    token or assertion, a token for another audience, one changed in a byte, or a binary token
    is refused each time it comes, and the good call is still accepted in between."""
    secret = ensure_service_token_secret()
    server = identity.ServiceAuthenticator("wallet", secret)
    edge = identity.TokenMinter("gateway", secret)
    token, assertion = edge.metadata("wallet", Actor("acme-1", "company"))
    other_token, other_assertion = edge.metadata("payments", Actor("acme-1", "company"))
    mallory = edge.metadata("wallet", Actor("mallory", "company"))
    flipped = token[1][:-3] + ("A" if token[1][-3] != "A" else "B") + token[1][-2:]
    bad: list[list[tuple[str, Any]]] = [
        [token, token, assertion],
        [token, assertion, assertion],
        [token, assertion, mallory[1]],
        [token, mallory[0], assertion],
        [other_token, assertion],
        [token, other_assertion],
        [(token[0], flipped), assertion],
        [(token[0], token[1].encode()), assertion],
        [(token[0].upper(), token[1]), (token[0].title(), token[1]), assertion],
        [assertion],
        [],
    ]
    rng = random.Random(13)
    assert server.authenticate([token, assertion], "GetAccount").user.user_id == "acme-1"
    for _ in range(200):
        metadata = list(rng.choice(bad))
        rng.shuffle(metadata)
        metadata.append(("traceparent", _traceparent(1)))
        with pytest.raises(identity.Unauthenticated):
            server.authenticate(metadata, "GetAccount")
        good = [token, assertion, ("user-agent", "grpc")]
        rng.shuffle(good)
        assert server.authenticate(good, "GetAccount").user.user_id == "acme-1"
