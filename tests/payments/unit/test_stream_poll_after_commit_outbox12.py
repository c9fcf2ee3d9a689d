"""A following settlement stream keeps reading at its short pause for a while after this process
commits events (payments 0020): such an event may wait for an older writer still running (the
read's horizon), and a stream that backed off at once would give it up to a second late."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from hirepay.payments.v1 import payments_service_pb2 as pb
from payments.domain.events import EventType, OutboxEvent
from payments.entrypoints import servicer as servicer_module
from payments.entrypoints.servicer import PaymentsServicer
from payments.service_layer.wakeup import Wakeup

POLL, IDLE = 0.1, 4.0
HELD = 1.6  # how long the committed event stays above the horizon


class _Outbox:
    """The stream's reads: nothing, then the event once `visible_at` has passed."""

    def __init__(self) -> None:
        self.visible_at: float | None = None
        self.event = OutboxEvent(
            "evt_held", EventType.PAYMENT_CAPTURED, datetime.now(UTC), "jobs", cursor=1
        )

    async def list_after(self, cursor: int, limit: int, subsystem: str = "") -> list[OutboxEvent]:
        now = asyncio.get_running_loop().time()
        if self.visible_at is not None and now >= self.visible_at and cursor < 1:
            return [self.event]
        return []


class _Uow:
    def __init__(self, outbox: _Outbox) -> None:
        self.outbox = outbox

    async def __aenter__(self) -> _Uow:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_an_event_held_by_the_horizon_is_given_soon_after_it_passes(monkeypatch) -> None:
    monkeypatch.setattr(servicer_module, "STREAM_POLL_SECONDS", POLL)
    monkeypatch.setattr(servicer_module, "STREAM_IDLE_SECONDS", IDLE)
    outbox = _Outbox()
    published = Wakeup()
    servicer = PaymentsServicer(lambda: SimpleNamespace(uow=_Uow(outbox)), None, published)
    request = pb.StreamSettlementEventsRequest(after_cursor=0, follow=True, subsystem="jobs")
    stream = servicer.StreamSettlementEvents(request, None)
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(2.0)  # idle: the stream has backed off
    outbox.visible_at = loop.time() + HELD
    published.notify()  # this process committed it; an older writer still runs
    try:
        await asyncio.wait_for(asyncio.shield(first), timeout=HELD + IDLE)
        late = loop.time() - outbox.visible_at
    finally:
        first.cancel()
        await stream.aclose()
    assert first.result().event_id == "evt_held"
    # Read every POLL meanwhile: given within a pause of its passing (backing off 0.2, 0.4,
    # 0.8, 1.6 s after the read that found nothing gave it about 1.4 s late).
    assert late < 0.5, late
