"""A provider timeout or 5xx is UNKNOWN, never FAILED: the caller gets PAYMENT_TIMEOUT (with the
payment id) or PAYMENT_PROVIDER_UNAVAILABLE, and the poller replays the same idempotency key until
the provider gives a final state — voided if a Void was requested meanwhile, authorized otherwise."""

from __future__ import annotations

import grpc

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.support.payments_helpers import (
    State,
    authorize_request,
    branch,
    reason,
    rpc_error,
)
from tests.support.waiting import wait_for

AUTH = {"Authorization": "Bearer sk_test_paymentstests"}


def intents_of(admin, gtx: str) -> list[dict]:
    data = admin.http.get("/v1/payment_intents", params={"limit": 100}, headers=AUTH).json()["data"]
    return [i for i in data if i.get("metadata", {}).get("global_tx_id") == gtx]


async def _state(stub, payment_id: str) -> pb.Payment:
    return (await stub.GetPayment(pb.GetPaymentRequest(payment_id=payment_id))).payment


async def test_timeout_is_unknown_then_the_poller_authorizes(stub, admin, unique) -> None:
    gtx = unique("gtx")
    admin.add_fault("timeout", seconds=3, path_prefix="/v1/payment_intents", method="POST", count=1)
    exc = await rpc_error(stub.Authorize(authorize_request(gtx, amount=3100)))
    code, why, meta = reason(exc)
    assert (code, why) == (grpc.StatusCode.DEADLINE_EXCEEDED, "PAYMENT_TIMEOUT")
    assert meta["retry"] == "true"
    payment_id = meta["payment_id"]
    unknown = await _state(stub, payment_id)
    assert unknown.state == State.UNKNOWN and unknown.failure_reason == "PAYMENT_TIMEOUT"

    async def authorized():
        p = await _state(stub, payment_id)
        return p if p.state == State.AUTHORIZED else None

    done = await wait_for(authorized, timeout=20)
    assert done.amount.amount_minor == 3100 and done.failure_reason == ""
    mine = intents_of(admin, gtx)
    assert len(mine) == 1 and mine[0]["status"] == "requires_capture"
    # The saga can now confirm it.
    captured = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert captured.payment.captured_minor == 3100


async def test_unknown_then_void_ends_voided_once_the_provider_answers(stub, admin, unique) -> None:
    gtx = unique("gtx")
    admin.add_fault("timeout", seconds=2, path_prefix="/v1/payment_intents", method="POST")
    exc = await rpc_error(stub.Authorize(authorize_request(gtx, amount=2200)))
    payment_id = reason(exc)[2]["payment_id"]
    voided = await stub.Void(
        pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx), reason="saga gave up")
    )
    assert voided.payment.payment_id == payment_id
    assert voided.payment.state in (State.UNKNOWN, State.VOIDED)
    admin.clear_faults()

    async def final():
        p = await _state(stub, payment_id)
        return p if p.state == State.VOIDED else None

    done = await wait_for(final, timeout=25)
    assert done.captured_minor == 0
    mine = intents_of(admin, gtx)
    assert len(mine) <= 1 and all(i["status"] == "canceled" for i in mine)
    exc = await rpc_error(
        stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    )
    assert reason(exc)[1] == "PAYMENT_VOIDED"


async def test_timeout_after_commit_resolves_by_replay_without_a_second_intent(
    stub, admin, unique
) -> None:
    gtx = unique("gtx")
    # No webhook may tell us first: only replaying the create can resolve it.
    admin.add_fault("webhook_drop", event_type="payment_intent.*")
    admin.add_fault(
        "timeout_after_commit", seconds=3, path_prefix="/v1/payment_intents", method="POST", count=1
    )
    exc = await rpc_error(stub.Authorize(authorize_request(gtx, amount=4100)))
    payment_id = reason(exc)[2]["payment_id"]
    assert len(intents_of(admin, gtx)) == 1  # the provider did it; we did not hear

    async def authorized():
        p = await _state(stub, payment_id)
        return p if p.state == State.AUTHORIZED else None

    done = await wait_for(authorized, timeout=20)
    mine = intents_of(admin, gtx)
    assert len(mine) == 1 and done.provider_payment_id == mine[0]["id"]
    attempts = await stub.ListPaymentAttempts(pb.ListPaymentAttemptsRequest(payment_id=payment_id))
    creates = [
        (r.actor, r.details["outcome"], r.details["idempotency_key"])
        for r in attempts.records
        if r.action == "provider_call" and r.details["operation"] == "authorize"
    ]
    key = f"{gtx}:payment:authorize"
    assert creates[0] == ("saga", "timeout", key)
    assert creates[-1] == ("poller", "ok", key)


async def test_provider_down_is_unavailable_and_resolved_later(stub, admin, unique) -> None:
    gtx = unique("gtx")
    admin.add_fault("down", path_prefix="/v1/payment_intents", method="POST", count=1)
    exc = await rpc_error(stub.Authorize(authorize_request(gtx)))
    code, why, meta = reason(exc)
    assert (code, why) == (grpc.StatusCode.UNAVAILABLE, "PAYMENT_PROVIDER_UNAVAILABLE")
    p = await _state(stub, meta["payment_id"])
    assert p.state == State.UNKNOWN and p.failure_reason == "PAYMENT_PROVIDER_UNAVAILABLE"

    async def authorized():
        got = await _state(stub, meta["payment_id"])
        return got if got.state == State.AUTHORIZED else None

    await wait_for(authorized, timeout=20)
    assert len(intents_of(admin, gtx)) == 1


async def test_provider_5xx_is_unavailable_never_failed(stub, admin, unique) -> None:
    gtx = unique("gtx")
    admin.add_fault("error", status=503, path_prefix="/v1/payment_intents", method="POST", count=1)
    exc = await rpc_error(stub.Authorize(authorize_request(gtx)))
    assert reason(exc)[:2] == (grpc.StatusCode.UNAVAILABLE, "PAYMENT_PROVIDER_UNAVAILABLE")
    payment_id = reason(exc)[2]["payment_id"]
    assert (await _state(stub, payment_id)).state != State.FAILED

    async def authorized():
        got = await _state(stub, payment_id)
        return got if got.state == State.AUTHORIZED else None

    await wait_for(authorized, timeout=20)
    attempts = await stub.ListPaymentAttempts(pb.ListPaymentAttemptsRequest(payment_id=payment_id))
    outcomes = [
        r.details["outcome"]
        for r in attempts.records
        if r.action == "provider_call" and r.details["operation"] == "authorize"
    ]
    assert outcomes[0] == "unavailable" and outcomes[-1] == "ok"
    keys = {
        r.details["idempotency_key"]
        for r in attempts.records
        if r.action == "provider_call" and r.details["operation"] == "authorize"
    }
    assert keys == {f"{gtx}:payment:authorize"}
