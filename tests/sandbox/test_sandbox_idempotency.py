"""Idempotency-Key semantics: replay, mismatch, concurrent twin, cached declines, uncached 5xx
and validation errors, keys scoped by API key."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import stripe

from hirepay_dev.sandbox_client import DEFAULT_API_KEY, SandboxAdmin, stripe_client


def _key() -> str:
    return f"idem-{uuid.uuid4()}"


async def test_same_key_same_parameters_replays_the_first_response(
    client: stripe.StripeClient, sandbox_url: str
) -> None:
    key = _key()
    params = {
        "amount": 2_000,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
        "metadata": {"order": key},
    }
    first = await client.v1.payment_intents.create_async(
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": key},
    )
    again = await client.v1.payment_intents.create_async(
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": key},
    )
    assert again.id == first.id
    assert again.latest_charge == first.latest_charge

    # The replay is byte for byte, marked as such.
    form = {
        "amount": "2000",
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": "true",
        "metadata[order]": key,
    }
    async with httpx.AsyncClient(base_url=sandbox_url, auth=(DEFAULT_API_KEY, "")) as http:
        raw = await http.post("/v1/payment_intents", data=form, headers={"Idempotency-Key": key})
    assert raw.status_code == 200
    assert raw.headers["Idempotent-Replayed"] == "true"
    assert raw.headers["Original-Request"].startswith("req_")
    assert raw.json()["id"] == first.id
    assert raw.json()["status"] == "succeeded"

    charges = await client.v1.charges.list_async(params={"payment_intent": first.id})
    assert len(charges.data) == 1


async def test_same_key_other_parameters_is_an_idempotency_error(
    client: stripe.StripeClient,
) -> None:
    key = _key()
    await client.v1.customers.create_async(
        params={"email": "a@hirepay.test"}, options={"idempotency_key": key}
    )
    with pytest.raises(stripe.IdempotencyError) as raised:
        await client.v1.customers.create_async(
            params={"email": "b@hirepay.test"}, options={"idempotency_key": key}
        )
    assert raised.value.http_status == 400
    assert raised.value.error.type == "idempotency_error"
    assert key in raised.value.user_message

    with pytest.raises(stripe.IdempotencyError):  # another endpoint counts as other parameters
        await client.v1.payment_intents.create_async(
            params={"amount": 1000, "currency": "usd"}, options={"idempotency_key": key}
        )


async def test_concurrent_twin_gets_409(client: stripe.StripeClient, admin: SandboxAdmin) -> None:
    admin.add_fault("latency", ms=1500, count=1, method="POST", path_prefix="/v1/payment_intents")
    key = _key()
    params = {"amount": 1_000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}

    first = asyncio.create_task(
        client.v1.payment_intents.create_async(params=params, options={"idempotency_key": key})  # type: ignore[arg-type]
    )
    # The sandbox takes the key before the latency fault fires: once the fault is used up, the
    # first request is in flight with its key.
    for _ in range(250):
        if not await asyncio.to_thread(admin.faults):
            break
        await asyncio.sleep(0.02)
    assert await asyncio.to_thread(admin.faults) == []
    with pytest.raises(stripe.APIError) as raised:
        await client.v1.payment_intents.create_async(
            params=params, options={"idempotency_key": key}
        )  # type: ignore[arg-type]
    error = raised.value
    assert error.http_status == 409
    assert error.error.type == "idempotency_error"
    assert error.error.code == "idempotency_key_in_use"
    assert "another in-progress request" in error.user_message

    created = await first
    assert created.status == "succeeded"
    replay = await client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": key}
    )  # type: ignore[arg-type]
    assert replay.id == created.id


async def test_declines_are_replayed_as_the_same_402(client: stripe.StripeClient) -> None:
    key = _key()
    params = {
        "amount": 1_000,
        "currency": "usd",
        "payment_method": "pm_card_chargeDeclinedInsufficientFunds",
        "confirm": True,
    }
    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as raised:
            await client.v1.payment_intents.create_async(
                params=params, options={"idempotency_key": key}
            )  # type: ignore[arg-type]
        errors.append(raised.value)
    assert errors[0].error.payment_intent.id == errors[1].error.payment_intent.id
    assert errors[0].error.charge == errors[1].error.charge
    assert errors[1].error.decline_code == "insufficient_funds"
    assert errors[1].headers["idempotent-replayed"] == "true"


async def test_server_errors_are_not_saved(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    admin.add_fault("error", status=503, count=1, path_prefix="/v1/customers", method="POST")
    key = _key()
    with pytest.raises(stripe.APIError) as raised:
        await client.v1.customers.create_async(
            params={"email": "retry@hirepay.test"}, options={"idempotency_key": key}
        )
    assert raised.value.http_status == 503
    created = await client.v1.customers.create_async(
        params={"email": "retry@hirepay.test"}, options={"idempotency_key": key}
    )
    replay = await client.v1.customers.create_async(
        params={"email": "retry@hirepay.test"}, options={"idempotency_key": key}
    )
    assert replay.id == created.id


async def test_validation_errors_are_not_saved(client: stripe.StripeClient) -> None:
    key = _key()
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.create_async(
            params={"amount": 1_000}, options={"idempotency_key": key}
        )
    assert raised.value.code == "parameter_missing"
    fixed = await client.v1.payment_intents.create_async(
        params={"amount": 1_000, "currency": "usd"}, options={"idempotency_key": key}
    )
    assert fixed.status == "requires_payment_method"


async def test_keys_are_scoped_by_api_key(client: stripe.StripeClient, sandbox_url: str) -> None:
    other = stripe_client(sandbox_url, api_key="sk_test_someoneelse")
    key = _key()
    mine = await client.v1.customers.create_async(
        params={"email": "x@hirepay.test"}, options={"idempotency_key": key}
    )
    theirs = await other.v1.customers.create_async(
        params={"email": "x@hirepay.test"}, options={"idempotency_key": key}
    )
    assert mine.id != theirs.id
