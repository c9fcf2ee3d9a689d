"""Unit tests of the pay-to-post saga against fake participants and an in-memory unit of work."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from hirepay_platform.errors import ErrorKind, HirepayError, ValidationError
from hirepay_platform.money import Money
from jobs.domain import commands
from jobs.domain.model import JobFields, JobStatus, PaymentStatus
from jobs.domain.posting_saga import Saga, SagaState, SettlementEvent, TryResult, TryState
from jobs.service_layer.handlers import cancellation, drafts, settlement
from jobs.service_layer.posting import activation, driver
from tests.support.gates import Gate
from tests.support.jobs_fakes import FakeJobs, FakeSagas
from tests.support.jobs_world import COMPANY, FIELDS, Crash, World


def declined(code="card_declined") -> HirepayError:
    return HirepayError(
        "declined",
        reason="PAYMENT_DECLINED",
        kind=ErrorKind.FAILED_PRECONDITION,
        metadata={"code": code, "payment_id": "pay_1"},
    )


async def test_card_success_activates_and_captures():
    w = World()
    answer = await w.post()
    job = w.job(answer.job.id)
    assert answer.job.status is JobStatus.ACTIVE
    assert answer.job.payment_status is PaymentStatus.COMPLETED
    assert answer.job.payment_amount_minor == 14900 and answer.job.payment_currency == "USD"
    assert answer.job.posted_at is not None and answer.replayed is False
    assert job.status is JobStatus.ACTIVE and job.payment_id == "pay_1"
    assert w.payments.taken(answer.saga_id)
    assert [c for c, _ in w.payments.calls] == ["try", "confirm"]
    assert w.only_saga().state is SagaState.COMPLETED
    statuses = [(t.from_status, t.to_status) for t in w.store.transitions]
    assert statuses == [
        (None, JobStatus.DRAFT),
        (JobStatus.DRAFT, JobStatus.PENDING_PAYMENT),
        (JobStatus.PENDING_PAYMENT, JobStatus.ACTIVE),
    ]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (declined(), "PAYMENT_DECLINED"),
        (
            HirepayError("nsf", reason="INSUFFICIENT_FUNDS", kind=ErrorKind.FAILED_PRECONDITION),
            "INSUFFICIENT_FUNDS",
        ),
        (
            HirepayError("bad", reason="INVALID_PAYMENT_DETAILS", kind=ErrorKind.INVALID_ARGUMENT),
            "INVALID_PAYMENT_DETAILS",
        ),
        (
            HirepayError("down", reason="PAYMENT_PROVIDER_UNAVAILABLE", kind=ErrorKind.UNAVAILABLE),
            "PAYMENT_PROVIDER_UNAVAILABLE",
        ),
        (
            HirepayError("conn", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE),
            "PAYMENT_PROVIDER_UNAVAILABLE",
        ),
    ],
)
async def test_failed_try_posts_nothing_and_cancels(error, reason):
    w = World()
    w.payments.try_outcome = error
    with pytest.raises(HirepayError) as info:
        await w.post()
    assert info.value.reason == reason
    s = w.only_saga()
    assert info.value.metadata["transaction_id"] == s.id
    job = w.job(s.job_id)
    assert job.status is JobStatus.PAYMENT_FAILED
    assert job.payment_status is PaymentStatus.FAILED
    assert job.fields == FIELDS  # the draft is kept
    assert ("cancel", s.id) in w.payments.calls  # Cancel even when the Try failed
    assert s.state is SagaState.FAILED
    assert not w.payments.taken(s.id) and not w.payments.held(s.id)


async def test_decline_keeps_provider_code():
    w = World()
    w.payments.try_outcome = declined("expired_card")
    with pytest.raises(HirepayError) as info:
        await w.post()
    assert info.value.metadata["code"] == "expired_card"
    assert info.value.kind is ErrorKind.FAILED_PRECONDITION


async def test_timeout_is_unknown_never_charged_twice():
    w = World()
    w.payments.try_outcome = HirepayError(
        "slow",
        reason="PAYMENT_TIMEOUT",
        kind=ErrorKind.DEADLINE_EXCEEDED,
        metadata={"payment_id": "pay_9"},
    )
    with pytest.raises(HirepayError) as info:
        await w.post()
    err = info.value
    assert err.reason == "PAYMENT_TIMEOUT" and err.kind is ErrorKind.DEADLINE_EXCEEDED
    assert err.metadata["payment_id"] == "pay_9" and err.metadata["retry"] == "true"
    s = w.only_saga()
    assert w.job(s.job_id).status is JobStatus.PAYMENT_FAILED
    assert [c for c, _ in w.payments.calls] == ["try", "cancel"]
    # Nothing re-sends the Try: recovery has nothing left to do.
    w.clock.advance(hours=1)
    await w.recover()
    assert [c for c, _ in w.payments.calls].count("try") == 1


async def test_client_side_deadline_is_reported_as_payment_timeout():
    w = World()
    w.payments.try_outcome = HirepayError(
        "payments did not answer", reason="DEADLINE_EXCEEDED", kind=ErrorKind.DEADLINE_EXCEEDED
    )
    with pytest.raises(HirepayError) as info:
        await w.post()
    assert info.value.reason == "PAYMENT_TIMEOUT"
    assert "payment_id" in info.value.metadata


async def test_credits_insufficient_maps_to_insufficient_credits():
    w = World()
    w.credits.try_outcome = HirepayError(
        "nsf", reason="INSUFFICIENT_FUNDS", kind=ErrorKind.FAILED_PRECONDITION
    )
    with pytest.raises(HirepayError) as info:
        await w.post(method="credits")
    assert info.value.reason == "INSUFFICIENT_CREDITS"
    s = w.only_saga()
    assert w.job(s.job_id).status is JobStatus.PAYMENT_FAILED
    assert w.payments.calls == []


async def test_credits_success_costs_500_credits():
    w = World()
    w.credits.try_outcome = TryResult(TryState.RESERVED, "s/payment", "PENDING")
    answer = await w.post(method="credits")
    assert answer.job.status is JobStatus.ACTIVE
    assert (answer.job.payment_amount_minor, answer.job.payment_currency) == (500, "JOB_CREDIT")
    assert w.credits.taken(answer.saga_id)


async def test_activation_failure_voids_the_authorization():
    """Whatever could stop the activation is checked before the capture: voided, never charged."""
    w = World(refuse_activation_marker="[boom]")
    with pytest.raises(HirepayError) as info:
        await w.post(fields=replace(FIELDS, title="Engineer [boom]"))
    assert info.value.reason == "ACTIVATION_FAILED"
    assert info.value.metadata["refunded"] == "false"  # nothing was taken to refund
    s = w.only_saga()
    job = w.job(s.job_id)
    assert job.status is JobStatus.PAYMENT_FAILED
    assert job.payment_status is PaymentStatus.FAILED
    assert s.state is SagaState.FAILED and not s.captured
    assert w.payments.state[s.id] is TryState.CANCELLED
    assert ("confirm", s.id) not in w.payments.calls
    assert ("refund", s.id) not in w.payments.calls


async def test_money_captured_but_job_not_postable_is_refunded():
    """A bank transfer settles (captured) after the job went away: the money goes back."""
    w = World()
    w.payments.try_outcome = TryResult(TryState.PROCESSING, "pay_1", "PROCESSING")
    answer = await w.post(method="bank_transfer")
    assert answer.job.status is JobStatus.PENDING_PAYMENT
    s = w.only_saga()
    # The job was taken out of pending_payment behind the saga's back (e.g. an operator).
    w.store.jobs[s.job_id].status = JobStatus.PAYMENT_FAILED
    w.payments.state[s.id] = TryState.CAPTURED
    event = SettlementEvent(
        "ev1",
        7,
        "payment.captured",
        s.id,
        "payment",
        TryResult(TryState.CAPTURED, "pay_1", "CAPTURED"),
    )
    await settlement.apply_settlement_event(commands.ApplySettlementEvent(event, "c"), w.deps)
    s = w.only_saga()
    assert s.state is SagaState.REFUNDED
    assert w.payments.refunded[s.id] == 14900
    assert w.job(s.job_id).payment_status is PaymentStatus.REFUNDED
    assert w.store.cursors["c"] == 7


async def test_settles_later_then_event_activates():
    w = World()
    w.payments.try_outcome = TryResult(
        TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION", next_action_url="https://pay/3ds"
    )
    answer = await w.post()
    assert answer.job.status is JobStatus.PENDING_PAYMENT
    assert answer.next_action_url == "https://pay/3ds"
    assert answer.payment_state == "REQUIRES_ACTION"
    assert answer.job.payment_id == "pay_1" == answer.payment_id
    s = w.only_saga()
    assert s.state is SagaState.AWAITING_SETTLEMENT
    w.payments.state[s.id] = TryState.RESERVED
    event = SettlementEvent(
        "ev1", 1, "payment.authorized", s.id, "payment", TryResult(TryState.RESERVED, "pay_1")
    )
    assert await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event, "c"), w.deps
    )
    # Redelivery changes nothing.
    assert not await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event, "c"), w.deps
    )
    job = w.job(s.job_id)
    assert job.status is JobStatus.ACTIVE and job.payment_status is PaymentStatus.COMPLETED
    assert w.payments.taken(s.id)
    assert [c for c, _ in w.payments.calls].count("confirm") == 1


async def test_settlement_failure_event_fails_the_job():
    w = World()
    w.payments.try_outcome = TryResult(TryState.PROCESSING, "pay_1", "PROCESSING")
    await w.post(method="bank_transfer")
    s = w.only_saga()
    event = SettlementEvent(
        "ev2",
        2,
        "payment.failed",
        s.id,
        "payment",
        TryResult(TryState.FAILED, "pay_1", "FAILED", failure_reason="PAYMENT_DECLINED"),
    )
    await settlement.apply_settlement_event(commands.ApplySettlementEvent(event, "c"), w.deps)
    assert w.job(s.job_id).status is JobStatus.PAYMENT_FAILED
    assert w.only_saga().state is SagaState.FAILED


async def test_unpaid_checkout_is_cancelled_after_settlement_deadline():
    w = World(settlement_deadline_seconds=3600)
    w.payments.try_outcome = TryResult(TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION")
    await w.post(method="checkout")
    s = w.only_saga()
    w.clock.advance(hours=2)
    await w.recover()
    assert w.job(s.job_id).status is JobStatus.PAYMENT_FAILED
    assert w.only_saga().state is SagaState.FAILED
    assert w.payments.state[s.id] is TryState.CANCELLED


async def test_replay_returns_the_same_answer():
    w = World()
    first = await w.post()
    second = await w.post()
    assert second.replayed is True
    assert (second.job, second.saga_id, second.payment_id) == (
        first.job,
        first.saga_id,
        first.payment_id,
    )
    assert len(w.store.sagas) == 1 and len(w.store.jobs) == 1
    assert [c for c, _ in w.payments.calls].count("try") == 1


async def test_same_key_other_body_is_refused():
    w = World()
    await w.post()
    with pytest.raises(HirepayError) as info:
        await w.post(fingerprint="fp-other")
    assert info.value.reason == "IDEMPOTENCY_MISMATCH"
    assert info.value.kind is ErrorKind.ALREADY_EXISTS


async def test_keys_are_scoped_to_the_caller():
    w = World()
    a = await w.post()
    b = await w.post(actor=commands.Actor("co_2", "company"))
    assert a.saga_id != b.saga_id and not b.replayed


async def test_failed_saga_replays_the_same_error():
    w = World()
    w.payments.try_outcome = declined()
    with pytest.raises(HirepayError) as first:
        await w.post()
    with pytest.raises(HirepayError) as again:
        await w.post()
    assert (again.value.reason, again.value.metadata) == (first.value.reason, first.value.metadata)
    assert [c for c, _ in w.payments.calls].count("try") == 1


async def test_twin_in_progress_waits_then_gets_request_in_progress():
    w = World(idempotency_wait_seconds=0.1)
    gate = Gate()
    w.payments.try_ = gate.hold(w.payments.try_)  # type: ignore[method-assign]
    first = asyncio.create_task(w.post())
    await gate.entered()
    with pytest.raises(HirepayError) as info:
        await w.post()
    assert info.value.reason == "REQUEST_IN_PROGRESS" and info.value.kind is ErrorKind.ABORTED
    gate.release()
    answer = await first
    assert answer.job.status is JobStatus.ACTIVE


async def test_twin_waiting_gets_the_answer_when_it_arrives(monkeypatch: pytest.MonkeyPatch):
    w = World(idempotency_wait_seconds=10)
    # Each twin looks the first request's saga up by its key before it waits for the answer.
    twins_in = 0
    all_twins_in = asyncio.Event()
    get_by_key = FakeSagas.get_by_key

    async def counted(self: FakeSagas, company_id: str, request_id: str):
        nonlocal twins_in
        found = await get_by_key(self, company_id, request_id)
        twins_in += 1
        if twins_in == 5:
            all_twins_in.set()
        return found

    monkeypatch.setattr(FakeSagas, "get_by_key", counted)
    gate = Gate()
    w.payments.try_ = gate.hold(w.payments.try_)  # type: ignore[method-assign]
    first = asyncio.create_task(w.post())
    await gate.entered()
    twins = [asyncio.create_task(w.post()) for _ in range(5)]
    await asyncio.wait_for(all_twins_in.wait(), timeout=10)
    gate.release()
    answers = [await first, *[await t for t in twins]]
    assert all(a.job == answers[0].job for a in answers)
    assert [a.replayed for a in answers] == [False, True, True, True, True, True]


async def test_validation_failure_does_not_consume_the_key():
    w = World()
    with pytest.raises(ValidationError) as info:
        await w.post(fields=JobFields(title="x"))
    assert "title" in info.value.fields
    assert w.store.sagas == {}
    answer = await w.post()
    assert answer.job.status is JobStatus.ACTIVE


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"accept_terms": False}, "TERMS_NOT_ACCEPTED"),
        ({"terms_version": "2020-01"}, "TERMS_OUTDATED"),
        ({"expected": Money(100, "USD")}, "FEE_MISMATCH"),
        ({"method": "bitcoin"}, "VALIDATION_FAILED"),
        ({"token": ""}, "VALIDATION_FAILED"),
    ],
)
async def test_refused_before_any_payment(kw, reason):
    w = World()
    with pytest.raises(HirepayError) as info:
        await w.post(**kw)
    assert info.value.reason == reason
    assert w.payments.calls == []
    assert w.store.jobs == {}


async def test_only_companies_may_post():
    w = World()
    with pytest.raises(HirepayError) as info:
        await w.post(actor=commands.Actor("u1", "applicant"))
    assert info.value.kind is ErrorKind.PERMISSION_DENIED


async def test_retry_after_failure_with_new_key_posts_the_draft():
    w = World()
    draft = await drafts.create_draft(commands.CreateDraft(COMPANY, FIELDS), w.deps)
    w.payments.try_outcome = declined()
    with pytest.raises(HirepayError):
        await w.post(key="k1", draft_id=draft.id)
    assert w.job(draft.id).status is JobStatus.PAYMENT_FAILED
    w.payments.try_outcome = TryResult(TryState.RESERVED, "pay_2", "AUTHORIZED")
    answer = await w.post(key="k2", draft_id=draft.id, fingerprint="fp-2")
    assert answer.job.id == draft.id and answer.job.status is JobStatus.ACTIVE
    # The earlier attempt does not interfere: its late events change nothing.
    (old,) = [s for s in w.store.sagas.values() if s.request_id == "k1"]
    event = SettlementEvent(
        "e", 3, "payment.voided", old.id, "payment", TryResult(TryState.CANCELLED, "pay_1")
    )
    await settlement.apply_settlement_event(commands.ApplySettlementEvent(event, "c"), w.deps)
    assert w.job(draft.id).status is JobStatus.ACTIVE


async def test_active_job_cannot_be_posted_again():
    w = World()
    answer = await w.post()
    with pytest.raises(HirepayError) as info:
        await w.post(key="k2", draft_id=answer.job.id, fingerprint="fp-2")
    assert info.value.reason == "INVALID_TRANSITION"


async def test_crash_after_try_is_recovered_to_active_and_captured():
    w = World(lease_seconds=5)
    w.crash_at = "try"
    with pytest.raises(Crash):
        await w.post()
    s = w.only_saga()
    assert s.state is SagaState.TRYING and w.payments.held(s.id)
    w.crash_at = ""
    assert await w.recover() == 0  # the dead holder's lease still runs
    w.clock.advance(seconds=6)
    assert await w.recover() == 1
    s = w.only_saga()
    assert s.state is SagaState.COMPLETED
    assert w.job(s.job_id).status is JobStatus.ACTIVE
    assert w.payments.taken(s.id)
    # The client retrying with its key now gets the answer.
    answer = await w.post()
    assert answer.replayed and answer.job.status is JobStatus.ACTIVE


@pytest.mark.parametrize("step", ["confirming", "confirm"])
async def test_crash_before_activation_captures_then_activates_on_recovery(step):
    """Checked (confirming) or captured (confirm), then the process died: the job is not live
    until recovery has the money taken, then it goes live."""
    w = World(lease_seconds=5)
    w.crash_at = step
    with pytest.raises(Crash):
        await w.post()
    s = w.only_saga()
    assert s.state is SagaState.CONFIRMING
    job = w.job(s.job_id)
    assert job.status is JobStatus.PENDING_PAYMENT and job.payment_status is PaymentStatus.PENDING
    assert w.payments.taken(s.id) is (step == "confirm")
    w.crash_at = ""
    w.clock.advance(seconds=6)
    await w.recover()
    assert w.only_saga().state is SagaState.COMPLETED
    assert w.job(s.job_id).status is JobStatus.ACTIVE
    assert w.job(s.job_id).payment_status is PaymentStatus.COMPLETED
    assert w.payments.taken(s.id)


async def test_crash_after_activation_leaves_a_paid_live_job():
    w = World(lease_seconds=5)
    w.crash_at = "activate"
    with pytest.raises(Crash):
        await w.post()
    s = w.only_saga()
    assert s.state is SagaState.COMPLETED and w.payments.taken(s.id)
    assert w.job(s.job_id).status is JobStatus.ACTIVE
    assert w.job(s.job_id).payment_status is PaymentStatus.COMPLETED
    w.crash_at = ""
    w.clock.advance(seconds=6)
    await w.recover()
    # The client resumes with its key: the live job, no second charge.
    replay = await w.post()
    assert replay.replayed and replay.job.status is JobStatus.ACTIVE
    assert [c for c, _ in w.payments.calls] == ["try", "confirm"]


async def test_stuck_saga_past_deadline_is_cancelled():
    w = World(lease_seconds=5, saga_deadline_seconds=60)
    w.crash_at = "pending"
    with pytest.raises(Crash):
        await w.post()
    s = w.only_saga()
    w.crash_at = ""
    w.clock.advance(seconds=120)
    await w.recover()
    s = w.only_saga()
    assert s.state is SagaState.FAILED
    assert w.job(s.job_id).status is JobStatus.PAYMENT_FAILED
    assert ("try", s.id) not in w.payments.calls
    assert ("cancel", s.id) in w.payments.calls  # null compensation recorded


async def _public(w: World) -> set[str]:
    async with w.deps.uow as uow:
        return {j.id for j in await uow.jobs.list_active("", None, 100)}


async def test_confirm_is_retried_until_it_succeeds():
    """A capture answered 503: the job is not live (202 pending) until the money is taken."""
    w = World()
    w.payments.confirm_errors = [
        HirepayError("down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)
    ] * 2
    answer = await w.post()
    assert answer.job.status is JobStatus.PENDING_PAYMENT
    assert answer.job.payment_status is PaymentStatus.PENDING
    s = w.only_saga()
    assert s.state is SagaState.CONFIRMING
    assert answer.job.id not in await _public(w)
    for _ in range(3):
        w.clock.advance(seconds=120)
        await w.recover()
    assert w.only_saga().state is SagaState.COMPLETED
    assert w.job(s.job_id).status is JobStatus.ACTIVE
    assert w.job(s.job_id).payment_status is PaymentStatus.COMPLETED
    assert answer.job.id in await _public(w)


def _never_active(w: World, job_id: str) -> bool:
    return all(
        t.to_status is not JobStatus.ACTIVE for t in w.store.transitions if t.job_id == job_id
    )


async def test_confirm_refused_for_good_never_publishes():
    w = World()
    w.payments.confirm_errors = [
        HirepayError("expired", reason="PAYMENT_VOIDED", kind=ErrorKind.FAILED_PRECONDITION)
    ]
    w.payments.state_after_confirm_error = TryState.CANCELLED
    with pytest.raises(HirepayError) as info:
        await w.post()
    assert info.value.reason == "PAYMENT_EXPIRED"
    assert info.value.metadata["cause"] == "PAYMENT_VOIDED"
    s = w.only_saga()
    assert w.job(s.job_id).status is JobStatus.PAYMENT_FAILED
    assert _never_active(w, s.job_id)
    assert s.state is SagaState.FAILED and s.failure is not None
    assert not w.payments.taken(s.id) and not w.payments.held(s.id)


async def test_capture_of_a_payment_the_provider_does_not_know_ends_after_bounded_attempts():
    """The incident: the provider answers 404 on capture while payments still says authorized.
    Three refusals end the saga (recorded reason); the job is never published."""
    w = World(capture_max_refusals=3)
    gone = HirepayError("no such intent", reason="PAYMENT_NOT_FOUND", kind=ErrorKind.NOT_FOUND)
    w.payments.confirm_errors = [gone] * 10
    answer = await w.post()
    assert answer.job.status is JobStatus.PENDING_PAYMENT
    s = w.only_saga()
    for _ in range(5):
        w.clock.advance(seconds=120)
        await w.recover()
    s = w.only_saga()
    assert s.state is SagaState.FAILED
    assert s.failure is not None and s.failure.reason == "PAYMENT_EXPIRED"
    assert s.failure.metadata["cause"] == "PAYMENT_NOT_FOUND"
    assert [c for c, _ in w.payments.calls].count("confirm") == 3
    job = w.job(s.job_id)
    assert job.status is JobStatus.PAYMENT_FAILED and job.payment_status is PaymentStatus.FAILED
    assert _never_active(w, s.job_id)
    assert ("cancel", s.id) in w.payments.calls and not w.payments.held(s.id)


async def test_capture_failing_past_the_payment_deadline_ends_the_saga():
    w = World(settlement_deadline_seconds=600)
    w.payments.confirm_errors = [
        HirepayError("down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)
    ] * 100
    await w.post()
    for _ in range(12):
        w.clock.advance(seconds=61)
        await w.recover()
    s = w.only_saga()
    assert s.state is SagaState.FAILED
    assert _never_active(w, s.job_id)


async def test_cancel_while_capturing_never_publishes_and_returns_the_money():
    w = World()
    w.payments.confirm_errors = [
        HirepayError("down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)
    ]
    answer = await w.post()
    assert w.only_saga().state is SagaState.CONFIRMING
    job, to_drive = await cancellation.cancel_job(
        commands.CancelJob(COMPANY, answer.job.id, "changed my mind"), w.deps
    )
    assert job.status is JobStatus.CANCELLED and to_drive
    await cancellation.drive_cancellation(commands.DriveCancellation(to_drive), w.deps)
    s = w.only_saga()
    assert s.state is SagaState.FAILED
    assert not w.payments.taken(s.id) and not w.payments.held(s.id)
    assert _never_active(w, s.job_id)
    assert w.job(s.job_id).payment_status is PaymentStatus.FAILED


async def test_cancel_is_retried_until_it_succeeds():
    w = World()
    w.payments.try_outcome = declined()
    w.payments.cancel_errors = [
        HirepayError("down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)
    ]
    with pytest.raises(HirepayError):
        await w.post()
    assert w.only_saga().state is SagaState.CANCELLING
    w.clock.advance(seconds=120)
    await w.recover()
    assert w.only_saga().state is SagaState.FAILED


async def test_cancel_within_policy_refunds():
    w = World()
    answer = await w.post()
    w.clock.advance(hours=1)
    job, saga_id = await cancellation.cancel_job(
        commands.CancelJob(COMPANY, answer.job.id, "position closed"), w.deps
    )
    assert job.status is JobStatus.CANCELLED and saga_id == answer.saga_id
    await driver.drive(saga_id, w.deps, poll=False)
    assert w.payments.refunded[saga_id] == 14900
    assert w.job(job.id).payment_status is PaymentStatus.REFUNDED


async def test_cancel_after_policy_window_refunds_nothing():
    w = World()
    answer = await w.post()
    w.clock.advance(days=3)
    job, saga_id = await cancellation.cancel_job(commands.CancelJob(COMPANY, answer.job.id), w.deps)
    assert job.status is JobStatus.CANCELLED and saga_id == ""
    assert w.payments.refunded == {}


async def test_expiry_worker_expires_due_postings():
    w = World()
    answer = await w.post()
    assert await cancellation.expire_due(commands.ExpirePostings(), w.deps) == 0
    w.clock.advance(days=31)
    assert await cancellation.expire_due(commands.ExpirePostings(), w.deps) == 1
    assert w.job(answer.job.id).status is JobStatus.EXPIRED
    assert w.store.transitions[-1].actor == "system"


async def test_object_level_authorization():
    w = World()
    draft = await drafts.create_draft(commands.CreateDraft(COMPANY, FIELDS), w.deps)
    other = commands.Actor("co_2", "company")
    anonymous = commands.Actor()
    admin = commands.Actor("root", "admin")
    for actor in (other, anonymous):
        with pytest.raises(HirepayError) as info:
            await drafts.get_job(commands.GetJob(actor, draft.id), w.deps)
        assert info.value.reason == "JOB_NOT_FOUND"
    with pytest.raises(HirepayError):
        await drafts.update_draft(
            commands.UpdateDraft(other, draft.id, JobFields(title="Stolen"), ("title",)),
            w.deps,
        )
    assert (await drafts.get_job(commands.GetJob(admin, draft.id), w.deps)).id == draft.id
    answer = await w.post(key="k", draft_id=draft.id)
    assert (
        await drafts.get_job(commands.GetJob(anonymous, answer.job.id), w.deps)
    ).status is JobStatus.ACTIVE
    page = await drafts.list_active_jobs(commands.ListActiveJobs(), w.deps)
    assert [j.id for j in page.jobs] == [draft.id]


async def test_public_list_pages_through_active_jobs_only():
    w = World()
    ids = []
    for i in range(5):
        w.clock.advance(seconds=1)
        ids.append((await w.post(key=f"k{i}", fingerprint=f"f{i}")).job.id)
    await drafts.create_draft(commands.CreateDraft(COMPANY, FIELDS), w.deps)
    seen, token = [], ""
    while True:
        page = await drafts.list_active_jobs(
            commands.ListActiveJobs(page_size=2, page_token=token), w.deps
        )
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))


async def test_preview_shows_fee_and_terms():
    w = World()
    draft = await drafts.create_draft(commands.CreateDraft(COMPANY, FIELDS), w.deps)
    preview = await drafts.preview_job(commands.PreviewJob(COMPANY, draft.id), w.deps)
    assert preview.fee == Money(14900, "USD")
    assert (preview.fee_credits, preview.terms_version, preview.posting_days) == (
        500,
        "2026-11",
        30,
    )


async def test_create_draft_is_idempotent_on_request_id():
    w = World()
    first = await drafts.create_draft(
        commands.CreateDraft(COMPANY, FIELDS, request_id="d1"), w.deps
    )
    again = await drafts.create_draft(
        commands.CreateDraft(COMPANY, FIELDS, request_id="d1"), w.deps
    )
    assert again.id == first.id and len(w.store.jobs) == 1
    with pytest.raises(HirepayError) as info:
        await drafts.create_draft(
            commands.CreateDraft(COMPANY, replace(FIELDS, title="Other"), request_id="d1"),
            w.deps,
        )
    assert info.value.reason == "IDEMPOTENCY_MISMATCH"


async def test_cancel_is_idempotent():
    w = World()
    draft = await drafts.create_draft(commands.CreateDraft(COMPANY, FIELDS), w.deps)
    cmd = commands.CancelJob(COMPANY, draft.id, "changed our mind")
    first, _ = await cancellation.cancel_job(cmd, w.deps)
    again, saga_id = await cancellation.cancel_job(cmd, w.deps)
    assert first.status is again.status is JobStatus.CANCELLED and saga_id == ""
    assert [t.to_status for t in w.store.transitions].count(JobStatus.CANCELLED) == 1


async def test_update_draft_validates_and_keeps_payment_failed_editable():
    w = World()
    draft = await drafts.create_draft(commands.CreateDraft(COMPANY, FIELDS), w.deps)
    with pytest.raises(ValidationError) as info:
        await drafts.update_draft(
            commands.UpdateDraft(
                COMPANY, draft.id, JobFields(description="short"), ("description",)
            ),
            w.deps,
        )
    assert "description" in info.value.fields
    job = await drafts.update_draft(
        commands.UpdateDraft(COMPANY, draft.id, JobFields(title="Staff Engineer"), ("title",)),
        w.deps,
    )
    assert job.fields.title == "Staff Engineer" and job.fields.location == "Remote"


async def test_many_declines_block_posting_for_a_while():
    w = World(max_failed_payments=3, failed_payments_window_seconds=3600)
    w.payments.try_outcome = declined()
    for i in range(3):
        with pytest.raises(HirepayError):
            await w.post(key=f"k{i}", fingerprint=f"f{i}")
    with pytest.raises(HirepayError) as info:
        await w.post(key="k-next", fingerprint="f-next")
    assert info.value.reason == "POSTING_BLOCKED"
    assert info.value.kind is ErrorKind.RESOURCE_EXHAUSTED
    assert [c for c, _ in w.payments.calls].count("try") == 3
    # Another company is not affected; the block lifts once the window has passed.
    w.payments.try_outcome = TryResult(TryState.RESERVED, "pay_2", "AUTHORIZED")
    assert (
        await w.post(key="x", actor=commands.Actor("co_2", "company"))
    ).job.status is JobStatus.ACTIVE
    w.clock.advance(hours=2)
    assert (await w.post(key="k-later", fingerprint="f-later")).job.status is JobStatus.ACTIVE


async def test_a_late_try_after_the_deadline_cancel_reserves_nothing():
    """The request's Try hangs; recovery cancels the saga past its deadline (a Cancel before the
    Try: null compensation); the Try arriving afterwards is refused by the participant."""
    w = World(lease_seconds=1, saga_deadline_seconds=2)
    gate = Gate()
    w.payments.try_ = gate.hold(w.payments.try_)  # type: ignore[method-assign]
    request = asyncio.create_task(w.post())
    await gate.entered()
    w.clock.advance(seconds=10)
    await w.recover()
    s = w.only_saga()
    assert s.state is SagaState.FAILED
    assert w.payments.state[s.id] is TryState.CANCELLED
    gate.release()
    with pytest.raises(HirepayError) as info:
        await request
    assert info.value.reason == "PAYMENT_TIMEOUT"
    assert w.job(s.job_id).status is JobStatus.PAYMENT_FAILED
    assert not w.payments.held(s.id) and not w.payments.taken(s.id)
    assert ("confirm", s.id) not in w.payments.calls


async def test_an_event_for_a_saga_its_request_still_holds_does_not_confirm_twice():
    w = World()
    gate = Gate()
    # The provider's webhook overtakes the Try's answer: the Try is held once it has run.
    w.payments.try_ = gate.hold(w.payments.try_, after=True)  # type: ignore[method-assign]
    request = asyncio.create_task(w.post())
    await gate.entered()
    s = w.only_saga()
    event = SettlementEvent(
        "e", 1, "payment.authorized", s.id, "payment", TryResult(TryState.RESERVED, "pay_1")
    )
    assert await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event, "c"), w.deps
    )
    assert w.only_saga().state is SagaState.CONFIRMING  # activated by the event ...
    assert ("confirm", s.id) not in w.payments.calls  # ... but the request confirms
    gate.release()
    answer = await request
    assert answer.job.status is JobStatus.ACTIVE
    assert [c for c, _ in w.payments.calls].count("confirm") == 1
    assert w.only_saga().state is SagaState.COMPLETED


def _record_locks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the sagas and jobs read under lock from now on (filled as they are)."""
    locked: list[str] = []
    saga_get, job_get, lock_with_job = FakeSagas.get, FakeJobs.get, FakeSagas.lock_with_job

    async def get_saga(self, saga_id: str, *, for_update: bool = False):
        locked.extend([saga_id] if for_update else [])
        return await saga_get(self, saga_id, for_update=for_update)

    async def get_job(self, job_id: str, *, for_update: bool = False):
        locked.extend([job_id] if for_update else [])
        return await job_get(self, job_id, for_update=for_update)

    async def lock_saga_and_job(
        self, saga_id: str, *, lock_job: bool = True, assumed: object | None = None
    ):
        locked.append(saga_id)
        return await lock_with_job(self, saga_id, lock_job=lock_job, assumed=assumed)

    monkeypatch.setattr(FakeSagas, "get", get_saga)
    monkeypatch.setattr(FakeJobs, "get", get_job)
    monkeypatch.setattr(FakeSagas, "lock_with_job", lock_saga_and_job)
    return locked


