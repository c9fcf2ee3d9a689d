"""The auditor's incremental rounds (OPS-3, issue 13) against fakes: between full sweeps a round
reads only what changed since the previous one (minus the overlap), finds an inconsistency in new
rows at once, a row committed late with an older change time all the same, and an old row
tampered with behind the services' backs at the next full sweep; what a round reads does not grow
with history."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from hirepay_platform.errors import ErrorKind, HirepayError
from jobs.domain import commands
from jobs.domain.audit import AuditCursor, Check, PaymentFact, ProviderRound, Violation
from jobs.domain.posting_saga import TryState
from jobs.service_layer import metrics
from jobs.service_layer.handlers import audit
from tests.support.jobs_world import World

GRACE = 60
OVERLAP = 30
FULL_EVERY = 3_600


@dataclass
class WindowedSources:
    """ListPayments and the ledger audits as the services answer them: with a `since`, only the
    rows changed at or after it. Records what each call asked and how many rows it returned."""

    facts: list[PaymentFact] = field(default_factory=list)
    # Ledger findings (unbalanced transfers, missing bookings) with the time their rows changed.
    ledger_rows: list[tuple[datetime, Violation]] = field(default_factory=list)
    asked: list[datetime | None] = field(default_factory=list)
    rows_read: list[int] = field(default_factory=list)

    async def payments(
        self, states: frozenset[str], updated_since: datetime | None = None
    ) -> list[PaymentFact]:
        found = [
            f
            for f in self.facts
            if f.state in states and (updated_since is None or f.updated_at >= updated_since)
        ]
        if "CAPTURED" in states:
            self.asked.append(updated_since)
            self.rows_read.append(len(found))
        return found

    async def ledger(self, now: datetime, since: datetime | None = None) -> list[Violation]:
        return [v for at, v in self.ledger_rows if since is None or at >= since]

    async def provider(self) -> ProviderRound:
        return ProviderRound()


def _fact(payment_id: str, saga_id: str, at: datetime, **kw) -> PaymentFact:
    values = {
        "payment_id": payment_id,
        "global_tx_id": saga_id,
        "subsystem": "jobs",
        "state": "CAPTURED",
        "captured_minor": 14900,
        "refunded_minor": 0,
        "created_at": at,
        "updated_at": at,
    }
    values.update(kw)
    return PaymentFact(**values)


def _world() -> World:
    return World(
        audit_grace_seconds=GRACE,
        audit_full_sweep_seconds=FULL_EVERY,
        audit_overlap_seconds=OVERLAP,
    )


async def _failed_saga(w: World) -> str:
    """A posting whose payment was declined: money captured for it would be owed a job."""
    w.payments.try_outcome = HirepayError(
        "declined", reason="PAYMENT_DECLINED", kind=ErrorKind.FAILED_PRECONDITION
    )
    with pytest.raises(HirepayError):
        await w.post(key=f"declined-{len(w.store.sagas)}")
    w.payments.try_outcome = None
    return max(w.store.sagas.values(), key=lambda s: s.created_at).id


async def _round(w: World, sources: WindowedSources, cursor: AuditCursor) -> set[tuple[Check, str]]:
    report = await audit.run_audit(commands.RunAudit(), replace(w.deps, sources=sources), cursor)
    return {(v.check, v.subject_id) for v in report.violations}


async def test_the_first_round_is_a_full_sweep_and_the_next_ones_read_what_changed():
    w = _world()
    cursor = audit.new_cursor(w.config)
    sources = WindowedSources()
    await _round(w, sources, cursor)
    w.clock.advance(seconds=60)
    first = w.clock.now
    await _round(w, sources, cursor)
    w.clock.advance(seconds=60)
    await _round(w, sources, cursor)
    # Full, then from the previous round's start minus the overlap and the grace (money taken is
    # checked once unchanged for the grace, so those that came due since then).
    assert sources.asked == [
        None,
        first - timedelta(seconds=60 + OVERLAP + GRACE),
        first - timedelta(seconds=OVERLAP + GRACE),
    ]
    w.clock.advance(seconds=FULL_EVERY)
    await _round(w, sources, cursor)
    assert sources.asked[-1] is None  # the sweep is due again


async def test_an_inconsistency_in_new_rows_is_found_by_the_next_incremental_round():
    w = _world()
    saga = await _failed_saga(w)
    cursor = audit.new_cursor(w.config)
    sources = WindowedSources()
    assert await _round(w, sources, cursor) == set()
    w.clock.advance(seconds=10)
    # New rows: payments says the declined posting's money was taken; the wallet has a transfer
    # that does not balance.
    sources.facts.append(_fact("pay_new", saga, w.clock.now))
    bad = Violation(Check.UNBALANCED_TRANSACTION, "tr_new", "USD sums to 5")
    sources.ledger_rows.append((w.clock.now, bad))
    w.clock.advance(seconds=20)
    assert await _round(w, sources, cursor) == {(Check.UNBALANCED_TRANSACTION, "tr_new")}
    assert sources.asked[-1] is not None  # an incremental round
    w.clock.advance(seconds=GRACE)  # the payment is past its grace: a violation now
    found = await _round(w, sources, cursor)
    assert sources.asked[-1] is not None
    assert found == {
        (Check.CAPTURED_PAYMENT_WITHOUT_JOB, "pay_new"),
        # Found by an earlier window and not read again: kept until the next full sweep.
        (Check.UNBALANCED_TRANSACTION, "tr_new"),
    }
    gauge = metrics.CONSISTENCY_VIOLATIONS.labels(Check.UNBALANCED_TRANSACTION.value)
    assert gauge._value.get() == 1


async def test_an_old_row_tampered_with_is_found_by_the_next_full_sweep():
    w = _world()
    saga = await _failed_saga(w)
    long_ago = w.clock.now - timedelta(days=30)
    # Refunded in full a month ago: nothing owed.
    sources = WindowedSources(facts=[_fact("pay_old", saga, long_ago, refunded_minor=14900)])
    cursor = audit.new_cursor(w.config)
    assert await _round(w, sources, cursor) == set()
    # Tampered with in SQL: the refund gone, `updated_at` left as it was.
    sources.facts[0] = replace(sources.facts[0], refunded_minor=0)
    for _ in range(3):
        w.clock.advance(seconds=60)
        assert await _round(w, sources, cursor) == set()  # windows do not reach it
    w.clock.advance(seconds=FULL_EVERY)
    assert await _round(w, sources, cursor) == {(Check.CAPTURED_PAYMENT_WITHOUT_JOB, "pay_old")}
    assert sources.asked[-1] is None
    w.clock.advance(seconds=60)
    # The next windows do not read it, and still report it until a full sweep finds it repaired.
    assert await _round(w, sources, cursor) == {(Check.CAPTURED_PAYMENT_WITHOUT_JOB, "pay_old")}
    sources.facts[0] = replace(sources.facts[0], refunded_minor=14900)
    w.clock.advance(seconds=FULL_EVERY)
    assert await _round(w, sources, cursor) == set()


@pytest.mark.parametrize("overlap", [OVERLAP, 0])
async def test_a_row_committed_late_with_an_older_change_time_is_not_skipped(overlap: int):
    """A capture written at T (its `updated_at`) but committed only after the round that began
    at T + 10 s read its window: the next round's window starts at that round's start minus the
    overlap, so it reads the row. Without the overlap (the second case) it is skipped."""
    w = _world()
    saga = await _failed_saga(w)
    cursor = AuditCursor(timedelta(seconds=FULL_EVERY), timedelta(seconds=overlap))
    sources = WindowedSources()
    await _round(w, sources, cursor)
    w.clock.advance(seconds=GRACE)
    written = w.clock.now - timedelta(seconds=GRACE + 10)  # due before the round below ran
    assert await _round(w, sources, cursor) == set()  # the row is not committed yet
    sources.facts.append(_fact("pay_late", saga, written))  # committed now
    w.clock.advance(seconds=60)
    found = await _round(w, sources, cursor)
    assert sources.asked[-1] is not None
    late = (Check.CAPTURED_PAYMENT_WITHOUT_JOB, "pay_late")
    assert (late in found) is (overlap > 10)
    w.clock.advance(seconds=FULL_EVERY)
    assert late in await _round(w, sources, cursor)  # the full sweep finds it either way


async def test_the_rows_a_round_reads_do_not_grow_with_history():
    """Issue 13: every round read every payment ever captured. An incremental round reads the
    ones changed in its window: the same count with 10 or 1,000 older payments."""
    reads: list[tuple[int, int]] = []
    for history in (10, 1_000):
        w = _world()
        start = w.clock.now
        sources = WindowedSources(
            facts=[
                _fact(
                    f"pay_{n}", f"saga_{n}", start - timedelta(hours=n + 1), purpose="marketplace"
                )
                for n in range(history)
            ]
        )
        cursor = audit.new_cursor(w.config)
        await _round(w, sources, cursor)
        for n in range(5):  # five payments a minute keep coming
            w.clock.advance(seconds=60)
            sources.facts += [
                _fact(f"new_{n}_{k}", f"s_{n}_{k}", w.clock.now, purpose="marketplace")
                for k in range(5)
            ]
            await _round(w, sources, cursor)
        reads.append((sources.rows_read[0], sources.rows_read[-1]))
    (full_small, window_small), (full_large, window_large) = reads
    assert (full_small, full_large) == (10, 1_000)  # the first round: everything
    assert window_small == window_large <= 5 * 5  # a window: what changed in it, no history


def _inspected(w: World) -> int:
    """Sagas whose payments the rounds so far read for the active-job check."""
    return sum(len(ids.split(",")) for op, ids in w.payments.calls if op == "inspect_many")


async def test_active_jobs_went_live_or_whose_money_went_back_since_are_checked_by_a_window():
    w = _world()
    live = await w.post(key="live")
    cursor = audit.new_cursor(w.config)
    sources = WindowedSources()
    assert await _round(w, sources, cursor) == set()
    w.clock.advance(seconds=60)
    # A new posting live without its money taken, and the older one's payment voided since.
    fresh = await w.post(key="fresh")
    w.payments.state[fresh.saga_id] = TryState.RESERVED
    w.payments.state[live.saga_id] = TryState.CANCELLED
    sources.facts.append(_fact("pay_live", live.saga_id, w.clock.now, state="VOIDED"))
    w.clock.advance(seconds=30)
    found = await _round(w, sources, cursor)
    assert sources.asked[-1] is not None
    assert found == {
        (Check.ACTIVE_JOB_WITHOUT_PAYMENT, fresh.job.id),
        (Check.ACTIVE_JOB_WITHOUT_PAYMENT, live.job.id),
    }


async def test_the_active_jobs_a_round_reads_do_not_grow_with_history():
    """Issue 13: every round read every active job and its payment. A window reads the jobs
    that went live in it: the same count with 3 or 30 older live postings."""
    reads = []
    for history in (3, 30):
        w = _world()
        for n in range(history):
            await w.post(key=f"old-{n}")
        w.clock.advance(hours=1)
        cursor = audit.new_cursor(w.config)
        await _round(w, WindowedSources(), cursor)
        full = _inspected(w)
        w.clock.advance(seconds=60)
        await w.post(key="new")
        w.clock.advance(seconds=60)
        before = _inspected(w)
        await _round(w, WindowedSources(), cursor)
        reads.append((full, _inspected(w) - before))
    assert reads == [(3, 1), (30, 1)]


async def test_a_window_whose_payments_cannot_be_read_is_read_again_by_the_next_round():
    """A round that cannot read its window's payments fails and leaves the cursor where it was:
    the next round's window still holds those jobs (a full sweep tolerates it: its next round
    reads every job again anyway)."""
    w = _world()
    cursor = audit.new_cursor(w.config)
    sources = WindowedSources()
    await _round(w, sources, cursor)
    w.clock.advance(seconds=60)
    fresh = await w.post(key="fresh")
    w.payments.state[fresh.saga_id] = TryState.RESERVED
    w.clock.advance(seconds=30)
    down = HirepayError("down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)
    inspect_many = w.payments.inspect_many

    async def unreadable(sagas):
        raise down

    w.payments.inspect_many = unreadable
    with pytest.raises(HirepayError):
        await _round(w, sources, cursor)
    w.payments.inspect_many = inspect_many
    w.clock.advance(seconds=60)
    assert await _round(w, sources, cursor) == {(Check.ACTIVE_JOB_WITHOUT_PAYMENT, fresh.job.id)}
    assert sources.asked[-1] is not None


async def test_an_active_job_reported_before_leaves_the_report_once_repaired():
    """Active jobs earlier rounds reported are read again by each window (they are few): one
    repaired is no longer reported, without waiting for the next full sweep."""
    w = _world()
    live = await w.post(key="live")
    cursor = audit.new_cursor(w.config)
    sources = WindowedSources()
    await _round(w, sources, cursor)
    w.clock.advance(seconds=60)
    w.payments.state[live.saga_id] = TryState.CANCELLED
    sources.facts.append(_fact("pay_live", live.saga_id, w.clock.now, state="VOIDED"))
    w.clock.advance(seconds=30)
    assert await _round(w, sources, cursor) == {(Check.ACTIVE_JOB_WITHOUT_PAYMENT, live.job.id)}
    w.clock.advance(seconds=300)  # the payment's change is out of the window now: still reported
    assert await _round(w, sources, cursor) == {(Check.ACTIVE_JOB_WITHOUT_PAYMENT, live.job.id)}
    w.payments.state[live.saga_id] = TryState.CAPTURED  # repaired
    w.clock.advance(seconds=60)
    assert await _round(w, sources, cursor) == set()
    assert sources.asked[-1] is not None
