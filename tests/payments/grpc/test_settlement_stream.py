"""Settlement events through the transactional outbox: a stream resumes from any cursor without
gaps or duplicates, follows new commits, and filters by subsystem."""

from __future__ import annotations

import asyncio

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.support.payments_helpers import CHECKOUT, State, authorize_request, branch
from tests.support.waiting import wait_for


async def _all(stub, after: int = 0, subsystem: str = "") -> list[pb.SettlementEvent]:
    request = pb.StreamSettlementEventsRequest(after_cursor=after, subsystem=subsystem)
    return [e async for e in stub.StreamSettlementEvents(request)]


async def test_stream_resumes_from_a_cursor_without_gaps_or_duplicates(stub, unique) -> None:
    for _ in range(3):
        gtx = unique("gtx")
        await stub.Authorize(authorize_request(gtx))
        await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    everything = await _all(stub)
    cursors = [e.cursor for e in everything]
    assert cursors == sorted(set(cursors)) and len(cursors) >= 6
    assert len({e.event_id for e in everything}) == len(everything)
    middle = cursors[len(cursors) // 2]
    tail = await _all(stub, after=middle)
    assert [e.event_id for e in tail] == [e.event_id for e in everything if e.cursor > middle]
    assert await _all(stub, after=cursors[-1]) == []


async def test_follow_delivers_new_events_as_they_commit(stub, unique) -> None:
    start = (await _all(stub))[-1].cursor if await _all(stub) else 0
    received: list[pb.SettlementEvent] = []
    marker, gtx = unique("gtx"), unique("gtx")
    caught_up = asyncio.Event()

    async def consume() -> None:
        request = pb.StreamSettlementEventsRequest(after_cursor=start, follow=True)
        async for event in stub.StreamSettlementEvents(request):
            if event.payment.branch.global_tx_id == marker:
                caught_up.set()  # the stream is open and has delivered what was committed
            if event.payment.branch.global_tx_id == gtx:
                received.append(event)
            if len(received) == 2:
                return

    task = asyncio.create_task(consume())
    await stub.Authorize(authorize_request(marker, amount=111))
    await asyncio.wait_for(caught_up.wait(), timeout=10)
    # Committed only now, while the stream follows: it must deliver them as they commit.
    await stub.Authorize(authorize_request(gtx, amount=777))
    await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    await asyncio.wait_for(task, timeout=10)
    assert [e.type for e in received] == ["payment.authorized", "payment.captured"]
    assert received[1].payment.captured_minor == 777
    assert received[0].payment.state == State.AUTHORIZED  # a snapshot as of the event
    assert received[0].cursor < received[1].cursor


async def test_subsystem_filter_and_checkout_payments(stub, admin, unique) -> None:
    gtx = unique("gtx")
    p = (
        await stub.Authorize(
            authorize_request(
                gtx, method=CHECKOUT, token="", return_url="https://app.example/jobs/paid"
            )
        )
    ).payment
    assert p.state == State.REQUIRES_ACTION and "/checkout/" in p.next_action_url
    paid = admin.pay_checkout(p.next_action_url, "4242 4242 4242 4242")
    assert paid.status_code == 303

    async def authorized():
        got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=p.payment_id))).payment
        return got if got.state == State.AUTHORIZED else None

    done = await wait_for(authorized)
    assert done.provider_payment_id.startswith("pi_") and done.captured_minor == 0
    jobs = await _all(stub, subsystem="jobs")
    assert any(
        e.payment.payment_id == p.payment_id and e.type == "payment.authorized" for e in jobs
    )
    assert await _all(stub, subsystem="nobody") == []
    captured = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert captured.payment.captured_minor == 2500


async def test_cancelled_job_checkout_voids_the_payment(stub, admin, unique) -> None:
    gtx = unique("gtx")
    p = (
        await stub.Authorize(
            authorize_request(
                gtx,
                method=CHECKOUT,
                token="",
                return_url="https://app.example/jobs/paid",
                cancel_url="https://app.example/jobs/draft",
            )
        )
    ).payment
    result = await stub.CancelCheckout(
        pb.CancelCheckoutRequest(request_id="cc", payment_id=p.payment_id)
    )
    assert result.payment.state == State.VOIDED
    assert result.redirect_url == "https://app.example/jobs/draft"
    late = admin.pay_checkout(p.next_action_url, "4242 4242 4242 4242")
    assert late.status_code == 410
    events = [e.type for e in await _all(stub) if e.payment.payment_id == p.payment_id]
    assert events == ["payment.voided"]
