"""A live posting whose payment is refunded at the provider, outside Hirepay (a Stripe dashboard
refund booked by payments), hears it through the settlement stream (PAY-4, PAY-5): refunded in
full, the posting is taken down with payment_status `refunded` and its saga ends REFUNDED, once,
whatever the redeliveries and by either path (one event, or a burst); a partial refund, another
payment's event or the saga's own refund (PAY-13) change nothing here."""

from __future__ import annotations

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as ppb
from jobs.domain import commands
from jobs.domain.model import JobStatus, PaymentStatus
from jobs.domain.posting_saga import SagaState, SettlementEvent, TryResult, TryState
from jobs.entrypoints import conversions
from jobs.service_layer.handlers import cancellation, settlement
from jobs.service_layer.posting import driver
from tests.support.jobs_world import COMPANY, World


def _refunded(saga_id: str, provider_state: str, cursor: int = 1, payment_id: str = "pay_1"):
    return SettlementEvent(
        f"ev{cursor}",
        cursor,
        "payment.refunded",
        saga_id,
        "payment",
        TryResult(TryState.REFUNDED, payment_id, provider_state),
    )


async def _apply(w: World, event: SettlementEvent) -> bool:
    return await settlement.apply_settlement_event(
        commands.ApplySettlementEvent(event, "c"), w.deps
    )


async def test_a_full_refund_at_the_provider_takes_the_live_posting_down_once() -> None:
    w = World()
    answer = await w.post()
    assert answer.job.status is JobStatus.ACTIVE
    assert await _apply(w, _refunded(answer.saga_id, "REFUNDED"))
    job = w.job(answer.job.id)
    assert (job.status, job.payment_status) == (JobStatus.CANCELLED, PaymentStatus.REFUNDED)
    saga = w.only_saga()
    assert saga.state is SagaState.REFUNDED and saga.refund_reason.endswith("at the provider")
    last = w.store.transitions[-1]
    assert (last.from_status, last.to_status, last.actor) == (
        JobStatus.ACTIVE,
        JobStatus.CANCELLED,
        "system",
    )
    assert not await _apply(w, _refunded(answer.saga_id, "REFUNDED", cursor=2))  # redelivered
    assert len(w.store.transitions) == 4
    assert "refund" not in [c for c, _ in w.payments.calls]  # nothing asked of payments


async def test_a_burst_applies_it_the_same_way() -> None:
    w = World()
    answer = await w.post()
    burst = commands.ApplySettlementEvents(
        (_refunded(answer.saga_id, "REFUNDED", 1), _refunded(answer.saga_id, "REFUNDED", 2))
    )
    applied = [a async for _, a in settlement.apply_settlement_events(burst, w.deps)]
    assert applied == [True, False]
    assert w.job(answer.job.id).payment_status is PaymentStatus.REFUNDED


async def test_a_partial_refund_or_another_payments_event_leaves_the_posting_live() -> None:
    w = World()
    answer = await w.post()
    assert not await _apply(w, _refunded(answer.saga_id, "PARTIALLY_REFUNDED"))
    assert not await _apply(w, _refunded(answer.saga_id, "REFUNDED", 2, payment_id="pay_other"))
    job = w.job(answer.job.id)
    assert (job.status, job.payment_status) == (JobStatus.ACTIVE, PaymentStatus.COMPLETED)
    assert w.only_saga().state is SagaState.COMPLETED


async def test_an_expired_posting_keeps_its_status_and_records_the_refund() -> None:
    w = World()
    answer = await w.post()
    w.store.jobs[answer.job.id].status = JobStatus.EXPIRED
    assert await _apply(w, _refunded(answer.saga_id, "REFUNDED"))
    job = w.job(answer.job.id)
    assert (job.status, job.payment_status) == (JobStatus.EXPIRED, PaymentStatus.REFUNDED)


async def test_the_sagas_own_refund_is_not_taken_for_one_at_the_provider() -> None:
    w = World()
    answer = await w.post()
    w.clock.advance(hours=1)
    job, saga_id = await cancellation.cancel_job(
        commands.CancelJob(COMPANY, answer.job.id, "position closed"), w.deps
    )
    # Its own refund's event arrives while the saga is REFUNDING: the saga's path ends it.
    assert w.only_saga().state is SagaState.REFUNDING
    await _apply(w, _refunded(saga_id, "REFUNDED"))
    await driver.drive(saga_id, w.deps, poll=False)
    assert w.payments.refunded[saga_id] == 14900
    saga = w.only_saga()
    assert saga.state is SagaState.REFUNDED and saga.refund_reason == "requested_by_customer"
    assert w.job(job.id).payment_status is PaymentStatus.REFUNDED


def _charged_back(saga_id: str, cursor: int, payment_id: str = "pay_1") -> SettlementEvent:
    """payments' `payment.charged_back` as jobs reads it off the stream: the payment CAPTURED."""
    payment = ppb.Payment(
        payment_id=payment_id,
        branch=common_pb2.TccBranch(global_tx_id=saga_id, branch_id="payment"),
        state=ppb.Payment.CAPTURED,
    )
    return conversions.settlement_event_from_proto(
        ppb.SettlementEvent(
            event_id=f"cb{cursor}", cursor=cursor, type="payment.charged_back", payment=payment
        )
    )


async def test_a_chargeback_lost_in_full_takes_the_live_posting_down_once() -> None:
    w = World()
    answer = await w.post()
    assert await _apply(w, _charged_back(answer.saga_id, 1))
    job = w.job(answer.job.id)
    assert (job.status, job.payment_status) == (JobStatus.CANCELLED, PaymentStatus.REFUNDED)
    saga = w.only_saga()
    assert saga.state is SagaState.REFUNDED and saga.refund_reason.endswith("(dispute lost)")
    assert w.store.transitions[-1].to_status is JobStatus.CANCELLED
    transitions = len(w.store.transitions)
    # Redelivered, alone and in a burst with its twin: nothing more.
    assert not await _apply(w, _charged_back(answer.saga_id, 2))
    burst = commands.ApplySettlementEvents(
        (_charged_back(answer.saga_id, 3), _charged_back(answer.saga_id, 4))
    )
    assert [a async for _, a in settlement.apply_settlement_events(burst, w.deps)] == [False, False]
    assert len(w.store.transitions) == transitions
    assert "refund" not in [c for c, _ in w.payments.calls]  # the issuer returned the money


async def test_a_burst_ends_it_too_and_another_payments_chargeback_does_not() -> None:
    w = World()
    answer = await w.post()
    burst = commands.ApplySettlementEvents(
        (
            _charged_back(answer.saga_id, 1, payment_id="pay_other"),
            _charged_back(answer.saga_id, 2),
        )
    )
    assert [a async for _, a in settlement.apply_settlement_events(burst, w.deps)] == [False, True]
    assert w.job(answer.job.id).status is JobStatus.CANCELLED
