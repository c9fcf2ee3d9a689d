"""The auditor's `withdrawal_stuck` (OPS-3, ESC-9) on real PostgreSQL: payments' AuditLedgerBookings
names every withdrawal whose money stays held (or, returned by the bank, owed back) past its grace
— a step of ours past the step grace, a payout in transit past the transit grace — and none that
is final or still within its grace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.payouts import ProviderOutcome, Withdrawal, WithdrawalState
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.audit import audit_ledger_bookings
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeLedger, FakeProvider

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _withdrawal(
    wid: str,
    state: WithdrawalState,
    age: timedelta,
    outcome: ProviderOutcome = ProviderOutcome.NONE,
) -> Withdrawal:
    changed = NOW - age
    return Withdrawal(
        id=wid,
        user_id=f"pro-{wid}",
        request_id=f"r-{wid}",
        amount_minor=7_550,
        currency="USD",
        provider="stripe",
        provider_account_id="acct_1",
        state=state,
        created_at=changed - HOUR,
        updated_at=changed,
        next_attempt_at=changed,
        outcome=outcome,
        last_error="UNAVAILABLE: wallet down" if state is WithdrawalState.SENDING else "",
    )


async def test_withdrawals_held_past_their_grace_are_named(sessions) -> None:
    rows = [
        _withdrawal("wd_req_old", WithdrawalState.REQUESTED, HOUR),
        _withdrawal("wd_send_old", WithdrawalState.SENDING, 2 * HOUR),
        _withdrawal("wd_send_new", WithdrawalState.SENDING, timedelta(minutes=5)),
        _withdrawal("wd_transit_2d", WithdrawalState.IN_TRANSIT, 48 * HOUR),
        _withdrawal("wd_transit_8d", WithdrawalState.IN_TRANSIT, 8 * 24 * HOUR),
        # The bank answered but the ledger has not followed for an hour: our step, stuck.
        _withdrawal("wd_paid_unposted", WithdrawalState.IN_TRANSIT, HOUR, ProviderOutcome.PAID),
        _withdrawal("wd_returned_owed", WithdrawalState.PAID, HOUR, ProviderOutcome.RETURNED),
        _withdrawal("wd_paid", WithdrawalState.PAID, 30 * 24 * HOUR, ProviderOutcome.PAID),
        _withdrawal("wd_failed", WithdrawalState.FAILED, 30 * 24 * HOUR, ProviderOutcome.FAILED),
        _withdrawal(
            "wd_returned", WithdrawalState.RETURNED, 30 * 24 * HOUR, ProviderOutcome.RETURNED
        ),
    ]
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        for w in rows:
            assert await uow.payouts.add(w)
        await uow.commit()
    deps = Deps(
        SqlPaymentsUnitOfWork(sessions),
        ProviderRegistry([FakeProvider()]),
        Policy(withdrawal_step_grace_seconds=900, withdrawal_transit_grace_seconds=7 * 24 * 3600),
        clock=lambda: NOW,
        ledger=FakeLedger(),
    )
    audit = await audit_ledger_bookings(0, deps)
    stuck = {f.subject_id: f.detail for f in audit.findings if f.kind == "withdrawal_stuck"}
    assert sorted(stuck) == [
        "wd_paid_unposted",
        "wd_req_old",
        "wd_returned_owed",
        "wd_send_old",
        "wd_transit_8d",
    ]
    assert stuck["wd_send_old"] == "sending for 7200 s (7550 USD held): UNAVAILABLE: wallet down"
    assert stuck["wd_returned_owed"] == "paid/returned for 3600 s (7550 USD held and owed back)"
    assert stuck["wd_transit_8d"].startswith("in_transit for 691200 s")
    # The longest unchanged first, and the list bounded: the worst are never crowded out.
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        oldest = await uow.payouts.unfinished_since(NOW, 2)
    assert [w.id for w in oldest] == ["wd_transit_8d", "wd_transit_2d"]
