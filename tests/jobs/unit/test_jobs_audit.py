"""The consistency auditor's rounds (OPS-3) against fakes: 0 after normal flows, each kind of
violation reported (injected straight into the fake database or the fake sources)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from hirepay_platform.errors import ErrorKind, HirepayError
from jobs.domain import audit as audit_domain
from jobs.domain import commands
from jobs.domain.audit import (
    BookedPurchaseRefund,
    Check,
    PaymentFact,
    ProviderRound,
    PurchaseRefunds,
    Violation,
)
from jobs.domain.escrow import AccountKind, AccountRef, Leg, MoneyStep, StepKind, StepState
from jobs.domain.model import JobStatus, PaymentStatus
from jobs.domain.posting_saga import TryResult, TryState
from jobs.entrypoints.conversions import audit_report_to_proto
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import audit
from payments.domain.payouts import WITHDRAWAL_STUCK
from tests.support.jobs_world import World


@dataclass
class FakeSources:
    """Payments' ListPayments, the wallet's AuditLedger and payments' ReconcileProvider."""

    facts: list[PaymentFact] = field(default_factory=list)
    ledger_violations: list[Violation] = field(default_factory=list)
    provider_violations: list[Violation] = field(default_factory=list)
    purchase_refunds: PurchaseRefunds = field(default_factory=PurchaseRefunds)

    async def payments(
        self, states: frozenset[str], updated_since: datetime | None = None
    ) -> list[PaymentFact]:
        return [f for f in self.facts if f.state in states]

    async def ledger(self, now: datetime, since: datetime | None = None) -> list[Violation]:
        return list(self.ledger_violations)

    async def provider(self) -> ProviderRound:
        return ProviderRound(list(self.provider_violations), self.purchase_refunds)


def _deps(w: World, sources: FakeSources) -> Deps:
    return replace(w.deps, sources=sources)


def _fact(saga_id: str, state: str, at: datetime, **kw) -> PaymentFact:
    values = {
        "payment_id": "pay_1",
        "global_tx_id": saga_id,
        "subsystem": "jobs",
        "state": state,
        "captured_minor": 14900 if state in ("CAPTURED", "PARTIALLY_REFUNDED") else 0,
        "refunded_minor": 0,
        "created_at": at,
        "updated_at": at,
    }
    values.update(kw)
    return PaymentFact(**values)


def _gauge(check: Check) -> float:
    return metrics.CONSISTENCY_VIOLATIONS.labels(check.value)._value.get()


