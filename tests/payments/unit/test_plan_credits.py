"""Plan purchases on the ledger (CR-1..3) against in-memory fakes: the catalogue, credits issued
once whatever the repeats and wallet failures, nothing for a failed payment, a refund revoking
only unused credits, and the status a company sees (max posts, expiry, credits kept)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hirepay_platform.errors import Unavailable
from payments.domain import commands, errors
from payments.domain.credits import CANDIDATE_CREDIT, JOB_CREDIT, GrantKind, GrantStatus
from payments.domain.plans import DEFAULT_PLANS, find_plan, parse_plans
from payments.domain.provider import (
    CheckoutState,
    ProviderCheckout,
    ProviderErrorInfo,
    ProviderPayment,
    ProviderStatus,
)
from payments.domain.transactions import TxnStatus, UserType
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import checkouts, credits, subscriptions
from tests.support.payments_fakes import (
    FakeLedger,
    FakeProvider,
    ledger_deps,
)

COMPANY = "co-1"


@pytest.fixture
def deps() -> Deps:
    return ledger_deps(plans=DEFAULT_PLANS)


def provider(deps: Deps) -> FakeProvider:
    found = deps.providers.default
    assert isinstance(found, FakeProvider)
    return found


def ledger(deps: Deps) -> FakeLedger:
    assert isinstance(deps.ledger, FakeLedger)
    return deps.ledger


def buy(plan: str, request_id: str = "r1") -> commands.Subscribe:
    return commands.Subscribe(
        request_id=request_id,
        user_type=UserType.COMPANY,
        user_id=COMPANY,
        email="hr@co.test",
        plan=plan,
        payment_method="STRIPE",
        return_url="https://app.example/ok",
        cancel_url="https://app.example/cancel",
    )


async def settle(deps: Deps, txn_id: str, *, paid: bool = True) -> None:
    """The provider's view of the checkout arrives (a webhook or the sweep), applied once."""
    async with deps.uow as uow:
        txn = await uow.transactions.get(txn_id)
        assert txn is not None
        intent_id = f"pi_{txn_id}"
        error = None if paid else ProviderErrorInfo("card_declined", "generic_decline", "no")
        intent = ProviderPayment(
            intent_id,
            ProviderStatus.CAPTURED if paid else ProviderStatus.FAILED,
            txn.amount_minor,
            txn.currency,
            amount_received=txn.amount_minor if paid else 0,
            last_error=error,
        )
        provider(deps).intents[intent_id] = intent
        session = ProviderCheckout(
            txn.provider_transaction_id,
            CheckoutState.COMPLETE if paid else CheckoutState.OPEN,
            paid,
            "",
            None,
            payment_id=intent_id,
        )
        await checkouts.apply_to_transaction(uow, deps, txn_id, session, intent, actor="webhook")
        await uow.commit()


def test_the_catalogue_has_seed_003_plans_and_a_free_launchpad() -> None:
    swift = find_plan(DEFAULT_PLANS, "swift_hire", UserType.COMPANY)
    assert (swift.job_credits, swift.candidate_credits) == (2_500, 50)
    growth = find_plan(DEFAULT_PLANS, "GROWTH_ENGINE", UserType.COMPANY)
    assert (growth.job_credits, growth.candidate_credits) == (7_500, 300)
    elite = find_plan(DEFAULT_PLANS, "ENTERPRISE_ELITE", UserType.COMPANY)
    assert (elite.job_credits, elite.candidate_credits) == (999_999, 1_500)
    free = find_plan(DEFAULT_PLANS, "FREE_LAUNCHPAD", UserType.COMPANY)
    assert free.free and free.job_credits == 0 and not swift.free
    parsed = parse_plans(
        '[{"code": "PRO", "user_type": "COMPANY", "prices": {"USD": 100}, "period_days": 30,'
        ' "job_credits": 1000, "candidate_credits": 5}]'
    )
    assert (parsed[0].job_credits, parsed[0].candidate_credits) == (1000, 5)
    for bad in (
        '[{"code":"X","user_type":"COMPANY","prices":{"USD":1},"period_days":1,"job_credits":-1}]',
        '[{"code":"X","user_type":"COMPANY","prices":{"USD":0,"EUR":5},"period_days":1}]',
    ):
        with pytest.raises(ValueError):
            parse_plans(bad)


