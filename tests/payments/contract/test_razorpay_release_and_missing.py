"""Razorpay specifics of issue 11, through the payments handlers, the real adapter and the
Razorpay sandbox (the database is the in-memory fake):

- Razorpay has no void: a cancelled authorization reads `authorized` there until Razorpay
  refunds it by itself after the capture window (`refunded`, `captured: false`). Reconciliation
  accepts that until the window (plus grace) has passed, never after, and reads the released
  payment as cancelled.
- Razorpay answers an unknown id with 400 "The id provided does not exist" (the SDK keeps no
  status): that is the provider saying "not found", so a payment Razorpay does not know is made
  final (never retried), as with every provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hirepay_dev.provider_sandboxes import RAZORPAY_KEY_ID, RAZORPAY_KEY_SECRET
from hirepay_platform.tcc import TccBranch
from payments.adapters.blocking import BlockingCalls
from payments.adapters.razorpay_provider import RazorpayProvider
from payments.domain import commands, errors
from payments.domain.model import Method, PaymentState
from payments.domain.provider import CheckoutState, InvalidRequest, ProviderCheckout, ProviderStatus
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, FakeUnitOfWork
from tests.support.provider_harnesses import HARNESSES, Receiver, Running, running

FIVE_DAYS = 5 * 24 * 3600


@pytest.fixture(scope="module")
def run() -> Iterator[Running]:
    receiver = Receiver()
    try:
        with running(HARNESSES["razorpay"], receiver) as r:
            yield r
    finally:
        receiver.stop()


def _deps(run: Running) -> Deps:
    # The contract suite's short provider deadline (for its timeout faults) is not needed here:
    # a loaded machine must not turn a slow answer into an unknown outcome.
    provider = RazorpayProvider(
        RAZORPAY_KEY_ID, RAZORPAY_KEY_SECRET, BlockingCalls(2, 15.0), api_base=run.base_url
    )
    clock = Clock()
    clock.now = datetime.now(UTC)  # the sandbox dates its payments by the wall clock
    return Deps(
        FakeUnitOfWork(),
        ProviderRegistry([provider]),
        Policy(provider_timeout=5, poll_base=1, poll_max=4),
        clock=clock,
    )


async def _authorized(run: Running, deps: Deps, gtx: str) -> str:
    """A Razorpay checkout payment, paid on the page and read back as AUTHORIZED."""
    started = await handlers.authorize(
        commands.Authorize(
            request_id=f"auth-{gtx}",
            branch=TccBranch(gtx, "payment"),
            owner_id="company-1",
            amount_minor=50_000,
            currency="INR",
            method=Method.CHECKOUT,
            metadata={"subsystem": "jobs"},
            return_url="https://app.example/back",
        ),
        deps,
    )
    payment = started.payment
    assert payment.state is PaymentState.REQUIRES_ACTION and payment.next_action_url
    order_id = payment.next_action_url.split("/checkout/", 1)[1].split("?", 1)[0]
    page = ProviderCheckout(order_id, CheckoutState.OPEN, False, payment.next_action_url, None)
    assert HARNESSES["razorpay"].pay(run, page, True)  # paid on the page, the bank approved
    deps.clock.advance(60)  # type: ignore[attr-defined]
    await handlers.poll_due(deps)
    stored = deps.uow.committed.payments[payment.id]  # type: ignore[attr-defined]
    assert stored.state is PaymentState.AUTHORIZED, stored
    return str(payment.id)


async def test_a_voided_authorization_reconciles_until_razorpay_releases_it(run: Running) -> None:
    deps = _deps(run)
    payment_id = await _authorized(run, deps, "gtx-rzp-void")
    voided = await handlers.void(
        commands.Void("void-1", TccBranch("gtx-rzp-void", "payment")), deps
    )
    assert voided.payment.state is PaymentState.VOIDED
    provider_id = voided.payment.provider_payment_id
    # Razorpay still reads it authorized, to be released by itself within the capture window.
    there = await run.provider.retrieve_payment(provider_id)
    assert there.status is ProviderStatus.AUTHORIZED and there.release_due is not None
    clean = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert clean.checked == 1 and clean.mismatches == []
    # Past the window (and the grace) and still held: that is a violation, not a release.
    deps.clock.advance(FIVE_DAYS + 7 * 3600)  # type: ignore[attr-defined]
    late = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert [(m.payment_id, "still holds" in m.detail) for m in late.mismatches] == [
        (payment_id, True)
    ]
    # Razorpay's auto-refund after the window: `refunded` and never captured is a release.
    moved = run.http.post(f"{run.base_url}/_sandbox/clock/advance", json={"seconds": FIVE_DAYS})
    assert moved.status_code == 200, moved.text
    released = await run.provider.retrieve_payment(provider_id)
    assert released.status is ProviderStatus.CANCELED and released.amount_received == 0
    done = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert done.checked == 1 and done.mismatches == []


async def test_an_id_razorpay_does_not_know_is_not_found(run: Running) -> None:
    with pytest.raises(InvalidRequest) as info:
        await run.provider.retrieve_payment("pay_NoSuchPayment001")
    assert (info.value.status, info.value.code) == (404, "resource_missing")
    with pytest.raises(InvalidRequest) as info:
        await run.provider.capture("pay_NoSuchPayment001", 0, "key-missing-1")
    assert info.value.status == 404


async def test_a_capture_razorpay_does_not_know_is_final_not_retried(run: Running) -> None:
    deps = _deps(run)
    payment_id = await _authorized(run, deps, "gtx-rzp-lost")
    # Razorpay loses the payment (the sandbox forgets everything).
    assert run.http.post(f"{run.base_url}/_sandbox/reset").status_code == 200
    with pytest.raises(errors.PaymentNotCapturable):
        await handlers.capture(
            commands.Capture("cap-1", TccBranch("gtx-rzp-lost", "payment")), deps
        )
    stored = deps.uow.committed.payments[payment_id]  # type: ignore[attr-defined]
    assert stored.state is PaymentState.VOIDED and stored.failure_code == "resource_missing"
    assert stored.pending_op is None and stored.next_poll_at is None
    deps.clock.advance(timedelta(hours=1).total_seconds())  # type: ignore[attr-defined]
    assert await handlers.poll_due(deps) == 0  # never asked again
