"""ReconcileProvider (OPS-3, issue 11 §3) through the provider registry (issue 8): each payment is
compared with the provider that made it, never the current default."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError as SettingsError

from hirepay_platform.errors import ValidationError
from hirepay_platform.tcc import TccBranch
from payments.domain import commands
from payments.domain.model import Method, Payment, PaymentState
from payments.domain.provider import (
    OutcomeUnknown,
    ProviderPayment,
    ProviderRefund,
    ProviderStatus,
    RefundState,
)
from payments.domain.reconciliation import (
    LastCheck,
    MismatchKind,
    check_order,
    refund_mismatches,
    refunds_in_flight,
)
from payments.domain.refunds import Refund, RefundStatus
from payments.entrypoints.main import ACCESS
from payments.entrypoints.settings import PaymentsSettings
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, FakeProvider, FakeUnitOfWork
from tests.support.virtual_time import run_in_virtual_time


class OtherProvider(FakeProvider):
    """A second provider that never saw the Stripe payment."""

    name = "paypal"


def _authorize_cmd(gtx: str, request_id: str) -> commands.Authorize:
    return commands.Authorize(
        request_id=request_id,
        branch=TccBranch(gtx, "payment"),
        owner_id="company-1",
        amount_minor=2500,
        currency="USD",
        method=Method.CARD,
        payment_method_token="pm_card_visa",
        metadata={"subsystem": "jobs"},
    )


def _deps(uow: FakeUnitOfWork, providers: ProviderRegistry) -> Deps:
    return Deps(uow, providers, Policy(provider_timeout=1), clock=Clock())


async def test_each_payment_is_compared_with_the_provider_that_made_it() -> None:
    uow, stripe, other = FakeUnitOfWork(), FakeProvider(), OtherProvider()
    deps = _deps(uow, ProviderRegistry([stripe, other], default="stripe"))
    cmd = _authorize_cmd("gtx-1", "r1")
    payment = (await handlers.authorize(cmd, deps)).payment
    assert payment.provider == "stripe"
    clean = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert clean.checked == 1 and clean.mismatches == []

    # Captured behind our back at Stripe; then a restart with another default provider.
    pi = stripe.intents[payment.provider_payment_id]
    stripe.intents[pi.id] = replace(
        pi, status=ProviderStatus.CAPTURED, amount_received=2500, amount_capturable=0
    )
    restarted = _deps(uow, ProviderRegistry([stripe, other], default="paypal"))
    found = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: restarted)
    assert found.checked == 1
    assert [(m.payment_id, m.detail) for m in found.mismatches] == [
        (payment.id, "provider captured 2500, local state AUTHORIZED")
    ]
    assert other.calls == []  # the default was never asked about a payment it did not make


async def test_a_payment_whose_provider_is_not_configured_is_skipped_not_misreported() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, ProviderRegistry([stripe]))
    cmd = _authorize_cmd("gtx-1", "r1")
    await handlers.authorize(cmd, deps)
    without_stripe = _deps(uow, ProviderRegistry([OtherProvider()]))
    result = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: without_stripe)
    assert result.checked == 0 and result.mismatches == []


def test_only_jobs_may_call_the_auditors_reads() -> None:
    """Issue 12: the auditor is a jobs worker; the edge never reads every payment."""
    for rpc in ("ListPayments", "ReconcileProvider"):
        assert ACCESS.allows("jobs", rpc)
        assert not ACCESS.allows("gateway", rpc)
        assert not ACCESS.allows("wallet", rpc)


async def _captured(uow: FakeUnitOfWork, deps: Deps, gtx: str = "gtx-r") -> str:
    payment = (await handlers.authorize(_authorize_cmd(gtx, f"auth-{gtx}"), deps)).payment
    await handlers.capture(commands.Capture(f"cap-{gtx}", TccBranch(gtx, "payment")), deps)
    return payment.id


async def test_refunds_made_through_payments_reconcile_clean() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, ProviderRegistry([stripe]))
    payment_id = await _captured(uow, deps)
    await handlers.refund(commands.Refund("rf-1", payment_id, 1000, "requested"), deps)
    await handlers.refund(commands.Refund("rf-2", payment_id, 500, "requested"), deps)
    result = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert result.checked == 1 and result.mismatches == []
    assert ("list_refunds", "") in stripe.calls  # the provider's refunds were read


async def test_a_refund_known_only_at_the_provider_is_a_refund_mismatch() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, ProviderRegistry([stripe]))
    payment_id = await _captured(uow, deps)
    await handlers.refund(commands.Refund("rf-1", payment_id, 1000, "requested"), deps)
    provider_id = uow.committed.payments[payment_id].provider_payment_id
    # Refunded at the provider's dashboard: Hirepay has no record of it.
    made = await stripe.refund(provider_id, 700, "", {}, "dashboard-1")
    result = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert [(m.payment_id, m.kind) for m in result.mismatches] == [
        (payment_id, MismatchKind.REFUND)
    ]
    assert (
        made.id in result.mismatches[0].detail and "no local record" in result.mismatches[0].detail
    )


async def test_a_local_refund_the_provider_does_not_have_is_a_refund_mismatch() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, ProviderRegistry([stripe]))
    payment_id = await _captured(uow, deps)
    await handlers.refund(commands.Refund("rf-1", payment_id, 1000, "requested"), deps)
    provider_id = uow.committed.payments[payment_id].provider_payment_id
    stripe.refunds[provider_id] = []  # the provider lost it (or it never happened there)
    result = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert [(m.kind, "succeeded locally" in m.detail) for m in result.mismatches] == [
        (MismatchKind.REFUND, True)
    ]


def test_refund_rules() -> None:
    """Amounts and final outcomes must agree; pending on either side is not judged yet."""
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def local(status: RefundStatus, amount: int = 100, pid: str = "re_1") -> Refund:
        return Refund(
            "rf", "pay", "req", amount, "USD", "", status, "key", now, now, provider_refund_id=pid
        )

    ok = ProviderRefund("re_1", RefundState.SUCCEEDED, 100)
    assert refund_mismatches([local(RefundStatus.SUCCEEDED)], [ok]) == []
    assert refund_mismatches([local(RefundStatus.PENDING)], [ok]) == []
    assert refund_mismatches([local(RefundStatus.SUCCEEDED, 90)], [ok])
    assert refund_mismatches([local(RefundStatus.FAILED)], [ok])
    assert refund_mismatches([], [ProviderRefund("re_9", RefundState.FAILED, 100)]) == []
    assert refund_mismatches([local(RefundStatus.FAILED)], []) == []
    assert refunds_in_flight([local(RefundStatus.PENDING, pid="")])
    assert not refunds_in_flight([local(RefundStatus.PENDING)])


async def test_list_payments_filters_by_transactions_for_the_auditors_batched_read() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, ProviderRegistry([stripe]))
    ids = {gtx: await _captured(uow, deps, gtx) for gtx in ("gtx-a", "gtx-b", "gtx-c")}
    page = await audit.list_payments(
        commands.ListPayments(global_tx_ids=frozenset({"gtx-a", "gtx-c", "gtx-unknown"})), deps
    )
    assert sorted(p.id for p in page.payments) == sorted([ids["gtx-a"], ids["gtx-c"]])
    with pytest.raises(ValidationError):
        await audit.list_payments(
            commands.ListPayments(global_tx_ids=frozenset(f"g{n}" for n in range(1001))), deps
        )


# ---- many payments: a bounded number at a time, within the caller's deadline (OPS-3) -----------


class SlowProvider(FakeProvider):
    """Answers each read after `delay(intent_id)` seconds, counting the calls in flight."""

    def __init__(self, delay: Callable[[str], float]) -> None:
        super().__init__()
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0

    @asynccontextmanager
    async def _call(self, intent_id: str) -> AsyncIterator[None]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay(intent_id))
            yield
        finally:
            self.in_flight -= 1

    async def retrieve_payment(self, intent_id: str) -> ProviderPayment:
        async with self._call(intent_id):
            return await super().retrieve_payment(intent_id)

    async def list_refunds(self, intent_id: str) -> list[ProviderRefund]:
        async with self._call(intent_id):
            return await super().list_refunds(intent_id)


class OneTransactionAtATime:
    """A unit of work that, like the real one, holds one transaction at a time, across the
    awaits of its reads: entering it again before it is left is an error."""

    def __init__(self, inner: FakeUnitOfWork) -> None:
        self.inner = inner
        self.open = False

    async def __aenter__(self) -> FakeUnitOfWork:
        assert not self.open, "one unit of work entered by two tasks at once"
        self.open = True
        await asyncio.sleep(0)  # a real unit of work awaits the database here
        return await self.inner.__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.open = False
        await self.inner.__aexit__(*exc_info)


async def _authorized_many(deps: Deps, n: int) -> list[str]:
    """`n` authorized payments, one second apart: the newest is the last."""
    ids = []
    for i in range(n):
        deps.clock.advance(1)  # type: ignore[attr-defined]
        ids.append((await handlers.authorize(_authorize_cmd(f"gtx-{i}", f"r{i}"), deps)).payment.id)
    return ids


def _captured_behind_our_back(provider: FakeProvider) -> None:
    for pi in list(provider.intents.values()):
        provider.intents[pi.id] = replace(
            pi, status=ProviderStatus.CAPTURED, amount_received=2500, amount_capturable=0
        )


async def test_payments_are_checked_a_bounded_number_at_a_time_and_reported_in_order() -> None:
    uow = FakeUnitOfWork()
    position: dict[str, int] = {}
    # The newest payments (reported first) answer slowest, so they finish last.
    stripe = SlowProvider(lambda intent_id: 0.002 * position[intent_id])
    policy = Policy(provider_timeout=1, reconcile_concurrency=3)
    deps = Deps(uow, ProviderRegistry([stripe]), policy, clock=Clock())
    ids = await _authorized_many(deps, 12)
    for i, payment_id in enumerate(ids):
        position[uow.committed.payments[payment_id].provider_payment_id] = i
    _captured_behind_our_back(stripe)

    def new_deps() -> Deps:  # each its own unit of work, as the servicer's factory gives
        return Deps(OneTransactionAtATime(uow), deps.providers, policy, clock=deps.clock)  # type: ignore[arg-type]

    result = await audit.reconcile_provider(commands.ReconcileProvider(), new_deps)
    assert stripe.most_in_flight == 3  # at once, and never more than the setting
    assert result.checked == 12
    assert [m.payment_id for m in result.mismatches] == ids[::-1]  # most recently changed first
    assert all(m.detail.startswith("provider captured") for m in result.mismatches)


def test_a_round_stops_starting_checks_the_deadline_would_not_allow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In virtual time (asyncio's clock moves only when every task waits): the deadline is the
    code's decision, not the machine's load."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        uow, stripe = FakeUnitOfWork(), SlowProvider(lambda _: 0.1)
        policy = Policy(provider_timeout=1, reconcile_concurrency=2)
        deps = Deps(uow, ProviderRegistry([stripe]), policy, clock=Clock())
        ids = await _authorized_many(deps, 40)  # one at a time: 4 s; two at a time: 2 s
        deadline = loop.time() + 1.5
        caplog.set_level(logging.WARNING, logger=audit.__name__)
        result = await audit.reconcile_provider(
            commands.ReconcileProvider(), lambda: deps, lambda: deadline - loop.time()
        )
        assert loop.time() < deadline  # answered in time, not DEADLINE_EXCEEDED
        assert 0 < result.checked < len(ids)
        assert result.mismatches == []
        assert stripe.in_flight == 0
        assert f"{len(ids) - result.checked} left for the next round" in caplog.text

    run_in_virtual_time(scenario())


def test_a_check_still_running_at_the_deadline_is_dropped_and_the_rest_answered() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        uow = FakeUnitOfWork()
        stuck: set[str] = set()
        stripe = SlowProvider(lambda intent_id: 30.0 if intent_id in stuck else 0.0)
        policy = Policy(provider_timeout=1, reconcile_concurrency=4)
        deps = Deps(uow, ProviderRegistry([stripe]), policy, clock=Clock())
        ids = await _authorized_many(deps, 6)
        stuck.add(uow.committed.payments[ids[2]].provider_payment_id)  # the provider hangs on it
        _captured_behind_our_back(stripe)
        deadline = loop.time() + 1.0
        result = await audit.reconcile_provider(
            commands.ReconcileProvider(), lambda: deps, lambda: deadline - loop.time()
        )
        assert loop.time() < deadline
        assert result.checked == 5
        assert [m.payment_id for m in result.mismatches] == [ids[5], ids[4], ids[3], ids[1], ids[0]]
        assert stripe.in_flight == 0  # the hanging call was cancelled, not left running

    run_in_virtual_time(scenario())


def test_the_reconcile_concurrency_setting_is_at_least_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HIREPAY_SERVICE_TOKEN_SECRET", "x" * 32)
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    assert PaymentsSettings().reconcile_concurrency == 8
    monkeypatch.setenv("PAYMENTS_RECONCILE_CONCURRENCY", "3")
    assert PaymentsSettings().reconcile_concurrency == 3
    monkeypatch.setenv("PAYMENTS_RECONCILE_CONCURRENCY", "0")
    with pytest.raises(SettingsError, match="reconcile_concurrency"):
        PaymentsSettings()


# ---- every payment of the window within a bounded number of rounds (OPS-3) ---------------------


def _window(n: int) -> list[Payment]:
    """`n` payments as the window gives them, most recently changed first: pay-0 the newest."""
    now = datetime(2026, 1, 10, tzinfo=UTC)
    return [
        Payment(
            id=f"pay-{i}",
            branch=TccBranch(f"gtx-{i}", "payment"),
            owner_id="company-1",
            amount_minor=2500,
            currency="USD",
            method=Method.CARD,
            provider="stripe",
            state=PaymentState.AUTHORIZED,
            created_at=now - timedelta(seconds=i),
            updated_at=now - timedelta(seconds=i),
        )
        for i in range(n)
    ]


def test_payments_never_checked_come_first_in_the_windows_order() -> None:
    window = _window(5)
    earlier = datetime(2026, 1, 9, tzinfo=UTC)
    last = {"pay-0": earlier, "pay-2": earlier}
    assert check_order(window, last) == [1, 3, 4, 0, 2]
    assert check_order(window, {}) == [0, 1, 2, 3, 4]  # none checked yet: newest first


def test_then_the_longest_unchecked_first_and_alike_in_the_windows_order() -> None:
    window = _window(5)
    t = datetime(2026, 1, 9, tzinfo=UTC)
    last = {
        "pay-0": t + timedelta(minutes=3),
        "pay-1": t + timedelta(minutes=1),
        "pay-2": t + timedelta(minutes=2),
        "pay-3": t + timedelta(minutes=1),
        "pay-4": t,
    }
    assert check_order(window, last) == [4, 1, 3, 2, 0]


async def test_a_round_is_ordered_by_the_checks_recorded_and_answers_in_the_windows_order() -> None:
    uow = FakeUnitOfWork()
    order: list[str] = []
    stripe = SlowProvider(lambda intent_id: order.append(intent_id) or 0.0)
    policy = Policy(provider_timeout=1, reconcile_concurrency=1)
    deps = Deps(uow, ProviderRegistry([stripe]), policy, clock=Clock())
    ids = await _authorized_many(deps, 4)
    intent = {p: uow.committed.payments[p].provider_payment_id for p in ids}
    # The two newest were checked a minute ago, the newest of them last: they come last.
    now = deps.clock.now  # type: ignore[attr-defined]
    uow.committed.reconciled = {
        ids[3]: LastCheck(now),
        ids[2]: LastCheck(now - timedelta(minutes=1)),
    }
    _captured_behind_our_back(stripe)
    deps.clock.advance(60)  # type: ignore[attr-defined]
    result = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    checked_order = list(dict.fromkeys(order))  # a retrieve, then the refunds' list
    assert checked_order == [intent[ids[1]], intent[ids[0]], intent[ids[2]], intent[ids[3]]]
    assert [m.payment_id for m in result.mismatches] == ids[::-1]  # still newest first
    assert result.checked == 4 and result.left == 0
    # Each check completed is recorded, durably, at the round's time.
    found = ((MismatchKind.CHARGE, "provider captured 2500, local state AUTHORIZED"),)
    assert uow.committed.reconciled == dict.fromkeys(ids, LastCheck(deps.clock.now, found))


async def test_rounds_cut_short_by_the_deadline_reach_every_payment_of_the_window() -> None:
    """The starvation of round 10's order: with a deadline too short for the whole window, every
    round checked the same newest payments and the oldest never. Now each round begins where the
    previous one stopped: no payment is checked twice before every one was checked once."""
    uow = FakeUnitOfWork()
    stripe = SlowProvider(lambda _: 0.02)  # a retrieve and a refunds list: 40 ms a payment
    policy = Policy(provider_timeout=1, reconcile_concurrency=2)
    deps = Deps(uow, ProviderRegistry([stripe]), policy, clock=Clock())
    ids = await _authorized_many(deps, 24)
    _captured_behind_our_back(stripe)  # so every payment checked names itself
    rounds: list[list[str]] = []
    while len(rounds) < 10 and {p for r in rounds for p in r} != set(ids):
        deps.clock.advance(60)  # type: ignore[attr-defined]  # the auditor's next minute
        # Each round's deadline allows 5 of the 24 checks (2 in flight at a time): counted,
        # not timed, so a loaded machine cuts the rounds at the same place.
        result = await audit.reconcile_provider(
            commands.ReconcileProvider(), lambda: deps, _starts_allowed(5)
        )
        assert 0 < result.checked < len(ids)  # each round a partial answer
        assert result.left == len(ids) - result.checked
        rounds.append([m.payment_id for m in result.mismatches])
    checked = [p for r in rounds for p in r]
    assert set(checked) == set(ids), (
        f"never checked in {len(rounds)} rounds: {set(ids) - set(checked)}"
    )
    seen: set[str] = set()
    for r in rounds:  # none checked twice before all were checked once
        again = seen & set(r)
        seen |= set(r)
        assert not again or seen == set(ids)
    assert rounds[0] == ids[::-1][: len(rounds[0])]  # the first round: the newest first


def _starts_allowed(n: int) -> Callable[[], float]:
    """A caller's `time_left` whose deadline allows exactly `n` checks one at a time: ample for
    the round's start and its first `n` checks, then gone (no clock: the same on a loaded box)."""
    calls = itertools.count()
    return lambda: 10.0 if next(calls) <= n else 0.0


