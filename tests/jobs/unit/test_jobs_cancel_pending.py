"""Cancelling a job whose payment is still pending (bank transfer processing, 3-D Secure or checkout
not completed): the saga is cancelled with the job, money that settles anyway goes back (PAY-7),
and the job never goes live — against fake participants and the in-memory unit of work."""

from __future__ import annotations

import asyncio

import pytest

from hirepay_platform.errors import ErrorKind, HirepayError
from jobs.domain import commands
from jobs.domain.model import JobStatus, PaymentStatus
from jobs.domain.posting_saga import SagaState, SettlementEvent, TryResult, TryState
from jobs.service_layer.answers import SagaAnswer
from jobs.service_layer.handlers import cancellation, drafts, settlement
from jobs.service_layer.posting import leases
from tests.support.gates import Gate
from tests.support.jobs_fakes import PROVIDER_NAMES
from tests.support.jobs_world import COMPANY, Crash, World

PROCESSING = TryResult(TryState.PROCESSING, "pay_1", "PROCESSING")
ADMIN = commands.Actor("root", "admin")


def event(s, state: TryState, cursor: int = 1, kind: str = "") -> SettlementEvent:
    kind = (
        kind
        or {
            TryState.RESERVED: "payment.authorized",
            TryState.CAPTURED: "payment.captured",
            TryState.REFUNDED: "payment.refunded",
            TryState.CANCELLED: "payment.voided",
            TryState.FAILED: "payment.failed",
        }[state]
    )
    return SettlementEvent(
        f"ev{cursor}",
        cursor,
        kind,
        s.id,
        "payment",
        TryResult(state, "pay_1", PROVIDER_NAMES[state]),
    )


async def pending_bank_transfer(w: World) -> SagaAnswer:
    w.payments.try_outcome = PROCESSING
    answer = await w.post(method="bank_transfer")
    assert answer.job.status is JobStatus.PENDING_PAYMENT
    assert w.only_saga().state is SagaState.AWAITING_SETTLEMENT
    return answer


async def cancel(w: World, job_id: str, actor=COMPANY, reason="changed my mind"):
    return await cancellation.cancel_job(commands.CancelJob(actor, job_id, reason), w.deps)


def assert_never_live(w: World, job_id: str) -> None:
    assert w.job(job_id).status is JobStatus.CANCELLED
    assert w.job(job_id).posted_at is None
    assert all(t.to_status is not JobStatus.ACTIVE for t in w.store.transitions)


async def test_cancel_while_pending_voids_the_payment_and_nothing_is_taken():
    w = World()
    answer = await pending_bank_transfer(w)
    job, saga_id = await cancel(w, answer.job.id)
    assert job.status is JobStatus.CANCELLED and saga_id == answer.saga_id
    # Job and saga change in one transaction; the saga is leased to the cancel, which drives it.
    s = w.only_saga()
    assert s.state is SagaState.CANCELLING
    assert s.lease_owner == leases.cancel_holder(w.config)
    assert s.failure is not None and s.failure.reason == "PAYMENT_CANCELLED"
    assert w.job(job.id).payment_status is PaymentStatus.PENDING  # not known before the Void
    await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), w.deps)
    s = w.only_saga()
    assert s.state is SagaState.FAILED and s.lease_owner == "" and s.lease_until is None
    assert ("cancel", s.id) in w.payments.calls
    assert w.payments.state[s.id] is TryState.CANCELLED
    assert w.job(job.id).payment_status is PaymentStatus.FAILED
    assert_never_live(w, job.id)
    last = w.store.transitions[-1]
    assert (last.from_status, last.to_status, last.actor, last.reason) == (
        JobStatus.PENDING_PAYMENT,
        JobStatus.CANCELLED,
        COMPANY.name,
        "changed my mind",
    )
    assert "cancelling" in [step for sid, step, _ in w.store.log if sid == s.id]
    # The stored answer of the request (202 pending) is unchanged: a replay answers it again.
    again = await w.post(method="bank_transfer")
    assert again.replayed and again.job.status is JobStatus.PENDING_PAYMENT


async def test_money_settling_after_the_cancellation_is_refunded():
    w = World()
    answer = await pending_bank_transfer(w)
    _, saga_id = await cancel(w, answer.job.id)
    await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), w.deps)
    # The transfer settles anyway (the provider could not stop it).
    w.payments.state[saga_id] = TryState.CAPTURED
    await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event(w.only_saga(), TryState.CAPTURED), "c"), w.deps
    )
    s = w.only_saga()
    assert s.state is SagaState.REFUNDED
    assert w.payments.refunded[saga_id] == 14900  # all of it: the job never went live
    assert w.job(answer.job.id).payment_status is PaymentStatus.REFUNDED
    assert_never_live(w, answer.job.id)
    page = await drafts.list_active_jobs(commands.ListActiveJobs(), w.deps)
    assert page.jobs == []


