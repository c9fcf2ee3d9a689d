"""The wallet's background worker: the hold-expiry worker releases pending holds past their expiry,
safe in every replica at once (each batch is claimed with FOR UPDATE SKIP LOCKED, see
service_layer/handlers/expiry.py). It runs on the platform's worker loop (workloop.py): a round
every interval while the wallet answers calls or finds holds to release, a longer pause while idle
(a hold is then released at most that pause late; a Confirm of an expired hold is refused on its
own, and the auditor allows a grace of minutes)."""

from __future__ import annotations

import asyncio
import logging

from hirepay_platform import workloop
from wallet.domain.commands import ReleaseExpiredHolds
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers import release_expired_holds
from wallet.service_layer.metrics import EXPIRED_HOLDS_RELEASED, hold_transition_count

log = logging.getLogger(__name__)


async def release_all_expired(deps: Deps) -> int:
    """Release batches until none is full; returns how many holds were released."""
    batch = ReleaseExpiredHolds(batch_size=deps.config.hold_expiry_batch_size)
    total = 0
    while True:
        released = await release_expired_holds(batch, deps)
        if released:
            EXPIRED_HOLDS_RELEASED.inc(released)
            hold_transition_count("pending", "expired").inc(released)
        total += released
        if released < batch.batch_size:
            return total


async def run_hold_expiry(deps: Deps, stop: asyncio.Event) -> None:
    """Rounds of release_all_expired until `stop` is set, paced by workloop.run_worker (a failed
    round is logged there and retried)."""

    async def round_() -> int:
        released = await release_all_expired(deps)
        if released:
            log.info("released %d expired holds", released)
        return released

    await workloop.run_worker(
        round_, stop, name="hold expiry", interval=deps.config.hold_expiry_interval_seconds
    )
