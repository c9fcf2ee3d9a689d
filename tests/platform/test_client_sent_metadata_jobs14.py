"""The metadata a client call is sent with reads exactly as a grpc.aio.Metadata of the same
items, and grpc.aio's per-call handling of it (`metadata or Metadata()`, the call's `len` and
its copy into a tuple) is a few Python calls instead of one per item (issue 13: at the edge every
request is a new trace, so every call makes its metadata)."""

from __future__ import annotations

import pstats
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc.aio._channel import UnaryUnaryMultiCallable

from hirepay_platform.client import ServiceClient
from tests.support.python_calls import profiled

TOKEN = ("x-hirepay-service-token", "eyJ.service.token")
ACTOR = ("x-hirepay-actor", "eyJ.actor.token")
TRACE = ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")

ITEMS: list[tuple[tuple[str, Any], ...]] = [
    (TOKEN, ACTOR, TRACE),
    (TOKEN,),
    (),
    (TOKEN, ("a", "1"), TOKEN, ("a", "2")),  # a key twice: Metadata groups a key's values
    (("k-bin", b"\x00\x01"), TRACE),
]

CHANGES: list[Callable[[Any], None]] = [
    lambda m: m.add("a", "3"),
    lambda m: m.add("traceparent", "x"),
    lambda m: m.__setitem__("x-hirepay-service-token", "other"),
    lambda m: m.__setitem__("new", "v"),
    lambda m: m.set_all("a", ["7", "8"]),
    lambda m: m.__delitem__("a") if "a" in m else m.add("a", "0"),
    lambda m: m.delete_all("traceparent") if "traceparent" in m else None,
]


async def _client() -> ServiceClient:
    return ServiceClient("payments", "127.0.0.1:1")


def _reads(metadata: Any) -> tuple[Any, ...]:
    return (
        tuple(metadata),
        len(metadata),
        bool(metadata),
        list(metadata.keys()),
        list(metadata.values()),
        list(metadata.items()),
        [metadata.get(key) for key in ("a", "traceparent", "missing")],
        metadata.get_all("a"),
        "a" in metadata,
        repr(metadata).split("(", 1)[1],
        tuple(metadata + grpc.aio.Metadata(("z", "1"))),
    )


@pytest.mark.parametrize("items", ITEMS)
async def test_sent_metadata_reads_as_grpcs_metadata(items: tuple[tuple[str, Any], ...]) -> None:
    client = await _client()
    try:
        sent = client._metadata_of(items)
        plain = grpc.aio.Metadata(*items)
        assert _reads(sent) == _reads(plain)
        assert sent == plain and plain == sent
        assert sent == tuple(plain)
        for change in CHANGES:
            change(sent)
            change(plain)
            assert _reads(sent) == _reads(plain)
            assert sent == plain
    finally:
        await client.close()


async def test_a_call_handles_its_metadata_in_a_few_python_calls() -> None:
    """What grpc.aio does with a call's metadata (UnaryUnaryMultiCallable.__call__ and the
    call's constructor), the metadata made for the call as at the edge (a new trace): 32 Python
    calls with a token, an actor and a trace context as a plain Metadata, 20 as sent now."""
    client = await _client()

    def one_call(trace_id: int) -> tuple[Any, ...]:
        trace = ("traceparent", f"00-{trace_id:032x}-00f067aa0ba902b7-01")
        metadata = client._metadata_of((TOKEN, ACTOR, trace))
        given = UnaryUnaryMultiCallable._init_metadata(metadata, None)
        assert len(given) == 3  # (the call's own check)
        return tuple(given)

    try:
        one_call(1)  # (isinstance's first look at the class fills its cache)
        with profiled() as profile:
            copied = one_call(2)
        calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
        assert copied[:2] == (TOKEN, ACTOR)
        assert calls <= 24, calls
    finally:
        await client.close()