async def test_payments_automatic_refund_after_the_void_is_not_refunded_twice():
    """Payments refunds by itself money a bank transfer settles after its Void; the saga's own
    Refund is then refused (nothing left). It waits for the payment to be refunded, then ends."""
    w = World()
    answer = await pending_bank_transfer(w)
    _, saga_id = await cancel(w, answer.job.id)
    await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), w.deps)
    w.payments.state[saga_id] = TryState.CAPTURED  # settled; payments' refund is pending
    w.payments.refund_errors = [
        HirepayError(
            "nothing left to refund",
            reason="REFUND_EXCEEDS_CAPTURED",
            kind=ErrorKind.FAILED_PRECONDITION,
        )
    ] * 3
    await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event(w.only_saga(), TryState.CAPTURED, 1), "c"), w.deps
    )
    s = w.only_saga()
    assert s.state is SagaState.REFUNDING and s.next_attempt_at is not None
    assert w.job(answer.job.id).payment_status is PaymentStatus.PENDING
    # Payments completes its refund and says so.
    w.payments.state[saga_id] = TryState.REFUNDED
    await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event(s, TryState.REFUNDED, 2), "c"), w.deps
    )
    assert w.only_saga().state is SagaState.REFUNDED
    assert w.job(answer.job.id).payment_status is PaymentStatus.REFUNDED
    assert w.payments.refunded == {}  # the saga never refunded a second time
    assert w.store.cursors["c"] == 2
    assert_never_live(w, answer.job.id)


async def test_a_refund_event_does_not_disturb_other_sagas():
    w = World()
    answer = await pending_bank_transfer(w)
    s = w.only_saga()
    await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event(s, TryState.REFUNDED), "c"), w.deps
    )
    assert w.only_saga().state is SagaState.AWAITING_SETTLEMENT
    assert w.job(answer.job.id).status is JobStatus.PENDING_PAYMENT
    assert [c for c, _ in w.payments.calls] == ["try"]


async def test_void_answering_the_refunded_payment_ends_refunded():
    """A retried Void finds the payment settled and already returned by payments."""
    w = World()
    answer = await pending_bank_transfer(w)
    _, saga_id = await cancel(w, answer.job.id)
    w.payments.state[saga_id] = TryState.REFUNDED
    w.payments.cancel_errors = [
        HirepayError("refunded", reason="PAYMENT_NOT_VOIDABLE", kind=ErrorKind.FAILED_PRECONDITION)
    ]
    await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), w.deps)
    assert w.only_saga().state is SagaState.REFUNDED
    assert w.job(answer.job.id).payment_status is PaymentStatus.REFUNDED
    assert_never_live(w, answer.job.id)


async def test_three_d_secure_completed_after_the_cancellation_never_activates():
    w = World()
    w.payments.try_outcome = TryResult(
        TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION", next_action_url="https://3ds"
    )
    answer = await w.post()
    job, saga_id = await cancel(w, answer.job.id)
    # The customer finishes 3-D Secure before the Void goes out: the authorization is recorded,
    # but the saga is cancelling, so nothing activates and the Void releases it.
    w.payments.state[saga_id] = TryState.RESERVED
    s = w.only_saga()
    await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event(s, TryState.RESERVED), "c"), w.deps
    )
    assert w.only_saga().state is SagaState.CANCELLING  # the cancel holds the lease: it drives
    await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), w.deps)
    assert w.only_saga().state is SagaState.FAILED
    assert not w.payments.held(saga_id) and not w.payments.taken(saga_id)
    assert ("confirm", saga_id) not in w.payments.calls
    assert w.job(job.id).payment_status is PaymentStatus.FAILED
    assert_never_live(w, job.id)


async def test_cancel_is_retried_by_recovery_until_it_succeeds():
    w = World()
    answer = await pending_bank_transfer(w)
    w.payments.cancel_errors = [
        HirepayError("down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)
    ] * 2
    _, saga_id = await cancel(w, answer.job.id)
    await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), w.deps)
    s = w.only_saga()
    assert s.state is SagaState.CANCELLING and s.lease_owner == ""  # handed to recovery
    for _ in range(3):
        w.clock.advance(seconds=120)
        await w.recover()
    assert w.only_saga().state is SagaState.FAILED
    assert [c for c, _ in w.payments.calls].count("cancel") == 3
    assert w.job(answer.job.id).payment_status is PaymentStatus.FAILED
    assert_never_live(w, answer.job.id)


