"""Concurrent twins of one TCC call (retries racing each other) make one provider operation: the
others get the stored outcome or OPERATION_IN_PROGRESS (UNAVAILABLE, retryable)."""

from __future__ import annotations

import asyncio

import grpc

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.support.payments_helpers import State, authorize_request, branch, reason

AUTH = {"Authorization": "Bearer sk_test_paymentstests"}


def _outcomes(results: list) -> tuple[list, set[str]]:
    ok = [r for r in results if isinstance(r, pb.PaymentResponse)]
    errors = {reason(e)[1] for e in results if isinstance(e, grpc.aio.AioRpcError)}
    unexpected = [
        r for r in results if not isinstance(r, pb.PaymentResponse | grpc.aio.AioRpcError)
    ]
    assert not unexpected, unexpected
    return ok, errors


async def test_ten_concurrent_authorize_twins_make_one_intent(stub, admin, unique) -> None:
    gtx = unique("gtx")
    results = await asyncio.gather(
        *(stub.Authorize(authorize_request(gtx, amount=321)) for _ in range(10)),
        return_exceptions=True,
    )
    ok, errors = _outcomes(results)
    assert ok and errors <= {"OPERATION_IN_PROGRESS"}
    assert {r.payment.payment_id for r in ok} == {ok[0].payment.payment_id}
    assert sum(not r.replayed for r in ok) <= 1
    final = await stub.GetPaymentByBranch(pb.GetPaymentByBranchRequest(branch=branch(gtx)))
    assert final.payment.state == State.AUTHORIZED
    intents = admin.http.get("/v1/payment_intents", params={"limit": 100}, headers=AUTH).json()[
        "data"
    ]
    assert len([i for i in intents if i["metadata"].get("global_tx_id") == gtx]) == 1


async def test_concurrent_capture_twins_capture_once(stub, unique) -> None:
    gtx = unique("gtx")
    p = (await stub.Authorize(authorize_request(gtx, amount=654))).payment
    results = await asyncio.gather(
        *(
            stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
            for _ in range(8)
        ),
        return_exceptions=True,
    )
    ok, errors = _outcomes(results)
    assert ok and errors <= {"OPERATION_IN_PROGRESS"}
    assert all(r.payment.captured_minor == 654 for r in ok)
    trail = await stub.ListPaymentAttempts(pb.ListPaymentAttemptsRequest(payment_id=p.payment_id))
    captures = [
        r
        for r in trail.records
        if r.action == "provider_call" and r.details["operation"] == "capture"
    ]
    assert len(captures) == 1


async def test_void_of_a_three_d_secure_payment_cancels_it(stub, admin, unique) -> None:
    gtx = unique("gtx")
    p = (
        await stub.Authorize(
            authorize_request(
                gtx, token="pm_card_threeDSecure2Required", return_url="https://app.example/r"
            )
        )
    ).payment
    assert p.state == State.REQUIRES_ACTION
    voided = await stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx)))
    assert voided.payment.state == State.VOIDED
    intent = admin.http.get(f"/v1/payment_intents/{p.provider_payment_id}", headers=AUTH).json()
    assert intent["status"] == "canceled"
