"""The poller's rounds (issue 13): every round leases due payments and refunds, but purchases
whose checkout expired unseen are looked for once per STALE_CHECK_SECONDS, not every round (such
a purchase is due 30 s after its expiry, at most once a minute), and the settlement stream's
horizon is sampled once per HORIZON_SAMPLE_SECONDS (its gauges, OPS-1)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payments.entrypoints import workers
from tests.support.virtual_time import in_virtual_time


async def _rounds(monkeypatch: pytest.MonkeyPatch, **periods: float) -> dict[str, list[Any]]:
    """Run the poller for half a second at a 20 ms interval, with `periods` (module constants)
    set: what each round called (the horizon's sampling: with its watch)."""
    calls: dict[str, list[Any]] = {"poll": [], "stale": [], "horizon": []}

    async def poll_due(deps: Any) -> int:
        calls["poll"].append(deps)
        return 0

    async def sync_stale_transactions(deps: Any) -> int:
        calls["stale"].append(deps)
        return 0

    async def sample_horizon(deps: Any, watch: Any) -> None:
        calls["horizon"].append(watch)

    monkeypatch.setattr(workers.handlers, "poll_due", poll_due)
    monkeypatch.setattr(workers.checkouts, "sync_stale_transactions", sync_stale_transactions)
    monkeypatch.setattr(workers.horizon, "sample_horizon", sample_horizon)
    for name, seconds in periods.items():
        monkeypatch.setattr(workers, name, seconds)
    monkeypatch.setattr(workers.workloop, "default_idle_max", lambda interval: interval)
    stop = asyncio.Event()
    task = asyncio.create_task(workers.run_poller(lambda: None, stop, interval=0.02))  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 1)
    return calls


@in_virtual_time(workers.workloop, workers)
async def test_the_poller_looks_for_stale_checkouts_once_per_its_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = await _rounds(monkeypatch, STALE_CHECK_SECONDS=0.3)
    assert len(calls["poll"]) >= 10  # a round per interval
    assert len(calls["stale"]) == 2  # at its first round, then once 0.3 s later


@in_virtual_time(workers.workloop, workers)
async def test_the_poller_samples_the_settlement_horizon_once_per_its_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = await _rounds(monkeypatch, HORIZON_SAMPLE_SECONDS=0.3)
    assert len(calls["poll"]) >= 10
    watches = calls["horizon"]
    assert len(watches) == 2  # at its first round, then once 0.3 s later
    assert watches[0] is watches[1]  # one watch: it remembers what it saw between samples
