"""ReconcileProvider's sweep, pacing and unreadable payments (OPS-3, round 11).

The window is the `limit` most recently changed payments: a payment changed at the provider
after it left the window (a dashboard capture or refund, a dispute) was never compared again.
Each round now also checks a bounded batch of older payments from a durable cursor through the
payments changed within the horizon (PAYMENTS_RECONCILE_SWEEP_PER_ROUND, payments 0018), checks
the open records (a finding, or provider unreadable) every round, paces its provider reads
(PAYMENTS_RECONCILE_READS_PER_SECOND) and names the payments whose provider has stayed
unreadable past PAYMENTS_RECONCILE_UNREADABLE_GRACE_SECONDS."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import timedelta

from payments.domain import commands
from payments.domain.model import Payment, PaymentState
from payments.domain.provider import OutcomeUnknown, ProviderStatus
from payments.domain.reconciliation import (
    LastCheck,
    MismatchKind,
    SweepCursor,
    sweep_advanced,
    sweep_due,
)
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.payments.unit.test_reconcile import _authorized_many, _window
from tests.support.payments_fakes import Clock, FakeProvider, FakeUnitOfWork

WINDOW = 2  # the auditor's `limit`, small: most payments are outside it


def _deps(uow: FakeUnitOfWork, stripe: FakeProvider, **policy: float) -> Deps:
    return Deps(uow, ProviderRegistry([stripe]), Policy(provider_timeout=1, **policy), Clock())  # type: ignore[arg-type]


def _capture_there(stripe: FakeProvider, payment: Payment) -> None:
    pi = stripe.intents[payment.provider_payment_id or ""]
    stripe.intents[pi.id] = replace(
        pi, status=ProviderStatus.CAPTURED, amount_received=2500, amount_capturable=0
    )


async def _round(deps: Deps) -> audit.Reconciliation:
    deps.clock.advance(60)  # type: ignore[attr-defined]  # the auditor's round a minute
    return await audit.reconcile_provider(commands.ReconcileProvider(limit=WINDOW), lambda: deps)


async def test_a_payment_changed_at_the_provider_after_it_left_the_window_is_found() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, stripe, reconcile_sweep_per_round=3)
    ids = await _authorized_many(deps, 10)
    oldest = uow.committed.payments[ids[0]]
    _capture_there(stripe, oldest)  # at the dashboard, long after it left the window
    rounds = []
    for _ in range(math.ceil(10 / 3)):
        rounds.append(await _round(deps))
    found = {(m.payment_id, m.detail) for r in rounds for m in r.mismatches}
    assert found == {(oldest.id, "provider captured 2500, local state AUTHORIZED")}
    # Every payment was read at the provider within the pass (window or sweep), each once.
    assert sorted(uow.committed.reconciled) == sorted(ids)
    # An open finding outside the window and past the sweep is checked again every round, so it
    # stays reported until a check finds it gone.
    later = await _round(deps)
    assert [m.payment_id for m in later.mismatches] == [oldest.id]


async def test_without_the_sweep_the_window_never_reaches_older_payments() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, stripe, reconcile_sweep_per_round=0)
    ids = await _authorized_many(deps, 10)
    _capture_there(stripe, uow.committed.payments[ids[0]])
    rounds = [await _round(deps) for _ in range(6)]
    assert not any(r.mismatches for r in rounds)
    assert sorted(uow.committed.reconciled) == sorted(ids[-WINDOW:])


async def test_every_payment_of_the_sweep_is_checked_once_a_pass_of_a_bounded_number_of_rounds() -> (
    None
):
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, stripe, reconcile_sweep_per_round=4)
    ids = await _authorized_many(deps, 13)
    per_pass = math.ceil(13 / 4)  # rounds: the window's payments come round with the rest
    for _ in range(per_pass):
        before = len(stripe.calls)
        await _round(deps)
        reads = [op for op, _ in stripe.calls[before:] if op == "retrieve"]
        assert len(reads) <= 4 + WINDOW  # a round reads its share, never every payment
    assert set(uow.committed.reconciled) == set(ids)
    first = {p: c.at for p, c in uow.committed.reconciled.items()}
    # The next pass begins when one ends: within as many rounds again, each is checked again.
    for _ in range(per_pass + 1):
        await _round(deps)
    assert all(uow.committed.reconciled[p].at > first[p] for p in ids)


def test_the_cursor_waits_for_a_payment_of_the_batch_the_deadline_left() -> None:
    window = sorted(_window(5), key=lambda p: (p.updated_at, p.id))
    cursor = SweepCursor(window[-1].updated_at + timedelta(minutes=1))
    done = {window[0].id, window[1].id, window[3].id}  # window[2] left by the deadline
    moved = sweep_advanced(cursor, window, done, full=True, now=cursor.pass_started_at)
    assert moved == SweepCursor(cursor.pass_started_at, (window[1].updated_at, window[1].id))
    # A batch short of the round's share, all done: the pass is over, the next begins now.
    now = cursor.pass_started_at + timedelta(minutes=5)
    over = sweep_advanced(cursor, window, {p.id for p in window}, full=False, now=now)
    assert over == SweepCursor(now)


def test_the_sweep_skips_payments_checked_since_its_pass_began_and_those_in_flight() -> None:
    batch = _window(3)
    began = batch[0].updated_at + timedelta(hours=1)
    last = {batch[0].id: LastCheck(began + timedelta(seconds=1))}  # the window checked it
    batch[1] = replace(batch[1], state=PaymentState.UNKNOWN)
    assert sweep_due(batch, last, began) == [batch[2]]


async def test_a_rounds_provider_reads_are_paced_to_the_rate() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    rate = 5.0
    deps = _deps(uow, stripe, reconcile_reads_per_second=rate, reconcile_concurrency=8)
    await _authorized_many(deps, 8)  # authorized: one read each
    started: list[float] = []
    read = stripe.retrieve_payment

    async def timed(intent_id: str):  # type: ignore[no-untyped-def]
        started.append(time.monotonic())
        return await read(intent_id)

    stripe.retrieve_payment = timed  # type: ignore[method-assign]
    result = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert result.checked == 8
    # A burst of `rate` reads, then one every 1 / rate s: the 8th is due 3 / rate s after.
    assert started[-1] - started[0] >= (8 - rate) / rate - 0.02


async def test_a_payment_unreadable_past_the_grace_is_named_until_it_is_read() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, stripe, reconcile_unreadable_grace_seconds=600)
    ids = await _authorized_many(deps, 4)
    blind = uow.committed.payments[ids[0]]  # outside the window: an open record keeps it checked
    down = OutcomeUnknown("provider unreachable", timeout=True)
    real = stripe.retrieve_payment

    async def flaky(intent_id: str):  # type: ignore[no-untyped-def]
        if intent_id == blind.provider_payment_id and stripe_down:
            raise down
        return await real(intent_id)

    stripe.retrieve_payment = flaky  # type: ignore[method-assign]
    stripe_down = True
    first = await _round(deps)
    while blind.id not in uow.committed.reconciled:  # the sweep reaches it
        first = await _round(deps)
    since = uow.committed.reconciled[blind.id].unreadable_since
    assert first.unreadable == 1 and first.unreadable_past_grace == []
    named: list[audit.Reconciliation] = []
    for _ in range(12):  # 12 minutes: past the 10 minutes' grace
        named.append(await _round(deps))
    assert all(r.unreadable == 1 for r in named)  # checked again every round
    assert [m for r in named for m in r.unreadable_past_grace][-1] == audit.Mismatch(
        blind.id,
        blind.provider_payment_id or "",
        f"provider stripe unreadable since {since.isoformat()}",  # type: ignore[union-attr]
        MismatchKind.UNREADABLE,
    )
    assert named[0].unreadable_past_grace == []  # not within the grace
    stripe_down = False
    read = await _round(deps)
    assert read.unreadable == 0 and read.unreadable_past_grace == []
    assert uow.committed.reconciled[blind.id].unreadable_since is None
