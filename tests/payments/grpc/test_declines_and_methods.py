"""Each test payment method gives its contract error (PAY-11) and leaves the payment FAILED with the
provider's codes; 3-D Secure and bank transfers settle later through signed webhooks."""

from __future__ import annotations

import grpc
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.support.payments_helpers import (
    BANK,
    State,
    authorize_request,
    branch,
    reason,
    rpc_error,
)
from tests.support.waiting import wait_for

DECLINES = [
    ("pm_card_chargeDeclined", "PAYMENT_DECLINED", "card_declined", "generic_decline"),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        "INSUFFICIENT_FUNDS",
        "card_declined",
        "insufficient_funds",
    ),
    (
        "pm_card_chargeDeclinedProcessingError",
        "PAYMENT_DECLINED",
        "processing_error",
        "processing_error",
    ),
    ("pm_card_chargeDeclinedExpiredCard", "PAYMENT_DECLINED", "expired_card", "expired_card"),
    ("pm_card_chargeDeclinedIncorrectCvc", "PAYMENT_DECLINED", "incorrect_cvc", "incorrect_cvc"),
]


@pytest.mark.parametrize(("token", "why", "code", "decline_code"), DECLINES)
async def test_test_card_gives_its_reason_and_payment_fails(
    stub, unique, token: str, why: str, code: str, decline_code: str
) -> None:
    gtx = unique("gtx")
    exc = await rpc_error(stub.Authorize(authorize_request(gtx, token=token, amount=1500)))
    status, got, meta = reason(exc)
    assert (status, got) == (grpc.StatusCode.FAILED_PRECONDITION, why)
    assert meta["code"] == code and meta["decline_code"] == decline_code
    stored = (
        await stub.GetPaymentByBranch(pb.GetPaymentByBranchRequest(branch=branch(gtx)))
    ).payment
    assert stored.payment_id == meta["payment_id"]
    assert stored.state == State.FAILED
    assert (stored.failure_reason, stored.failure_code, stored.decline_code) == (
        why,
        code,
        decline_code,
    )
    assert stored.captured_minor == 0 and stored.amount.amount_minor == 1500
    # A repeat answers the stored outcome, and the audit trail shows the one provider call.
    again = await rpc_error(stub.Authorize(authorize_request(gtx, token=token, amount=1500)))
    assert reason(again)[1] == why
    attempts = await stub.ListPaymentAttempts(
        pb.ListPaymentAttemptsRequest(payment_id=stored.payment_id)
    )
    calls = [
        r
        for r in attempts.records
        if r.action == "provider_call" and r.details["operation"] == "authorize"
    ]
    assert len(calls) == 1
    assert calls[0].details["outcome"] == "declined" and calls[0].details["error_code"] == code
    assert calls[0].details["idempotency_key"] == f"{gtx}:payment:authorize"


async def test_unknown_payment_method_is_invalid_payment_details(stub, unique) -> None:
    gtx = unique("gtx")
    exc = await rpc_error(stub.Authorize(authorize_request(gtx, token="pm_does_not_exist")))
    assert reason(exc)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAYMENT_DETAILS")
    stored = (
        await stub.GetPaymentByBranch(pb.GetPaymentByBranchRequest(branch=branch(gtx)))
    ).payment
    assert stored.state == State.FAILED and stored.failure_reason == "INVALID_PAYMENT_DETAILS"


