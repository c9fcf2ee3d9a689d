"""Background workers of the jobs service, each safe with several replicas running.

- recovery: leases due sagas (FOR UPDATE SKIP LOCKED + lease expiry) and drives them to an end;
- escrow: drives engagements' money steps (complete, cancel, resolve, coin funding) left pending
  by a crash or a participant down (FOR UPDATE SKIP LOCKED + a lease; each call idempotent);
- expiry: expires active postings past their period (FOR UPDATE SKIP LOCKED);
- settlement: consumes the payments settlement stream from a cursor kept in the jobs database;
  one replica at a time holds a PostgreSQL advisory lock on a dedicated connection (released by
  the server if the process dies), and handlers are idempotent, so redelivery is harmless;
- marketplace settlement: the same for the marketplace's own stream (offer payments, subsystem
  `marketplace`), of which only refunds made at the provider ask anything of jobs (they unwind
  the escrow: marketplace.refunds_at_provider);
- notifier: delivers marketplace events from the outbox as signed callbacks (the platform
  notifier leases rows FOR UPDATE SKIP LOCKED with a lease time, so replicas never send one row
  at the same time; receivers deduplicate the rare resend after a crash by the event id);
- auditor: the consistency auditor (OPS-3); its rounds are read-only and idempotent, and one
  replica at a time runs them (the same kind of advisory lock) to keep the load bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay_platform import workloop
from hirepay_platform.errors import HirepayError
from hirepay_platform.grpc_status import from_rpc_error
from hirepay_platform.notifier import CallbackSender, deliver_due, relay_loop
from jobs.adapters.participants import PaymentsParticipant
from jobs.domain import commands
from jobs.domain.events import MarketplaceEvent
from jobs.domain.posting_saga import SettlementEvent
from jobs.entrypoints.conversions import settlement_event_from_proto
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import audit, cancellation, settlement
from jobs.service_layer.marketplace import money_steps

log = logging.getLogger(__name__)

# How a consumer applies a burst: each event yielded once its effect is durable.
Apply = Callable[
    [commands.ApplySettlementEvents, Deps], AsyncIterator[tuple[SettlementEvent, bool]]
]

CONSUMER = "jobs-settlement"
# Key of the advisory lock that elects the one settlement consumer (any constant unique in the DB).
SETTLEMENT_LOCK_KEY = 0x4A4F4253  # "JOBS"
# The marketplace stream's consumer, cursor and lock: its own, so that a refund waiting for its
# engagement (EngagementNotBookedYet) never holds up the postings' stream.
MARKETPLACE_CONSUMER = "jobs-marketplace-settlement"
MARKETPLACE_SUBSYSTEM = "marketplace"
MARKETPLACE_LOCK_KEY = 0x4D4B5453  # "MKTS"
AUDITOR_LOCK_KEY = 0x41554454  # "AUDT"
# The settlement cursor is recorded once per run of events (issue 13): when the stream has been
# quiet this long, after this many events, and when the consumer stops. A crash replays at most
# the events since (each is applied idempotently, PAY-9).
CURSOR_IDLE_SECONDS = 0.2
CURSOR_EVERY_EVENTS = 100
# At most this many events are applied as one burst (their sagas read with one statement).
BURST_EVENTS = 100
# Payments sends the events committed since its last read (every 0.15 s under load) back to back:
# once the first of them is here, the rest are a few milliseconds behind it. Waiting for them
# makes them one burst instead of the first alone and the rest after (a settle-later posting
# is activated this much later, next to payments' own pause).
BURST_LINGER_SECONDS = 0.005


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def recovery_worker(
    make_deps: Callable[[], Deps], interval: float
) -> Callable[[asyncio.Event], object]:
    """Drive unfinished sagas after crashes, lost answers and transient participant failures."""

    async def round_() -> int:
        return await settlement.recover_due(commands.RecoverSagas(), make_deps())

    async def run(stop: asyncio.Event) -> None:
        await workloop.run_worker(round_, stop, name="recovery", interval=interval, busy_pause=0.0)

    return run


def escrow_worker(
    make_deps: Callable[[], Deps], interval: float
) -> Callable[[asyncio.Event], object]:
    """Drive engagements' money steps left pending (leased FOR UPDATE SKIP LOCKED)."""

    async def round_() -> int:
        return await money_steps.recover_due(make_deps())

    async def run(stop: asyncio.Event) -> None:
        await workloop.run_worker(
            round_, stop, name="escrow recovery", interval=interval, busy_pause=0.0
        )

    return run


