"""The per-call floor of the platform's gRPC plumbing (issue 13, round 15): a client looks up a
call's signed metadata once per minter, actor and trace context for as long as its tokens are
handed out (ServiceClient._call_metadata, TokenMinter.signed), and a server verifies the tokens of
a call it verified before with one look-up (ServiceAuthenticator.authenticate). Counted in Python
calls of the platform's own code, and shown still refusing what it refused: an expired or forged
token, a caller the access policy does not allow; still sending each call a token with half its
life left, its own actor's assertion and its own trace context."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import jwt
import pytest
from opentelemetry import context as otel_context

from hirepay_dev.procs import ensure_service_token_secret
from hirepay_platform import identity, tracing
from hirepay_platform.client import ServiceClient
from hirepay_platform.identity import ACTOR_HEADER, SERVICE_TOKEN_HEADER, AccessPolicy, Actor
from tests.support.python_calls import entered, of_package

_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()  # (PyJWT checks `iat` on the real clock)

    def __call__(self) -> float:
        return self.now


@contextmanager
def _platform_calls() -> Iterator[list[str]]:
    """The Python functions of hirepay_platform entered (or resumed) meanwhile, by name."""
    names: list[str] = []
    with entered() as seen:
        yield names
    names.extend(of_package(seen, "hirepay_platform"))


def _client(minter: identity.TokenMinter) -> tuple[ServiceClient, list[grpc.aio.Metadata], Any]:
    client = ServiceClient("wallet", "127.0.0.1:1", minter=minter)
    sent: list[grpc.aio.Metadata] = []

    async def method(request: Any, *, timeout: float, metadata: grpc.aio.Metadata) -> str:
        sent.append(metadata)
        return "ok"

    return client, sent, method


@contextmanager
def _acting_in_trace(actor: Actor | None, traceparent: str = _PARENT) -> Iterator[None]:
    identity.act_for(actor)
    attached = otel_context.attach(tracing.incoming_context([("traceparent", traceparent)]))
    try:
        yield
    finally:
        otel_context.detach(attached)
        identity.act_for(None)


async def test_a_clients_calls_of_one_request_look_their_metadata_up_once() -> None:
    minter = identity.TokenMinter("gateway", ensure_service_token_secret())
    client, sent, method = _client(minter)
    try:
        with _acting_in_trace(Actor("alice", "company")):
            await client.call(method, None)  # (the first call makes it)
            with _platform_calls() as entered:
                for _ in range(10):
                    await client.call(method, None)
        # call, _call_metadata: 2 (round 16: _counts_of's look-up made in `call`, outgoing_actor
        # the context variable's own method), was 4; 12 before round 15 (the minter's metadata,
        # service_token, actor_assertion and their caches, outgoing_context, _metadata_of,
        # _signer, the OK count's own function).
        assert len(entered) / 10 <= 2, sorted(set(entered))
        assert "service_token" not in entered and "outgoing_context" not in entered
        assert all(m is sent[0] for m in sent)
    finally:
        await client.close()


async def test_a_client_sends_a_new_token_once_the_kept_one_is_past_half_its_life() -> None:
    clock = _Clock()
    minter = identity.TokenMinter("gateway", ensure_service_token_secret(), clock=clock)
    client, sent, method = _client(minter)
    alice = Actor("alice", "company")
    seen: set[str] = set()
    try:
        with _acting_in_trace(alice):
            for _ in range(2 * identity.TOKEN_TTL_SECONDS):
                await client.call(method, None)
                items = list(sent[-1])
                assert [k for k, _ in items] == [SERVICE_TOKEN_HEADER, ACTOR_HEADER, "traceparent"]
                for _, token in items[:2]:
                    seen.add(token)
                    claims = jwt.decode(token, options={"verify_signature": False})
                    assert claims["exp"] - clock.now >= identity.TOKEN_TTL_SECONDS / 2
                # Exactly the tokens the minter hands out now, never older ones.
                assert items[0][1] == minter.service_token("wallet")
                assert items[1][1] == minter.actor_assertion("wallet", alice)
                clock.now += 1
        assert 4 <= len(seen) <= 12  # renewed about twice per TTL each, not minted per call
    finally:
        await client.close()


async def test_a_client_keeps_apart_actors_contexts_propagators_and_minters() -> None:
    secret = ensure_service_token_secret()
    edge, other = identity.TokenMinter("gateway", secret), identity.TokenMinter("jobs", secret)
    client, sent, method = _client(edge)
    alice, bob, anonymous = Actor("alice", "company"), Actor("bob", "company"), Actor()
    second = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01"
    try:
        for who, parent in [(alice, _PARENT), (bob, _PARENT), (anonymous, second), (alice, second)]:
            with _acting_in_trace(who, parent):
                await client.call(method, None)
                assert list(sent[-1]) == [
                    (SERVICE_TOKEN_HEADER, edge.service_token("wallet")),
                    (ACTOR_HEADER, edge.actor_assertion("wallet", who)),
                    ("traceparent", parent),
                ]
        await client.call(method, None)  # no actor, no trace
        assert list(sent[-1]) == [(SERVICE_TOKEN_HEADER, edge.service_token("wallet"))]
        client._minter = other  # another minter: its own tokens
        await client.call(method, None)
        assert list(sent[-1]) == [(SERVICE_TOKEN_HEADER, other.service_token("wallet"))]
    finally:
        await client.close()


def _authenticator(clock: _Clock, policy: AccessPolicy | None = None) -> Any:
    return identity.ServiceAuthenticator(
        "wallet", ensure_service_token_secret(), policy, clock=clock
    )


def _counting_decodes(server: Any) -> list[str]:
    decoded: list[str] = []
    decode: Callable[..., Any] = server._decode

    def counted(token: str, key: bytes, typ: str, required: Any) -> Any:
        decoded.append(typ)
        return decode(token, key, typ, required)

    server._decode = counted
    return decoded


def test_a_servers_calls_with_the_same_tokens_are_verified_once() -> None:
    clock = _Clock()
    server = _authenticator(clock)
    decoded = _counting_decodes(server)
    edge = identity.TokenMinter("gateway", ensure_service_token_secret(), clock=clock)
    metadata = edge.metadata("wallet", Actor("acme-1", "company"))
    for _ in range(5):
        assert server.authenticate(metadata, "GetAccount").user == Actor("acme-1", "company")
    assert decoded == ["service", "actor"]  # was ten: each token's cache, on every call
    alone = metadata[:1]
    for _ in range(3):
        assert server.authenticate(alone, "GetAccount").actor is None
    assert decoded == ["service", "actor", "service"]


def test_a_remembered_call_is_refused_once_a_token_expires() -> None:
    clock = _Clock()
    server = _authenticator(clock)
    edge = identity.TokenMinter("gateway", ensure_service_token_secret(), clock=clock)
    metadata = edge.metadata("wallet", Actor("acme-1", "company"))
    assert server.authenticate(metadata, "GetAccount").user.user_id == "acme-1"
    clock.now += identity.TOKEN_TTL_SECONDS + identity.LEEWAY_SECONDS - 1
    assert server.authenticate(metadata, "GetAccount").user.user_id == "acme-1"
    clock.now += 1
    with pytest.raises(identity.Unauthenticated, match="expired"):
        server.authenticate(metadata, "GetAccount")
    # An actor assertion that expires before its service token: the pair is refused then.
    clock = _Clock()
    server = _authenticator(clock)
    service = identity.TokenMinter("gateway", ensure_service_token_secret(), clock=clock)
    short = identity.TokenMinter("gateway", ensure_service_token_secret(), ttl=10, clock=clock)
    pair = [
        (SERVICE_TOKEN_HEADER, service.service_token("wallet")),
        (ACTOR_HEADER, short.actor_assertion("wallet", Actor("b", "c"))),
    ]
    assert server.authenticate(pair, "GetAccount").user.user_id == "b"
    clock.now += 10 + identity.LEEWAY_SECONDS
    with pytest.raises(identity.Unauthenticated, match="actor token"):
        server.authenticate(pair, "GetAccount")
    assert server.authenticate(pair[:1], "GetAccount").actor is None  # (still good alone)


def test_a_remembered_call_still_needs_its_exact_tokens_and_the_policy() -> None:
    clock = _Clock()
    server = _authenticator(clock, AccessPolicy.of({"gateway"}, {"Transfer": {"jobs"}}))
    edge = identity.TokenMinter("gateway", ensure_service_token_secret(), clock=clock)
    metadata = edge.metadata("wallet", Actor("acme-1", "company"))
    assert server.authenticate(metadata, "GetAccount").service == "gateway"
    with pytest.raises(identity.CallerNotAllowed):
        server.authenticate(metadata, "Transfer")  # policy on every call, remembered or not
    service, assertion = metadata[0][1], metadata[1][1]
    tampered = assertion[:-2] + ("AA" if assertion[-2:] != "AA" else "BB")
    forged = identity.TokenMinter(
        "gateway", "a-different-deployment-secret-0123456789abcdef", clock=clock
    ).actor_assertion("wallet", Actor("acme-1", "admin"))
    for bad in (tampered, forged, service):  # (a service token never passes as an assertion)
        with pytest.raises(identity.Unauthenticated):
            server.authenticate(
                [(SERVICE_TOKEN_HEADER, service), (ACTOR_HEADER, bad)], "GetAccount"
            )
    with pytest.raises(identity.Unauthenticated):  # two service tokens, one of them remembered
        server.authenticate(
            [(SERVICE_TOKEN_HEADER, service), (SERVICE_TOKEN_HEADER, service)], "GetAccount"
        )
    with pytest.raises(identity.Unauthenticated):  # two assertions, one of them remembered
        server.authenticate([*metadata, (ACTOR_HEADER, assertion)], "GetAccount")


class _Context:
    """What the platform's wrapper asks of grpc.aio's servicer context on a call that succeeds."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


