"""Integration tests against real PostgreSQL: insert-first idempotency under concurrency, leases of
the recovery worker, the expiry worker, the append-only audit trail."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from hirepay_platform.clock import utc_now
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.model import Job, JobStatus, PaymentStatus
from jobs.domain.posting_saga import PaymentMethod, Saga, SagaState
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import cancellation, pay_to_post, settlement
from jobs.service_layer.handlers import drafts as draft_handlers
from jobs.service_layer.ports import Participants
from tests.support.jobs_fakes import FakeParticipants, make_config
from tests.support.jobs_faults import CrashingParticipants
from tests.support.jobs_world import COMPANY, FIELDS


def deps_of(sessions, config=None, participants: Participants | None = None) -> Deps:
    """The handlers' dependencies over the real database (each call gets its own unit of work)."""
    return Deps.build(
        lambda: SqlJobsUnitOfWork(sessions),
        config or make_config(),
        participants or FakeParticipants(),
    )


def post_cmd(key: str, fingerprint: str = "fp") -> commands.CreateJobWithPayment:
    return commands.CreateJobWithPayment(
        request_id=key,
        actor=COMPANY,
        payment=commands.PaymentChoice(method="card", payment_method_token="pm_card_visa"),
        accept_terms=True,
        fingerprint=fingerprint,
        fields=FIELDS,
    )


async def test_twenty_concurrent_calls_with_one_key_give_one_charge_one_job(sessions):
    participants = FakeParticipants()
    original = participants.payments.try_
    twins_in = 0
    all_twins_in = asyncio.Event()

    class CountingUnitOfWork(SqlJobsUnitOfWork):
        """Counts the twins that found the first request's saga by its key."""

        def _attach(self, session) -> None:
            super()._attach(session)
            get_by_key = self.sagas.get_by_key

            async def counted(company_id: str, request_id: str) -> Saga | None:
                nonlocal twins_in
                found = await get_by_key(company_id, request_id)
                twins_in += 1
                if twins_in == 19:
                    all_twins_in.set()
                return found

            self.sagas.get_by_key = counted  # type: ignore[method-assign]

    async def slow_try(s):
        # Keep the first request in flight until all 19 twins have found its saga.
        await asyncio.wait_for(all_twins_in.wait(), timeout=30)
        return await original(s)

    participants.payments.try_ = slow_try  # type: ignore[method-assign]
    deps = Deps.build(
        lambda: CountingUnitOfWork(sessions),
        make_config(idempotency_wait_seconds=30),
        participants,
    )
    answers = await asyncio.gather(
        *[
            pay_to_post.create_job_with_payment(post_cmd("same-key"), deps.fresh())
            for _ in range(20)
        ]
    )
    assert len({a.saga_id for a in answers}) == 1
    assert len({a.job.id for a in answers}) == 1
    assert all(replace(a, replayed=False) == replace(answers[0], replayed=False) for a in answers)
    assert sorted(a.replayed for a in answers) == [False] + [True] * 19
    assert [c for c, _ in participants.payments.calls] == ["try", "confirm"]
    async with sessions() as s:
        assert (await s.execute(text("SELECT count(*) FROM sagas"))).scalar_one() == 1
        assert (await s.execute(text("SELECT count(*) FROM jobs"))).scalar_one() == 1


async def test_same_key_different_body_is_refused(sessions):
    deps = deps_of(sessions)
    await pay_to_post.create_job_with_payment(post_cmd("k"), deps.fresh())
    with pytest.raises(Exception) as info:
        await pay_to_post.create_job_with_payment(post_cmd("k", "other"), deps.fresh())
    assert info.value.reason == "IDEMPOTENCY_MISMATCH"


def _saga(i: int, now: datetime) -> Saga:
    return Saga(
        id=f"saga_{i}",
        company_id="co_1",
        request_id=f"k{i}",
        fingerprint="fp",
        actor="co_1",
        state=SagaState.CONFIRMING,
        method=PaymentMethod.CARD,
        created_at=now,
        updated_at=now,
        deadline_at=now + timedelta(minutes=15),
    )