def expiry_worker(
    make_deps: Callable[[], Deps], interval: float
) -> Callable[[asyncio.Event], object]:
    """Expire postings past their period."""

    async def round_() -> int:
        return await cancellation.expire_due(commands.ExpirePostings(), make_deps())

    async def run(stop: asyncio.Event) -> None:
        await workloop.run_worker(round_, stop, name="expiry", interval=interval, busy_pause=0.0)

    return run


class _SettlementCursor:
    """How far the settlement consumer has applied the stream, recorded once per run of events."""

    def __init__(
        self, make_deps: Callable[[], Deps], recorded: int, consumer: str = CONSUMER
    ) -> None:
        self._make_deps = make_deps
        self._consumer = consumer
        self._recorded = self._applied = recorded
        self._unrecorded = 0

    @property
    def behind(self) -> bool:
        return self._unrecorded > 0

    async def applied(self, cursor: int) -> None:
        self._applied = cursor
        self._unrecorded += 1
        if self._unrecorded >= CURSOR_EVERY_EVENTS:
            await self.record()

    async def record(self) -> None:
        if self.behind:
            cmd = commands.RecordSettlementCursor(self._consumer, self._applied)
            await settlement.record_cursor(cmd, self._make_deps())
            self._recorded, self._unrecorded = self._applied, 0