async def test_a_servers_wrapper_of_a_call_from_a_known_caller_is_its_own_few_calls() -> None:
    from hirepay_platform.server import PlatformInterceptor

    secret = ensure_service_token_secret()
    authenticator = identity.ServiceAuthenticator("wallet", secret)
    platform = PlatformInterceptor("floorwallet", authenticator, carry_context=True)
    seen: list[identity.Caller] = []

    async def inner(request: Any, context: Any) -> str:
        seen.append(identity.current_caller())
        return "ok"

    wrapper = platform._wrap_unary(inner, "GetAccount", screened=True)
    edge = identity.TokenMinter("gateway", secret)
    context = _Context(
        [*edge.metadata("wallet", Actor("alice", "company")), ("traceparent", _PARENT)]
    )
    assert await wrapper(object(), context) == "ok"
    with _platform_calls() as entered:
        for _ in range(10):
            assert await wrapper(object(), context) == "ok"
    # wrapper, incoming_context (+ its list), authenticate, _call_tokens, current_caller (the
    # servicer's), the latency histogram's update, note_activity: 8, was 15 (each token's
    # _decode and its cache look-up, the caller set and reset through functions of their own,
    # the observer's call around the count and the latency).
    assert len(entered) / 10 <= 8, entered[:20]
    assert "_decode" not in entered
    assert all(caller.user == Actor("alice", "company") for caller in seen)
    with pytest.raises(identity.Unauthenticated):
        identity.current_caller()  # reset once the call is over