async def test_a_free_plan_cannot_be_bought(deps: Deps) -> None:
    with pytest.raises(errors.ValidationError):
        await subscriptions.subscribe(buy("FREE_LAUNCHPAD"), deps)


async def test_credits_are_issued_once_whatever_the_repeats_and_wallet_failures(
    deps: Deps,
) -> None:
    txn = await subscriptions.subscribe(buy("SWIFT_HIRE"), deps)
    assert txn.status is TxnStatus.PENDING and txn.metadata["job_credits"] == "2500"
    ledger(deps).fail = [Unavailable("wallet down")]
    await settle(deps, txn.id)
    await settle(deps, txn.id)  # the webhook delivered again
    # The wallet was down: the grant is kept and retried later; nothing is issued yet.
    assert await credits.settle_due_grants(deps) == 1
    assert ledger(deps).balances == {}
    grants = await credits.transaction_grants(txn.id, deps)
    assert [(g.kind, g.done) for g in grants] == [(GrantKind.ISSUE, False)]
    deps.clock.now += timedelta(seconds=5)  # type: ignore[attr-defined]
    assert await credits.settle_due_grants(deps) == 1
    assert await credits.settle_due_grants(deps) == 0
    assert ledger(deps).balances == {
        (COMPANY, JOB_CREDIT): 2_500,
        (COMPANY, CANDIDATE_CREDIT): 50,
        ("platform", "USD"): 4_900,
    }
    # A crash after the wallet's answer: the same transfer again moves nothing.
    async with deps.uow as uow:
        grant = await uow.credit_grants.get(f"issue:{txn.id}")
        assert grant is not None and grant.status is GrantStatus.DONE
        grant.status = GrantStatus.PENDING
        await uow.credit_grants.save(grant)
        await uow.commit()
    await credits.settle_due_grants(deps)
    assert ledger(deps).balances[(COMPANY, JOB_CREDIT)] == 2_500
    status = await credits.subscription_status(UserType.COMPANY, COMPANY, deps)
    assert (status.job_credits, status.candidate_credits, status.max_job_posts) == (2_500, 50, 5)
    assert status.active is not None and status.active.id == txn.id


async def test_a_failed_payment_issues_nothing(deps: Deps) -> None:
    txn = await subscriptions.subscribe(buy("GROWTH_ENGINE"), deps)
    await settle(deps, txn.id, paid=False)
    assert (await subscriptions.get_transaction(txn.id, deps)).status is TxnStatus.FAILED
    assert await credits.settle_due_grants(deps) == 0
    assert ledger(deps).balances == {}
    status = await credits.subscription_status(UserType.COMPANY, COMPANY, deps)
    assert status.active is None and status.max_job_posts == 0


async def test_purchases_accumulate_and_an_expired_subscription_keeps_its_credits(
    deps: Deps,
) -> None:
    first = await subscriptions.subscribe(buy("SWIFT_HIRE", "r1"), deps)
    await settle(deps, first.id)
    await credits.settle_due_grants(deps)
    with pytest.raises(errors.AlreadySubscribed):
        await subscriptions.subscribe(buy("GROWTH_ENGINE", "r2"), deps)
    deps.clock.now += timedelta(days=31)  # type: ignore[attr-defined]
    expired = await credits.subscription_status(UserType.COMPANY, COMPANY, deps)
    assert expired.active is None and expired.job_credits == 2_500
    second = await subscriptions.subscribe(buy("GROWTH_ENGINE", "r2"), deps)
    await settle(deps, second.id)
    await credits.settle_due_grants(deps)
    status = await credits.subscription_status(UserType.COMPANY, COMPANY, deps)
    assert (status.job_credits, status.candidate_credits) == (10_000, 350)
    assert status.max_job_posts == 20 and status.active is not None