async def test_a_round_cut_short_answers_what_the_last_check_found_of_those_it_left() -> None:
    """The auditor reports what a round answers: a mismatch must not vanish from its report in
    the rounds that do not reach its payment."""
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    policy = Policy(provider_timeout=1, reconcile_concurrency=1)
    deps = Deps(uow, ProviderRegistry([stripe]), policy, clock=Clock())
    ids = await _authorized_many(deps, 6)
    _captured_behind_our_back(stripe)
    full = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert [m.payment_id for m in full.mismatches] == ids[::-1] and full.earlier == []
    # Repaired at the provider since: the newest (checked next) and the oldest (not reached).
    for payment_id in (ids[5], ids[0]):
        pi = stripe.intents[uow.committed.payments[payment_id].provider_payment_id]
        stripe.intents[pi.id] = replace(pi, status=ProviderStatus.AUTHORIZED, amount_received=0)
    deps.clock.advance(60)  # type: ignore[attr-defined]
    cut = await audit.reconcile_provider(
        commands.ReconcileProvider(), lambda: deps, _starts_allowed(2)
    )
    assert (cut.checked, cut.left) == (2, 4)
    assert [m.payment_id for m in cut.mismatches] == [ids[4]]  # the newest repaired: gone
    # Not reached: as their last check found them (the oldest's repair is not known yet).
    assert [m.payment_id for m in cut.earlier] == [ids[3], ids[2], ids[1], ids[0]]
    assert all(m.detail == full.mismatches[0].detail for m in cut.earlier)
    # The next round begins with those; the oldest's repair is found then.
    deps.clock.advance(60)  # type: ignore[attr-defined]
    rest = await audit.reconcile_provider(
        commands.ReconcileProvider(), lambda: deps, _starts_allowed(4)
    )
    assert [m.payment_id for m in rest.mismatches] == [ids[3], ids[2], ids[1]]
    assert [m.payment_id for m in rest.earlier] == [ids[4]]