async def test_late_events_of_a_finished_saga_change_nothing_and_lock_nothing(
    monkeypatch: pytest.MonkeyPatch,
):
    """The settlement events of steps the request already took (the common case) are only
    counted: the finished saga and its job are neither locked nor rewritten, and a stale
    provider state does not overwrite the final one; the cursor still advances."""
    w = World()
    answer = await w.post()
    s = w.only_saga()
    assert s.state is SagaState.COMPLETED
    locked = _record_locks(monkeypatch)
    late = [
        ("payment.authorized", TryState.RESERVED, "AUTHORIZED"),
        ("payment.captured", TryState.CAPTURED, "CAPTURED"),
    ]
    for cursor, (kind, state, provider_state) in enumerate(late, start=1):
        event = SettlementEvent(
            f"e{cursor}", cursor, kind, s.id, "payment", TryResult(state, "pay_1", provider_state)
        )
        assert not await settlement.apply_settlement_event(
            commands.ApplySettlementEvent(event, "c"), w.deps
        )
        assert w.store.cursors["c"] == cursor
    assert locked == []
    assert w.only_saga() == s
    assert w.job(answer.job.id).status is JobStatus.ACTIVE
    assert [c for c, _ in w.payments.calls] == ["try", "confirm"]


async def _request_held_at_confirm(w: World) -> tuple[Gate, asyncio.Task, Saga]:
    """A card posting whose request holds its saga, Confirm in flight (held at the gate)."""
    gate = Gate()
    w.payments.confirm = gate.hold(w.payments.confirm)  # type: ignore[method-assign]
    request = asyncio.create_task(w.post())
    await gate.entered()
    s = w.only_saga()
    assert s.state is SagaState.CONFIRMING and s.provider_state == "AUTHORIZED"
    return gate, request, s


