"""The shared Payment API at the edge: subscribe, verify (owner or admin only), checkout cancel,
and the Stripe webhook forwarded byte for byte."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.errors import ErrorKind
from tests.support.gateway_fakes import domain_error, make_transaction, ts
from tests.support.gateway_harness import Backends, bearer

SUBSCRIBE = {
    "userType": "COMPANY",
    "userId": "company-a",
    "email": "company@example.com",
    "plan": "MONTHLY",
    "paymentMethod": "STRIPE",
    "returnUrl": "https://app.devision.com/subscription/success",
    "cancelUrl": "https://app.devision.com/subscription/cancel",
}


def pending_txn(request: pay_pb.SubscribeRequest) -> pay_pb.TransactionResponse:
    txn = make_transaction(
        "txn_abc123",
        request.user_id,
        status=pay_pb.Transaction.PENDING,
        checkout_url="https://checkout.sandbox.test/c/cs_1",
        expires_at=ts(1_768_041_000),
    )
    return pay_pb.TransactionResponse(transaction=txn)


async def test_subscribe_returns_pending_checkout(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on("Subscribe", pending_txn)
    resp = await client.post(
        "/api/payments/subscribe", json=SUBSCRIBE, headers=bearer("company", "company-a")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "transactionId": "txn_abc123",
        "status": "PENDING",
        "checkoutUrl": "https://checkout.sandbox.test/c/cs_1",
        "expiresAt": "2026-01-10T10:30:00Z",
        "subscriptionStatus": "Hold",
        "paymentStatus": "created",
    }
    [call] = backends.payments.calls_to("Subscribe")
    req = call.request
    assert req.user_type == pay_pb.USER_TYPE_COMPANY
    assert (req.user_id, req.email, req.plan, req.payment_method) == (
        "company-a",
        "company@example.com",
        "MONTHLY",
        "STRIPE",
    )
    assert req.return_url == SUBSCRIBE["returnUrl"]
    assert req.cancel_url == SUBSCRIBE["cancelUrl"]
    assert req.request_id


async def test_subscribe_for_an_applicant(client: httpx.AsyncClient, backends: Backends) -> None:
    backends.payments.on("Subscribe", pending_txn)
    payload = {**SUBSCRIBE, "userType": "APPLICANT", "userId": "app-1"}
    resp = await client.post(
        "/api/payments/subscribe", json=payload, headers=bearer("applicant", "app-1")
    )
    assert resp.status_code == 200
    assert (
        backends.payments.calls_to("Subscribe")[0].request.user_type == pay_pb.USER_TYPE_APPLICANT
    )


async def test_subscribe_needs_the_redirect_urls(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    payload = {k: v for k, v in SUBSCRIBE.items() if k not in ("returnUrl", "cancelUrl")}
    resp = await client.post(
        "/api/payments/subscribe", json=payload, headers=bearer("company", "company-a")
    )
    assert resp.status_code == 400
    assert resp.json()["fields"] == {"returnUrl": "required", "cancelUrl": "required"}
    assert backends.payments.calls_to("Subscribe") == []


async def test_subscribe_key_gives_the_same_request_id_per_user(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on("Subscribe", pending_txn)
    h = {**bearer("company", "company-a"), "Idempotency-Key": "sub-1"}
    await client.post("/api/payments/subscribe", json=SUBSCRIBE, headers=h)
    await client.post("/api/payments/subscribe", json=SUBSCRIBE, headers=h)
    await client.post(
        "/api/payments/subscribe", json=SUBSCRIBE, headers=bearer("company", "company-a")
    )
    ids = [c.request.request_id for c in backends.payments.calls_to("Subscribe")]
    assert ids[0] == ids[1] != ids[2]


async def test_already_subscribed_is_409_with_expiry(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "Subscribe",
        domain_error("ALREADY_SUBSCRIBED", ErrorKind.ALREADY_EXISTS, expires_at="2026-02-10"),
    )
    resp = await client.post(
        "/api/payments/subscribe", json=SUBSCRIBE, headers=bearer("company", "company-a")
    )
    assert resp.status_code == 409
    assert resp.json() == {
        "error": "ALREADY_SUBSCRIBED",
        "message": "User already has an active subscription",
        "expiresAt": "2026-02-10",
    }


@pytest.mark.parametrize(
    ("role", "user", "overrides", "status"),
    [
        ("company", "company-b", {}, 403),  # someone else's userId
        ("company", "company-a", {"userType": "APPLICANT"}, 403),  # type does not fit the role
        ("customer", "company-a", {}, 403),
        ("company", "company-a", {"paymentMethod": "paypal"}, 400),  # the enum's spelling only
        ("company", "company-a", {"paymentMethod": "BITCOIN"}, 400),
        ("company", "company-a", {"email": "not-an-email"}, 400),
        ("company", "company-a", {"userType": None}, 400),
        ("company", "company-a", {"returnUrl": "javascript:alert(1)"}, 400),
        ("company", "company-a", {"cancelUrl": "/relative/path"}, 400),
    ],
)
async def test_subscribe_refusals(
    client: httpx.AsyncClient,
    backends: Backends,
    role: str,
    user: str,
    overrides: dict[str, Any],
    status: int,
) -> None:
    payload = {**SUBSCRIBE, **overrides}
    payload = {k: v for k, v in payload.items() if v is not None}
    resp = await client.post("/api/payments/subscribe", json=payload, headers=bearer(role, user))
    assert resp.status_code == status, resp.text
    assert backends.payments.calls_to("Subscribe") == []


@pytest.mark.parametrize("method", ["STRIPE", "PAYPAL", "RAZORPAY"])
async def test_every_api_1_method_is_forwarded_to_payments(
    client: httpx.AsyncClient, backends: Backends, method: str
) -> None:
    backends.payments.on("Subscribe", pending_txn)
    resp = await client.post(
        "/api/payments/subscribe",
        json={**SUBSCRIBE, "paymentMethod": method},
        headers=bearer("company", "company-a"),
    )
    assert resp.status_code == 200, resp.text
    assert [c.request.payment_method for c in backends.payments.calls_to("Subscribe")] == [method]


async def test_a_provider_not_offered_is_400_naming_it(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "Subscribe",
        domain_error(
            "PROVIDER_NOT_AVAILABLE",
            ErrorKind.INVALID_ARGUMENT,
            provider="paypal",
            offered="stripe",
        ),
    )
    resp = await client.post(
        "/api/payments/subscribe",
        json={**SUBSCRIBE, "paymentMethod": "PAYPAL"},
        headers=bearer("company", "company-a"),
    )
    assert resp.status_code == 400
    body = resp.json()
    assert (body["error"], body["provider"], body["offered"]) == (
        "PROVIDER_NOT_AVAILABLE",
        "PAYPAL",
        ["STRIPE"],
    )
    assert "PAYPAL" in body["message"]


async def test_admin_may_subscribe_for_a_user(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on("Subscribe", pending_txn)
    resp = await client.post(
        "/api/payments/subscribe", json=SUBSCRIBE, headers=bearer("admin", "ops")
    )
    assert resp.status_code == 200


async def test_subscribe_provider_errors(client: httpx.AsyncClient, backends: Backends) -> None:
    backends.payments.on(
        "Subscribe", domain_error("PAYMENT_PROVIDER_UNAVAILABLE", ErrorKind.UNAVAILABLE)
    )
    resp = await client.post(
        "/api/payments/subscribe", json=SUBSCRIBE, headers=bearer("company", "company-a")
    )
    assert resp.status_code == 502
    assert resp.json()["error"] == "PAYMENT_PROVIDER_UNAVAILABLE"
    backends.payments.on("Subscribe", domain_error("PLAN_NOT_FOUND", ErrorKind.NOT_FOUND))
    resp = await client.post(
        "/api/payments/subscribe", json=SUBSCRIBE, headers=bearer("company", "company-a")
    )
    assert resp.status_code == 400
    assert resp.json()["fields"] == {"plan": "unknown plan"}


async def test_verify_for_the_owner_in_the_seed_shape(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "GetTransaction",
        lambda r: pay_pb.TransactionResponse(transaction=make_transaction(r.transaction_id)),
    )
    resp = await client.get(
        "/api/payments/verify/txn_abc123", headers=bearer("company", "company-a")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "transactionId": "txn_abc123",
        "status": "SUCCESS",
        "email": "company@example.com",
        "amount": "30.00",
        "amountMinor": 3000,
        "currency": "USD",
        "plan": "MONTHLY",
        "timestamp": "2026-01-10T10:25:00Z",
        "subscriptionStartDate": "2026-01-10",
        "subscriptionEndDate": "2026-02-10",
        # Seed 003's view of the purchase: paid, and its period is over.
        "subscriptionStatus": "Expired",
        "paymentStatus": "paid",
        "jobCredits": 0,
        "candidateCredits": 0,
        "disputes": [],
    }


async def test_verify_uses_the_currency_exponent(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    txn = make_transaction("txn_jpy", "company-a")
    txn.amount.amount_minor, txn.amount.currency = 3000, "JPY"
    backends.payments.on("GetTransaction", pay_pb.TransactionResponse(transaction=txn))
    resp = await client.get("/api/payments/verify/txn_jpy", headers=bearer("company", "company-a"))
    assert resp.json()["amount"] == "3000"


async def test_verify_hides_other_users_transactions(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "GetTransaction",
        lambda r: pay_pb.TransactionResponse(transaction=make_transaction(r.transaction_id)),
    )
    other = await client.get(
        "/api/payments/verify/txn_abc123", headers=bearer("company", "company-b")
    )
    assert other.status_code == 404
    assert other.json()["error"] == "NOT_FOUND"
    admin = await client.get("/api/payments/verify/txn_abc123", headers=bearer("admin", "ops"))
    assert admin.status_code == 200
    backends.payments.on(
        "GetTransaction", domain_error("TRANSACTION_NOT_FOUND", ErrorKind.NOT_FOUND)
    )
    missing = await client.get(
        "/api/payments/verify/txn_nope", headers=bearer("company", "company-a")
    )
    assert missing.status_code == 404
    assert missing.json() == other.json()


async def test_checkout_cancel_redirects_to_the_subsystem(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "CancelCheckout",
        lambda r: pay_pb.CancelCheckoutResponse(
            transaction=make_transaction(r.transaction_id, status=pay_pb.Transaction.CANCELLED),
            redirect_url="https://app.devision.com/subscription/cancel",
        ),
    )
    # The provider's GET only shows a confirmation page: nothing is cancelled by a bare GET.
    page = await client.get("/api/payments/checkout/cancel", params={"ref": "txn_abc123"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'name="ref" value="txn_abc123"' in page.text and 'method="post"' in page.text
    assert (
        "form-action 'self' https://app.devision.com:443" in page.headers["content-security-policy"]
    )
    assert backends.payments.calls_to("CancelCheckout") == []
    resp = await client.post("/api/payments/checkout/cancel", data={"ref": "txn_abc123"})
    assert resp.status_code == 303
    assert resp.headers["location"] == "https://app.devision.com/subscription/cancel"
    [call] = backends.payments.calls_to("CancelCheckout")
    assert call.request.WhichOneof("subject") == "transaction_id"
    assert call.request.transaction_id == "txn_abc123"
    assert call.request.request_id


async def test_checkout_cancel_of_a_job_payment(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "CancelCheckout", pay_pb.CancelCheckoutResponse(redirect_url="javascript:alert(1)")
    )
    resp = await client.post("/api/payments/checkout/cancel", data={"ref": "pay_77"})
    assert resp.status_code == 200  # a non-http redirect target is never followed
    assert resp.json()["cancelled"] is True
    assert backends.payments.calls_to("CancelCheckout")[0].request.payment_id == "pay_77"


async def test_checkout_cancel_needs_a_known_ref(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    assert (
        await client.get("/api/payments/checkout/cancel", params={"ref": "../etc"})
    ).status_code == 400
    assert (await client.get("/api/payments/checkout/cancel")).status_code == 400
    for data in ({"ref": "../etc"}, {"ref": "txn_\n"}, {}):
        resp = await client.post("/api/payments/checkout/cancel", data=data)
        assert resp.status_code == 400, (data, resp.text)
    assert backends.payments.calls_to("CancelCheckout") == []


RAW_EVENT = (
    b'{\n  "id": "evt_1",  "type": "payment_intent.succeeded",\r\n'
    b'  "data": {"object": {"id": "pi_abc123", "amount": 3000, "currency": "usd",'
    b' "metadata": {"note": "caf\xc3\xa9 \\u00e9 \xf0\x9f\x92\xb8"}}}   \n}\n'
)
SIGNATURE = "t=1768040700,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"


async def test_webhook_forwards_the_raw_bytes_and_signature(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "HandleProviderEvent",
        pay_pb.HandleProviderEventResponse(
            event_id="evt_1", event_type="payment_intent.succeeded", applied=True
        ),
    )
    resp = await client.post(
        "/api/payments/webhook/stripe",
        content=RAW_EVENT,
        headers={"Stripe-Signature": SIGNATURE, "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["received"] is True
    [call] = backends.payments.calls_to("HandleProviderEvent")
    assert call.request.payload == RAW_EVENT  # byte for byte: the signature is over these bytes
    assert call.request.signature == SIGNATURE
    assert call.request.provider == "stripe"


async def test_webhook_bad_signature_is_400(client: httpx.AsyncClient, backends: Backends) -> None:
    backends.payments.on(
        "HandleProviderEvent", domain_error("INVALID_SIGNATURE", ErrorKind.INVALID_ARGUMENT)
    )
    resp = await client.post(
        "/api/payments/webhook/stripe", content=RAW_EVENT, headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "INVALID_SIGNATURE"


async def test_webhook_without_signature_is_400_and_not_forwarded(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    resp = await client.post("/api/payments/webhook/stripe", content=RAW_EVENT)
    assert resp.status_code == 400
    assert backends.payments.calls_to("HandleProviderEvent") == []


@pytest.mark.parametrize(
    ("reason", "kind"),
    [("EVENT_NOT_APPLICABLE_YET", ErrorKind.UNAVAILABLE), ("UNAVAILABLE", ErrorKind.UNAVAILABLE)],
)
async def test_webhook_not_applicable_yet_is_503_so_stripe_retries(
    client: httpx.AsyncClient, backends: Backends, reason: str, kind: ErrorKind
) -> None:
    backends.payments.on("HandleProviderEvent", domain_error(reason, kind))
    resp = await client.post(
        "/api/payments/webhook/stripe", content=RAW_EVENT, headers={"Stripe-Signature": SIGNATURE}
    )
    assert resp.status_code == 503
    assert resp.json()["error"] == "SERVICE_UNAVAILABLE"
    assert "Retry-After" in resp.headers


async def test_webhook_body_is_bounded(client: httpx.AsyncClient, backends: Backends) -> None:
    resp = await client.post(
        "/api/payments/webhook/stripe",
        content=b"x" * (1_048_576 + 1),
        headers={"Stripe-Signature": SIGNATURE},
    )
    assert resp.status_code == 413
    assert backends.payments.calls_to("HandleProviderEvent") == []


@pytest.mark.parametrize(
    ("provider", "headers"),
    [
        (
            "paypal",
            {
                "PAYPAL-TRANSMISSION-ID": "t-1",
                "PAYPAL-TRANSMISSION-TIME": "2026-01-10T10:25:00Z",
                "PAYPAL-TRANSMISSION-SIG": "c2ln",
                "PAYPAL-CERT-URL": "https://api.paypal.example/cert",
                "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            },
        ),
        ("razorpay", {"X-Razorpay-Signature": "ab" * 32, "X-Razorpay-Event-Id": "evt_r1"}),
        ("fatora", {"X-Fatora-Signature": "cd" * 32, "X-Fatora-Event-Id": "evt_f1"}),
    ],
)
async def test_each_providers_webhook_is_forwarded_raw_with_its_signing_headers(
    client: httpx.AsyncClient, backends: Backends, provider: str, headers: dict[str, str]
) -> None:
    backends.payments.on(
        "HandleProviderEvent", pay_pb.HandleProviderEventResponse(event_id="e", applied=True)
    )
    resp = await client.post(
        f"/api/payments/webhook/{provider}",
        content=RAW_EVENT,
        headers={**headers, "Authorization": "Bearer not-forwarded", "Cookie": "c=1"},
    )
    assert resp.status_code == 200, resp.text
    [call] = backends.payments.calls_to("HandleProviderEvent")
    assert call.request.provider == provider and call.request.payload == RAW_EVENT
    assert dict(call.request.headers) == {k.lower(): v for k, v in headers.items()}


async def test_an_unknown_providers_webhook_is_refused_before_payments(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    resp = await client.post(
        "/api/payments/webhook/bitpay", content=RAW_EVENT, headers={"Stripe-Signature": SIGNATURE}
    )
    assert resp.status_code in (400, 404, 422) and resp.status_code != 200
    assert backends.payments.calls_to("HandleProviderEvent") == []


SIGNED = {
    "razorpay_order_id": "order_abc",
    "razorpay_payment_id": "pay_abc",
    "razorpay_signature": "ab" * 32,
}


async def test_razorpay_verify_forwards_the_signed_fields_and_answers_the_transaction(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "ConfirmCheckoutReturn",
        pay_pb.ConfirmCheckoutReturnResponse(
            transaction=make_transaction(payment_method="RAZORPAY", provider="razorpay"),
            redirect_url="https://app.example/ok",
        ),
    )
    resp = await client.post("/api/payments/razorpay/verify", json=SIGNED)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "SUCCESS"
    [call] = backends.payments.calls_to("ConfirmCheckoutReturn")
    assert call.request.provider == "razorpay" and dict(call.request.params) == SIGNED
    # Checkout's own callback is a browser form post: the customer is sent on to the caller.
    form = await client.post("/api/payments/return/razorpay?ref=txn_abc123", data=SIGNED)
    assert form.status_code == 303 and form.headers["location"] == "https://app.example/ok"
    assert dict(backends.payments.calls_to("ConfirmCheckoutReturn")[1].request.params) == {
        **SIGNED,
        "ref": "txn_abc123",
    }


async def test_a_forged_razorpay_signature_is_400_invalid_signature(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "ConfirmCheckoutReturn", domain_error("INVALID_SIGNATURE", ErrorKind.INVALID_ARGUMENT)
    )
    resp = await client.post("/api/payments/razorpay/verify", json=SIGNED)
    assert resp.status_code == 400 and resp.json()["error"] == "INVALID_SIGNATURE"


async def test_a_repeated_signing_header_forwards_its_first_value(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "HandleProviderEvent", pay_pb.HandleProviderEventResponse(event_id="e", applied=True)
    )
    resp = await client.post(
        "/api/payments/webhook/stripe",
        content=RAW_EVENT,
        headers=[("Stripe-Signature", SIGNATURE), ("Stripe-Signature", "t=1,v1=00")],
    )
    assert resp.status_code == 200, resp.text
    [call] = backends.payments.calls_to("HandleProviderEvent")
    assert call.request.signature == SIGNATURE
    assert dict(call.request.headers) == {"stripe-signature": SIGNATURE}