async def test_a_payment_whose_provider_is_unreadable_waits_its_turn_and_keeps_its_finding() -> (
    None
):
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    policy = Policy(provider_timeout=1, reconcile_concurrency=1)
    deps = Deps(uow, ProviderRegistry([stripe]), policy, clock=Clock())
    ids = await _authorized_many(deps, 3)
    _captured_behind_our_back(stripe)
    await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    first = uow.committed.reconciled[ids[2]]
    deps.clock.advance(60)  # type: ignore[attr-defined]
    stripe.script = [
        OutcomeUnknown("slow", timeout=True)
    ]  # the first check of the round: the newest
    result = await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert (result.checked, result.left, result.unreadable) == (2, 0, 1)
    assert [m.payment_id for m in result.mismatches] == [ids[1], ids[0]]
    assert [(m.payment_id, m.detail) for m in result.earlier] == [(ids[2], first.found[0][1])]
    # Its turn moved on (not the front of every round while its provider is down), its
    # finding kept (nothing was learnt), and unreadable since now (payments 0018).
    now = deps.clock.now  # type: ignore[attr-defined]
    assert uow.committed.reconciled[ids[2]] == LastCheck(now, first.found, now)


async def test_a_round_forgets_records_not_renewed_for_a_day() -> None:
    """Only the window's payments are read: a record a day old belongs to a payment that left
    it, and is forgotten (the table holds about a day of windows, not all history)."""
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, ProviderRegistry([stripe]))
    now = deps.clock.now  # type: ignore[attr-defined]
    uow.committed.reconciled = {
        "pay-gone": LastCheck(now - timedelta(days=1, seconds=1)),
        "pay-recent": LastCheck(now - timedelta(hours=23)),
    }
    payment = (await handlers.authorize(_authorize_cmd("gtx-1", "r1"), deps)).payment
    await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)
    assert set(uow.committed.reconciled) == {"pay-recent", payment.id}
