"""Authorize / Capture / Void over real gRPC against the real sandbox: amounts, states, and the
three TCC anomalies (repeat, null compensation, hanging)."""

from __future__ import annotations

import grpc

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.support.payments_helpers import State, authorize_request, branch, reason, rpc_error


async def test_authorize_then_capture_in_full(stub, admin, unique) -> None:
    gtx = unique("gtx")
    auth = await stub.Authorize(authorize_request(gtx, amount=4200))
    p = auth.payment
    assert p.state == State.AUTHORIZED
    assert (p.amount.amount_minor, p.amount.currency) == (4200, "USD")
    assert p.captured_minor == 0 and p.provider_payment_id.startswith("pi_")

    captured = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert captured.payment.state == State.CAPTURED
    assert captured.payment.captured_minor == 4200
    intent = admin.http.get(
        f"/v1/payment_intents/{p.provider_payment_id}",
        headers={"Authorization": "Bearer sk_test_paymentstests"},
    ).json()
    assert intent["status"] == "succeeded" and intent["amount_received"] == 4200
    trail = await stub.ListPaymentAttempts(pb.ListPaymentAttemptsRequest(payment_id=p.payment_id))
    mine = [
        (r.action, r.details.get("operation", ""), r.details.get("outcome", ""))
        for r in trail.records
        if r.actor == "saga"
    ]
    assert mine[:5] == [
        ("attempt", "", ""),
        ("provider_call", "authorize", "ok"),
        ("transition", "", ""),
        ("attempt", "", ""),
        ("provider_call", "capture", "ok"),
    ]
    # The capture's transition is recorded once, by the request, unless the provider's
    # payment_intent.succeeded webhook (or the poller) recorded it first: a webhook waits for the
    # request it raced only RACE_WAIT_SECONDS, which a heavily loaded machine can exceed. Either
    # way exactly one move to CAPTURED is on the trail: the request's or the poller's transition,
    # or the webhook's own record of the change it applied (a webhook that found the payment
    # captured already records CAPTURED -> CAPTURED, which is no move).
    to_captured = [
        r.actor
        for r in trail.records
        if r.action in ("transition", "webhook")
        and r.details.get("to") == "CAPTURED"
        and r.details.get("from") != "CAPTURED"
    ]
    assert len(to_captured) == 1
    assert mine[5:] == ([("transition", "", "")] if to_captured == ["saga"] else [])
    ids = [r.id for r in trail.records]
    assert ids == sorted(ids)
    assert all("pm_card" not in str(r.details) for r in trail.records)  # no payment data


async def test_partial_capture_takes_only_that_amount(stub, unique) -> None:
    gtx = unique("gtx")
    await stub.Authorize(authorize_request(gtx, amount=5000))
    captured = await stub.Capture(
        pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx), amount_minor=3000)
    )
    assert captured.payment.state == State.CAPTURED
    assert captured.payment.captured_minor == 3000
    again = await stub.Capture(
        pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx), amount_minor=3000)
    )
    assert again.replayed and again.payment.captured_minor == 3000


async def test_void_releases_and_capture_after_void_is_refused(stub, unique) -> None:
    gtx = unique("gtx")
    await stub.Authorize(authorize_request(gtx))
    voided = await stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx), reason="x"))
    assert voided.payment.state == State.VOIDED and voided.payment.captured_minor == 0
    exc = await rpc_error(
        stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    )
    code, why, meta = reason(exc)
    assert (code, why) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_VOIDED")
    assert meta["payment_id"] == voided.payment.payment_id
    still = await stub.GetPayment(pb.GetPaymentRequest(payment_id=voided.payment.payment_id))
    assert still.payment.state == State.VOIDED and still.payment.captured_minor == 0


async def test_void_before_authorize_is_null_compensation_and_late_authorize_hangs(
    stub, admin, unique
) -> None:
    gtx = unique("gtx")
    voided = await stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx)))
    assert voided.null_compensation and not voided.HasField("payment")
    again = await stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx)))
    assert again.replayed and again.null_compensation

    exc = await rpc_error(stub.Authorize(authorize_request(gtx)))
    assert reason(exc)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_VOIDED")
    # Nothing was created with the provider for this branch.
    intents = admin.http.get(
        "/v1/payment_intents",
        params={"limit": 100},
        headers={"Authorization": "Bearer sk_test_paymentstests"},
    ).json()["data"]
    assert not [i for i in intents if i.get("metadata", {}).get("global_tx_id") == gtx]
    by_branch = await stub.GetPaymentByBranch(pb.GetPaymentByBranchRequest(branch=branch(gtx)))
    assert by_branch.null_compensation


async def test_repeated_authorize_is_idempotent_with_one_intent(stub, admin, unique) -> None:
    gtx = unique("gtx")
    first = await stub.Authorize(authorize_request(gtx, amount=1234))
    for _ in range(3):
        again = await stub.Authorize(authorize_request(gtx, amount=1234))
        assert again.replayed
        assert again.payment.payment_id == first.payment.payment_id
        assert again.payment.state == State.AUTHORIZED
    intents = admin.http.get(
        "/v1/payment_intents",
        params={"limit": 100},
        headers={"Authorization": "Bearer sk_test_paymentstests"},
    ).json()["data"]
    mine = [i for i in intents if i.get("metadata", {}).get("global_tx_id") == gtx]
    assert len(mine) == 1 and mine[0]["amount"] == 1234

    exc = await rpc_error(stub.Authorize(authorize_request(gtx, amount=999)))
    assert reason(exc)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_MISMATCH")
