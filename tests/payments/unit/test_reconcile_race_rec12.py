"""ReconcileProvider and captures under way (OPS-3, round 12).

A round reads its payments from the database first and each from its provider later (pacing,
concurrency, a loaded machine): a payment read as AUTHORIZED with no provider call in flight
could have its capture begun and done in between, and the round then named it "provider captured
2500, local state AUTHORIZED". A finding is now judged again with a local read made after the
provider's (`mismatch_across`): here the provider fake's retrieve is hooked to move the payment
at the exact point of the race, no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from hirepay_platform.tcc import TccBranch
from payments.domain import commands
from payments.domain.model import PaymentState, PendingOp
from payments.domain.provider import ProviderPayment, ProviderStatus
from payments.domain.reconciliation import LastCheck, MismatchKind, mismatch_across
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.payments.unit.test_reconcile import _captured_behind_our_back, _window
from tests.support.payments_fakes import Clock, FakeProvider, FakeUnitOfWork
from tests.support.payments_helpers import authorize_command

Hook = Callable[[], Awaitable[None]]
CAPTURED_THERE = "provider captured 2500, local state AUTHORIZED"


class RaceProvider(FakeProvider):
    """The fake provider with hooks: `before_read` runs (once) when the round asks for a payment,
    before the provider reads it; `after_read` (once) after it read it, before the answer reaches
    the round; `at_capture` inside a capture call, once the provider has captured."""

    def __init__(self) -> None:
        super().__init__()
        self.before_read: Hook | None = None
        self.after_read: Hook | None = None
        self.at_capture: Hook | None = None

    async def retrieve_payment(self, intent_id: str) -> ProviderPayment:
        before, self.before_read = self.before_read, None
        if before is not None:
            await before()
        view = await super().retrieve_payment(intent_id)
        after, self.after_read = self.after_read, None
        if after is not None:
            await after()
        return view

    async def capture(
        self, intent_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment:
        done = await super().capture(intent_id, amount_minor, idempotency_key)
        if self.at_capture is not None:
            await self.at_capture()
        return done


def _deps(uow: FakeUnitOfWork, provider: FakeProvider) -> Deps:
    return Deps(uow, ProviderRegistry([provider]), Policy(provider_timeout=1), clock=Clock())


async def _authorized(deps: Deps) -> str:
    return (await handlers.authorize(authorize_command("gtx-race"), deps)).payment.id


def _capture(deps: Deps) -> Awaitable[handlers.PaymentResult]:
    return handlers.capture(commands.Capture("cap-race", TccBranch("gtx-race", "payment")), deps)


async def _round(deps: Deps) -> audit.Reconciliation:
    return await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)


async def test_a_capture_begun_and_done_between_the_rounds_read_and_the_providers_is_no_mismatch() -> (
    None
):
    uow, stripe = FakeUnitOfWork(), RaceProvider()
    deps = _deps(uow, stripe)
    payment_id = await _authorized(deps)
    local_at_the_provider: list[tuple[PaymentState, PendingOp | None]] = []

    async def at_capture() -> None:
        p = uow.committed.payments[payment_id]
        local_at_the_provider.append((p.state, p.pending_op))

    async def capture_now() -> None:  # after the round read the payment, before the provider
        assert (await _capture(deps)).payment.state is PaymentState.CAPTURED

    stripe.at_capture, stripe.before_read = at_capture, capture_now
    result = await _round(deps)
    # The capture's local record moved (pending op, then captured) while the round went on.
    assert local_at_the_provider == [(PaymentState.AUTHORIZED, PendingOp.CAPTURE)]
    assert uow.committed.payments[payment_id].state is PaymentState.CAPTURED
    assert (result.checked, result.mismatches, result.earlier) == (1, [], [])
    # A check that agreed, recorded as such.
    assert uow.committed.reconciled[payment_id] == LastCheck(deps.clock())


async def test_a_capture_still_under_way_is_left_to_the_next_round_and_its_record_kept() -> None:
    """The provider captured, our record of it not written yet (the answer on its way back):
    nothing can be told now. Neither a finding nor an agreement is recorded; the earlier record
    stays as it was, and is answered as what the last check found."""
    uow, stripe = FakeUnitOfWork(), RaceProvider()
    deps = _deps(uow, stripe)
    payment_id = await _authorized(deps)
    earlier = LastCheck(deps.clock() - timedelta(minutes=1), ((MismatchKind.CHARGE, "earlier"),))
    uow.committed.reconciled = {payment_id: earlier}
    at_provider, answer = asyncio.Event(), asyncio.Event()

    async def at_capture() -> None:
        at_provider.set()
        await answer.wait()

    capturing: list[asyncio.Task[handlers.PaymentResult]] = []

    async def capture_begins() -> None:
        capturing.append(asyncio.create_task(_capture(deps)))
        await at_provider.wait()

    stripe.at_capture, stripe.before_read = at_capture, capture_begins
    result = await _round(deps)
    assert uow.committed.payments[payment_id].pending_op is PendingOp.CAPTURE  # still under way
    assert (result.checked, result.left, result.unreadable, result.mismatches) == (0, 0, 0, [])
    assert [(m.payment_id, m.detail) for m in result.earlier] == [(payment_id, "earlier")]
    assert uow.committed.reconciled == {payment_id: earlier}  # neither replaced nor cleared

    answer.set()
    assert (await capturing[0]).payment.state is PaymentState.CAPTURED
    deps.clock.advance(60)  # type: ignore[attr-defined]
    later = await _round(deps)
    assert (later.checked, later.mismatches, later.earlier) == (1, [], [])
    assert uow.committed.reconciled == {payment_id: LastCheck(deps.clock())}


async def test_a_capture_made_behind_our_back_is_still_named() -> None:
    """Captured at the provider, our record authorized with no call in flight before the
    provider's read and after it: a real mismatch, found and recorded."""
    uow, stripe = FakeUnitOfWork(), RaceProvider()
    deps = _deps(uow, stripe)
    payment_id = await _authorized(deps)
    _captured_behind_our_back(stripe)
    result = await _round(deps)
    assert [(m.payment_id, m.kind, m.detail) for m in result.mismatches] == [
        (payment_id, MismatchKind.CHARGE, CAPTURED_THERE)
    ]
    found = ((MismatchKind.CHARGE, CAPTURED_THERE),)
    assert uow.committed.reconciled == {payment_id: LastCheck(deps.clock(), found)}