class _ReadAhead:
    """Reads the settlement stream ahead of the consumer: the events that arrive while it applies
    a burst wait here, and are the next burst (issue 13: their sagas are read with one statement).
    Bounded, so a consumer that falls behind leaves the rest to the stream's flow control. An
    event read ahead and not applied when the consumer stops or dies is not acknowledged (the
    cursor never passes it): it is sent again. A read cannot be given up without cancelling the
    call, hence a task of its own rather than reads with a timeout.

    The events wait in a deque, and the consumer waits for the next one (or the stop, or the
    quiet stream's timeout) on one future the pump or the stop resolves, not on a task reading
    an asyncio.Queue raced against the stop by asyncio.wait: that cost about 50 Python calls per
    wait, about a third of the consumer's own per posting (issue 13)."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self._call = call
        self._loop = asyncio.get_running_loop()
        self._items: collections.deque[object] = collections.deque()
        # The consumer's wait for an event (None when it is not waiting) and the pump's for room.
        self._arrived: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        # The stop task whose end wakes the consumer's wait (its callback added once).
        self._stopper: asyncio.Task | None = None
        self._task = asyncio.create_task(self._pump())
        # What ended the stream (EOF or the error that broke it), once the consumer reached it.
        self._end: object | None = None

    async def _pump(self) -> None:
        try:
            while True:
                message = await self._call.read()
                await self._put(message)
                if message is grpc.aio.EOF:
                    return
        except Exception as exc:  # the stream broke: the consumer raises it after the events before
            await self._put(exc)

    async def _put(self, item: object) -> None:
        """Keep `item` for the consumer once there is room (at most BURST_EVENTS wait)."""
        while len(self._items) >= BURST_EVENTS:
            self._room = self._loop.create_future()
            try:
                await self._room
            finally:
                self._room = None
        self._items.append(item)
        arrived = self._arrived  # (the wake written out: once per event)
        if arrived is not None and not arrived.done():
            arrived.set_result(None)

    def _next(self) -> object:
        """The oldest event kept (there is one), making room for the pump."""
        item = self._items.popleft()
        if self._room is not None:
            _wake(self._room)
        return item

    def _take(self, item: object) -> ppb.SettlementEvent | None:
        if item is grpc.aio.EOF or isinstance(item, Exception):
            self._end = item
            return None
        return item  # type: ignore[return-value]

    def _on_stop(self, _: object) -> None:
        _wake(self._arrived)

    async def _wait(self, stopper: asyncio.Task, timeout: float | None) -> None:
        """Until an event is kept, `stopper` is done or `timeout` passed (None: no timeout)."""
        if stopper is not self._stopper:
            self._stopper = stopper
            stopper.add_done_callback(self._on_stop)
        if self._items or stopper.done():
            return
        arrived = self._arrived = self._loop.create_future()
        timer = None if timeout is None else self._loop.call_later(timeout, _wake, arrived)
        try:
            await arrived
        finally:
            self._arrived = None
            if timer is not None:
                timer.cancel()

    async def next_burst(
        self, stopper: asyncio.Task, position: _SettlementCursor
    ) -> list[ppb.SettlementEvent]:
        """The events available now, at least one (at most BURST_EVENTS); none once the stream
        ended or the consumer stops. While the stream is quiet, how far it was applied is
        recorded. An error that broke the stream is raised after the events read before it."""
        if isinstance(self._end, Exception):
            raise self._end
        if self._end is not None:
            return []
        if not self._items and not stopper.done():
            if position.behind:
                await self._wait(stopper, CURSOR_IDLE_SECONDS)
                if not self._items and not stopper.done():  # quiet: record how far it went
                    await position.record()
                    await self._wait(stopper, None)
            else:
                await self._wait(stopper, None)
        if not self._items:
            return []  # stopped
        # Events waiting are taken even when the stop came too (as they were when both were
        # ready): the consumer applies them, then sees the stop.
        return await self._burst(self._take(self._next()))

    async def _burst(self, first: ppb.SettlementEvent | None) -> list[ppb.SettlementEvent]:
        """A burst from its first event: with those right behind it (a short linger when none
        is here yet), at most BURST_EVENTS; an error that broke the stream is raised after the
        events read before it."""
        burst = [] if first is None else [first]
        if burst and not self._items:
            await asyncio.sleep(BURST_LINGER_SECONDS)
        while burst and len(burst) < BURST_EVENTS and self._items:
            message = self._take(self._next())
            if message is None:
                break
            burst.append(message)
        if not burst and isinstance(self._end, Exception):
            raise self._end
        return burst

    def close(self) -> None:
        self._task.cancel()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    """Resolve a wait (the consumer's or the pump's) if it is still pending."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def consume_stream(
    call: grpc.aio.UnaryStreamCall,
    stop: asyncio.Event,
    make_deps: Callable[[], Deps],
    cursor: int,
    consumer: str = CONSUMER,
    apply: Apply = settlement.apply_settlement_events,
) -> None:
    """Apply the settlement stream's events (opened after `cursor`) burst by burst until it ends
    or `stop` is set, recording how far they were applied: never past an event whose effect is
    not durable (a crash replays the events since the recorded position; each is applied
    idempotently, PAY-9)."""
    stopper = asyncio.create_task(stop.wait())
    position = _SettlementCursor(make_deps, cursor, consumer)
    stream = _ReadAhead(call)
    try:
        while not stop.is_set():
            burst = await stream.next_burst(stopper, position)
            if not burst:
                break
            events = tuple(settlement_event_from_proto(m) for m in burst)
            applying = apply(commands.ApplySettlementEvents(events), make_deps())
            # Each event is yielded once its effect is durable: only then is the position moved
            # past it.
            async with contextlib.aclosing(applying):
                async for event, _ in applying:
                    await position.applied(event.cursor)
    finally:
        stopper.cancel()
        stream.close()
        call.cancel()
        with contextlib.suppress(Exception):
            await position.record()


