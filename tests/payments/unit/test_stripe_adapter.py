"""The Stripe adapter's translations: SDK errors to domain failures, wire objects to domain types,
and webhook signature checks (raw bytes, tolerance, several secrets)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import stripe

from hirepay_platform.notifier import parse_callback_urls, sign
from payments.adapters.stripe_provider import (
    PooledHTTPXClient,
    StripeProvider,
    checkout_from,
    intent_from,
    map_error,
    payout_from,
)
from payments.domain.provider import (
    CheckoutState,
    Declined,
    EventSubject,
    InvalidRequest,
    OutcomeUnknown,
    PayoutStatus,
    ProviderStatus,
    SignatureInvalid,
)

NEW, OLD = "whsec_newsecret", "whsec_oldsecret"


def card_error(code: str, decline_code: str) -> stripe.CardError:
    body = {
        "error": {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": "Your card was declined.",
            "payment_intent": {"id": "pi_9", "object": "payment_intent"},
        }
    }
    return stripe.CardError("declined", None, code, json.dumps(body), 402, body)


def test_card_errors_keep_code_decline_code_and_intent() -> None:
    mapped = map_error(card_error("card_declined", "insufficient_funds"))
    assert isinstance(mapped, Declined)
    assert (mapped.error.code, mapped.error.decline_code, mapped.payment_id) == (
        "card_declined",
        "insufficient_funds",
        "pi_9",
    )


def test_invalid_requests_and_transport_failures() -> None:
    body = {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": "payment_method",
            "message": "No such PaymentMethod",
        }
    }
    bad = map_error(
        stripe.InvalidRequestError(
            "x", "payment_method", "resource_missing", json.dumps(body), 400, body
        )
    )
    assert isinstance(bad, InvalidRequest) and bad.about_payment_method
    timeout = stripe.APIConnectionError("net")
    timeout.__cause__ = httpx.ReadTimeout("slow")
    assert isinstance(map_error(timeout), OutcomeUnknown) and map_error(timeout).timeout
    down = stripe.APIConnectionError("net")
    down.__cause__ = httpx.RemoteProtocolError("closed")
    assert not map_error(down).timeout
    server = map_error(stripe.APIError("boom", None, 503))
    assert isinstance(server, OutcomeUnknown) and not server.timeout
    assert map_error(TimeoutError()).timeout


def test_wire_objects_map_to_domain_types() -> None:
    pi = intent_from(
        {
            "id": "pi_1", "status": "requires_action", "amount": 500, "currency": "usd",
            "next_action": {"type": "redirect_to_url", "redirect_to_url": {"url": "https://3ds"}},
            "customer": {"id": "cus_1"}, "metadata": {"a": 1},
        }
    )  # fmt: skip
    assert (pi.status, pi.currency, pi.next_action_url, pi.customer_id) == (
        ProviderStatus.ACTION_REQUIRED, "USD", "https://3ds", "cus_1"
    )  # fmt: skip
    assert pi.metadata == {"a": "1"}
    cs = checkout_from(
        {"id": "cs_1", "status": "expired", "payment_status": "unpaid", "expires_at": 1}
    )
    assert cs.state is CheckoutState.EXPIRED and cs.expires_at is not None


def event_body(**extra) -> bytes:
    event = {
        "id": "evt_1", "type": "payment_intent.succeeded", "created": int(time.time()),
        "data": {"object": {"id": "pi_1", "object": "payment_intent", "metadata": {"hirepay_payment_id": "pay_1"}}},
    }  # fmt: skip
    event.update(extra)
    return json.dumps(event).encode()


def header(body: bytes, secret: str, ts: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(body.decode(), secret, ts)


def test_signature_rotation_tolerance_and_raw_bytes() -> None:
    provider = StripeProvider(
        "sk_test_x", api_base="http://127.0.0.1:1", webhook_secrets=[NEW, OLD]
    )
    body = event_body()
    for secret in (NEW, OLD):
        event = provider.construct_event(body, header(body, secret))
        assert (event.id, event.subject, event.object_id) == ("evt_1", EventSubject.PAYMENT, "pi_1")
        assert event.metadata["hirepay_payment_id"] == "pay_1"
    refused = [
        (body, header(body, "whsec_other")),
        (body, header(body, NEW, int(time.time()) - 301)),
        (json.dumps(json.loads(body), indent=1).encode(), header(body, NEW)),
        (body, ""),
    ]
    for payload, signature in refused:
        with pytest.raises(SignatureInvalid):
            provider.construct_event(payload, signature)
    no_secret = StripeProvider("sk_test_x", webhook_secrets=[])
    with pytest.raises(SignatureInvalid):
        no_secret.construct_event(body, header(body, NEW))


def test_callback_urls_and_signature() -> None:
    assert parse_callback_urls("jobs=http://a/cb, applicant=http://b/cb") == {
        "jobs": "http://a/cb",
        "applicant": "http://b/cb",
    }
    assert parse_callback_urls('{"jobs": "http://a"}') == {"jobs": "http://a"}
    with pytest.raises(ValueError):
        parse_callback_urls("nonsense")
    assert sign(b"{}", "s", 1) == sign(b"{}", "s", 1) != sign(b"{} ", "s", 1)


@pytest.mark.parametrize("depth", [100, 5_000])
def test_a_correctly_signed_but_deeply_nested_body_is_refused_not_a_crash(depth: int) -> None:
    # The signature proves who sent the bytes, not that they are safe to parse recursively.
    provider = StripeProvider("sk_test_x", api_base="http://127.0.0.1:1", webhook_secrets=[NEW])
    body = event_body()
    deep = body[:-1] + b', "nested": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(SignatureInvalid, match="not a Stripe event"):
        provider.construct_event(deep, header(deep, NEW))


def test_payout_events_and_objects() -> None:
    provider = StripeProvider("sk_test_x", api_base="http://127.0.0.1:1", webhook_secrets=[NEW])
    payout = {
        "id": "po_1",
        "object": "payout",
        "status": "failed",
        "amount": 7_550,
        "failure_code": "no_account",
        "failure_message": "No bank account",
        "metadata": {"hirepay_withdrawal_id": "wd_1"},
    }
    body = json.dumps(
        {
            "id": "evt_9",
            "object": "event",
            "type": "payout.failed",
            "created": int(time.time()),
            "account": "acct_7",
            "data": {"object": payout},
        }
    ).encode()
    event = provider.construct_event(body, header(body, NEW))
    assert (event.subject, event.object_id, event.account) == (
        EventSubject.PAYOUT,
        "po_1",
        "acct_7",
    )
    assert event.metadata["hirepay_withdrawal_id"] == "wd_1"
    mapped = payout_from(payout)
    assert (mapped.status, mapped.amount_minor, mapped.failure_code) == (
        PayoutStatus.FAILED,
        7_550,
        "no_account",
    )
    assert payout_from({**payout, "status": "paid"}).status is PayoutStatus.PAID
    assert payout_from({**payout, "status": "in_transit"}).status is PayoutStatus.IN_TRANSIT


async def test_a_slow_stripe_gets_every_call_at_once() -> None:
    """Calls to Stripe are not queued in the SDK's HTTP client: 150 calls in flight all reach a
    slow server before it answers any (httpx's default limits would hold 50 of them back until
    the first 100 were answered; issue 13, a slow provider must not serialize payments)."""
    calls = 150
    arrived = 0
    all_in = asyncio.Event()
    answered_before_all_in = 0

    async def slow_stripe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived, answered_before_all_in
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        arrived += 1
        if arrived == calls:
            all_in.set()
        try:
            await asyncio.wait_for(all_in.wait(), 5)  # answer once every call is in
        except TimeoutError:
            answered_before_all_in += 1  # some calls were held back in the client
        body = json.dumps({"id": f"cus_{arrived}", "object": "customer"}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow_stripe, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = StripeProvider(
        "sk_test_slow", api_base=f"http://127.0.0.1:{port}", timeout=20, max_connections=calls
    )
    async with server:
        await asyncio.gather(
            *(provider.create_customer(f"c{i}@example.com", f"key-{i}") for i in range(calls))
        )
    assert arrived == calls and answered_before_all_in == 0


async def test_a_call_reaches_stripe_as_the_sdk_built_it_and_its_answer_is_read() -> None:
    """The SDK's request goes straight to the transport (issue 13): its method, path, headers
    (key, idempotency key, connected account, form encoding) and body arrive as the SDK built
    them, and the answer's JSON comes back; an error answer is still the SDK's typed error."""
    seen: list[tuple[bytes, bytes]] = []

    async def stripe_api(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            body = await reader.readexactly(int(length.group(1)) if length else 0)
            seen.append((head, body))
            status, answer = (b"200 OK", {"id": "cus_1", "object": "customer"})
            if b"/v1/payouts" in head:
                status = b"400 Bad Request"
                answer = {"error": {"type": "invalid_request_error", "message": "no funds"}}
            data = json.dumps(answer).encode()
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
            if reader.at_eof():
                break

    server = await asyncio.start_server(stripe_api, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = StripeProvider("sk_test_direct", api_base=f"http://127.0.0.1:{port}", timeout=5)
    async with server:
        assert await provider.create_customer("a@example.com", "key-1") == "cus_1"
        with pytest.raises(InvalidRequest, match="no funds"):
            await provider.payout("acct_9", 500, "USD", {"w": "1"}, "key-2")
    (head, body), (payout_head, payout_body) = seen
    assert head.startswith(b"POST /v1/customers HTTP/1.1\r\n")
    lines = head.decode().lower()
    assert "authorization: bearer sk_test_direct" in lines
    assert "idempotency-key: key-1" in lines
    assert "content-type: application/x-www-form-urlencoded" in lines
    assert body == b"email=a%40example.com"
    # Straight to the transport: none of the client's own default headers were added.
    assert "accept-encoding" not in lines and "python-httpx" not in lines
    assert b"Stripe-Account: acct_9" in payout_head and b"amount=500" in payout_body


async def test_transport_failures_of_a_direct_call_are_unknown_outcomes() -> None:
    """Nothing listening: unreachable; a server that never answers: timed out (both retried
    with the same idempotency key, never taken for a refusal)."""
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    closed_port = refused.getsockname()[1]
    refused.close()
    unreachable = StripeProvider("sk_test_x", api_base=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(OutcomeUnknown) as down:
        await unreachable.create_customer("a@example.com", "key-1")
    assert not down.value.timeout

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow = StripeProvider("sk_test_x", api_base=f"http://127.0.0.1:{port}", timeout=0.3)
    async with server:
        with pytest.raises(OutcomeUnknown) as late:
            await slow.create_customer("a@example.com", "key-1")
    assert late.value.timeout


class _SilentClient(stripe.HTTPClient):
    """An HTTP client (the SDK's extension point) whose calls never answer; it notes the task
    each call ran in."""

    name = "silent"

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[asyncio.Task[object] | None] = []

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        self.tasks.append(asyncio.current_task())
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_call_past_its_deadline_is_a_timed_out_unknown_outcome_in_the_callers_task() -> (
    None
):
    """Whatever the transport does, a call ends at the provider timeout as a timed-out unknown
    outcome (retried with its key), and runs in the caller's task: no task per call (issue 13).
    A cancelled caller is cancelled, never taken for a provider failure."""
    provider = StripeProvider("sk_test_x", api_base="http://127.0.0.1:9", timeout=0.2)
    silent = _SilentClient()
    provider.client = stripe.StripeClient(
        "sk_test_x",
        base_addresses={"api": "http://127.0.0.1:9"},
        http_client=silent,
        max_network_retries=0,
    )
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown) as late:
        await provider.create_customer("a@example.com", "key-1")
    assert late.value.timeout
    assert 0.15 < time.monotonic() - started < 2.0
    assert silent.tasks == [asyncio.current_task()]

    call = asyncio.create_task(provider.create_customer("a@example.com", "key-2"))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


def test_with_a_proxy_configured_calls_go_through_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The direct path skips httpx's proxy handling, so it is taken only when no proxy is set."""
    assert PooledHTTPXClient(timeout=1, max_connections=1)._direct
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert not PooledHTTPXClient(timeout=1, max_connections=1)._direct


async def test_the_transports_own_timeout_and_refusal_keep_their_meaning() -> None:
    """Below the adapter's deadline: the pool's read timeout reaches map_error as the SDK's
    APIConnectionError caused by httpx.ReadTimeout (a timeout: retried, never a refusal), and
    a refused connection as one caused by httpx.ConnectError (unreachable)."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    closed_port = refused.getsockname()[1]
    refused.close()
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    failures: list[BaseException] = []
    async with server:
        for base in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{closed_port}"):
            client = stripe.StripeClient(
                "sk_test_x",
                base_addresses={"api": base},
                http_client=PooledHTTPXClient(timeout=0.2, max_connections=2),
                max_network_retries=0,
            )
            with pytest.raises(stripe.APIConnectionError) as failed:
                await client.raw_request_async("post", "/v1/customers", email="a@example.com")
            failures.append(failed.value)
    late, down = failures
    assert isinstance(late.__cause__, httpx.ReadTimeout)
    assert isinstance(down.__cause__, httpx.ConnectError)
    late_mapped, down_mapped = map_error(late), map_error(down)
    assert isinstance(late_mapped, OutcomeUnknown) and late_mapped.timeout
    assert isinstance(down_mapped, OutcomeUnknown) and not down_mapped.timeout


async def test_an_encoded_answer_is_decoded_on_the_direct_path() -> None:
    """No Accept-Encoding is sent; should an answer still come compressed, the SDK reads it
    decoded, as through httpx."""

    async def gzipping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        data = gzip.compress(json.dumps({"id": "cus_9", "object": "customer"}).encode())
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(gzipping, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = StripeProvider("sk_test_gz", api_base=f"http://127.0.0.1:{port}", timeout=5)
    async with server:
        assert await provider.create_customer("a@example.com", "key-1") == "cus_9"


def test_an_event_keeps_the_text_its_body_was_parsed_from() -> None:
    # Stored as the event's payload as it is (tables.JsonbOrText), not serialized again (issue 13).
    provider = StripeProvider("sk_test_x", api_base="http://127.0.0.1:1", webhook_secrets=[NEW])
    body = event_body(livemode=False)
    event = provider.construct_event(body, header(body, NEW))
    assert event.body_text == body.decode()
    assert json.loads(event.body_text) == event.body