async def test_two_recovery_workers_never_take_the_same_saga(sessions):
    now = datetime.now(UTC)
    async with SqlJobsUnitOfWork(sessions) as uow:
        for i in range(30):
            await uow.sagas.insert(_saga(i, now))
        # One leased by a live holder, one not yet due: neither may be taken.
        held = _saga(100, now)
        held.lease_owner, held.lease_until = "alive", now + timedelta(minutes=1)
        await uow.sagas.insert(held)
        later = _saga(101, now)
        later.next_attempt_at = now + timedelta(minutes=1)
        await uow.sagas.insert(later)
        await uow.commit()

    async def claim(owner: str) -> list[str]:
        taken: list[str] = []
        for _ in range(10):
            async with SqlJobsUnitOfWork(sessions) as uow:
                got = await uow.sagas.claim_due(
                    utc_now(), owner, utc_now() + timedelta(minutes=5), 4
                )
                await asyncio.sleep(0.01)  # hold the row locks while the other worker claims
                await uow.commit()
            taken += [s.id for s in got]
        return taken

    a, b = await asyncio.gather(claim("A"), claim("B"))
    assert not set(a) & set(b)
    assert set(a) | set(b) == {f"saga_{i}" for i in range(30)}
    # An expired lease is taken over.
    async with SqlJobsUnitOfWork(sessions) as uow:
        got = await uow.sagas.claim_due(
            now + timedelta(minutes=2), "C", now + timedelta(minutes=10), 100
        )
    assert {s.id for s in got} == {"saga_100", "saga_101"}


async def test_expiry_worker_in_several_replicas(sessions):
    config = make_config()
    now = datetime.now(UTC)
    async with SqlJobsUnitOfWork(sessions) as uow:
        for i in range(25):
            job = Job(f"job_{i}", "co_1", FIELDS, JobStatus.ACTIVE, now, now, saga_id=f"saga_{i}")
            job.posted_at = now - timedelta(days=31)
            job.expires_at = now - timedelta(days=1) if i < 20 else now + timedelta(days=1)
            await uow.jobs.add(job)
        await uow.commit()
    counts = await asyncio.gather(
        *[
            cancellation.expire_due(commands.ExpirePostings(limit=3), deps_of(sessions))
            for _ in range(4)
        ]
    )
    total = sum(counts)
    while True:
        more = await cancellation.expire_due(commands.ExpirePostings(limit=3), deps_of(sessions))
        if not more:
            break
        total += more
    assert total == 20
    page = await draft_handlers.list_active_jobs(commands.ListActiveJobs(), deps_of(sessions))
    assert len(page.jobs) == 5
    async with sessions() as s:
        rows = (
            await s.execute(text("SELECT count(*) FROM job_transitions WHERE to_status='expired'"))
        ).scalar_one()
    assert rows == 20
    assert config.posting_days == 30


async def test_transitions_are_append_only(sessions):
    job = await draft_handlers.create_draft(
        commands.CreateDraft(COMPANY, FIELDS), deps_of(sessions)
    )
    for statement in (
        "UPDATE job_transitions SET reason = 'rewritten'",
        "DELETE FROM job_transitions",
    ):
        async with sessions() as s:
            with pytest.raises(DBAPIError, match="append-only"):
                await s.execute(text(statement))
    trail = await draft_handlers.list_transitions(
        commands.ListJobTransitions(COMPANY, job.id), deps_of(sessions)
    )
    assert [(t.from_status, t.to_status) for t in trail] == [(None, JobStatus.DRAFT)]


