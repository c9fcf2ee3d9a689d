"""Handler behaviour against in-memory fakes: the TCC guard, outcomes of provider failures, crash
recovery by replaying the stored idempotency key, and refund reservations."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from hirepay_platform.tcc import TccBranch
from payments.domain import commands, errors
from payments.domain.events import EventType
from payments.domain.model import Method, PaymentState
from payments.domain.provider import OutcomeUnknown
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, Crash, FakeProvider, FakeUnitOfWork

BRANCH = TccBranch("gtx-1", "payment")


@pytest.fixture
def deps() -> Deps:
    return Deps(
        FakeUnitOfWork(),
        ProviderRegistry([FakeProvider()]),
        Policy(provider_timeout=1, poll_base=1, poll_max=4),
        clock=Clock(),
    )


def authorize_cmd(token: str = "pm_card_visa", amount: int = 2500) -> commands.Authorize:
    return commands.Authorize(
        request_id="r1",
        branch=BRANCH,
        owner_id="company-1",
        amount_minor=amount,
        currency="USD",
        method=Method.CARD,
        payment_method_token=token,
        metadata={"subsystem": "jobs"},
    )


def outbox_types(deps: Deps) -> list[str]:
    return [e.type.value for e in deps.uow.committed.outbox]  # type: ignore[attr-defined]


async def test_authorize_records_payment_barrier_audit_and_event(deps: Deps) -> None:
    result = await handlers.authorize(authorize_cmd(), deps)
    p = result.payment
    assert p is not None and p.state is PaymentState.AUTHORIZED and p.pending_op is None
    assert p.next_poll_at is None and p.provider_payment_id == "pi_1"
    assert deps.providers.default.calls == [("authorize", "gtx-1:payment:authorize")]  # type: ignore[attr-defined]
    assert outbox_types(deps) == [EventType.PAYMENT_AUTHORIZED.value]
    actions = [a.action for a in deps.uow.committed.audit]  # type: ignore[attr-defined]
    assert actions == ["attempt", "provider_call", "transition"]
    again = await handlers.authorize(authorize_cmd(), deps)
    assert again.replayed and again.payment.id == p.id
    assert len(deps.providers.default.calls) == 1  # type: ignore[attr-defined]


async def test_decline_is_stored_and_repeated(deps: Deps) -> None:
    with pytest.raises(errors.InsufficientFunds) as caught:
        await handlers.authorize(authorize_cmd("pm_card_chargeDeclinedInsufficientFunds"), deps)
    assert caught.value.metadata["decline_code"] == "insufficient_funds"
    with pytest.raises(errors.InsufficientFunds):
        await handlers.authorize(authorize_cmd("pm_card_chargeDeclinedInsufficientFunds"), deps)
    (payment,) = deps.uow.committed.payments.values()  # type: ignore[attr-defined]
    assert payment.state is PaymentState.FAILED and payment.provider_payment_id == "pi_1"
    assert outbox_types(deps) == ["payment.failed"]


async def test_crash_before_the_provider_call_is_healed_by_the_poller(deps: Deps) -> None:
    deps.providers.default.script = [Crash()]  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        await handlers.authorize(authorize_cmd(), deps)
    (payment,) = deps.uow.committed.payments.values()  # type: ignore[attr-defined]
    assert payment.state is PaymentState.UNKNOWN and payment.authorize_key
    assert await handlers.poll_due(deps) == 0  # leased: the poller waits for the lease to end
    deps.clock.advance(deps.config.lease_seconds + 1)  # type: ignore[attr-defined]
    assert await handlers.poll_due(deps) == 1
    healed = deps.uow.committed.payments[payment.id]  # type: ignore[attr-defined]
    assert healed.state is PaymentState.AUTHORIZED and healed.next_poll_at is None
    assert len(deps.providers.default.intents) == 1  # type: ignore[attr-defined]


async def test_crash_after_the_provider_did_it_replays_without_a_second_intent(deps: Deps) -> None:
    deps.providers.default.script = [("after", Crash())]  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        await handlers.authorize(authorize_cmd(), deps)
    deps.clock.advance(deps.config.lease_seconds + 1)  # type: ignore[attr-defined]
    await handlers.poll_due(deps)
    (payment,) = deps.uow.committed.payments.values()  # type: ignore[attr-defined]
    assert payment.state is PaymentState.AUTHORIZED
    assert len(deps.providers.default.intents) == 1  # type: ignore[attr-defined]
    keys = {k for op, k in deps.providers.default.calls if op == "authorize"}  # type: ignore[attr-defined]
    assert keys == {"gtx-1:payment:authorize"}


async def test_timeout_then_void_ends_voided_by_the_poller(deps: Deps) -> None:
    deps.providers.default.script = [("after", OutcomeUnknown("slow", timeout=True))]  # type: ignore[attr-defined]
    with pytest.raises(errors.PaymentTimeout) as caught:
        await handlers.authorize(authorize_cmd(), deps)
    payment_id = caught.value.metadata["payment_id"]
    voided = await handlers.void(commands.Void("v1", BRANCH, "saga gave up"), deps)
    assert voided.payment is not None and voided.payment.void_requested
    for _ in range(5):
        deps.clock.advance(5)  # type: ignore[attr-defined]
        await handlers.poll_due(deps)
    final = deps.uow.committed.payments[payment_id]  # type: ignore[attr-defined]
    assert final.state is PaymentState.VOIDED and final.captured_minor == 0
    assert deps.providers.default.intents["pi_1"].status.value == "canceled"  # type: ignore[attr-defined]
    assert outbox_types(deps)[-1] == "payment.voided"


async def test_void_first_is_null_compensation_and_authorize_then_hangs(deps: Deps) -> None:
    result = await handlers.void(commands.Void("v1", BRANCH), deps)
    assert result.null_compensation and result.payment is None
    with pytest.raises(errors.PaymentVoided):
        await handlers.authorize(authorize_cmd(), deps)
    assert deps.providers.default.calls == []  # type: ignore[attr-defined]
    assert deps.uow.committed.payments == {}  # type: ignore[attr-defined]


async def test_capture_after_void_is_refused_and_void_after_capture_too(deps: Deps) -> None:
    await handlers.authorize(authorize_cmd(), deps)
    await handlers.void(commands.Void("v1", BRANCH), deps)
    with pytest.raises(errors.PaymentVoided):
        await handlers.capture(commands.Capture("c1", BRANCH), deps)
    other = TccBranch("gtx-2", "payment")
    await handlers.authorize(
        commands.Authorize("r2", other, "o", 100, "USD", Method.CARD, "pm_card_visa"), deps
    )
    captured = await handlers.capture(commands.Capture("c2", other, 60), deps)
    assert captured.payment.captured_minor == 60
    with pytest.raises(errors.PaymentNotVoidable):
        await handlers.void(commands.Void("v2", other), deps)


async def test_refunds_reserve_and_never_exceed_the_capture(deps: Deps) -> None:
    await handlers.authorize(authorize_cmd(amount=1000), deps)
    p = (await handlers.capture(commands.Capture("c1", BRANCH), deps)).payment
    first = await handlers.refund(commands.Refund("r1", p.id, 600), deps)
    assert (
        first.payment.refunded_minor == 600
        and first.payment.state is PaymentState.PARTIALLY_REFUNDED
    )
    with pytest.raises(errors.RefundExceedsCaptured):
        await handlers.refund(commands.Refund("r2", p.id, 600), deps)
    # A provider failure with unknown outcome keeps the reservation until the poller settles it.
    deps.providers.default.script = [OutcomeUnknown("down", timeout=False)]  # type: ignore[attr-defined]
    with pytest.raises(errors.ProviderUnavailable):
        await handlers.refund(commands.Refund("r3", p.id, 400), deps)
    with pytest.raises(errors.RefundExceedsCaptured):
        await handlers.refund(commands.Refund("r4", p.id, 1), deps)
    deps.clock.advance(10)  # type: ignore[attr-defined]
    await handlers.poll_due(deps)
    final = deps.uow.committed.payments[p.id]  # type: ignore[attr-defined]
    assert final.state is PaymentState.REFUNDED and final.refunded_minor == 1000
    assert sum(deps.providers.default.refunded.values()) == 1000  # type: ignore[attr-defined]


async def test_a_twin_of_an_in_flight_call_is_told_to_retry(deps: Deps) -> None:
    deps.providers.default.script = [Crash()]  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        await handlers.authorize(authorize_cmd(), deps)
    with pytest.raises(errors.OperationInProgress):
        await handlers.authorize(authorize_cmd(), deps)


async def test_a_capture_the_provider_does_not_know_is_final_not_retried(deps: Deps) -> None:
    """Issue 11 §1: the provider answers 404 for the intent (it lost it). Nothing is held
    there, so the payment is voided at once (an event tells the saga), never polled again."""
    payment = (await handlers.authorize(authorize_cmd(), deps)).payment
    deps.providers.get(payment.provider).forget(payment.provider_payment_id)  # type: ignore[attr-defined]
    with pytest.raises(errors.PaymentNotCapturable):
        await handlers.capture(commands.Capture("c1", BRANCH), deps)
    stored = deps.uow.committed.payments[payment.id]  # type: ignore[attr-defined]
    assert stored.state is PaymentState.VOIDED and stored.failure_code == "resource_missing"
    assert stored.pending_op is None and stored.next_poll_at is None
    assert outbox_types(deps)[-1] == EventType.PAYMENT_VOIDED.value
    deps.clock.advance(3600)  # type: ignore[attr-defined]
    assert await handlers.poll_due(deps) == 0


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_posting_counts_its_attempt_provider_calls_and_revenue_once(deps: Deps) -> None:
    """Issue 13: the posting path counts through hirepay_platform.metrics.count/observe (each
    series looked up once); the exposed series still count each event exactly once."""
    attempts = ("hirepay_payment_attempts_total", {"method": "CARD", "outcome": "authorized"})
    authorize = (
        "hirepay_provider_call_duration_seconds_count",
        {"operation": "authorize", "outcome": "ok"},
    )
    revenue = ("hirepay_payment_revenue_minor_total", {"currency": "USD"})
    before = [_sample(name, **labels, reason="none") for name, labels in [attempts]]
    calls_before = _sample(authorize[0], **authorize[1])
    revenue_before = _sample(revenue[0], **revenue[1])
    await handlers.authorize(authorize_cmd(), deps)
    assert _sample(attempts[0], **attempts[1], reason="none") == before[0] + 1
    assert _sample(authorize[0], **authorize[1]) == calls_before + 1
    await handlers.capture(commands.Capture("c1", BRANCH), deps)
    await handlers.capture(commands.Capture("c1", BRANCH), deps)  # a replay counts nothing
    assert _sample(revenue[0], **revenue[1]) == revenue_before + 2500
    assert _sample(attempts[0], **attempts[1], reason="none") == before[0] + 1


def _final_count(method: str, state: str) -> float:
    value = REGISTRY.get_sample_value(
        "hirepay_payment_time_to_final_seconds_count", {"method": method, "state": state}
    )
    return value or 0.0


async def test_the_time_to_a_final_state_is_measured_once_per_payment(deps: Deps) -> None:
    """Issue 11 §4: the histogram from a payment's start to its final state, per method."""
    captured_before = _final_count("CARD", "CAPTURED")
    await handlers.authorize(authorize_cmd(), deps)
    assert _final_count("CARD", "CAPTURED") == captured_before  # authorized is not final
    deps.clock.advance(30)  # type: ignore[attr-defined]
    await handlers.capture(commands.Capture("c1", BRANCH), deps)
    assert _final_count("CARD", "CAPTURED") == captured_before + 1
    await handlers.capture(commands.Capture("c1", BRANCH), deps)  # a replay counts nothing
    assert _final_count("CARD", "CAPTURED") == captured_before + 1
    failed_before = _final_count("CARD", "FAILED")
    with pytest.raises(errors.PaymentDeclined):
        await handlers.authorize(
            commands.Authorize(
                request_id="r2",
                branch=TccBranch("gtx-2", "payment"),
                owner_id="company-1",
                amount_minor=2500,
                currency="USD",
                method=Method.CARD,
                payment_method_token="pm_card_chargeDeclined",
                metadata={"subsystem": "jobs"},
            ),
            deps,
        )
    assert _final_count("CARD", "FAILED") == failed_before + 1