async def test_an_event_the_request_already_applied_locks_nothing(
    monkeypatch: pytest.MonkeyPatch,
):
    """The authorized event of a card posting usually arrives while its request holds the saga,
    after the request applied the Try's answer: it tells nothing new, so neither the saga nor
    its job is locked (issue 13), and the request goes on as if it never came."""
    w = World()
    gate, request, s = await _request_held_at_confirm(w)
    locked = _record_locks(monkeypatch)
    event = SettlementEvent(
        "e1",
        1,
        "payment.authorized",
        s.id,
        "payment",
        TryResult(TryState.RESERVED, "pay_1", "AUTHORIZED"),
    )
    assert not await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event, "c"), w.deps
    )
    assert locked == [] and w.only_saga() == s
    gate.release()
    answer = await request
    assert answer.job.status is JobStatus.ACTIVE
    assert [c for c, _ in w.payments.calls] == ["try", "confirm"]


def _event(s, cursor: int, kind: str, state: TryState, provider_state: str) -> SettlementEvent:
    return SettlementEvent(
        f"e{cursor}", cursor, kind, s.id, "payment", TryResult(state, "pay_1", provider_state)
    )


async def test_a_stale_authorized_event_after_the_capture_changes_nothing():
    """The capture's event is applied while the request still drives the saga (its Confirm in
    flight); the authorization's event then arrives late: it is behind the recorded CAPTURED, so
    nothing is written, and the request completes the posting with the capture recorded."""
    w = World()
    gate, request, s = await _request_held_at_confirm(w)
    captured = _event(s, 1, "payment.captured", TryState.CAPTURED, "CAPTURED")
    await settlement.apply_settlement_event(commands.ApplySettlementEvent(captured, "c"), w.deps)
    assert w.only_saga().provider_state == "CAPTURED"
    before = (w.only_saga(), w.job(s.job_id), list(w.store.log))
    stale = _event(s, 2, "payment.authorized", TryState.RESERVED, "AUTHORIZED")
    assert not await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(stale, "c"), w.deps
    )
    assert (w.only_saga(), w.job(s.job_id), list(w.store.log)) == before
    gate.release()
    answer = await request
    assert answer.job.status is JobStatus.ACTIVE
    done = w.only_saga()
    assert done.state is SagaState.COMPLETED and done.provider_state == "CAPTURED"
    assert [c for c, _ in w.payments.calls] == ["try", "confirm"]
    assert w.payments.taken(s.id) and not w.payments.refunded


