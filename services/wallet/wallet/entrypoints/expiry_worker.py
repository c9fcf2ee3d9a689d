"""The hold-expiry worker: releases pending holds past their expiry, safe in every replica at once
(each batch is claimed with FOR UPDATE SKIP LOCKED, see release_expired_holds)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from wallet.entrypoints.metrics import EXPIRED_HOLDS_RELEASED, HOLD_TRANSITIONS
from wallet.service_layer.handlers import release_expired_holds
from wallet.service_layer.unit_of_work import WalletUnitOfWork

log = logging.getLogger(__name__)


async def release_all_expired(uow: Callable[[], WalletUnitOfWork], batch_size: int) -> int:
    """Release batches until none is full; returns how many holds were released."""
    total = 0
    while True:
        released = await release_expired_holds(uow(), batch_size=batch_size)
        if released:
            EXPIRED_HOLDS_RELEASED.inc(released)
            HOLD_TRANSITIONS.labels("pending", "expired").inc(released)
        total += released
        if released < batch_size:
            return total


async def run_hold_expiry(
    uow: Callable[[], WalletUnitOfWork],
    stop: asyncio.Event,
    *,
    interval: float,
    batch_size: int,
) -> None:
    """Every `interval` seconds until `stop` is set; a failed round is logged and retried."""
    while not stop.is_set():
        try:
            released = await release_all_expired(uow, batch_size)
            if released:
                log.info("released %d expired holds", released)
        except Exception:
            log.exception("hold expiry round failed; retrying in %.1fs", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