async def test_no_violation_after_normal_flows_and_faults():
    w = World()
    paid = await w.post(key="k1")
    w.payments.confirm_errors = [
        HirepayError("down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)
    ]
    pending = await w.post(key="k2")  # captured later: not live meanwhile
    assert pending.job.status is JobStatus.PENDING_PAYMENT
    sources = FakeSources(facts=[_fact(paid.saga_id, "CAPTURED", w.clock.now)])
    w.clock.advance(hours=1)
    report = await audit.run_audit(commands.RunAudit(), _deps(w, sources))
    assert report.violations == ()
    assert all(_gauge(check) == 0 for check in Check)


async def test_an_active_job_without_captured_money_is_reported():
    w = World()
    answer = await w.post()
    # Injected: the payment taken back behind the job's back, and a job set live by hand.
    w.payments.state[answer.saga_id] = TryState.RESERVED
    report = await audit.run_audit(commands.RunAudit(), _deps(w, FakeSources()))
    assert [(v.check, v.subject_id) for v in report.violations] == [
        (Check.ACTIVE_JOB_WITHOUT_PAYMENT, answer.job.id)
    ]
    job = w.store.jobs[answer.job.id]
    job.payment_status = PaymentStatus.PENDING
    w.payments.state[answer.saga_id] = TryState.CAPTURED
    report = await audit.run_audit(commands.RunAudit(), _deps(w, FakeSources()))
    assert [v.check for v in report.violations] == [Check.ACTIVE_JOB_WITHOUT_PAYMENT]
    assert _gauge(Check.ACTIVE_JOB_WITHOUT_PAYMENT) == 1


async def test_a_posting_refunded_in_part_is_live_with_its_money_and_one_refunded_in_full_is_not():
    w = World()
    job = (await w.post()).job
    partial = TryResult(TryState.REFUNDED, provider_state="PARTIALLY_REFUNDED")
    full = TryResult(TryState.REFUNDED, provider_state="REFUNDED")
    assert audit_domain.active_job_violation(job, partial) is None
    violation = audit_domain.active_job_violation(job, full)
    assert violation is not None and violation.check is Check.ACTIVE_JOB_WITHOUT_PAYMENT
    assert "REFUNDED" in violation.detail


async def test_captured_money_without_its_job_is_reported_after_the_grace():
    w = World(audit_grace_seconds=60)
    w.payments.try_outcome = HirepayError(
        "declined", reason="PAYMENT_DECLINED", kind=ErrorKind.FAILED_PRECONDITION
    )
    with pytest.raises(HirepayError):
        await w.post()
    (saga,) = w.store.sagas.values()
    # Injected: payments says the failed posting's money was captured.
    sources = FakeSources(facts=[_fact(saga.id, "CAPTURED", w.clock.now)])
    early = await audit.run_audit(commands.RunAudit(), _deps(w, sources))
    assert early.violations == ()  # may still be on its way
    w.clock.advance(seconds=120)
    late = await audit.run_audit(commands.RunAudit(), _deps(w, sources))
    assert [(v.check, v.subject_id) for v in late.violations] == [
        (Check.CAPTURED_PAYMENT_WITHOUT_JOB, "pay_1")
    ]
    refunded = FakeSources(facts=[_fact(saga.id, "CAPTURED", w.clock.now, refunded_minor=14900)])
    w.clock.advance(seconds=120)
    assert (await audit.run_audit(commands.RunAudit(), _deps(w, refunded))).violations == ()


async def test_captured_payments_are_checked_a_page_at_a_time_and_fresh_ones_not_read():
    """Issue 13: a round read each captured payment's saga and job in a unit of work of its own,
    every payment ever captured, each round. Now a payment changed within the grace (it cannot be
    a violation yet) reads nothing, and the rest are checked on one read per page."""
    w = World(audit_grace_seconds=60)
    paid = [await w.post(key=f"k{n}") for n in range(3)]
    opened = 0
    new_uow = w.deps.new_uow

    def counting_uow():
        nonlocal opened
        opened += 1
        return new_uow()

    deps = replace(_deps(w, FakeSources()), new_uow=counting_uow)
    await audit.run_audit(commands.RunAudit(), deps)
    baseline = opened  # the other checks' units of work

    def facts(at: datetime) -> list[PaymentFact]:
        return [_fact(a.saga_id, "CAPTURED", at, payment_id=f"pay_{a.saga_id}") for a in paid]

    opened = 0
    fresh = replace(deps, sources=FakeSources(facts=facts(w.clock.now)))
    assert (await audit.run_audit(commands.RunAudit(), fresh)).violations == ()
    assert opened == baseline
    w.clock.advance(seconds=120)
    opened = 0
    old = replace(deps, sources=FakeSources(facts=facts(w.clock.now - timedelta(seconds=120))))
    assert (await audit.run_audit(commands.RunAudit(), old)).violations == ()
    assert opened == baseline + 1
    # A saga whose job is gone is still reported, on the same single read.
    w.store.jobs.pop(paid[0].job.id)
    opened = 0
    report = await audit.run_audit(commands.RunAudit(), old)
    assert [(v.check, v.subject_id) for v in report.violations] == [
        (Check.CAPTURED_PAYMENT_WITHOUT_JOB, f"pay_{paid[0].saga_id}")
    ]


async def test_money_of_an_engagement_is_not_a_posting_without_its_job():
    # A direct job payment or a marketplace offer funds an engagement's escrow: no saga, no job.
    w = World(audit_grace_seconds=60)
    sources = FakeSources(
        facts=[
            _fact("", "CAPTURED", w.clock.now, payment_id="pay_jp", purpose="job_payment"),
            _fact("", "CAPTURED", w.clock.now, payment_id="pay_mk", purpose="marketplace"),
            _fact("", "CAPTURED", w.clock.now, payment_id="pay_fee"),
        ]
    )
    w.clock.advance(seconds=120)
    report = await audit.run_audit(commands.RunAudit(), _deps(w, sources))
    assert [(v.check, v.subject_id) for v in report.violations] == [
        (Check.CAPTURED_PAYMENT_WITHOUT_JOB, "pay_fee")
    ]


async def test_a_payment_not_final_past_its_deadline_is_reported():
    w = World(settlement_deadline_seconds=3600, audit_grace_seconds=60)
    start = w.clock.now
    sources = FakeSources(
        facts=[
            _fact("saga_x", "PROCESSING", start, payment_id="pay_slow"),
            _fact("saga_y", "AUTHORIZED", start + timedelta(hours=1), payment_id="pay_young"),
        ]
    )
    w.clock.advance(hours=2)
    report = await audit.run_audit(commands.RunAudit(), _deps(w, sources))
    assert [(v.check, v.subject_id) for v in report.violations] == [
        (Check.PAYMENT_PAST_DEADLINE, "pay_slow")
    ]


async def test_ledger_and_provider_findings_are_reported_by_check():
    w = World()
    sources = FakeSources(
        ledger_violations=[
            Violation(Check.UNBALANCED_TRANSACTION, "tr_1", "sums to 5 USD"),
            Violation(Check.EXPIRED_HOLD_UNRELEASED, "hold_1", "expired 2 h ago"),
            Violation(Check.LEDGER_BOOKING_MISSING, "payment:pay_7:capture", "no transfer"),
            Violation(Check.LEDGER_REVENUE_MISMATCH, "USD", "booked 0, fees 14900"),
        ],
        provider_violations=[Violation(Check.PROVIDER_MISMATCH, "pay_9", "provider captured")],
    )
    report = await audit.run_audit(commands.RunAudit(), _deps(w, sources))
    counts = report.counts()
    assert counts[Check.UNBALANCED_TRANSACTION] == 1
    assert counts[Check.EXPIRED_HOLD_UNRELEASED] == 1
    assert counts[Check.PROVIDER_MISMATCH] == 1
    assert counts[Check.LEDGER_BOOKING_MISSING] == 1
    assert counts[Check.LEDGER_REVENUE_MISMATCH] == 1
    assert counts[Check.BALANCE_LIMIT_BREACH] == 0
    assert _gauge(Check.PROVIDER_MISMATCH) == 1
    assert _gauge(Check.LEDGER_BOOKING_MISSING) == 1


async def test_the_reconciliations_purchase_refunds_are_in_the_report_and_on_the_wire():
    """OPS-3: what the round's reconciliation found and booked of purchases refunded at a
    provider that sends no refund event (Fatora's dashboard) is in its report, not a violation."""
    w = World()
    booked = BookedPurchaseRefund("txn_1", "fatora", 4_900, "USD", True)
    found = PurchaseRefunds(checked=5, found=1, booked=(booked,), unreadable=0)
    report = await audit.run_audit(
        commands.RunAudit(), _deps(w, FakeSources(purchase_refunds=found))
    )
    assert report.purchase_refunds == found
    assert report.violations == ()
    wire = audit_report_to_proto(report).purchase_refunds
    assert (wire.purchases_checked, wire.refunds_found, wire.purchases_unreadable) == (5, 1, 0)
    [got] = wire.refunds_booked
    assert (got.transaction_id, got.provider, got.amount_minor, got.currency) == (
        "txn_1",
        "fatora",
        4_900,
        "USD",
    )
    assert got.refunded_in_full
    # Without payments wired the round did not reconcile: the field is unset.
    unwired = await audit.run_audit(commands.RunAudit(), replace(w.deps, sources=None))
    assert not audit_report_to_proto(unwired).HasField("purchase_refunds")


async def test_a_withdrawal_stuck_in_transit_is_a_violation_of_its_own():
    """Payments names withdrawals whose money stays held past their grace (ESC-9) among its
    ledger findings, by the kind the jobs auditor's `Check` declares."""
    assert Check(WITHDRAWAL_STUCK) is Check.WITHDRAWAL_STUCK
    w = World()
    sources = FakeSources(
        ledger_violations=[
            Violation(Check(WITHDRAWAL_STUCK), "wd_1", "in_transit for 691200 s (7550 USD held)"),
            Violation(Check(WITHDRAWAL_STUCK), "wd_2", "sending for 7200 s (100 USD held)"),
        ]
    )
    report = await audit.run_audit(commands.RunAudit(), _deps(w, sources))
    assert report.counts()[Check.WITHDRAWAL_STUCK] == 2
    assert _gauge(Check.WITHDRAWAL_STUCK) == 2
    assert _gauge(Check.ESCROW_STEP_STUCK) == 0
    # Once the money moves, the next round clears the gauge.
    await audit.run_audit(commands.RunAudit(), _deps(w, FakeSources()))
    assert _gauge(Check.WITHDRAWAL_STUCK) == 0


async def test_an_unreadable_participant_is_not_a_violation():
    w = World()
    await w.post()

    async def down(saga):
        raise HirepayError("down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)

    w.payments.inspect = down  # type: ignore[method-assign]
    report = await audit.run_audit(commands.RunAudit(), _deps(w, FakeSources()))
    assert report.violations == ()


async def test_active_jobs_are_checked_with_one_batched_read_not_one_call_per_job():
    """Issue 11: a page of active jobs costs one participant read, however many jobs it has."""
    w = World()
    answers = [await w.post(key=f"k{n}") for n in range(5)]
    w.payments.state[answers[2].saga_id] = TryState.RESERVED  # money not taken for this one
    w.payments.calls.clear()
    report = await audit.run_audit(commands.RunAudit(page_size=100), _deps(w, FakeSources()))
    assert [(v.check, v.subject_id) for v in report.violations] == [
        (Check.ACTIVE_JOB_WITHOUT_PAYMENT, answers[2].job.id)
    ]
    batched = [c for c in w.payments.calls if c[0] == "inspect_many"]
    assert len(batched) == 1 and set(batched[0][1].split(",")) == {a.saga_id for a in answers}


def _step(engagement_id: str, at: datetime, state: StepState = StepState.PENDING) -> MoneyStep:
    escrow = AccountRef("engagement:" + engagement_id, "USD", AccountKind.ESCROW)
    contractor = AccountRef.user("contractor_1", "USD")
    return MoneyStep(
        engagement_id=engagement_id,
        kind=StepKind.COMPLETE,
        transfer_id=f"engagement:{engagement_id}:complete",
        legs=(Leg(escrow, contractor, 70_000),),
        created_at=at,
        updated_at=at,
        state=state,
        attempts=7,
        failure="wallet unavailable",
    )


async def test_an_escrow_step_left_pending_past_the_grace_is_reported():
    w = World()
    started = w.clock.now
    for step in (
        _step("eng_stuck", started),
        _step("eng_done", started, StepState.DONE),
        _step("eng_refused", started, StepState.REFUSED),
    ):
        w.store.steps[(step.engagement_id, step.kind.value)] = step
    # Within the grace the worker may still post it: nothing to report yet.
    report = await audit.run_audit(commands.RunAudit(), w.deps)
    assert report.violations == ()
    w.clock.advance(seconds=w.deps.config.audit_grace_seconds + 1)
    w.store.steps[("eng_new", "complete")] = _step("eng_new", w.clock.now)
    report = await audit.run_audit(commands.RunAudit(), w.deps)
    assert [(v.check, v.subject_id) for v in report.violations] == [
        (Check.ESCROW_STEP_STUCK, "engagement:eng_stuck:complete")
    ]
    assert "7 attempts: wallet unavailable" in report.violations[0].detail
    assert _gauge(Check.ESCROW_STEP_STUCK) == 1
