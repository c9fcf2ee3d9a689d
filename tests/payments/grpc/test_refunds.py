"""Refunds: partial and full, idempotent by request id, and never more than was captured even when
ten arrive at once."""

from __future__ import annotations

import asyncio

import grpc

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.support.payments_helpers import State, authorize_request, branch, reason, rpc_error

AUTH = {"Authorization": "Bearer sk_test_paymentstests"}


async def _captured(stub, gtx: str, amount: int) -> pb.Payment:
    await stub.Authorize(authorize_request(gtx, amount=amount))
    return (
        await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    ).payment


async def test_partial_then_rest_refunded(stub, unique) -> None:
    p = await _captured(stub, unique("gtx"), 5000)
    first = await stub.Refund(
        pb.RefundRequest(request_id="r1", payment_id=p.payment_id, amount_minor=2000, reason="x")
    )
    assert first.refund.status == "SUCCEEDED" and first.refund.amount.amount_minor == 2000
    assert first.refund.provider_refund_id.startswith("re_")
    assert first.payment.state == State.PARTIALLY_REFUNDED and first.payment.refunded_minor == 2000
    again = await stub.Refund(
        pb.RefundRequest(request_id="r1", payment_id=p.payment_id, amount_minor=2000, reason="x")
    )
    assert again.replayed and again.refund.refund_id == first.refund.refund_id
    assert again.payment.refunded_minor == 2000
    rest = await stub.Refund(pb.RefundRequest(request_id="r2", payment_id=p.payment_id))
    assert rest.refund.amount.amount_minor == 3000
    assert rest.payment.state == State.REFUNDED and rest.payment.refunded_minor == 5000
    exc = await rpc_error(
        stub.Refund(pb.RefundRequest(request_id="r3", payment_id=p.payment_id, amount_minor=1))
    )
    assert reason(exc)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_CAPTURED")


async def test_refund_of_an_uncaptured_payment_is_refused(stub, unique) -> None:
    gtx = unique("gtx")
    p = (await stub.Authorize(authorize_request(gtx))).payment
    exc = await rpc_error(stub.Refund(pb.RefundRequest(request_id="r", payment_id=p.payment_id)))
    assert reason(exc)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_NOT_REFUNDABLE")


async def test_ten_concurrent_refunds_never_exceed_the_capture(stub, admin, unique) -> None:
    p = await _captured(stub, unique("gtx"), 1000)
    calls = [
        stub.Refund(pb.RefundRequest(request_id=f"c{i}", payment_id=p.payment_id, amount_minor=300))
        for i in range(10)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, pb.RefundResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 3 and len(refused) == 7
    assert all(reason(e)[1] == "REFUND_EXCEEDS_CAPTURED" for e in refused)
    final = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
    assert final.refunded_minor == 900 and final.captured_minor == 1000
    assert final.state == State.PARTIALLY_REFUNDED
    refunds = admin.http.get(
        "/v1/refunds", params={"payment_intent": p.provider_payment_id, "limit": 100}, headers=AUTH
    ).json()["data"]
    assert sum(r["amount"] for r in refunds if r["status"] == "succeeded") == 900


async def test_refund_with_provider_down_stays_reserved_then_completes(stub, admin, unique) -> None:
    p = await _captured(stub, unique("gtx"), 800)
    admin.add_fault("error", status=500, path_prefix="/v1/refunds", method="POST", count=1)
    exc = await rpc_error(
        stub.Refund(pb.RefundRequest(request_id="rd", payment_id=p.payment_id, amount_minor=800))
    )
    code, why, meta = reason(exc)
    assert (code, why) == (grpc.StatusCode.UNAVAILABLE, "PAYMENT_PROVIDER_UNAVAILABLE")
    assert meta["refund_id"].startswith("rfd_")
    # The reservation holds: no second refund can take the same money meanwhile.
    blocked = await rpc_error(
        stub.Refund(pb.RefundRequest(request_id="rx", payment_id=p.payment_id, amount_minor=1))
    )
    assert reason(blocked)[1] == "REFUND_EXCEEDS_CAPTURED"
    for _ in range(100):
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        if got.state == State.REFUNDED:
            break
        await asyncio.sleep(0.1)
    assert got.state == State.REFUNDED and got.refunded_minor == 800
    replay = await stub.Refund(
        pb.RefundRequest(request_id="rd", payment_id=p.payment_id, amount_minor=800)
    )
    assert replay.replayed and replay.refund.status == "SUCCEEDED"


async def test_get_payment_lists_its_refunds_with_their_request_ids(stub, unique) -> None:
    # Jobs reads them to book the refunds of offer money made at the provider (request id
    # `provider:<re_...>`) and to leave its own (`engagement:<id>:<step>`) to their money step.
    p = await _captured(stub, unique("gtx"), 5000)
    first = await stub.Refund(
        pb.RefundRequest(
            request_id="engagement:eng_1:cancel", payment_id=p.payment_id, amount_minor=2000
        )
    )
    rest = await stub.Refund(pb.RefundRequest(request_id="r2", payment_id=p.payment_id))
    got = await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))
    assert [(r.refund_id, r.request_id, r.amount.amount_minor, r.status) for r in got.refunds] == [
        (first.refund.refund_id, "engagement:eng_1:cancel", 2000, "SUCCEEDED"),
        (rest.refund.refund_id, "r2", 3000, "SUCCEEDED"),
    ]
