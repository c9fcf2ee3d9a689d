"""AuditLedgerBookings' and ListPayments' incremental reads on real PostgreSQL (OPS-3, issue 13):
with `settled_since` / `updated_since` they read the records changed since then (each table's
`updated_at` index) and ask the wallet for those transfers only, so a round's rows and calls do
not grow with history; a booking missing among them is found, an old record tampered with only
by a full sweep, and one committed after a round with an older change time by the next round's
overlap."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands, ledger
from payments.domain.ledger import Account
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.audit import audit_ledger_bookings, list_payments
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeLedger, FakeProvider

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GRACE = 600
AMOUNT = 1_000


class BookedLedger(FakeLedger):
    """The wallet's entries as the auditor reads them: every capture booked through clearing
    with its fee on revenue, except the `missing` ones; counts the transfer ids asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.missing: set[str] = set()
        self.asked = 0

    async def existing_account_id(self, account: Account) -> str:
        return f"{account.kind.value}:{account.unit}"

    async def transfer_entries(self, transfer_ids: Sequence[str]) -> list[tuple[str, str, int]]:
        self.asked += len(transfer_ids)
        clearing = await self.existing_account_id(ledger.clearing("stripe", "USD"))
        revenue = await self.existing_account_id(ledger.revenue("USD"))
        return [
            entry
            for t in transfer_ids
            if t not in self.missing
            for entry in ((t, clearing, -AMOUNT), (t, revenue, AMOUNT))
        ]


async def _payments(engine, n: int, at: datetime, state: str = "CAPTURED") -> list[str]:
    """`n` card payments of jobs captured (or in `state`) and last changed at `at`."""
    tag = uuid.uuid4().hex[:8]
    async with engine.begin() as conn:
        rows = await conn.execute(
            text(
                "INSERT INTO payments (id, global_tx_id, branch_id, owner_id, amount_minor,"
                " currency, method, provider, state, metadata, captured_minor, created_at,"
                " updated_at)"
                " SELECT 'p-' || :tag || '-' || g, 'g-' || :tag || '-' || g, 'payment', 'co',"
                " :amount, 'USD', 'CARD', 'stripe', :state, '{\"subsystem\": \"jobs\"}',"
                " :captured, :at, :at"
                " FROM generate_series(1, :n) g RETURNING id"
            ),
            {
                "tag": tag,
                "n": n,
                "at": at,
                "amount": AMOUNT,
                "state": state,
                "captured": AMOUNT if state == "CAPTURED" else 0,
            },
        )
        ids = list(rows.scalars())
        await conn.execute(text("ANALYZE payments"))
    return ids


def _deps(sessions, booked: BookedLedger, now: datetime = NOW) -> Deps:
    return Deps(
        SqlPaymentsUnitOfWork(sessions),
        ProviderRegistry([FakeProvider()]),
        Policy(),
        clock=lambda: now,
        ledger=booked,
    )


async def _missing(deps: Deps, since: datetime | None) -> tuple[int, set[str]]:
    audit = await audit_ledger_bookings(GRACE, deps, since)
    return audit.checked, {f.subject_id for f in audit.findings if f.kind == ledger.MISSING} | {
        f.subject_id for f in audit.findings if f.kind == ledger.REVENUE_MISMATCH
    }


