"""Recording marketplace events (issue 9 point 9): call `record_event` inside the unit of work of
the change it tells of, before committing, so the event exists exactly when the change does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.domain.events import EventType, MarketplaceEvent
from jobs.service_layer.ports import JobsUnitOfWork


async def record_event(
    uow: JobsUnitOfWork,
    event_type: EventType,
    subject_id: str,
    now: datetime,
    data: dict[str, Any] | None = None,
) -> bool:
    """Append the one `event_type` event about `subject_id` (an offer or engagement id) to the
    outbox in the caller's transaction; False (and nothing written) if it was recorded before,
    so a replayed or recovered step never tells twice. `data` must be JSON-safe."""
    return await uow.outbox.add(MarketplaceEvent.of(event_type, subject_id, now, data))
