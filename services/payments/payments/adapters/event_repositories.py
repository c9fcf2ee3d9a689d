"""PostgreSQL repositories of received provider events and of the settlement outbox. Never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.notifier import SqlCallbackQueue
from payments.adapters import snapshots
from payments.adapters import tables as t
from payments.domain.events import EventType, OutboxEvent

# The statements of the hot path, built once (issue 13: no per-call statement building).
_EVENT_SEEN = select(t.provider_events.c.id).where(
    t.provider_events.c.event_id == bindparam("event_id")
)
_INSERT_EVENT = (
    insert(t.provider_events)
    .on_conflict_do_nothing(index_elements=["event_id"])
    .returning(t.provider_events.c.id)
)

# Publishing (migration 0006): outbox_publish(), in a transaction of its own, numbers the
# committed unpublished rows after every earlier publisher's; writers never wait for each other.
# A reader's one statement publishes, then reads the events after a position (fresh snapshot).
_LIST_AFTER = text("SELECT * FROM outbox_after(:after, :limit, :subsystem)")


# --- provider events, outbox -----------------------------------------------------------


class SqlEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def exists(self, event_id: str) -> bool:
        return await self.s.scalar(_EVENT_SEEN, {"event_id": event_id}) is not None

    async def add(
        self,
        *,
        provider: str,
        event_id: str,
        event_type: str,
        object_id: str,
        payload: dict[str, Any],
        applied: bool,
        provider_created_at: datetime,
        received_at: datetime,
    ) -> bool:
        params = {
            "provider": provider,
            "event_id": event_id,
            "event_type": event_type,
            "object_id": object_id,
            "payload": payload,
            "applied": applied,
            "provider_created_at": provider_created_at,
            "received_at": received_at,
        }
        return (await self.s.execute(_INSERT_EVENT, params)).first() is not None


def _snapshot(event: OutboxEvent) -> dict[str, Any]:
    out = snapshots.dump(event.payment, event.transaction)
    if event.withdrawal is not None:
        out["withdrawal"] = snapshots.dump_withdrawal(event.withdrawal)
    return out


class SqlOutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session
        self._callbacks = SqlCallbackQueue(session, t.outbox)
        self.written = False  # whether this unit of work wrote an event (see the uow's commit)

    async def add(self, event: OutboxEvent, *, callback: bool) -> None:
        self.written = True
        await self.s.batch.insert(  # sent with the next statement (hirepay_platform/write_batch.py)
            t.outbox,
            [
                {
                    "event_id": event.event_id,
                    "type": event.type.value,
                    "subsystem": event.subsystem,
                    "payment_id": event.payment.id if event.payment else None,
                    "transaction_id": event.transaction.id if event.transaction else None,
                    "snapshot": _snapshot(event),
                    "occurred_at": event.occurred_at,
                    "callback_next_at": event.occurred_at if callback else None,
                }
            ],
        )

    async def list_after(self, cursor: int, limit: int, subsystem: str = "") -> list[OutboxEvent]:
        """Committed events after stream position `cursor`, oldest first (published first:
        positions become visible in order, so a reader resuming after the last one it was given
        never skips an event committed later)."""
        params = {"after": cursor, "limit": limit, "subsystem": subsystem}
        # A plain SELECT: before any write it is a statement of its own (hirepay_platform.db),
        # so the publishing lock it takes ends with it.
        rows = (await self.s.execute(_LIST_AFTER, params)).all()
        return [_outbox(r, cursor=r._mapping["position"]) for r in rows]

    async def backlog(self) -> int:
        return await self._callbacks.backlog()

    async def lease_callbacks(
        self, now: datetime, limit: int, lease_seconds: float
    ) -> list[OutboxEvent]:
        return [_outbox(r) for r in await self._callbacks.lease_rows(now, limit, lease_seconds)]

    async def callback_done(self, cursor: int, now: datetime) -> None:
        await self._callbacks.callback_done(cursor, now)

    async def callback_retry(self, cursor: int, next_at: datetime) -> None:
        await self._callbacks.callback_retry(cursor, next_at)

    async def callback_attempts(self, cursor: int) -> int:
        return await self._callbacks.callback_attempts(cursor)


def _outbox(row: Any, *, cursor: int | None = None) -> OutboxEvent:
    """An outbox row as an event; `cursor` is its stream position when read for the stream, else
    its row key (the callback relay's)."""
    m = row._mapping
    payment, txn = snapshots.load(m["snapshot"])
    return OutboxEvent(
        event_id=m["event_id"],
        type=EventType(m["type"]),
        occurred_at=m["occurred_at"],
        subsystem=m["subsystem"],
        payment=payment,
        transaction=txn,
        cursor=m["cursor"] if cursor is None else cursor,
        withdrawal=snapshots.load_withdrawal(m["snapshot"]),
    )
