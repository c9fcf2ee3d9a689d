"""The settlement stream's horizon, measured (payments 0020; docs/performance.md, "Still to find", OPS-1).

The stream gives an event only once every transaction that took a transaction id (xid) before its
writer has ended, on the whole PostgreSQL server. One transaction left open after a write (a
session idle in a transaction, a batch job, a prepared transaction) therefore holds back every
settlement event written after it began, however healthy payments itself is. Two gauges say so:
the age of the oldest running transaction holding an xid (the cause), and the age of the oldest
committed event held back behind it (the effect consumers see).

A role without pg_read_all_stats cannot read another role's transaction start, only that it holds
an xid: such a transaction is aged from the first sample that saw it, a lower bound off by at
most one sampling period. Granting the payments role pg_monitor (or pg_read_all_stats) makes it
exact."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.ports import HorizonSample


@dataclass(frozen=True, slots=True)
class HorizonAges:
    """The two gauges' values, in seconds (0: nothing running with an xid / nothing held)."""

    horizon_seconds: float
    held_seconds: float


@dataclass
class HorizonWatch:
    """The ages from one sample after another. Remembers when it first saw each transaction whose
    start is hidden from it, only while that transaction still runs (bounded by the server's
    connections)."""

    first_seen: dict[tuple[int, int], datetime] = field(default_factory=dict)

    def ages(self, sample: HorizonSample) -> HorizonAges:
        self.first_seen = {key: self.first_seen.get(key, sample.at) for key in sample.unseen}
        starts = [*self.first_seen.values()]
        if sample.oldest_start is not None:
            starts.append(sample.oldest_start)
        return HorizonAges(
            horizon_seconds=_age(sample.at, min(starts, default=None)),
            held_seconds=_age(sample.at, sample.oldest_held),
        )


def _age(now: datetime, since: datetime | None) -> float:
    # Never negative: an event's time is the writing process's clock, not the server's.
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


async def sample_horizon(deps: Deps, watch: HorizonWatch) -> HorizonAges:
    """Read the horizon once (a read of its own, off every RPC's path) and set the gauges."""
    async with deps.uow as uow:
        sample = await uow.outbox.horizon()
    ages = watch.ages(sample)
    metrics.SETTLEMENT_HORIZON_AGE.set(ages.horizon_seconds)
    metrics.SETTLEMENT_HELD_AGE.set(ages.held_seconds)
    return ages
