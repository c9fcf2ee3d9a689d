"""A client's calls made in new traces (at the edge every request is one; each posting reaches
jobs and payments in its own) reuse the signed tokens the client sent before for the same minter
and actor, adding only their own trace context (issue 13, round 16: ServiceClient._call_metadata
kept the tokens only with the trace context, so a new trace asked the minter again). Counted in
Python calls of the platform's own code per call, and shown still sending every call a token
with half its life left, its own actor's assertion and its own trace context."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import jwt
import pytest
from opentelemetry import context as otel_context

from hirepay_dev.procs import ensure_service_token_secret
from hirepay_platform import identity, tracing
from hirepay_platform.client import ServiceClient
from hirepay_platform.identity import ACTOR_HEADER, SERVICE_TOKEN_HEADER, Actor
from tests.support.python_calls import entered, of_package


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()  # (PyJWT checks `iat` on the real clock)

    def __call__(self) -> float:
        return self.now


def _traceparent(n: int) -> str:
    return f"00-{n + 1:032x}-b7ad6b7169203331-01"


@contextmanager
def _in_new_trace(n: int, actor: Actor | None) -> Iterator[str]:
    """A call's context as a service's handler runs in it: trace `n`, continued from a caller."""
    identity.act_for(actor)
    parent = _traceparent(n)
    attached = otel_context.attach(tracing.incoming_context([("traceparent", parent)]))
    try:
        yield parent
    finally:
        otel_context.detach(attached)
        identity.act_for(None)


def _client(minter: identity.TokenMinter) -> tuple[ServiceClient, list[grpc.aio.Metadata], Any]:
    client = ServiceClient("payments", "127.0.0.1:1", minter=minter)
    sent: list[grpc.aio.Metadata] = []

    async def method(request: Any, *, timeout: float, metadata: grpc.aio.Metadata) -> str:
        sent.append(metadata)
        return "ok"

    return client, sent, method


@pytest.mark.parametrize("actor", [None, Actor("alice", "company")])
async def test_a_call_in_a_new_trace_reuses_the_signed_tokens(actor: Actor | None) -> None:
    minter = identity.TokenMinter("gateway", ensure_service_token_secret())
    client, sent, method = _client(minter)
    calls = 20
    try:
        with _in_new_trace(0, actor):
            await client.call(method, None)  # (the first call signs)
        names: list[str] = []
        for n in range(1, calls + 1):
            with _in_new_trace(n, actor) as parent:
                with entered() as seen:
                    await client.call(method, None)
                names.extend(of_package(seen, "hirepay_platform"))
                assert list(sent[-1])[-1] == ("traceparent", parent)
        # call, _call_metadata, outgoing_context, _metadata_of, _SentMetadata.__init__: 5, was
        # 12 without an actor and 14 with one (_counts_of, outgoing_actor, the minter's signed,
        # _service_token, _actor_assertion and their caches' entry, the comprehension of
        # _SentMetadata and the _Ready kept).
        assert len(names) / calls <= 5, sorted(set(names))
        assert "signed" not in names and "entry" not in names
        tokens = {tuple(m)[:-1] for m in sent}
        assert len(tokens) == 1  # the same tokens, each call with its own trace context
    finally:
        await client.close()


async def test_calls_in_new_traces_send_a_new_token_once_the_kept_one_is_past_half_its_life() -> (
    None
):
    clock = _Clock()
    minter = identity.TokenMinter("gateway", ensure_service_token_secret(), clock=clock)
    client, sent, method = _client(minter)
    alice = Actor("alice", "company")
    seen: set[str] = set()
    try:
        for n in range(2 * identity.TOKEN_TTL_SECONDS):
            with _in_new_trace(n, alice) as parent:
                await client.call(method, None)
            items = list(sent[-1])
            assert items[2] == ("traceparent", parent)
            for _, token in items[:2]:
                seen.add(token)
                claims = jwt.decode(token, options={"verify_signature": False})
                assert claims["exp"] - clock.now >= identity.TOKEN_TTL_SECONDS / 2
            # Exactly the tokens the minter hands out now, never older ones.
            assert items[0] == (SERVICE_TOKEN_HEADER, minter.service_token("payments"))
            assert items[1] == (ACTOR_HEADER, minter.actor_assertion("payments", alice))
            clock.now += 1
        assert 4 <= len(seen) <= 12  # renewed about twice per TTL each, not minted per call
    finally:
        await client.close()


async def test_calls_in_new_traces_keep_apart_actors_and_minters() -> None:
    secret = ensure_service_token_secret()
    edge, other = identity.TokenMinter("gateway", secret), identity.TokenMinter("jobs", secret)
    client, sent, method = _client(edge)
    alice, bob, anonymous = Actor("alice", "company"), Actor("bob", "admin"), Actor()
    try:
        for n, who in enumerate([alice, bob, anonymous, alice, None, bob]):
            with _in_new_trace(n, who) as parent:
                await client.call(method, None)
            signed = [(SERVICE_TOKEN_HEADER, edge.service_token("payments"))]
            if who is not None:
                signed.append((ACTOR_HEADER, edge.actor_assertion("payments", who)))
            assert list(sent[-1]) == [*signed, ("traceparent", parent)]
        client._minter = other  # another minter: its own tokens
        with _in_new_trace(9, alice) as parent:
            await client.call(method, None)
        assert list(sent[-1]) == [
            (SERVICE_TOKEN_HEADER, other.service_token("payments")),
            (ACTOR_HEADER, other.actor_assertion("payments", alice)),
            ("traceparent", parent),
        ]
    finally:
        await client.close()