async def test_cancel_during_the_request_lets_the_request_drive_and_answer():
    """The cancel lands while the request's Try is in flight: the request keeps its lease, sees
    the saga cancelling when the Try answers, voids, and answers PAYMENT_CANCELLED."""
    w = World()
    gate = Gate()
    w.payments.try_ = gate.hold(w.payments.try_)  # type: ignore[method-assign]
    request = asyncio.create_task(w.post())
    await gate.entered()
    s = w.only_saga()
    assert s.state is SagaState.TRYING
    job, saga_id = await cancel(w, s.job_id)
    assert job.status is JobStatus.CANCELLED
    assert saga_id == ""  # the request holds the lease and drives the Cancel itself
    gate.release()
    with pytest.raises(HirepayError) as info:
        await request
    assert info.value.reason == "PAYMENT_CANCELLED"
    assert info.value.metadata["job_id"] == job.id
    s = w.only_saga()
    assert s.state is SagaState.FAILED
    assert ("confirm", s.id) not in w.payments.calls
    assert w.payments.state[s.id] is TryState.CANCELLED
    assert_never_live(w, job.id)


async def test_saga_of_a_crashed_request_is_cancelled_by_recovery_without_a_new_try():
    w = World(lease_seconds=5)
    w.crash_at = "pending"

    with pytest.raises(Crash):
        await w.post()
    w.crash_at = ""
    s = w.only_saga()
    _, saga_id = await cancel(w, s.job_id)
    assert saga_id == ""  # the dead request's lease still runs
    w.clock.advance(seconds=6)
    await w.recover()
    s = w.only_saga()
    assert s.state is SagaState.FAILED
    assert [c for c, _ in w.payments.calls] == ["cancel"]  # null compensation, no Try re-sent
    assert w.job(s.job_id).payment_status is PaymentStatus.FAILED


async def test_cancel_of_a_pending_job_is_idempotent_and_only_for_its_owner_or_an_admin():
    w = World()
    answer = await pending_bank_transfer(w)
    for actor, reason in (
        (commands.Actor("co_2", "company"), "JOB_NOT_FOUND"),
        (commands.Actor("u_1", "applicant"), "PERMISSION_DENIED"),
    ):
        with pytest.raises(HirepayError) as info:
            await cancel(w, answer.job.id, actor=actor)
        assert info.value.reason == reason
    assert w.job(answer.job.id).status is JobStatus.PENDING_PAYMENT
    job, saga_id = await cancel(w, answer.job.id, actor=ADMIN, reason="fraud review")
    assert job.status is JobStatus.CANCELLED and saga_id
    again, again_saga = await cancel(w, answer.job.id)
    assert again.status is JobStatus.CANCELLED and again_saga == ""
    cancelled = [t for t in w.store.transitions if t.to_status is JobStatus.CANCELLED]
    assert [(t.actor, t.reason) for t in cancelled] == [(ADMIN.name, "fraud review")]


async def test_settlement_first_then_cancel_is_the_cancel_of_a_live_posting():
    """The event that activates the job wins the race: the cancel then cancels an active posting,
    refunded per the policy (within the window: everything)."""
    w = World()
    answer = await pending_bank_transfer(w)
    w.payments.state[answer.saga_id] = TryState.CAPTURED
    await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event(w.only_saga(), TryState.CAPTURED), "c"), w.deps
    )
    assert w.job(answer.job.id).status is JobStatus.ACTIVE
    job, saga_id = await cancel(w, answer.job.id)
    assert job.status is JobStatus.CANCELLED and saga_id == answer.saga_id
    await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), w.deps)
    assert w.only_saga().state is SagaState.REFUNDED
    assert w.payments.refunded[saga_id] == 14900
    assert w.job(job.id).payment_status is PaymentStatus.REFUNDED


@pytest.mark.parametrize("settled", [TryState.CAPTURED, TryState.RESERVED])
async def test_cancel_racing_the_activating_event_ends_in_one_consistent_outcome(settled):
    w = World()
    if settled is TryState.RESERVED:
        w.payments.try_outcome = TryResult(TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION")
        answer = await w.post()
    else:
        answer = await pending_bank_transfer(w)
    w.payments.state[answer.saga_id] = settled
    s = w.only_saga()

    async def cancel_and_drive():
        job, saga_id = await cancel(w, answer.job.id)
        if saga_id:
            await cancellation.drive_cancellation(commands.DriveCancellation(saga_id), w.deps)
        return job

    job, _ = await asyncio.gather(
        cancel_and_drive(),
        settlement.apply_settlement_event(
            commands.ApplySettlementEvent(event(s, settled), "c"), w.deps
        ),
    )
    for _ in range(3):  # whatever is left is recovery's
        w.clock.advance(seconds=120)
        await w.recover()
    s = w.only_saga()
    assert job.status is JobStatus.CANCELLED
    assert s.state.final
    assert w.job(answer.job.id).status is JobStatus.CANCELLED
    # Either way: nothing held, and nothing kept (refunded in full within the policy window).
    assert not w.payments.held(s.id) and not w.payments.taken(s.id)
    expected = PaymentStatus.REFUNDED if s.state is SagaState.REFUNDED else PaymentStatus.FAILED
    assert w.job(answer.job.id).payment_status is expected
