"""The settlement consumer's bursts on real PostgreSQL (issue 13): the events that arrived together
are judged on one read of their sagas; events that change nothing (most: the authorized and
captured events of postings their requests finished) cost no statement of their own, the news is
applied in order, once, under each saga's lock, and the stream position never passes an event whose
effect is not committed, across a crash in the middle of a burst."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from hirepay.common.v1 import common_pb2 as cpb
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay_platform.db import create_engine, make_session_factory
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.model import JobStatus
from jobs.domain.posting_saga import Saga, SagaState, TryResult, TryState
from jobs.entrypoints import workers
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import pay_to_post
from jobs.service_layer.posting.finished import CompletedPostings
from tests.support.jobs_fakes import FakeParticipants, make_config
from tests.support.jobs_world import FIELDS

_STATES = {
    "payment.authorized": ppb.Payment.AUTHORIZED,
    "payment.captured": ppb.Payment.CAPTURED,
    "payment.refunded": ppb.Payment.REFUNDED,
}


@pytest.fixture
async def engines(make_service_database):
    """Postings on a pool of their own; the consumer on one connection (the one its statements
    are prepared on, as in the service, where it runs alone)."""
    url = await asyncio.to_thread(make_service_database, "jobs")
    postings = create_engine(url, pool_size=8, max_overflow=0)
    consumer = create_engine(url, pool_size=1, max_overflow=0)
    yield make_session_factory(postings), make_session_factory(consumer)
    await postings.dispose()
    await consumer.dispose()


class _Call:
    """A settlement stream (the grpc.aio call's read/cancel) carrying the given events, then its end."""

    def __init__(self, events: list[ppb.SettlementEvent]) -> None:
        self.events = list(events)
        self.cancelled = False

    async def read(self) -> object:
        return self.events.pop(0) if self.events else grpc.aio.EOF

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def _event(cursor: int, kind: str, saga_id: str, payment_id: str = "pay_1") -> ppb.SettlementEvent:
    """payments' event of a card payment's step, as the stream carries it."""
    payment = ppb.Payment(
        payment_id=payment_id,
        branch=cpb.TccBranch(global_tx_id=saga_id, branch_id="payment"),
        state=_STATES[kind],
    )
    return ppb.SettlementEvent(event_id=f"ev{cursor}", cursor=cursor, type=kind, payment=payment)


def _post(key: str) -> commands.CreateJobWithPayment:
    return commands.CreateJobWithPayment(
        request_id=key,
        actor=commands.Actor("co_burst", "company"),
        payment=commands.PaymentChoice(method="card", payment_method_token="pm_card_visa"),
        accept_terms=True,
        fingerprint=key,
        fields=FIELDS,
    )


def _deps(
    sessions, participants: FakeParticipants, completed: CompletedPostings | None = None
) -> Deps:
    return Deps.build(
        lambda: SqlJobsUnitOfWork(sessions), make_config(), participants, completed=completed
    )


async def _consume(
    sessions, participants, events, after: int = 0, completed: CompletedPostings | None = None
) -> int:
    """Run the settlement consumer over `events` (from position `after`) until the stream ends;
    the position it recorded. `completed`: the process's postings completed (none kept: None)."""
    deps = _deps(sessions, participants, completed)
    await workers.consume_stream(_Call(events), asyncio.Event(), deps.fresh, after)  # type: ignore[arg-type]
    async with deps.uow as uow:
        return await uow.settlements.cursor(workers.CONSUMER)


async def _postings(
    sessions, participants, keys: list[str], completed: CompletedPostings | None = None
) -> list[Saga]:
    """Card postings made concurrently, each finished by its request; their sagas."""
    deps = _deps(sessions, participants, completed)
    answers = await asyncio.gather(
        *(pay_to_post.create_job_with_payment(_post(k), deps.fresh()) for k in keys)
    )
    async with deps.uow as uow:
        found = await uow.sagas.get_many([a.saga_id for a in answers])
    return [found[a.saga_id] for a in answers]


async def _versions(sessions, saga_ids: list[str]) -> dict[str, str]:
    """Each saga's and job's PostgreSQL row version (xmin): any write changes it."""
    async with sessions() as s:
        rows = await s.execute(
            text(
                "SELECT s.id, s.xmin::text || '/' || j.xmin::text FROM sagas s "
                "JOIN jobs j ON j.id = s.job_id WHERE s.id = ANY(:ids)"
            ),
            {"ids": saga_ids},
        )
        return {saga_id: version for saga_id, version in rows.all()}


def _card_events(sagas: list[Saga], first: int = 1) -> list[ppb.SettlementEvent]:
    """Each posting's authorized and captured events, interleaved as concurrent postings'."""
    kinds = ("payment.authorized", "payment.captured")
    pairs = [(kind, s.id) for kind in kinds for s in sagas]
    return [_event(first + i, kind, saga_id) for i, (kind, saga_id) in enumerate(pairs)]


async def test_a_burst_of_no_op_events_costs_one_statement_and_the_position(engines, round_trips):
    """The authorized and captured events of 30 postings their requests finished (60 events,
    one burst): one statement reads their 30 sagas, nothing else is read, locked or written, and
    the position is recorded once (two statements where each event read its saga: 62)."""
    posting, consuming = engines
    participants = FakeParticipants()
    warm = await _postings(posting, participants, ["warm"])
    # Warm: the consumer's statements are prepared on its connection, the position exists.
    assert await _consume(consuming, participants, _card_events(warm)) == 2
    sagas = await _postings(posting, participants, [f"burst-{i}" for i in range(30)])
    versions = await _versions(posting, [s.id for s in sagas])
    events = _card_events(sagas, first=3)
    round_trips.sent.clear()

    position = await _consume(consuming, participants, events)

    consumed = list(round_trips.sent)
    assert position == events[-1].cursor
    # The burst's sagas (one statement), the position (one statement), the check above.
    assert [kind for kind, _ in consumed] == ["statement"] * 3, consumed
    burst_read, position_write = consumed[0][1], consumed[1][1]
    assert "FROM hirepay_keys(" in burst_read and "FROM sagas" in burst_read, burst_read
    assert "settlement_cursors" in position_write
    assert await _versions(posting, [s.id for s in sagas]) == versions
    # The requests' Confirms only: no event called a participant.
    assert sorted(c for c in participants.payments.calls if c[0] != "try") == sorted(
        ("confirm", s.id) for s in [*warm, *sagas]
    )


async def test_events_of_postings_completed_here_are_judged_without_a_read(engines, round_trips):
    """Postings this process's requests completed (CompletedPostings, as the service wires it):
    their authorized and captured events ask nothing of them, and a burst of only those costs
    the position alone, no read (issue 13); nothing is written, no participant called. A refund
    or another payment's event of one of them is still judged on a read of its saga."""
    posting, consuming = engines
    participants = FakeParticipants()
    completed = CompletedPostings()
    warm = await _postings(posting, participants, ["warm"], completed)
    assert await _consume(consuming, participants, _card_events(warm), 0, completed) == 2
    sagas = await _postings(posting, participants, [f"done-{i}" for i in range(10)], completed)
    assert {s.state for s in sagas} == {SagaState.COMPLETED}
    versions = await _versions(posting, [s.id for s in sagas])
    events = _card_events(sagas, first=3)
    participants.payments.calls.clear()
    round_trips.sent.clear()

    position = await _consume(consuming, participants, events, 2, completed)

    consumed = list(round_trips.sent)
    assert position == events[-1].cursor
    # The position (one statement), the check above: no read of the sagas.
    assert [kind for kind, _ in consumed] == ["statement"] * 2, consumed
    assert "settlement_cursors" in consumed[0][1]
    assert await _versions(posting, [s.id for s in sagas]) == versions
    assert participants.payments.calls == []

    # News of another kind, or of another payment, is read (one statement for the burst).
    others = [
        _event(position + 1, "payment.refunded", sagas[0].id),
        _event(position + 2, "payment.captured", sagas[1].id, payment_id="pay_other"),
    ]
    round_trips.sent.clear()
    assert await _consume(consuming, participants, others, position, completed) == position + 2
    burst_read = round_trips.sent[0][1]
    assert "FROM hirepay_keys(" in burst_read and "FROM sagas" in burst_read, round_trips.sent


async def test_a_mixed_burst_applies_exactly_the_news_in_order_once(engines):
    """One burst: finished postings' events (no-ops) around two 3-D Secure postings' news. The
    first's authorization moves it to its Confirm (driven by the consumer: its request is gone) and
    its captured event, judged on the saga read again, then changes nothing; the second's capture
    arrives before its (then stale) authorization. Each news is applied once, under its saga's lock,
    in the stream's order; the no-op events write no row and call no participant."""
    posting, consuming = engines
    participants = FakeParticipants()
    done = await _postings(posting, participants, ["done-1", "done-2"])
    participants.payments.try_outcome = TryResult(
        TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION"
    )
    waiting = await _postings(posting, participants, ["3ds-1", "3ds-2"])
    assert {s.state for s in waiting} == {SagaState.AWAITING_SETTLEMENT}
    # The customers authenticated; the second payment was captured too (the provider's order).
    participants.payments.state[waiting[0].id] = TryState.RESERVED
    participants.payments.state[waiting[1].id] = TryState.CAPTURED
    untouched = await _versions(posting, [s.id for s in done])
    participants.payments.calls.clear()
    events = [
        _event(1, "payment.authorized", done[0].id),
        _event(2, "payment.authorized", waiting[0].id),  # news: to its Confirm, then driven
        _event(3, "payment.captured", done[0].id),
        _event(4, "payment.captured", waiting[0].id),  # the capture its Confirm just recorded
        _event(5, "payment.captured", waiting[1].id),  # news: the money is taken
        _event(6, "payment.authorized", waiting[1].id),  # stale: after the capture
        _event(7, "payment.authorized", done[1].id),
        _event(8, "payment.captured", done[1].id),
    ]

    assert await _consume(consuming, participants, events) == 8

    assert participants.payments.calls == [("confirm", waiting[0].id), ("confirm", waiting[1].id)]
    assert await _versions(posting, [s.id for s in done]) == untouched
    async with SqlJobsUnitOfWork(posting) as uow:
        for saga_id in (waiting[0].id, waiting[1].id):
            saga = await uow.sagas.get(saga_id)
            assert saga is not None
            job = await uow.jobs.get(saga.job_id)
            trail = [t.to_status for t in await uow.jobs.transitions(saga.job_id)]
            steps = await uow.session.execute(
                text("SELECT step, detail FROM saga_log WHERE saga_id = :i ORDER BY id"),
                {"i": saga_id},
            )
            log = [(step, detail) for step, detail in steps.all()]
            assert (saga.state, saga.provider_state, saga.captured) == (
                SagaState.COMPLETED,
                "CAPTURED",
                True,
            )
            assert job is not None and job.status is JobStatus.ACTIVE
            assert trail.count(JobStatus.ACTIVE) == 1
            assert [step for step, _ in log].count("confirming") == 1
            assert [step for step, _ in log][-1] == "completed"
        second_news = [detail for _, detail in log if detail.startswith("payment.")]
    # The second saga's news is its capture (event 5); its stale authorization recorded nothing.
    assert second_news == ["payment.captured: captured"]
    assert participants.payments.taken(waiting[0].id) and participants.payments.taken(waiting[1].id)
    assert not participants.payments.refunded


class _Crash(BaseException):
    """The process dies (nothing after it runs: like kill -9, no handler catches it)."""


async def test_a_crash_in_the_middle_of_a_burst_replays_from_the_last_committed_event(engines):
    """The consumer dies inside a burst, right after a Confirm took the money of the burst's
    second news and before that was recorded: the position recorded never passes that event, the
    restarted consumer gets the events again from there, and each news ends applied once (the
    first saga's Confirm not sent again, the second's repeated and idempotent: the money taken
    once, the job live once)."""
    posting, consuming = engines
    participants = FakeParticipants()
    done = await _postings(posting, participants, ["done"])
    participants.payments.try_outcome = TryResult(
        TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION"
    )
    first, second = await _postings(posting, participants, ["3ds-a", "3ds-b"])
    participants.payments.state[first.id] = TryState.RESERVED
    participants.payments.state[second.id] = TryState.RESERVED
    participants.payments.calls.clear()
    events = [
        _event(11, "payment.authorized", done[0].id),
        _event(12, "payment.authorized", first.id),
        _event(13, "payment.captured", done[0].id),
        _event(14, "payment.authorized", second.id),  # its Confirm dies once the money is taken
        _event(15, "payment.captured", first.id),
    ]
    confirm = participants.payments.confirm

    async def dies_after_taking(saga: Saga) -> Any:
        result = await confirm(saga)
        if saga.id == second.id and participants.payments.calls.count(("confirm", saga.id)) == 1:
            raise _Crash
        return result

    participants.payments.confirm = dies_after_taking  # type: ignore[method-assign]

    with pytest.raises(_Crash):
        await _consume(consuming, participants, events, after=10)
    async with SqlJobsUnitOfWork(posting) as uow:
        recorded = await uow.settlements.cursor(workers.CONSUMER)
        dead = await uow.sagas.get(second.id)
    assert recorded in (10, 13)  # never past event 14 (13 if recorded on the way out, 10 if not)
    assert dead is not None and dead.state is SagaState.CONFIRMING and not dead.captured

    # The restarted consumer: the stream from the recorded position (a kill -9 recorded none).
    for after in sorted({10, recorded}):
        replay = [e for e in events if e.cursor > after]
        assert await _consume(consuming, participants, replay, after=after) == 15

    assert participants.payments.calls.count(("confirm", first.id)) == 1
    assert participants.payments.calls.count(("confirm", second.id)) == 2  # idempotent
    assert not participants.payments.refunded
    async with SqlJobsUnitOfWork(posting) as uow:
        for saga_id in (first.id, second.id):
            saga = await uow.sagas.get(saga_id)
            assert saga is not None and saga.state is SagaState.COMPLETED and saga.captured
            trail = [t.to_status for t in await uow.jobs.transitions(saga.job_id)]
            assert trail.count(JobStatus.ACTIVE) == 1
            assert participants.payments.taken(saga_id)
