"""The wallet's background worker: the hold-expiry worker releases pending holds past their expiry,
safe in every replica at once (each batch is claimed with FOR UPDATE SKIP LOCKED, see
service_layer/handlers/expiry.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from wallet.domain.commands import ReleaseExpiredHolds
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers import release_expired_holds
from wallet.service_layer.metrics import EXPIRED_HOLDS_RELEASED, HOLD_TRANSITIONS

log = logging.getLogger(__name__)


async def release_all_expired(deps: Deps) -> int:
    """Release batches until none is full; returns how many holds were released."""
    batch = ReleaseExpiredHolds(batch_size=deps.config.hold_expiry_batch_size)
    total = 0
    while True:
        released = await release_expired_holds(batch, deps)
        if released:
            EXPIRED_HOLDS_RELEASED.inc(released)
            HOLD_TRANSITIONS.labels("pending", "expired").inc(released)
        total += released
        if released < batch.batch_size:
            return total


async def run_hold_expiry(deps: Deps, stop: asyncio.Event) -> None:
    """Every `hold_expiry_interval_seconds` until `stop` is set; a failed round is logged and
    retried."""
    interval = deps.config.hold_expiry_interval_seconds
    while not stop.is_set():
        try:
            released = await release_all_expired(deps)
            if released:
                log.info("released %d expired holds", released)
        except Exception:
            log.exception("hold expiry round failed; retrying in %.1fs", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
