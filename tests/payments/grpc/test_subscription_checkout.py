"""Subscriptions through the sandbox's hosted checkout page (API-1, API-2, API-6): paying with
4242... makes the transaction SUCCESS with its dates; 4000...0002 makes it FAILED with nothing
active; cancelling makes it CANCELLED; an active subscription refuses a second purchase."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import grpc

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.support.payments_helpers import reason, rpc_error
from tests.support.waiting import wait_for

Status = pb.Transaction.Status


def subscribe_request(user_id: str, request_id: str = "s1", **extra) -> pb.SubscribeRequest:
    fields = {
        "request_id": request_id,
        "user_type": pb.USER_TYPE_COMPANY,
        "user_id": user_id,
        "email": "hr@acme.example",
        "plan": "MONTHLY",
        "payment_method": "STRIPE",
        "return_url": "https://app.example/subscription/success",
        "cancel_url": "https://app.example/subscription/cancel",
    }
    fields.update(extra)
    return pb.SubscribeRequest(**fields)


async def _status(stub, txn_id: str, wanted: int) -> pb.Transaction | None:
    txn = (await stub.GetTransaction(pb.GetTransactionRequest(transaction_id=txn_id))).transaction
    return txn if txn.status == wanted else None


async def test_pay_on_hosted_page_makes_the_subscription_active(stub, admin, unique) -> None:
    user = unique("company")
    txn = (await stub.Subscribe(subscribe_request(user))).transaction
    assert txn.status == Status.PENDING and txn.transaction_id.startswith("txn_")
    assert (txn.amount.amount_minor, txn.amount.currency) == (3000, "USD")
    assert txn.checkout_url and txn.provider_transaction_id.startswith("cs_")
    assert txn.provider_customer_id.startswith("cus_")
    assert txn.expires_at.ToDatetime(UTC) > datetime.now(UTC)
    page = admin.http.get(txn.checkout_url)
    assert page.status_code == 200
    paid = admin.pay_checkout(txn.checkout_url, "4242 4242 4242 4242")
    assert paid.status_code == 303
    assert paid.headers["location"].startswith("https://app.example/subscription/success")

    done = await wait_for(lambda: _status(stub, txn.transaction_id, Status.SUCCESS))
    today = datetime.now(UTC).date()
    assert date.fromisoformat(done.subscription_start_date) == today
    assert date.fromisoformat(done.subscription_end_date) == today + timedelta(days=30)
    assert done.email == "hr@acme.example" and done.amount.amount_minor == 3000
    assert done.checkout_url == ""

    exc = await rpc_error(stub.Subscribe(subscribe_request(user, request_id="s2")))
    code, why, meta = reason(exc)
    assert (code, why) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_SUBSCRIBED")
    assert meta["expires_at"] == done.subscription_end_date

    async def trail_with_webhook() -> list[tuple[str, str]] | None:
        # On a loaded machine the poller may settle the transaction before the sandbox's webhook
        # arrives; the webhook is still recorded when it does (its audit row), so wait for it.
        trail = await stub.ListPaymentAttempts(
            pb.ListPaymentAttemptsRequest(payment_id=txn.transaction_id)
        )
        actions = [(r.action, r.details.get("operation", "")) for r in trail.records]
        return actions if ("webhook", "") in actions else None

    actions = await wait_for(trail_with_webhook)
    assert actions[:3] == [
        ("attempt", ""),
        ("provider_call", "create_customer"),
        ("provider_call", "create_checkout"),
    ]
    assert ("transition", "") in actions
    # The first request id still answers with its transaction (idempotent).
    again = (await stub.Subscribe(subscribe_request(user))).transaction
    assert again.transaction_id == txn.transaction_id and again.status == Status.SUCCESS


async def test_declined_card_fails_and_nothing_is_active(stub, admin, unique) -> None:
    user = unique("company")
    txn = (await stub.Subscribe(subscribe_request(user))).transaction
    declined = admin.pay_checkout(txn.checkout_url, "4000 0000 0000 0002")
    assert declined.status_code == 402
    done = await wait_for(lambda: _status(stub, txn.transaction_id, Status.FAILED))
    assert done.subscription_start_date == "" and done.subscription_end_date == ""
    # Nothing active: a new purchase is allowed.
    second = (await stub.Subscribe(subscribe_request(user, request_id="s2"))).transaction
    assert second.status == Status.PENDING and second.transaction_id != txn.transaction_id


async def test_cancel_checkout_cancels_and_redirects_to_the_subsystem(stub, admin, unique) -> None:
    user = unique("applicant")
    txn = (
        await stub.Subscribe(
            subscribe_request(user, user_type=pb.USER_TYPE_APPLICANT, currency="EUR")
        )
    ).transaction
    assert (txn.amount.amount_minor, txn.amount.currency) == (900, "EUR")
    cancel = admin.cancel_checkout(txn.checkout_url)
    assert cancel.status_code == 303
    assert txn.transaction_id in cancel.headers["location"]  # our cancel URL, then the gateway
    result = await stub.CancelCheckout(
        pb.CancelCheckoutRequest(request_id="cc", transaction_id=txn.transaction_id)
    )
    assert result.transaction.status == Status.CANCELLED
    assert result.redirect_url == "https://app.example/subscription/cancel"
    # The session is expired at the provider: the page can no longer take money.
    late = admin.pay_checkout(txn.checkout_url, "4242 4242 4242 4242")
    assert late.status_code == 410
    after = await stub.GetTransaction(pb.GetTransactionRequest(transaction_id=txn.transaction_id))
    assert after.transaction.status == Status.CANCELLED


async def test_unknown_plan_and_bad_input_are_refused(stub, unique) -> None:
    exc = await rpc_error(stub.Subscribe(subscribe_request(unique("c"), plan="YEARLY")))
    assert reason(exc)[:2] == (grpc.StatusCode.NOT_FOUND, "PLAN_NOT_FOUND")
    exc = await rpc_error(stub.Subscribe(subscribe_request(unique("c"), email="nope")))
    code, why, meta = reason(exc)
    assert (code, why) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert "email" in meta
    exc = await rpc_error(stub.Subscribe(subscribe_request(unique("c"), payment_method="BITCOIN")))
    assert reason(exc)[1] == "VALIDATION_FAILED"
    # This process has no PayPal credentials: PayPal is not offered, and nothing is created.
    user = unique("c")
    exc = await rpc_error(stub.Subscribe(subscribe_request(user, payment_method="PAYPAL")))
    code, why, meta = reason(exc)
    assert (code, why) == (grpc.StatusCode.INVALID_ARGUMENT, "PROVIDER_NOT_AVAILABLE")
    assert meta["provider"] == "paypal" and "stripe" in meta["offered"]
    missing = await rpc_error(stub.GetTransaction(pb.GetTransactionRequest(transaction_id="txn_x")))
    assert reason(missing)[:2] == (grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND")


async def test_plans_are_listed_per_user_type(stub) -> None:
    plans = (await stub.ListPlans(pb.ListPlansRequest(user_type=pb.USER_TYPE_APPLICANT))).plans
    assert [(p.code, p.period_days) for p in plans] == [("MONTHLY", 30)]
    assert {(m.currency, m.amount_minor) for m in plans[0].prices} == {("USD", 1000), ("EUR", 900)}
    every = (await stub.ListPlans(pb.ListPlansRequest())).plans
    # Seed 003's recruiter plans and seed 004's MONTHLY for both audiences (CR-1).
    assert [(p.code, p.user_type) for p in every] == [
        ("FREE_LAUNCHPAD", pb.USER_TYPE_COMPANY),
        ("SWIFT_HIRE", pb.USER_TYPE_COMPANY),
        ("GROWTH_ENGINE", pb.USER_TYPE_COMPANY),
        ("ENTERPRISE_ELITE", pb.USER_TYPE_COMPANY),
        ("MONTHLY", pb.USER_TYPE_COMPANY),
        ("MONTHLY", pb.USER_TYPE_APPLICANT),
    ]
    credits = {p.code: (p.job_credits, p.candidate_credits, p.free) for p in every}
    assert credits["FREE_LAUNCHPAD"] == (0, 0, True)
    assert credits["SWIFT_HIRE"] == (2_500, 50, False)
    assert credits["GROWTH_ENGINE"] == (7_500, 300, False)
    assert credits["ENTERPRISE_ELITE"] == (999_999, 1_500, False)


async def test_subscribe_timeout_then_retry_with_the_same_request_id(stub, admin, unique) -> None:
    user = unique("company")
    admin.add_fault(
        "timeout_after_commit",
        seconds=3,
        path_prefix="/v1/checkout/sessions",
        method="POST",
        count=1,
    )
    exc = await rpc_error(stub.Subscribe(subscribe_request(user)))
    code, why, meta = reason(exc)
    assert (code, why) == (grpc.StatusCode.DEADLINE_EXCEEDED, "PAYMENT_TIMEOUT")
    pending = await stub.GetTransaction(
        pb.GetTransactionRequest(transaction_id=meta["transaction_id"])
    )
    assert pending.transaction.status == Status.PENDING and pending.transaction.checkout_url == ""
    retried = (await stub.Subscribe(subscribe_request(user))).transaction
    assert retried.transaction_id == meta["transaction_id"]
    assert retried.checkout_url and retried.provider_transaction_id.startswith("cs_")
    sessions = admin.http.get(
        "/v1/checkout/sessions",
        params={"limit": 100},
        headers={"Authorization": "Bearer sk_test_paymentstests"},
    ).json()["data"]
    mine = [s for s in sessions if s.get("client_reference_id") == retried.transaction_id]
    assert len(mine) == 1  # the replayed key returned the session created the first time