async def test_card_number_instead_of_token_is_refused_before_the_provider(stub, unique) -> None:
    gtx = unique("gtx")
    exc = await rpc_error(stub.Authorize(authorize_request(gtx, token="4242424242424242")))
    assert reason(exc)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAYMENT_DETAILS")
    missing = await rpc_error(
        stub.GetPaymentByBranch(pb.GetPaymentByBranchRequest(branch=branch(gtx)))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_another_providers_token_format_is_refused_by_the_adapter(stub, unique) -> None:
    # The token format is the Stripe adapter's business (the gateway no longer checks pm_).
    gtx = unique("gtx")
    exc = await rpc_error(stub.Authorize(authorize_request(gtx, token="tok_visa")))
    assert reason(exc)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAYMENT_DETAILS")
    missing = await rpc_error(
        stub.GetPaymentByBranch(pb.GetPaymentByBranchRequest(branch=branch(gtx)))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_three_d_secure_requires_action_then_webhook_authorizes(stub, admin, unique) -> None:
    gtx = unique("gtx")
    auth = await stub.Authorize(
        authorize_request(
            gtx, token="pm_card_threeDSecure2Required", return_url="https://app.example/return"
        )
    )
    p = auth.payment
    assert p.state == State.REQUIRES_ACTION and p.next_action_url
    response = admin.answer_3ds(p.next_action_url, approve=True)
    assert response.status_code in (200, 303)

    async def authorized():
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        return got if got.state == State.AUTHORIZED else None

    done = await wait_for(authorized)
    assert done.amount.amount_minor == 2500 and done.captured_minor == 0
    captured = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert captured.payment.captured_minor == 2500


async def test_bank_transfer_processes_then_settles_by_webhook(stub, admin, unique) -> None:
    gtx = unique("gtx")
    auth = await stub.Authorize(authorize_request(gtx, token="pm_usBankAccount", method=BANK))
    p = auth.payment
    assert p.state == State.PROCESSING
    admin.settle_payment_intent(p.provider_payment_id, "succeeded")

    async def captured():
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        return got if got.state == State.CAPTURED else None

    done = await wait_for(captured)
    assert done.captured_minor == 2500
    # Capture of an automatic payment that already settled is an idempotent success.
    again = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert again.payment.state == State.CAPTURED and again.payment.captured_minor == 2500


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
async def test_bank_transfer_settled_with_its_webhooks_lost_is_found_by_the_poller(
    stub, admin, unique, outcome
) -> None:
    """Issue 11 §2: every non-final payment is re-fetched from the provider on a schedule, so a
    lost webhook only delays the settlement (by at most the watch interval's maximum)."""
    before = {d["id"] for d in admin.deliveries()}
    admin.add_fault("webhook_drop")  # every webhook of this test is lost
    gtx = unique("gtx")
    p = (
        await stub.Authorize(authorize_request(gtx, token="pm_usBankAccount", method=BANK))
    ).payment
    assert p.state == State.PROCESSING
    admin.settle_payment_intent(p.provider_payment_id, outcome)
    want = State.CAPTURED if outcome == "succeeded" else State.FAILED

    async def settled():
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        return got if got.state == want else None

    done = await wait_for(settled, timeout=10)
    assert done.captured_minor == (2500 if outcome == "succeeded" else 0)
    # Nothing was delivered: the poller, not a webhook, settled it.
    new = [d for d in admin.deliveries() if d["id"] not in before]
    assert new and {d["status"] for d in new} == {"dropped"}


async def test_bank_transfer_that_bounces_fails(stub, admin, unique) -> None:
    gtx = unique("gtx")
    p = (
        await stub.Authorize(authorize_request(gtx, token="pm_usBankAccount", method=BANK))
    ).payment
    admin.settle_payment_intent(p.provider_payment_id, "failed")

    async def failed():
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        return got if got.state == State.FAILED else None

    done = await wait_for(failed)
    assert done.captured_minor == 0 and done.failure_code


async def test_bank_transfer_voided_while_processing_is_refunded_when_it_settles(
    stub, admin, unique
) -> None:
    gtx = unique("gtx")
    p = (
        await stub.Authorize(authorize_request(gtx, token="pm_usBankAccount", method=BANK))
    ).payment
    voided = await stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx), reason="x"))
    assert voided.payment.state == State.PROCESSING  # cannot be cancelled while processing
    admin.settle_payment_intent(p.provider_payment_id, "succeeded")

    async def refunded():
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        return got if got.state == State.REFUNDED else None

    done = await wait_for(refunded, timeout=20)
    assert done.captured_minor == 2500 and done.refunded_minor == 2500
    refunds = admin.http.get(
        "/v1/refunds",
        params={"payment_intent": p.provider_payment_id},
        headers={"Authorization": "Bearer sk_test_paymentstests"},
    ).json()["data"]
    assert [r["amount"] for r in refunds] == [2500]