async def test_crash_after_try_recovered_from_the_database(sessions):
    class Crash(BaseException):
        pass

    def crash() -> None:
        raise Crash

    participants = FakeParticipants()
    config = make_config(lease_seconds=0.2)
    with pytest.raises(Crash):
        await pay_to_post.create_job_with_payment(
            post_cmd("crash"),
            deps_of(sessions, config, CrashingParticipants(participants, "try", crash)),
        )
    # Recovery runs on a clock past the crashed request's 0.2 s lease instead of sleeping it out.
    deps = Deps.build(
        lambda: SqlJobsUnitOfWork(sessions),
        make_config(lease_seconds=5),
        participants,
        clock=lambda: utc_now() + timedelta(seconds=1),
    )
    assert await settlement.recover_due(commands.RecoverSagas(), deps) == 1
    async with SqlJobsUnitOfWork(sessions) as uow:
        s = await uow.sagas.get_by_key("co_1", "crash")
        job = await uow.jobs.get(s.job_id)
    assert s.state is SagaState.COMPLETED and job.status is JobStatus.ACTIVE
    assert participants.payments.taken(s.id)


async def test_concurrent_create_draft_retries_make_one_draft(sessions):
    config = make_config()
    cmd = commands.CreateDraft(COMPANY, FIELDS, request_id="draft-key")
    drafts = await asyncio.gather(
        *[draft_handlers.create_draft(cmd, deps_of(sessions, config)) for _ in range(10)]
    )
    assert len({d.id for d in drafts}) == 1
    async with sessions() as s:
        assert (await s.execute(text("SELECT count(*) FROM jobs"))).scalar_one() == 1
        assert (await s.execute(text("SELECT count(*) FROM job_transitions"))).scalar_one() == 1


async def test_failed_payments_are_counted_per_company_and_window(sessions):
    from jobs.domain.posting_saga import ABUSE_REASONS, SagaError

    now = datetime.now(UTC)
    async with SqlJobsUnitOfWork(sessions) as uow:
        for i, (company, reason, age) in enumerate(
            [
                ("co_1", "PAYMENT_DECLINED", 10),
                ("co_1", "INSUFFICIENT_FUNDS", 20),
                ("co_1", "PAYMENT_TIMEOUT", 30),  # a provider fault is not the customer's doing
                ("co_1", "PAYMENT_DECLINED", 7200),  # outside the window
                ("co_2", "PAYMENT_DECLINED", 10),
            ]
        ):
            s = _saga(i, now - timedelta(seconds=age))
            s.company_id, s.state = company, SagaState.FAILED
            s.failure = SagaError("FAILED_PRECONDITION", reason, "x")
            await uow.sagas.insert(s)
        await uow.commit()
    async with SqlJobsUnitOfWork(sessions) as uow:
        since = now - timedelta(hours=1)
        # The count comes with a posting's insert-first; a key already taken counts nothing.
        first, second, taken = _saga(10, now), _saga(11, now), _saga(12, now)
        second.company_id = "co_2"
        taken.request_id = first.request_id
        assert await uow.sagas.insert_counting_failures(first, since, ABUSE_REASONS) == 2
        assert await uow.sagas.insert_counting_failures(second, since, ABUSE_REASONS) == 1
        assert await uow.sagas.insert_counting_failures(taken, since, ABUSE_REASONS) is None


async def test_stuck_sagas_are_those_past_deadline_not_waiting_for_settlement(sessions):
    now = datetime.now(UTC)
    async with SqlJobsUnitOfWork(sessions) as uow:
        for i, state in enumerate(
            [
                SagaState.CONFIRMING,
                SagaState.CANCELLING,
                SagaState.AWAITING_SETTLEMENT,
                SagaState.COMPLETED,
            ]
        ):
            s = _saga(i, now - timedelta(hours=1))
            s.state = state
            await uow.sagas.insert(s)
        fresh = _saga(9, now)
        await uow.sagas.insert(fresh)
        await uow.commit()
    async with SqlJobsUnitOfWork(sessions) as uow:
        assert await uow.sagas.count_stuck(now) == 2


# --------------------------------------------------------------------------- cancel vs. settlement