@pytest.mark.parametrize(
    ("stale_state", "provider_state"),
    [
        (TryState.RESERVED, "AUTHORIZED"),
        (TryState.FAILED, "FAILED"),
        (TryState.CANCELLED, "VOIDED"),
        (TryState.CAPTURED, "CAPTURED"),
    ],
)
async def test_observe_under_lock_writes_nothing_for_a_state_behind_the_recorded_one(
    stale_state: TryState, provider_state: str
):
    """The locked read decides, not the unlocked one: an answer read as news before the saga
    moved on (here: observe called on the completed saga directly) writes nothing once it is
    behind or level with the recorded state; a capture is never undone."""
    w = World()
    answer = await w.post()
    s = w.only_saga()
    assert s.state is SagaState.COMPLETED and s.provider_state == "CAPTURED"
    before = (s, w.job(answer.job.id), list(w.store.log), list(w.store.transitions))
    result = TryResult(stale_state, "pay_1", provider_state)
    assert not await activation.observe(s.id, result, w.deps, source="payment.late")
    after = (w.only_saga(), w.job(answer.job.id), list(w.store.log), list(w.store.transitions))
    assert after == before
    assert [c for c, _ in w.payments.calls] == ["try", "confirm"]


async def test_a_failure_after_the_authorization_is_still_applied():
    """A failure is further along than an authorization: a 3-D Secure card authorized, then its
    authorization failed at the provider before the saga confirmed (the events in order)."""
    w = World()
    w.payments.try_outcome = TryResult(TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION")
    answer = await w.post()
    s = w.only_saga()
    assert s.state is SagaState.AWAITING_SETTLEMENT
    failed = TryResult(TryState.FAILED, "pay_1", "FAILED", failure_reason="PAYMENT_DECLINED")
    w.payments.state[s.id] = TryState.FAILED
    assert await activation.observe(s.id, failed, w.deps, source="payment.failed")
    assert w.only_saga().provider_state == "FAILED"
    # The authorization's event arriving after the failure is stale: the saga still gives up.
    stale = _event(s, 1, "payment.authorized", TryState.RESERVED, "AUTHORIZED")
    await settlement.apply_settlement_event(commands.ApplySettlementEvent(stale, "c"), w.deps)
    done = w.only_saga()
    assert done.state is SagaState.FAILED and done.provider_state != "AUTHORIZED"
    assert w.job(answer.job.id).status is JobStatus.PAYMENT_FAILED
    assert not w.payments.taken(s.id) and not w.payments.refunded