async def _clear(engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM payments"))


async def test_a_rounds_rows_and_calls_do_not_grow_with_history(engine, sessions, round_trips):
    figures = []
    for history in (100, 10_000):
        await _clear(engine)
        await _payments(engine, history, NOW - timedelta(days=30))
        # The window: 20 payments that came due since the previous round (settled before the
        # grace), and 5 still within it.
        await _payments(engine, 20, NOW - timedelta(seconds=GRACE + 30))
        await _payments(engine, 5, NOW - timedelta(seconds=10))
        booked = BookedLedger()
        deps = _deps(sessions, booked)
        since = NOW - timedelta(seconds=GRACE + 120)
        with round_trips:
            checked, missing = await _missing(deps, since)
        statements = len(round_trips.statements)
        assert missing == set()
        page = await list_payments(
            commands.ListPayments(
                states=frozenset({"CAPTURED"}),
                subsystem="jobs",
                page_size=1000,
                updated_since=since,
            ),
            deps,
        )
        full_booked = BookedLedger()
        full_checked, _ = await _missing(_deps(sessions, full_booked), None)
        figures.append((checked, booked.asked, statements, len(page.payments), full_checked))
    print(f"bookings round (history 100 / 10,000): {figures}")
    (small, large) = figures
    # checked, transfer ids asked, statements, payments listed: the window's, whatever the history
    assert small[:4] == large[:4] == (20, 20, small[2], 25)
    assert (small[4], large[4]) == (120, 10_020)  # a full sweep: every capture


async def test_new_rows_are_checked_by_a_window_and_old_ones_by_a_full_sweep(engine, sessions):
    await _clear(engine)
    (voided,) = await _payments(engine, 1, NOW - timedelta(days=30), state="VOIDED")
    old = await _payments(engine, 3, NOW - timedelta(days=30))
    (new,) = await _payments(engine, 1, NOW - timedelta(seconds=GRACE + 30))
    booked = BookedLedger()
    booked.missing.add(ledger.capture_transfer_id(new))
    deps = _deps(sessions, booked)
    since = NOW - timedelta(seconds=GRACE + 120)
    assert await _missing(deps, since) == (1, {ledger.capture_transfer_id(new), "USD"})
    # Tampered with in SQL: an old voided payment made captured, `updated_at` left as it was.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE payments SET state = 'CAPTURED', captured_minor = :a WHERE id = :id"),
            {"a": AMOUNT, "id": voided},
        )
    booked.missing.add(ledger.capture_transfer_id(voided))
    checked, found = await _missing(deps, since)
    assert ledger.capture_transfer_id(voided) not in found
    checked, found = await _missing(deps, None)
    assert checked == len(old) + 2
    assert {ledger.capture_transfer_id(voided), ledger.capture_transfer_id(new)} <= found


async def test_a_capture_committed_after_a_round_with_an_older_time_is_not_skipped(
    engine, sessions
):
    """A capture stamped at T (the writer's clock) commits after the round at T + 5 min read
    its window. The next round's window starts at that round's start minus the overlap (the
    jobs auditor's), less the grace: it reads the capture; without the overlap it would not."""
    await _clear(engine)
    round_at = NOW
    stamped = round_at - timedelta(seconds=GRACE + 5)  # due before that round
    booked = BookedLedger()
    deps = _deps(sessions, booked, round_at)
    async with engine.connect() as slow:
        await slow.begin()
        await slow.execute(
            text(
                "INSERT INTO payments (id, global_tx_id, branch_id, owner_id, amount_minor,"
                " currency, method, provider, state, metadata, captured_minor, created_at,"
                " updated_at) VALUES ('p-late', 'g-late', 'payment', 'co', :a, 'USD', 'CARD',"
                " 'stripe', 'CAPTURED', '{\"subsystem\": \"jobs\"}', :a, :at, :at)"
            ),
            {"a": AMOUNT, "at": stamped},
        )
        booked.missing.add(ledger.capture_transfer_id("p-late"))
        previous = round_at - timedelta(seconds=60 + 120)  # the round before, minus the overlap
        checked, _ = await _missing(deps, previous - timedelta(seconds=GRACE))
        assert checked == 0  # not committed yet
        await slow.commit()
    later = _deps(sessions, booked, round_at + timedelta(seconds=60))
    overlap = timedelta(seconds=120)
    _, found = await _missing(later, round_at - overlap - timedelta(seconds=GRACE))
    assert ledger.capture_transfer_id("p-late") in found
    _, found = await _missing(later, round_at - timedelta(seconds=GRACE))
    assert ledger.capture_transfer_id("p-late") not in found  # why the overlap