def _bank_transfer_cmd(key: str) -> commands.CreateJobWithPayment:
    return commands.CreateJobWithPayment(
        request_id=key,
        actor=COMPANY,
        payment=commands.PaymentChoice(method="bank_transfer"),
        accept_terms=True,
        fingerprint=key,
        fields=FIELDS,
    )


class _SlowParticipants(FakeParticipants):
    """Fake participants that yield on every call like an RPC, so transactions interleave."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("try_", "confirm", "cancel", "refund", "inspect"):
            method = getattr(self.payments, name)

            async def slow(*args, _method=method):
                await asyncio.sleep(random.uniform(0, 0.003))
                return await _method(*args)

            setattr(self.payments, name, slow)


@pytest.mark.parametrize("refund_window_hours", [24, 0])
async def test_cancel_racing_the_activating_settlement_ends_in_one_consistent_outcome(
    sessions, refund_window_hours
):
    """A company cancels its pending bank-transfer job while the transfer settles: the cancel,
    the settlement event that would activate the job and a recovery worker run concurrently on
    real row locks. Every round ends in exactly one of: the activation won (the job went live,
    then the cancel of the live posting was refunded per the policy), or the cancel won (the job
    never went live and the money that arrived went back in full)."""
    from jobs.domain.posting_saga import SettlementEvent, TryResult, TryState
    from jobs.domain.pricing import RefundPolicy

    participants = _SlowParticipants()
    participants.payments.try_outcome = TryResult(TryState.PROCESSING, "pay_1", "PROCESSING")
    config = make_config(
        lease_seconds=5,
        retry_base_seconds=0.01,
        retry_max_seconds=0.05,
        refund_policy=RefundPolicy(full_refund_within_hours=refund_window_hours),
    )
    deps = deps_of(sessions, config, participants)
    recovery = deps_of(sessions, replace(config, instance_id="other-replica"), participants)

    def uow() -> SqlJobsUnitOfWork:
        return SqlJobsUnitOfWork(sessions)

    answers = [
        await pay_to_post.create_job_with_payment(_bank_transfer_cmd(f"race-{i}"), deps.fresh())
        for i in range(12)
    ]
    assert {a.job.status for a in answers} == {JobStatus.PENDING_PAYMENT}

    async def warm(session_factory=sessions) -> None:
        async with session_factory() as session:
            await session.execute(text("SELECT 1"))
            await asyncio.sleep(0.05)

    await asyncio.gather(*[warm() for _ in range(30)])  # open the pool: no connect skews the race

    async def cancel_and_drive(job_id: str) -> None:
        await asyncio.sleep(random.uniform(0, 0.02))
        cmd = commands.CancelJob(COMPANY, job_id, "changed my mind")
        _, saga_id = await cancellation.cancel_job(cmd, deps.fresh())
        if saga_id:
            await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), deps.fresh())

    async def settle(saga_id: str, cursor: int) -> None:
        await asyncio.sleep(random.uniform(0, 0.02))
        participants.payments.state[saga_id] = TryState.CAPTURED  # the transfer arrived
        settled = SettlementEvent(
            f"ev{cursor}",
            cursor,
            "payment.captured",
            saga_id,
            "payment",
            TryResult(TryState.CAPTURED, "pay_1", "CAPTURED"),
        )
        await settlement.apply_settlement_event(
            commands.ApplySettlementEvent(settled, "race"), deps.fresh()
        )

    await asyncio.gather(
        *[cancel_and_drive(a.job.id) for a in answers],
        *[settle(a.saga_id, i + 1) for i, a in enumerate(answers)],
        *[settlement.recover_due(commands.RecoverSagas(), recovery.fresh()) for _ in range(3)],
    )
    for _ in range(100):  # whatever is left (retries) is recovery's
        await settlement.recover_due(commands.RecoverSagas(), recovery.fresh())
        async with uow() as u:
            left = [a for a in answers if not (await u.sagas.get(a.saga_id)).state.final]
        if not left:
            break
        await asyncio.sleep(0.05)
    assert not left

    outcomes = set()
    for a in answers:
        async with uow() as u:
            job = await u.jobs.get(a.job.id)
            s = await u.sagas.get(a.saga_id)
            trail = [t.to_status for t in await u.jobs.transitions(a.job.id)]
        outcomes.add(_check_one_outcome(a, job, s, trail, participants, refund_window_hours))
    assert outcomes  # (which one wins each round is up to the scheduler)


def _check_one_outcome(a, job, s, trail, participants, refund_window_hours) -> str:
    """One round of the cancel/settlement race ended consistently; which outcome it was."""
    refunds = [c for c in participants.payments.calls if c == ("refund", s.id)]
    assert job.status is JobStatus.CANCELLED
    assert trail.count(JobStatus.CANCELLED) == 1
    if JobStatus.ACTIVE in trail:  # the activation won; the cancel met a live posting
        outcome = "activated, then cancelled"
        assert trail[-3:] == [JobStatus.PENDING_PAYMENT, JobStatus.ACTIVE, JobStatus.CANCELLED]
        if refund_window_hours:
            assert s.state is SagaState.REFUNDED and refunds
            assert participants.payments.refunded[s.id] == a.job.payment_amount_minor
            assert job.payment_status.value == "refunded"
        else:  # past the policy's window: the posting was paid for and stays paid
            assert s.state is SagaState.COMPLETED and not refunds
            assert participants.payments.taken(s.id)
            assert job.payment_status.value == "completed"
    else:  # the cancel won: the job never went live and nothing is kept
        outcome = "cancelled while pending"
        assert trail[-2:] == [JobStatus.PENDING_PAYMENT, JobStatus.CANCELLED]
        assert job.posted_at is None
        assert s.state is SagaState.REFUNDED and refunds
        assert participants.payments.refunded[s.id] == a.job.payment_amount_minor
        assert job.payment_status.value == "refunded"
    assert not participants.payments.held(s.id)
    return outcome


def _payment_event(saga_id: str, cursor: int, kind: str):
    """payments' event of one step of a 3-D Secure card payment, as the stream carries it."""
    from jobs.domain.posting_saga import SettlementEvent, TryResult, TryState

    state, name = {
        "payment.authorized": (TryState.RESERVED, "AUTHORIZED"),
        "payment.captured": (TryState.CAPTURED, "CAPTURED"),
    }[kind]
    return SettlementEvent(
        f"ev{cursor}", cursor, kind, saga_id, "payment", TryResult(state, "pay_1", name)
    )


