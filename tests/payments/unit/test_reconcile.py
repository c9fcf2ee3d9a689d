"""ReconcileProvider (OPS-3, issue 11 §3) through the provider registry (issue 8): each payment is
compared with the provider that made it, never the current default."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from hirepay_platform.errors import ValidationError
from hirepay_platform.tcc import TccBranch
from payments.domain import commands
from payments.domain.model import Method
from payments.domain.provider import ProviderRefund, ProviderStatus, RefundState
from payments.domain.reconciliation import MismatchKind, refund_mismatches, refunds_in_flight
from payments.domain.refunds import Refund, RefundStatus
from payments.entrypoints.main import ACCESS
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, FakeProvider, FakeUnitOfWork


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
