"""Background loops of the payments process: the UNKNOWN/refund poller (with stale checkouts), the
outbox relay that delivers signed settlement callbacks, the worker that books plan purchases'
credits on the wallet, and the withdrawals' recovery worker. Each is safe with several replicas."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from google.protobuf import json_format

from hirepay_platform import workloop
from hirepay_platform.notifier import CallbackSender, deliver_due, relay_loop
from payments.domain.events import OutboxEvent
from payments.entrypoints import conversions as conv
from payments.service_layer import handlers, metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import checkouts, credits, horizon, payouts
from payments.service_layer.wakeup import Wakeup

log = logging.getLogger(__name__)


# How often the poller looks for purchases whose checkout expired unseen. Such a purchase is due
# 30 s after its expiry and at most once a minute (list_stale_pending): looking every round (a
# second under load) was an idle round's dearest statement, and finds it no sooner (issue 13).
STALE_CHECK_SECONDS = 15.0
# How often the poller samples the settlement stream's horizon (handlers/horizon.py): one read
# of pg_stat_activity and of the outbox's held-back range, never on an RPC's path. Prometheus
# scrapes every 15-30 s and the alerts wait minutes; an idle poller's round comes at most
# workloop.IDLE_MAX_SECONDS later still.
HORIZON_SAMPLE_SECONDS = 5.0


async def run_poller(deps: Callable[[], Deps], stop: asyncio.Event, *, interval: float) -> None:
    """Resolve UNKNOWN payments, pending refunds and expired checkouts until stopped; sample the
    settlement stream's horizon on the way."""
    stale_check_at = 0.0  # the first round looks
    horizon_at = 0.0  # the first round samples
    watch = horizon.HorizonWatch()

    async def round_() -> int:
        nonlocal stale_check_at, horizon_at
        worked = await handlers.poll_due(deps())
        if time.monotonic() >= stale_check_at:
            stale_check_at = time.monotonic() + STALE_CHECK_SECONDS
            await checkouts.sync_stale_transactions(deps())
        if time.monotonic() >= horizon_at:
            horizon_at = time.monotonic() + HORIZON_SAMPLE_SECONDS
            await horizon.sample_horizon(deps(), watch)
        return worked

    await workloop.run_worker(round_, stop, name="poller", interval=interval)


async def run_callback_relay(
    deps: Callable[[], Deps],
    sender: CallbackSender,
    stop: asyncio.Event,
    *,
    interval: float = 0.5,
    max_delay: float = 300.0,
) -> None:
    """Deliver outbox events to subsystems' callback URLs, at least once, with backoff."""

    def encode(event: OutboxEvent) -> bytes:
        message = json_format.MessageToDict(conv.event_msg(event))
        return json.dumps(message, sort_keys=True).encode()

    async def round_() -> int:
        d = deps()
        delivered = await deliver_due(
            d.uow,
            lambda uow: uow.outbox,
            sender,
            encode,
            d.clock,
            base_delay=interval,
            max_delay=max_delay,
        )
        async with d.uow as uow:
            metrics.OUTBOX_BACKLOG.set(await uow.outbox.backlog())
        return delivered

    await relay_loop(round_, stop, interval=interval)


async def run_credit_grants(
    deps: Callable[[], Deps],
    stop: asyncio.Event,
    *,
    interval: float,
    owed: Wakeup | None = None,
) -> None:
    """Book captures, refunds and settled purchases' credits (and refunds' revocations) on the
    wallet until acknowledged. `owed`: notified when this process records a booking; the worker
    then books it at once, or with the others recorded within `interval` under load; the poll
    finds the rest (a crashed process's, another replica's, retries that became due)."""

    async def round_() -> int:
        return await credits.settle_due_grants(deps(), limit=credits.GRANT_BATCH)

    await workloop.run_worker(
        round_,
        stop,
        name="credit grants",
        interval=interval,
        batch=credits.GRANT_BATCH,
        wake=owed.listen if owed is not None else None,
    )


async def run_withdrawals(
    deps: Callable[[], Deps], stop: asyncio.Event, *, interval: float
) -> None:
    """Finish withdrawals a crash or an outage interrupted, and watch payouts in transit."""

    async def round_() -> int:
        return await payouts.advance_due(deps())

    await workloop.run_worker(round_, stop, name="withdrawals", interval=interval)