async def _row_versions(sessions, saga_id: str, job_id: str) -> tuple[str, str]:
    """The PostgreSQL row versions (xmin) of a saga and its job: any UPDATE changes them."""
    async with sessions() as s:
        saga = await s.execute(text("SELECT xmin::text FROM sagas WHERE id = :i"), {"i": saga_id})
        job = await s.execute(text("SELECT xmin::text FROM jobs WHERE id = :i"), {"i": job_id})
        return saga.scalar_one(), job.scalar_one()


async def test_a_stale_authorized_event_after_the_capture_writes_no_row(sessions):
    """The window before the saga is final: its request holds it, Confirm in flight, and the
    capture's event has been applied. The authorization's event arriving late then leaves the
    saga and job rows untouched (same row versions), and the posting completes as captured."""
    from jobs.domain.posting_saga import TryState
    from tests.support.gates import Gate

    participants = FakeParticipants()
    gate = Gate()
    participants.payments.confirm = gate.hold(participants.payments.confirm)
    deps = deps_of(sessions, participants=participants)
    request = asyncio.create_task(pay_to_post.create_job_with_payment(post_cmd("k"), deps.fresh()))
    await gate.entered()
    async with SqlJobsUnitOfWork(sessions) as uow:
        s = await uow.sagas.get_by_key("co_1", "k")
    assert s.state is SagaState.CONFIRMING and s.provider_state == "AUTHORIZED"
    participants.payments.state[s.id] = TryState.CAPTURED
    captured = _payment_event(s.id, 1, "payment.captured")
    await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(captured, "c"), deps.fresh()
    )
    versions = await _row_versions(sessions, s.id, s.job_id)
    stale = _payment_event(s.id, 2, "payment.authorized")
    assert not await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(stale, "c"), deps.fresh()
    )
    assert await _row_versions(sessions, s.id, s.job_id) == versions
    async with SqlJobsUnitOfWork(sessions) as uow:
        assert (await uow.sagas.get(s.id)).provider_state == "CAPTURED"
    gate.release()
    answer = await request
    assert answer.job.status is JobStatus.ACTIVE
    async with SqlJobsUnitOfWork(sessions) as uow:
        done = await uow.sagas.get(s.id)
    assert done.state is SagaState.COMPLETED and done.provider_state == "CAPTURED"
    assert participants.payments.taken(s.id) and not participants.payments.refunded


