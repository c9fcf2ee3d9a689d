"""PostgreSQL repositories of received provider events and of the settlement outbox. Never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Executable,
    bindparam,
    exists,
    false,
    func,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.db import HotStatement, execute_alone
from hirepay_platform.notifier import SqlCallbackQueue
from payments.adapters import snapshots
from payments.adapters import tables as t
from payments.adapters.repositories import payment_from_row
from payments.adapters.tables import JsonText
from payments.domain.events import EVENT_TYPE_OF, OutboxEvent
from payments.service_layer.ports import EventRecord, FirstLook, HorizonSample

# The statements of the hot path, built once (issue 13: no per-call statement building).
_EVENT_SEEN = select(t.provider_events.c.id).where(
    t.provider_events.c.event_id == bindparam("event_id")
)
_INSERT_EVENT = (
    insert(t.provider_events)
    .on_conflict_do_nothing(index_elements=["event_id"])
    .returning(t.provider_events.c.id)
)
# The applying transaction's claim: the event stored now, or an event stored unapplied before
# (by store_first, its applying never committed) marked applied; no row: applied already. A
# concurrent claim of the same event waits for the first one's transaction, then finds it applied.
_CLAIM_EVENT = (
    insert(t.provider_events)
    .on_conflict_do_update(
        index_elements=["event_id"],
        set_={"applied": true()},
        where=t.provider_events.c.applied.is_(false()),
    )
    .returning(t.provider_events.c.id)
)
_EVENT_COLUMNS = (
    "provider",
    "event_id",
    "event_type",
    "object_id",
    "payload",
    "provider_created_at",
    "received_at",
)


def _store_first(match: Column[Any]) -> Executable:
    """One statement (issue 13): the payment an event is about (by the provider's id of the
    object in `match`, else by the id we put in its metadata, `_ours`), the event stored unapplied
    on its id if that payment exists (insert-first: a duplicate stores nothing), and whether an
    earlier delivery applied it.

    The parts share one snapshot: `_applied_before` is NULL for a row committed after it (a
    concurrent delivery's); the applying transaction's claim (_CLAIM_EVENT) decides then."""
    pays = t.payments
    # The provider's id first, else ours: the payment found by `match` (a unique index: at most
    # one) or the one named `_ours`, read once by its key. As a UNION ALL of both ordered by rank
    # it read the payment twice and sorted both rows on every delivery (issue 13).
    found = pays.alias("found")
    matched = select(found.c.id).where(found.c[match.name] == bindparam("_key")).scalar_subquery()
    subject = (
        select(pays)
        .where(pays.c.id == func.coalesce(matched, bindparam("_ours", type_=pays.c.id.type)))
        .cte("subject")
    )
    events = t.provider_events
    values = select(
        *(bindparam(name, type_=events.c[name].type) for name in _EVENT_COLUMNS),
        false(),
    ).where(exists(select(subject.c.id)))
    stored = (
        insert(events)
        .from_select([*_EVENT_COLUMNS, "applied"], values)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(events.c.id)
        .cte("stored")
    )
    applied_before = select(events.c.applied).where(events.c.event_id == bindparam("event_id"))
    return select(
        *(subject.c[c.name] for c in pays.c),
        exists(select(stored.c.id)).label("_stored"),
        applied_before.scalar_subquery().label("_applied_before"),
    )


_STORE_FIRST_BY_INTENT = _store_first(t.payments.c.provider_payment_id)
_STORE_FIRST_BY_CHECKOUT = _store_first(t.payments.c.provider_checkout_id)
# Each run hot (db.HotStatement): past SQLAlchemy's execution once warm (issue 13).
_EVENT_SEEN, _INSERT_EVENT, _CLAIM_EVENT = map(
    HotStatement, (_EVENT_SEEN, _INSERT_EVENT, _CLAIM_EVENT)
)
_STORE_FIRST_BY_INTENT, _STORE_FIRST_BY_CHECKOUT = map(
    HotStatement, (_STORE_FIRST_BY_INTENT, _STORE_FIRST_BY_CHECKOUT)
)

# The stream (migration 0020): a writer's row carries its transaction id (`writer_xid`, its
# server default) and is never updated; a read returns the rows after a cursor in (writer_xid,
# cursor) order whose writer is below its snapshot's xmin (every such writer has ended), each
# with its cursor (writer_xid << 16 | its index in its transaction). Writers never wait.
_LIST_AFTER = HotStatement(text("SELECT * FROM outbox_after(:after, :limit, :subsystem)"))

# At most this many of the events held back are looked at for the oldest (they come in their
# writers' order, nearly that of their times): the sample stays bounded however long the horizon
# is held, and past this many its age is still the oldest of the stream's first ones.
HELD_SCAN_LIMIT = 1000

# The stream's horizon (payments 0020), every part of it in one statement, reading only: the
# running transactions with an xid on the whole server (pg_stat_activity, one row per backend,
# bounded by max_connections; prepared transactions from pg_prepared_xacts), and the committed
# events above the reading snapshot's xmin, the ones outbox_after() holds back (through
# ix_outbox_stream: the range above the horizon, in stream order). A backend's xact_start is
# hidden from a role that is neither its own nor pg_read_all_stats, its backend_xid is not:
# those come back as (pid, xid) for the caller to age by when it first saw them.
_HORIZON = text(
    f"""
    WITH running AS MATERIALIZED (
        SELECT pid, backend_xid, xact_start FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL
    )
    SELECT
        statement_timestamp() AS at,
        least(
            (SELECT min(xact_start) FROM running),
            (SELECT min(prepared) FROM pg_prepared_xacts)
        ) AS oldest_start,
        (SELECT coalesce(array_agg(pid), '{{}}') FROM running WHERE xact_start IS NULL)
            AS unseen_pids,
        (SELECT coalesce(array_agg(backend_xid::text::bigint), '{{}}') FROM running
            WHERE xact_start IS NULL) AS unseen_xids,
        (SELECT min(h.occurred_at) FROM (
            SELECT o.occurred_at FROM outbox o
            WHERE o.position IS NULL
                AND o.writer_xid >= pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY o.writer_xid, o.cursor
            LIMIT {HELD_SCAN_LIMIT}
        ) h) AS oldest_held
    """
)


# --- provider events, outbox -----------------------------------------------------------


def _values(record: EventRecord) -> dict[str, Any]:
    """The record's row values; its payload as the text it was received as, when known (the
    payload column stores JSON text as it is: tables.JsonbOrText)."""
    values = record.values()
    if record.payload_text:
        values["payload"] = JsonText(record.payload_text)
    return values


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

    async def claim(self, record: EventRecord) -> bool:
        params = {**_values(record), "applied": True}
        return (await self.s.execute(_CLAIM_EVENT, params)).first() is not None

    async def store_first(self, record: EventRecord, *, by_checkout: bool, ours: str) -> FirstLook:
        params = {**_values(record), "_key": record.object_id, "_ours": ours}
        statement = _STORE_FIRST_BY_CHECKOUT if by_checkout else _STORE_FIRST_BY_INTENT
        # It writes: alone, it is its own transaction (no BEGIN, no COMMIT round trip).
        row = (await execute_alone(self.s, statement, params)).first()
        if row is None:
            return FirstLook(payment=None, stored=False, applied_before=False)
        m = row._mapping
        return FirstLook(
            payment=payment_from_row(row),
            stored=bool(m["_stored"]),
            applied_before=bool(m["_applied_before"]),
        )


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
                    "type": str(event.type),
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
        """Committed events after stream position `cursor`, in stream order: only those whose
        writer is below the read's horizon, so a reader resuming after the last one it was given
        never skips an event committed later (it waits for every older writer to end)."""
        params = {"after": cursor, "limit": limit, "subsystem": subsystem}
        # A plain SELECT: it writes nothing (no transaction id, no commit to flush).
        rows = (await self.s.execute(_LIST_AFTER, params)).all()
        return [_outbox(r, position=True) for r in rows]

    async def backlog(self) -> int:
        return await self._callbacks.backlog()

    async def horizon(self) -> HorizonSample:
        row = (await self.s.execute(_HORIZON)).one()
        return HorizonSample(
            at=row.at,
            oldest_start=row.oldest_start,
            unseen=frozenset(zip(row.unseen_pids, row.unseen_xids, strict=True)),
            oldest_held=row.oldest_held,
        )

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


def _outbox(row: Any, *, position: bool = False) -> OutboxEvent:
    """An outbox row as an event; its cursor is its stream position when read for the stream
    (`position`), else its row key (the callback relay's). The row's mapping is read once, and a
    withdrawal decoded only when the snapshot has one (issue 13: two Python calls less per
    settlement event the stream sends)."""
    m = row._mapping
    snapshot = m["snapshot"]
    payment, txn = snapshots.load(snapshot)
    return OutboxEvent(
        event_id=m["event_id"],
        type=EVENT_TYPE_OF[m["type"]],
        occurred_at=m["occurred_at"],
        subsystem=m["subsystem"],
        payment=payment,
        transaction=txn,
        cursor=m["position"] if position else m["cursor"],
        withdrawal=snapshots.load_withdrawal(snapshot) if "withdrawal" in snapshot else None,
    )
