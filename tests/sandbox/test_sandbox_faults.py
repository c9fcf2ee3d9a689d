"""Faults on demand, seen through the official SDK: latency, timeouts, 5xx, dropped connections,
scoping by path and method, and faults after the operation took effect."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import stripe

from hirepay_dev.sandbox_client import SandboxAdmin, stripe_client


def _key() -> str:
    return f"fault-{uuid.uuid4()}"


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@hirepay.test"


async def test_latency_slows_matching_requests(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    """The faulted request takes at least the injected delay (a lower bound: load only adds);
    the fault fired once and is spent (the sandbox's own record), so the next one is not delayed:
    it answers within the delay it would have waited, a gap a loaded machine does not close."""
    admin.add_fault("latency", ms=2_000, count=1, path_prefix="/v1/customers")
    started = time.monotonic()
    await client.v1.customers.create_async(params={"email": _email()})
    assert time.monotonic() - started >= 2.0
    assert admin.faults() == []
    started = time.monotonic()
    await client.v1.customers.create_async(params={"email": _email()})
    assert time.monotonic() - started < 2.0


async def test_timeout_the_client_gives_up_and_nothing_happens(
    sandbox_url: str, client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    impatient = stripe_client(sandbox_url, timeout=0.5)
    admin.add_fault("timeout", seconds=5, count=1, method="POST", path_prefix="/v1/customers")
    email = _email()
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        await impatient.v1.customers.create_async(params={"email": email})
    assert time.monotonic() - started < 2
    found = await client.v1.customers.list_async(params={"email": email})
    assert found.data == []
    created = await client.v1.customers.create_async(params={"email": email})
    assert created.email == email


async def test_timeout_shorter_than_the_client_answers_late(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    admin.add_fault("timeout", seconds=0.3, count=1, path_prefix="/v1/customers")
    started = time.monotonic()
    customer = await client.v1.customers.create_async(params={"email": _email()})
    assert time.monotonic() - started >= 0.3
    assert customer.id.startswith("cus_")


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_error_fault_raises_api_errors_count_times(
    client: stripe.StripeClient, admin: SandboxAdmin, status: int
) -> None:
    fault = admin.add_fault("error", status=status, count=2)
    assert (fault["kind"], fault["remaining"]) == ("error", 2)
    for remaining in (1, 0):
        with pytest.raises(stripe.APIError) as raised:
            await client.v1.customers.list_async()
        assert raised.value.http_status == status
        assert raised.value.error.type == "api_error"
        left = admin.faults()
        assert (left[0]["remaining"] if left else 0) == remaining
    page = await client.v1.customers.list_async(params={"limit": 1})
    assert page.object == "list"


async def test_faults_are_scoped_by_path_and_method(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    admin.add_fault(
        "error", status=503, count=1, method="POST", path_prefix="/v1/payment_intents/*/capture"
    )
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 3_000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
        }
    )
    assert (await client.v1.payment_intents.retrieve_async(pi.id)).status == "requires_capture"
    with pytest.raises(stripe.APIError) as raised:
        await client.v1.payment_intents.capture_async(pi.id)
    assert raised.value.http_status == 503
    assert (await client.v1.payment_intents.retrieve_async(pi.id)).status == "requires_capture"
    captured = await client.v1.payment_intents.capture_async(pi.id)
    assert captured.status == "succeeded"


async def test_down_drops_the_connection(client: stripe.StripeClient, admin: SandboxAdmin) -> None:
    admin.add_fault("down", count=1, path_prefix="/v1/customers")
    email = _email()
    with pytest.raises(stripe.APIConnectionError):
        await client.v1.customers.create_async(params={"email": email})
    assert (await client.v1.customers.list_async(params={"email": email})).data == []
    assert (await client.v1.customers.create_async(params={"email": email})).email == email


async def test_down_until_cleared(client: stripe.StripeClient, admin: SandboxAdmin) -> None:
    admin.add_fault("down")
    for _ in range(2):
        with pytest.raises(stripe.APIConnectionError):
            await client.v1.customers.list_async()
    assert admin.faults()[0]["fired"] == 2
    admin.clear_faults()
    assert (await client.v1.customers.list_async()).object == "list"


async def test_timeout_after_commit_the_intent_exists_and_a_retry_replays_it(
    sandbox_url: str, client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    impatient = stripe_client(sandbox_url, timeout=0.5)
    admin.add_fault("timeout_after_commit", seconds=5, count=1, path_prefix="/v1/payment_intents")
    customer = await client.v1.customers.create_async(params={"email": _email()})
    key = _key()
    params = {
        "amount": 4_500,
        "currency": "usd",
        "customer": customer.id,
        "payment_method": "pm_card_visa",
        "confirm": True,
    }
    with pytest.raises(stripe.APIConnectionError):
        await impatient.v1.payment_intents.create_async(
            params=params, options={"idempotency_key": key}
        )  # type: ignore[arg-type]
    made = await client.v1.payment_intents.list_async(params={"customer": customer.id})
    assert [(pi.status, pi.amount_received) for pi in made.data] == [("succeeded", 4_500)]
    retried = await client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": key}
    )  # type: ignore[arg-type]
    assert retried.id == made.data[0].id
    assert len((await client.v1.payment_intents.list_async(params={"customer": customer.id})).data) == 1  # fmt: skip


async def test_timeout_after_commit_then_dropped(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    admin.add_fault("timeout_after_commit", seconds=0.3, count=1, path_prefix="/v1/customers")
    email = _email()
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        await client.v1.customers.create_async(params={"email": email})
    assert time.monotonic() - started >= 0.3
    assert len((await client.v1.customers.list_async(params={"email": email})).data) == 1


async def test_down_after_commit_on_capture(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 9_000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
        }
    )
    admin.add_fault("down_after_commit", count=1, path_prefix="/v1/payment_intents/*/capture")
    key = _key()
    with pytest.raises(stripe.APIConnectionError):
        await client.v1.payment_intents.capture_async(
            pi.id, params={"amount_to_capture": 8_000}, options={"idempotency_key": key}
        )
    seen = await client.v1.payment_intents.retrieve_async(pi.id)
    assert (seen.status, seen.amount_received) == ("succeeded", 8_000)
    retried = await client.v1.payment_intents.capture_async(
        pi.id, params={"amount_to_capture": 8_000}, options={"idempotency_key": key}
    )
    assert (retried.status, retried.amount_received) == ("succeeded", 8_000)


async def test_error_after_commit_on_refund(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 2_000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    admin.add_fault("error_after_commit", status=500, count=1, path_prefix="/v1/refunds")
    key = _key()
    with pytest.raises(stripe.APIError) as raised:
        await client.v1.refunds.create_async(
            params={"payment_intent": pi.id, "amount": 700}, options={"idempotency_key": key}
        )
    assert raised.value.http_status == 500
    refunds = await client.v1.refunds.list_async(params={"payment_intent": pi.id})
    assert [r.amount for r in refunds.data] == [700]
    replay = await client.v1.refunds.create_async(
        params={"payment_intent": pi.id, "amount": 700}, options={"idempotency_key": key}
    )
    assert replay.id == refunds.data[0].id


def test_admin_fault_api(admin: SandboxAdmin) -> None:
    fault = admin.add_fault("latency", ms=1, path_prefix="/v1/none")
    assert fault["id"].startswith("flt_")
    assert [f["id"] for f in admin.faults()] == [fault["id"]]
    assert admin.http.delete(f"/_sandbox/faults/{fault['id']}").json() == {"deleted": True}
    assert admin.faults() == []
    for bad in ({"kind": "nope"}, {"kind": "error", "status": 418}, {"kind": "latency"}):
        with pytest.raises(httpx.HTTPStatusError) as raised:
            admin.add_fault(**bad)
        assert raised.value.response.status_code == 400