def settlement_worker(
    engine: AsyncEngine,
    make_deps: Callable[[], Deps],
    payments: PaymentsParticipant,
    reconnect: float,
    *,
    consumer: str = CONSUMER,
    subsystem: str = "jobs",
    lock_key: int = SETTLEMENT_LOCK_KEY,
    apply: Apply = settlement.apply_settlement_events,
) -> Callable[[asyncio.Event], object]:
    """Consume payments' settlement events (PAY-9) of one subsystem while holding its consumer
    lock (the postings' stream by default; marketplace_settlement_worker: the offers')."""

    async def consume(stop: asyncio.Event) -> None:
        stub = payments.stub
        async with make_deps().uow as uow:
            cursor = await uow.settlements.cursor(consumer)
        call = stub.StreamSettlementEvents(
            ppb.StreamSettlementEventsRequest(
                after_cursor=cursor, follow=True, subsystem=subsystem
            ),
            # Signed like every call (checked once, when the stream opens).
            metadata=payments.client.metadata(),
        )
        await consume_stream(call, stop, make_deps, cursor, consumer, apply)

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with engine.connect() as conn:
                    locked = await conn.scalar(
                        text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key}
                    )
                    await conn.commit()
                    if locked:
                        try:
                            await consume(stop)
                        finally:
                            with contextlib.suppress(Exception):
                                await conn.execute(
                                    text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key}
                                )
                                await conn.commit()
            except grpc.aio.AioRpcError as exc:
                log.info("settlement stream interrupted: %r", from_rpc_error(exc, "payments"))
            except HirepayError as exc:
                # An event that cannot be applied yet (a wallet outage, an acceptance still
                # booking): the stream is opened again after it and the event applied again.
                log.info("%s: applied again after %.1fs: %r", consumer, reconnect, exc)
            except Exception:
                log.exception("settlement consumer failed")
            await _sleep(stop, reconnect)

    return run


def marketplace_settlement_worker(
    engine: AsyncEngine,
    make_deps: Callable[[], Deps],
    payments: PaymentsParticipant,
    reconnect: float,
) -> Callable[[asyncio.Event], object]:
    """Consume the offers' settlement events (subsystem `marketplace`): refunds made at the
    provider unwind the escrow (ESC-1, ESC-8); every other event asks nothing of jobs."""
    return settlement_worker(
        engine,
        make_deps,
        payments,
        reconnect,
        consumer=MARKETPLACE_CONSUMER,
        subsystem=MARKETPLACE_SUBSYSTEM,
        lock_key=MARKETPLACE_LOCK_KEY,
        apply=settlement.apply_marketplace_events,
    )


def notifier_worker(
    make_deps: Callable[[], Deps], sender: CallbackSender, interval: float
) -> Callable[[asyncio.Event], object]:
    """Deliver recorded marketplace events to the subsystems' callback URLs."""

    def encode(event: MarketplaceEvent) -> bytes:
        return json.dumps(event.body(), sort_keys=True).encode()

    async def round_() -> int:
        deps = make_deps()
        return await deliver_due(
            deps.uow, lambda uow: uow.outbox, sender, encode, deps.clock, base_delay=interval
        )

    async def run(stop: asyncio.Event) -> None:
        try:
            await relay_loop(round_, stop, interval=interval)
        finally:
            await sender.close()

    return run


def auditor_worker(
    engine: AsyncEngine, make_deps: Callable[[], Deps], interval: float
) -> Callable[[asyncio.Event], object]:
    """Run an audit round every `interval` seconds while holding the auditor lock."""

    async def rounds(stop: asyncio.Event) -> None:
        # Should the lock's connection drop, another replica may run rounds too: harmless, they
        # only read and publish the same counts. The rounds' cursor lives as long as the lock is
        # held: this replica's first round after taking it is a full sweep (issue 13).
        cursor = audit.new_cursor(make_deps().config)
        while not stop.is_set():
            try:
                await audit.run_audit(commands.RunAudit(), make_deps(), cursor)
            except Exception:
                metrics.count(metrics.AUDIT_RUNS, "failed")
                log.exception("audit round failed; next round retries")
            await _sleep(stop, interval)

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with engine.connect() as conn:
                    locked = await conn.scalar(
                        text("SELECT pg_try_advisory_lock(:k)"), {"k": AUDITOR_LOCK_KEY}
                    )
                    await conn.commit()
                    if locked:
                        try:
                            await rounds(stop)
                        finally:
                            with contextlib.suppress(Exception):
                                await conn.execute(
                                    text("SELECT pg_advisory_unlock(:k)"), {"k": AUDITOR_LOCK_KEY}
                                )
                                await conn.commit()
            except Exception:
                log.exception("auditor failed")
            await _sleep(stop, interval)

    return run