async def test_a_capture_made_after_the_providers_read_is_no_mismatch() -> None:
    """The reverse: the provider read the payment authorized, and the capture (its local record
    captured) came after. Money we took and the provider did not is judged by our record as it
    was before the provider's read, never by a later one."""
    uow, stripe = FakeUnitOfWork(), RaceProvider()
    deps = _deps(uow, stripe)
    payment_id = await _authorized(deps)

    async def capture_now() -> None:
        assert (await _capture(deps)).payment.state is PaymentState.CAPTURED

    stripe.after_read = capture_now
    result = await _round(deps)
    assert uow.committed.payments[payment_id].state is PaymentState.CAPTURED
    assert (result.checked, result.mismatches) == (1, [])
    assert uow.committed.reconciled == {payment_id: LastCheck(deps.clock())}


def test_which_local_read_judges_which_disagreement() -> None:
    """`mismatch_across(before, intent, after)`: money the provider took that we did not is
    judged by the read after the provider's; money we took that the provider did not (and an
    authorization we released that it holds) by the read before it; None while `after` has a
    provider call in flight."""
    now = datetime(2026, 1, 10, tzinfo=UTC)
    authorized = _window(1)[0]
    authorized.provider_payment_id = "pi_1"
    capturing = _window(1)[0]
    capturing.pending_op = PendingOp.CAPTURE
    captured = _window(1)[0]
    captured.state, captured.captured_minor = PaymentState.CAPTURED, 2500
    voided = _window(1)[0]
    voided.state = PaymentState.VOIDED
    held = ProviderPayment("pi_1", ProviderStatus.AUTHORIZED, 2500, "USD", amount_capturable=2500)
    taken = ProviderPayment("pi_1", ProviderStatus.CAPTURED, 2500, "USD", amount_received=2500)

    assert mismatch_across(authorized, taken, authorized, now) == CAPTURED_THERE
    assert mismatch_across(authorized, taken, captured, now) == ""  # captured meanwhile
    assert mismatch_across(authorized, taken, capturing, now) is None  # still under way
    assert mismatch_across(authorized, held, captured, now) == ""  # captured after the read
    assert mismatch_across(captured, held, captured, now) == (
        "local CAPTURED 2500, provider authorized"
    )
    assert mismatch_across(voided, held, voided, now) == "provider still holds 2500, local VOIDED"
