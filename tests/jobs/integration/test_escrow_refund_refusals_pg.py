"""An engagement's own card refund (a cancellation, an admin's `refund` resolution) refused
outright by the provider (ESC-1, ESC-8; PAY-11's PAYMENT_NOT_REFUNDABLE: nothing refunded, and
payments answers every retry under the same request id the same) on real PostgreSQL and the real
wallet process: the money step ends `refund_refused` (no more retries), what it gave back is
booked to the engagement's receivable, owed to the customer, counted and reported by the auditor
as payable; a transient refusal keeps retrying; twins and a crash between the refusal and its
booking book it once. Then an admin settles the receivable (SEC-2): once per request id, twins
concurrently once, more than owed or another currency refused with nothing changed, others
refused."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from hirepay_platform.errors import ErrorKind, HirepayError, Unavailable
from jobs.domain import commands
from jobs.domain.audit import Check
from jobs.domain.escrow import (
    AtProviderOutcome,
    PaymentRefund,
    RefundOutcome,
    StepKind,
    StepState,
    outside,
)
from jobs.domain.events import EventType
from jobs.domain.marketplace import EngagementState
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace import escrow, money_steps, receivables
from tests.jobs.integration import test_escrow_refunds_at_provider_pg as base
from tests.jobs.integration.test_escrow_refunds_at_provider_pg import (
    ADMIN,
    audit_of,
    build,
    cancel_of,
    everything,
    funded,
    own_steps,
    payment_of,
    resolve,
)
from tests.support.escrow_support import FakeCardRefunds, FlakyLedger, Parties, balance

# The refunds-at-provider tests' fixtures: a wallet process, the jobs database.
wallet, sessions, ledger = base.wallet, base.sessions, base.ledger


@dataclass
class RefusingCardRefunds(FakeCardRefunds):
    """payments' Refund with the provider refusing the refunds of some payments outright (as
    payments answers it: PAYMENT_NOT_REFUNDABLE, the refund recorded FAILED under its request
    id, the same answer to every retry), or payments not answering for a while (UNAVAILABLE)."""

    outright: set[str] = field(default_factory=set)  # payments whose refunds are refused
    down: int = 0  # the next calls answer UNAVAILABLE
    asked: list[str] = field(default_factory=list)  # every request id asked, in order
    lookups_down: int = 0  # the next refunds_of calls answer UNAVAILABLE

    async def refund(
        self, payment_id: str, amount_minor: int, request_id: str, reason: str
    ) -> RefundOutcome:
        self.asked.append(request_id)
        if self.down > 0:
            self.down -= 1
            raise Unavailable("payments down (test)")
        if payment_id in self.outright:
            recorded = self.recorded.setdefault(payment_id, [])
            if not any(r.request_id == request_id for r in recorded):
                refund_id = f"rfd_{uuid.uuid5(uuid.NAMESPACE_URL, request_id).hex}"
                recorded.append(PaymentRefund(refund_id, request_id, amount_minor, "FAILED"))
            self.refused.append(request_id)
            raise HirepayError(
                "Charge ch_1 has a payment method that cannot be refunded",
                reason="PAYMENT_NOT_REFUNDABLE",
                kind=ErrorKind.FAILED_PRECONDITION,
            )
        return await super().refund(payment_id, amount_minor, request_id, reason)

    async def refunds_of(self, payment_id: str) -> tuple[str, list[PaymentRefund]]:
        if self.lookups_down > 0:
            self.lookups_down -= 1
            raise Unavailable("payments down (test)")
        return await super().refunds_of(payment_id)


@pytest.fixture
def refunds() -> RefusingCardRefunds:
    return RefusingCardRefunds()


@pytest.fixture
def deps(sessions, ledger, refunds) -> Deps:
    return build(sessions, ledger, refunds)


def refused_count(step: str) -> float:
    value = REGISTRY.get_sample_value("hirepay_escrow_refunds_refused_total", {"step": step})
    return value or 0.0


# Everything back to the customer (a cancellation before the start) with the refund refused:
# the escrow and the fee on the receivable, owed to the customer; clearing keeps what the
# capture booked (the provider still has the money).
OWED_IN_FULL = {
    "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": -100_000,
    "receivable": 100_000,
}  # fmt: skip


async def refused_cancellation(deps: Deps, ledger, refunds: RefusingCardRefunds) -> Parties:
    p = await funded(deps, ledger)
    refunds.outright.add(await payment_of(deps, p))
    view = await escrow.cancel(cancel_of(p), deps)
    assert view.engagement.state is EngagementState.CANCELLED
    return p


async def test_a_cancellation_refund_refused_outright_ends_the_step_owed_to_the_customer(
    deps, ledger, refunds
):
    before = refused_count("cancel")
    p = await refused_cancellation(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    (step,) = await own_steps(deps, p)
    assert step.state is StepState.REFUND_REFUSED
    assert (step.refused_minor, step.refund_minor, step.refund_id) == (100_000, 0, "")
    assert "PAYMENT_NOT_REFUNDABLE" in step.failure
    assert await everything(ledger, p) == OWED_IN_FULL
    assert refused_count("cancel") == before + 1
    # The step ended: driven again and by the recovery, payments is asked nothing more.
    asked = len(refunds.asked)
    await money_steps.drive(p.engagement_id, StepKind.CANCEL, deps)
    await money_steps.recover_due(deps)
    assert len(refunds.asked) == asked == 1
    assert await everything(ledger, p) == OWED_IN_FULL
    # Shown on the engagement, told to the parties, reported as payable (not stuck).
    view = await escrow.get_engagement(
        commands.EngagementCommand(commands.Actor(p.customer, "customer"), p.engagement_id), deps
    )
    assert view.owed_to_customer_minor == 100_000 and view.settled_outside_minor == 0
    assert [s.state for s in view.steps] == [StepState.REFUND_REFUSED]
    async with deps.uow as uow:
        events = await uow.outbox.for_subject(step.transfer_id)
    assert [e.type for e in events] == [EventType.ENGAGEMENT_REFUND_REFUSED]
    assert events[0].data["refusedMinor"] == 100_000
    found = await audit_of(deps, p, pid)
    assert Check.ESCROW_REFUND_PAYABLE in found and Check.ESCROW_STEP_STUCK not in found


async def test_a_resolution_refund_refused_outright_keeps_the_fee_and_owes_the_escrow(
    deps, ledger, refunds
):
    p = await funded(deps, ledger)
    refunds.outright.add(await payment_of(deps, p))
    customer = commands.Actor(p.customer, "customer")
    await escrow.open_dispute(commands.OpenDispute(customer, p.engagement_id, "no show"), deps)
    await resolve(deps, p, "refund")
    (step,) = await own_steps(deps, p)
    assert (step.state, step.refused_minor) == (StepState.REFUND_REFUSED, 90_000)
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 10_000, "escrow": 0, "clearing": -100_000,
        "receivable": 90_000,
    }  # fmt: skip


async def test_a_transient_refusal_keeps_retrying_until_the_refund_is_made(deps, ledger, refunds):
    p = await funded(deps, ledger)
    refunds.down = 2
    await escrow.cancel(cancel_of(p), deps)
    (step,) = await own_steps(deps, p)
    assert step.state is StepState.PENDING and step.attempts == 1
    await money_steps.recover_due(deps)  # payments still down: retried again
    (step,) = await own_steps(deps, p)
    assert step.state is StepState.PENDING and step.attempts == 2
    await money_steps.recover_due(deps)
    (step,) = await own_steps(deps, p)
    assert (step.state, step.refused_minor) == (StepState.DONE, 0)
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
        "receivable": 0,
    }  # fmt: skip


async def test_twin_drivers_of_a_refused_refund_book_it_once(deps, ledger, refunds):
    p = await funded(deps, ledger)
    refunds.outright.add(await payment_of(deps, p))
    refunds.down = 1  # the request's own attempt fails: the twins below race the refusal
    await escrow.cancel(cancel_of(p), deps)
    before = refused_count("cancel")
    await asyncio.gather(
        *(money_steps.drive(p.engagement_id, StepKind.CANCEL, deps.fresh()) for _ in range(4))
    )
    (step,) = await own_steps(deps, p)
    assert (step.state, step.refused_minor) == (StepState.REFUND_REFUSED, 100_000)
    assert refused_count("cancel") == before + 1
    assert await everything(ledger, p) == OWED_IN_FULL


async def test_a_crash_between_the_refusal_and_its_booking_books_it_once(
    sessions,
    ledger,
    refunds,
):
    # Before the legs change is committed (the look-up of refunds at the provider fails, as a
    # process killed there): the step stays pending as it was; recovery asks payments again,
    # which answers the same refusal, and books it. After it is committed but before the
    # wallet took it (the wallet down): the step stays pending with its new legs; recovery
    # posts them, once.
    flaky = FlakyLedger(ledger, 0)
    deps = build(sessions, flaky, refunds)
    p = await funded(deps, ledger)
    refunds.outright.add(await payment_of(deps, p))
    refunds.lookups_down = 1
    await escrow.cancel(cancel_of(p), deps)
    (step,) = await own_steps(deps, p)
    assert (step.state, step.refused_minor, step.refund_minor) == (StepState.PENDING, 0, 100_000)
    flaky.failures = 1
    await money_steps.recover_due(deps)
    (step,) = await own_steps(deps, p)
    assert (step.state, step.refused_minor, step.refund_minor) == (StepState.PENDING, 100_000, 0)
    assert await balance(ledger, outside("USD")) >= 0
    await money_steps.recover_due(deps)
    (step,) = await own_steps(deps, p)
    assert step.state is StepState.REFUND_REFUSED
    assert refunds.refused == [f"engagement:{p.engagement_id}:cancel"] * 2
    assert await everything(ledger, p) == OWED_IN_FULL


# --------------------------------------------------------------------------- settled by operators


def settle_of(
    p: Parties, amount: int, key: str = "", currency: str = "USD", actor=ADMIN
) -> commands.SettleReceivable:
    return commands.SettleReceivable(
        actor=actor,
        engagement_id=p.engagement_id,
        request_id=key or uuid.uuid4().hex,
        amount_minor=amount,
        currency=currency,
        reference="BANK-TRF-2026-0042",
        note="paid back by bank transfer",
    )


async def outside_now(ledger) -> int:
    return await balance(ledger, outside("USD"))


async def test_an_admin_settles_what_is_owed_to_the_customer_once(deps, ledger, refunds):
    p = await refused_cancellation(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    start = await outside_now(ledger)
    # Twice concurrently under one request id, and again: once.
    views = await asyncio.gather(
        *(
            receivables.settle_receivable(settle_of(p, 60_000, "op-1"), deps.fresh())
            for _ in range(3)
        )
    )
    assert {(v.owed_to_customer_minor, v.settled_outside_minor) for v in views} == {
        (40_000, 60_000)
    }
    again = await receivables.settle_receivable(settle_of(p, 60_000, "op-1"), deps)
    assert again.owed_to_customer_minor == 40_000
    assert await outside_now(ledger) - start == 60_000
    assert (await everything(ledger, p))["receivable"] == 40_000
    assert Check.ESCROW_REFUND_PAYABLE in await audit_of(deps, p, pid)
    # The rest: nothing owed any more, nothing reported.
    done = await receivables.settle_receivable(settle_of(p, 40_000, "op-2"), deps)
    assert (done.owed_to_customer_minor, done.settled_outside_minor) == (0, 100_000)
    assert await outside_now(ledger) - start == 100_000
    found = await everything(ledger, p)
    assert found == {**OWED_IN_FULL, "receivable": 0}
    assert await audit_of(deps, p, pid) == []
    async with deps.uow as uow:
        rows = [
            r
            for r in await uow.escrow_refunds.for_engagement(p.engagement_id)
            if r.outcome is AtProviderOutcome.SETTLED
        ]
    assert sorted((r.amount_minor, r.reference, r.actor, r.state) for r in rows) == [
        (40_000, "BANK-TRF-2026-0042", ADMIN.user_id, StepState.DONE),
        (60_000, "BANK-TRF-2026-0042", ADMIN.user_id, StepState.DONE),
    ]


async def test_concurrent_settlements_never_pay_back_more_than_is_owed(deps, ledger, refunds):
    p = await refused_cancellation(deps, ledger, refunds)
    start = await outside_now(ledger)
    results = await asyncio.gather(
        *(receivables.settle_receivable(settle_of(p, 100_000), deps.fresh()) for _ in range(3)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, HirepayError)]
    assert len(refused) == 2, results
    assert {r.reason for r in refused} == {"SETTLEMENT_EXCEEDS_OWED"}
    assert await outside_now(ledger) - start == 100_000
    assert (await everything(ledger, p))["receivable"] == 0


@pytest.mark.parametrize(
    ("amount", "currency", "actor", "reason"),
    [
        (100_001, "USD", ADMIN, "SETTLEMENT_EXCEEDS_OWED"),
        (50_000, "EUR", ADMIN, "VALIDATION_FAILED"),
        (0, "USD", ADMIN, "VALIDATION_FAILED"),
        (50_000, "USD", commands.Actor("cust_x", "customer"), "PERMISSION_DENIED"),
    ],
)
async def test_a_bad_settlement_is_refused_and_changes_nothing(
    deps, ledger, refunds, amount, currency, actor, reason
):
    p = await refused_cancellation(deps, ledger, refunds)
    start = await outside_now(ledger)
    with pytest.raises(HirepayError) as refused:
        await receivables.settle_receivable(settle_of(p, amount, "bad", currency, actor), deps)
    assert refused.value.reason == reason
    assert await outside_now(ledger) - start == 0
    assert await everything(ledger, p) == OWED_IN_FULL
    async with deps.uow as uow:
        rows = await uow.escrow_refunds.for_engagement(p.engagement_id)
    assert rows == []
    # The same request id with another amount after a settlement: refused too.
    await receivables.settle_receivable(settle_of(p, 10_000, "once"), deps)
    with pytest.raises(HirepayError) as mismatch:
        await receivables.settle_receivable(settle_of(p, 20_000, "once"), deps)
    assert mismatch.value.reason == "IDEMPOTENCY_MISMATCH"
    assert await outside_now(ledger) - start == 10_000


async def test_nothing_owed_nothing_to_settle(deps, ledger, refunds):
    p = await funded(deps, ledger)
    await escrow.cancel(cancel_of(p), deps)  # refunded by the provider: nothing owed
    with pytest.raises(HirepayError) as refused:
        await receivables.settle_receivable(settle_of(p, 1), deps)
    assert refused.value.reason == "SETTLEMENT_EXCEEDS_OWED"


async def test_a_refusal_explained_by_the_steps_own_earlier_refund_is_not_owed(
    deps, ledger, refunds
):
    # payments lists a refund of the step's own that succeeded (its answer lost before the step
    # recorded it, the step netted since under another request id): the refusal is explained,
    # the money is with the customer already; nothing is booked as owed to them (left to the
    # retries and the auditor's escrow_step_stuck).
    p = await funded(deps, ledger)
    pid = await payment_of(deps, p)
    refunds.outright.add(pid)
    own = PaymentRefund("rfd_lost", f"engagement:{p.engagement_id}:cancel", 100_000, "SUCCEEDED")
    refunds.recorded[pid] = [own]
    before = await everything(ledger, p)
    await escrow.cancel(cancel_of(p), deps)
    (step,) = await own_steps(deps, p)
    assert (step.state, step.refused_minor) == (StepState.PENDING, 0)
    assert "PAYMENT_NOT_REFUNDABLE" in step.failure
    assert await everything(ledger, p) == before
