"""The marketplace events outbox on PostgreSQL (insert-first on the event id); its callback queue
is the platform notifier's. Never commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.notifier import SqlCallbackQueue
from jobs.adapters import tables as t
from jobs.adapters.marketplace_repository import SqlOfferRepository
from jobs.domain.events import EventType, MarketplaceEvent, offer_event
from jobs.domain.marketplace import Offer


class SqlMarketplaceOutbox(SqlCallbackQueue):
    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session, t.marketplace_events)

    async def add(self, event: MarketplaceEvent) -> bool:
        stmt = (
            insert(t.marketplace_events)
            .values(
                event_id=event.event_id,
                type=event.type.value,
                subject_id=event.subject_id,
                subsystem=event.subsystem,
                data=event.data,
                occurred_at=event.occurred_at,
                callback_next_at=event.occurred_at,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(t.marketplace_events.c.cursor)
        )
        return (await self.s.execute(stmt)).first() is not None

    async def for_subject(self, subject_id: str) -> list[MarketplaceEvent]:
        stmt = (
            select(t.marketplace_events)
            .where(t.marketplace_events.c.subject_id == subject_id)
            .order_by(t.marketplace_events.c.cursor)
        )
        return [_event(r) for r in (await self.s.execute(stmt)).all()]

    async def lease_callbacks(
        self, now: datetime, limit: int, lease_seconds: float
    ) -> list[MarketplaceEvent]:
        return [_event(r) for r in await self.lease_rows(now, limit, lease_seconds)]


def _event(row: Any) -> MarketplaceEvent:
    m = row._mapping
    return MarketplaceEvent(
        event_id=m["event_id"],
        type=EventType(m["type"]),
        subject_id=m["subject_id"],
        occurred_at=m["occurred_at"],
        data=dict(m["data"]),
        subsystem=m["subsystem"],
        cursor=m["cursor"],
    )


class NotifyingOfferRepository(SqlOfferRepository):
    """The marketplace's offer repository that records the offer's event (offer.received /
    accepted / rejected / expired) in the same transaction as the state it reaches, whichever use
    case or recovery step wrote it: every change is told exactly once."""

    def __init__(self, session: AsyncSession, outbox: SqlMarketplaceOutbox) -> None:
        super().__init__(session)
        self._outbox = outbox

    async def _tell(self, offer: Offer) -> None:
        event = offer_event(offer, offer.updated_at)
        if event is not None:
            await self._outbox.add(event)

    async def add(self, offer: Offer) -> None:
        await super().add(offer)
        await self._tell(offer)

    async def save(self, offer: Offer) -> None:
        await super().save(offer)
        await self._tell(offer)