async def test_settlement_events_in_either_order_end_the_same(sessions):
    """A 3-D Secure card posting's two events, authorized and captured, delivered concurrently
    in both orders (with a recovery worker) on real row locks: every saga ends completed with the
    capture recorded, its job live once, the money taken once and never refunded, and a stale
    event delivered afterwards writes no row."""
    from jobs.domain.posting_saga import TryResult, TryState

    participants = _SlowParticipants()
    participants.payments.try_outcome = TryResult(
        TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION"
    )
    config = make_config(lease_seconds=5, retry_base_seconds=0.01, retry_max_seconds=0.05)
    deps = deps_of(sessions, config, participants)
    recovery = deps_of(sessions, replace(config, instance_id="other-replica"), participants)
    answers = [
        await pay_to_post.create_job_with_payment(post_cmd(f"3ds-{i}", f"3ds-{i}"), deps.fresh())
        for i in range(16)
    ]
    assert {a.job.status for a in answers} == {JobStatus.PENDING_PAYMENT}
    orders = {
        a.saga_id: ("payment.captured", "payment.authorized")
        if i % 2
        else ("payment.authorized", "payment.captured")
        for i, a in enumerate(answers)
    }
    cursor = iter(range(1, 1000))

    async def deliver(saga_id: str, kind: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if kind == "payment.captured":
            participants.payments.state[saga_id] = TryState.CAPTURED
        event = _payment_event(saga_id, next(cursor), kind)
        await settlement.apply_settlement_event(
            commands.ApplySettlementEvent(event, "race"), deps.fresh()
        )

    for a in answers:  # the customers authenticated: the provider authorized every payment
        participants.payments.state[a.saga_id] = TryState.RESERVED
    await asyncio.gather(
        *[
            deliver(saga_id, kind, delay)
            for saga_id, (first, second) in orders.items()
            for kind, delay in ((first, 0), (second, random.uniform(0, 0.01)))
        ],
        *[settlement.recover_due(commands.RecoverSagas(), recovery.fresh()) for _ in range(2)],
    )
    for _ in range(100):  # whatever is left (retries) is recovery's
        await settlement.recover_due(commands.RecoverSagas(), recovery.fresh())
        async with SqlJobsUnitOfWork(sessions) as u:
            left = [a for a in answers if not (await u.sagas.get(a.saga_id)).state.final]
        if not left:
            break
        await asyncio.sleep(0.05)
    assert not left

    ends: dict[tuple[str, str], set[tuple[object, ...]]] = {}
    for a in answers:
        async with SqlJobsUnitOfWork(sessions) as u:
            s = await u.sagas.get(a.saga_id)
            job = await u.jobs.get(a.job.id)
            trail = [t.to_status for t in await u.jobs.transitions(a.job.id)]
        end = (
            s.state,
            s.provider_state,
            s.captured,
            s.activated,
            s.refund_amount_minor,
            job.status,
            job.payment_status,
            job.payment_id,
            trail.count(JobStatus.ACTIVE),
        )
        ends.setdefault(orders[a.saga_id], set()).add(end)
        assert participants.payments.taken(a.saga_id)
        assert ("refund", a.saga_id) not in participants.payments.calls
        # Delivered once more, after the end: the stale event writes no row.
        versions = await _row_versions(sessions, a.saga_id, a.job.id)
        await deliver(a.saga_id, "payment.authorized", 0)
        assert await _row_versions(sessions, a.saga_id, a.job.id) == versions
    expected = {
        (
            SagaState.COMPLETED,
            "CAPTURED",
            True,
            True,
            0,
            JobStatus.ACTIVE,
            PaymentStatus.COMPLETED,
            "pay_1",
            1,
        )
    }
    assert list(ends.values()) == [expected, expected]
    assert not participants.payments.refunded


@pytest.mark.parametrize("order", ["authorized, captured", "captured overtakes authorized"])
async def test_an_overtaken_authorized_event_writes_nothing_once_captured(sessions, order):
    """The authorized event of a 3-D Secure card posting has read its saga (still waiting for
    settlement) when the captured event overtakes it and completes the posting; it then takes
    the saga's lock behind a capture. In either order the saga, the job and the money end the
    same, and the overtaken event writes no row."""
    from jobs.domain.posting_saga import TryResult, TryState
    from tests.support.gates import Gate

    participants = FakeParticipants()
    participants.payments.try_outcome = TryResult(
        TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION"
    )
    deps = deps_of(sessions, participants=participants)
    answer = await pay_to_post.create_job_with_payment(post_cmd("3ds"), deps.fresh())
    saga_id, job_id = answer.saga_id, answer.job.id
    participants.payments.state[saga_id] = TryState.RESERVED  # the customer authenticated
    gate = Gate()

    class HeldBeforeLock(SqlJobsUnitOfWork):
        """The authorized event's unit of work: its locked read waits at the gate."""

        def _attach(self, session) -> None:
            super()._attach(session)
            self.sagas.lock_with_job = gate.hold(self.sagas.lock_with_job)  # type: ignore[method-assign]

    held = Deps.build(lambda: HeldBeforeLock(sessions), make_config(), participants)

    async def deliver(kind: str, cursor: int, on: Deps) -> bool:
        if kind == "payment.captured":
            participants.payments.state[saga_id] = TryState.CAPTURED
        event = _payment_event(saga_id, cursor, kind)
        return await settlement.apply_settlement_event(
            commands.ApplySettlementEvent(event, "c"), on.fresh()
        )

    if order == "authorized, captured":
        gate.release()
        await deliver("payment.authorized", 1, held)
        await deliver("payment.captured", 2, deps)
    else:
        authorized = asyncio.create_task(deliver("payment.authorized", 1, held))
        await gate.entered()  # it read the saga waiting for settlement: news, so it locks
        await deliver("payment.captured", 2, deps)
        versions = await _row_versions(sessions, saga_id, job_id)
        gate.release()
        assert not await authorized
        assert await _row_versions(sessions, saga_id, job_id) == versions
    async with SqlJobsUnitOfWork(sessions) as u:
        s = await u.sagas.get(saga_id)
        job = await u.jobs.get(job_id)
        trail = [t.to_status for t in await u.jobs.transitions(job_id)]
    assert (s.state, s.provider_state, s.captured, s.activated) == (
        SagaState.COMPLETED,
        "CAPTURED",
        True,
        True,
    )
    assert (job.status, job.payment_status, job.payment_id) == (
        JobStatus.ACTIVE,
        PaymentStatus.COMPLETED,
        "pay_1",
    )
    assert trail.count(JobStatus.ACTIVE) == 1
    assert participants.payments.taken(saga_id) and not participants.payments.refunded
    assert ("refund", saga_id) not in participants.payments.calls