async def test_a_refund_revokes_the_unused_credits_and_reports_the_used(deps: Deps) -> None:
    txn = await subscriptions.subscribe(buy("SWIFT_HIRE"), deps)
    await settle(deps, txn.id)
    await credits.settle_due_grants(deps)
    ledger(deps).spend(COMPANY, JOB_CREDIT, 1_000)  # two posts
    cmd = commands.RefundTransaction("rf-1", txn.id, "requested_by_customer", "admin-1")
    refunded = await credits.refund_transaction(cmd, deps)
    assert refunded.transaction.status is TxnStatus.REFUNDED
    assert refunded.grant is not None and refunded.grant.done
    assert refunded.grant.amounts == {JOB_CREDIT: 1_500, CANDIDATE_CREDIT: 50, "USD": 4_900}
    assert refunded.grant.used == {JOB_CREDIT: 1_000, CANDIDATE_CREDIT: 0}
    assert ledger(deps).balances == {
        (COMPANY, JOB_CREDIT): 0,
        (COMPANY, CANDIDATE_CREDIT): 0,
        ("platform", "USD"): 0,
    }
    again = await credits.refund_transaction(cmd, deps)  # a repeat refunds nothing more
    assert again.grant == refunded.grant
    assert provider(deps).refunded == {f"pi_{txn.id}": 4_900}  # type: ignore[attr-defined]
    status = await credits.subscription_status(UserType.COMPANY, COMPANY, deps)
    assert status.active is None
    types = [e.type.value for e in deps.uow.committed.outbox]  # type: ignore[attr-defined]
    assert types.count("transaction.refunded") == 1


async def test_only_a_paid_purchase_can_be_refunded(deps: Deps) -> None:
    txn = await subscriptions.subscribe(buy("SWIFT_HIRE"), deps)
    with pytest.raises(errors.PaymentNotRefundable):
        await credits.refund_transaction(commands.RefundTransaction("rf", txn.id), deps)
    with pytest.raises(errors.TransactionNotFound):
        await credits.refund_transaction(commands.RefundTransaction("rf", "txn_nope"), deps)


async def test_a_refund_before_the_issuance_is_booked_waits_for_it(deps: Deps) -> None:
    txn = await subscriptions.subscribe(buy("SWIFT_HIRE"), deps)
    await settle(deps, txn.id)
    ledger(deps).fail = [Unavailable("wallet down")] * 3
    cmd = commands.RefundTransaction("rf-1", txn.id, "requested_by_customer", "admin-1")
    refunded = await credits.refund_transaction(cmd, deps)
    # Neither the issuance nor the revocation could be booked: both stay owed, in order.
    assert refunded.transaction.status is TxnStatus.REFUNDED
    assert refunded.grant is not None and not refunded.grant.done
    assert ledger(deps).balances == {}
    for _ in range(4):
        deps.clock.now += timedelta(seconds=10)  # type: ignore[attr-defined]
        await credits.settle_due_grants(deps)
    # The issuance was booked first, then all of it revoked: nothing leaks to the company.
    assert ledger(deps).balances == {
        (COMPANY, JOB_CREDIT): 0,
        (COMPANY, CANDIDATE_CREDIT): 0,
        ("platform", "USD"): 0,
    }
    grants = {g.kind: g for g in await credits.transaction_grants(txn.id, deps)}
    assert grants[GrantKind.REVOKE].done and grants[GrantKind.ISSUE].done
    assert grants[GrantKind.REVOKE].used == {JOB_CREDIT: 0, CANDIDATE_CREDIT: 0}
