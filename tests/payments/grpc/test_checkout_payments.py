"""Job-posting payments on the hosted checkout page (method CHECKOUT, manual capture): voiding after a
declined attempt expires the session and cancels its intent; voiding after payment releases it."""

from __future__ import annotations

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.support.payments_helpers import CHECKOUT, State, authorize_request, branch
from tests.support.waiting import wait_for

AUTH = {"Authorization": "Bearer sk_test_paymentstests"}


async def _checkout_payment(stub, gtx: str) -> pb.Payment:
    reply = await stub.Authorize(
        authorize_request(
            gtx, method=CHECKOUT, token="", return_url="https://app.example/jobs/paid"
        )
    )
    assert reply.payment.state == State.REQUIRES_ACTION
    return reply.payment


async def test_void_after_a_declined_attempt_expires_the_session(stub, admin, unique) -> None:
    gtx = unique("gtx")
    p = await _checkout_payment(stub, gtx)
    declined = admin.pay_checkout(p.next_action_url, "4000 0000 0000 0002")
    assert declined.status_code == 402

    async def failed():
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        return got if got.state == State.FAILED and got.provider_payment_id else None

    seen = await wait_for(failed)
    assert seen.failure_code == "card_declined"
    voided = await stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx)))
    assert voided.payment.state == State.VOIDED
    late = admin.pay_checkout(p.next_action_url, "4242 4242 4242 4242")
    assert late.status_code == 410  # the page can no longer take money
    intent = admin.http.get(f"/v1/payment_intents/{seen.provider_payment_id}", headers=AUTH).json()
    assert intent["status"] == "canceled" and intent["amount_received"] == 0


async def test_void_after_payment_on_the_page_releases_the_authorization(
    stub, admin, unique
) -> None:
    gtx = unique("gtx")
    p = await _checkout_payment(stub, gtx)
    assert admin.pay_checkout(p.next_action_url, "4242 4242 4242 4242").status_code == 303

    async def authorized():
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        return got if got.state == State.AUTHORIZED else None

    await wait_for(authorized)
    voided = await stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx)))
    assert voided.payment.state == State.VOIDED and voided.payment.captured_minor == 0
    intent = admin.http.get(
        f"/v1/payment_intents/{voided.payment.provider_payment_id}", headers=AUTH
    ).json()
    assert intent["status"] == "canceled"
    trail = await stub.ListPaymentAttempts(pb.ListPaymentAttemptsRequest(payment_id=p.payment_id))
    keys = [
        (r.details["operation"], r.details["idempotency_key"])
        for r in trail.records
        if r.action == "provider_call" and r.details["idempotency_key"]
    ]
    assert ("create_checkout", f"{gtx}:payment:authorize") in keys
    assert ("cancel", f"{gtx}:payment:void") in keys
