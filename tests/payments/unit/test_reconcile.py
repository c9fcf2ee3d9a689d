"""ReconcileProvider (OPS-3, issue 11 §3) through the provider registry (issue 8): each payment is
compared with the provider that made it, never the current default."""

from __future__ import annotations

from dataclasses import replace

from hirepay_platform.tcc import TccBranch
from payments.domain import commands
from payments.domain.model import Method
from payments.domain.provider import ProviderStatus
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


def _deps(uow: FakeUnitOfWork, providers: ProviderRegistry) -> Deps:
    return Deps(uow, providers, Policy(provider_timeout=1), clock=Clock())


async def test_each_payment_is_compared_with_the_provider_that_made_it() -> None:
    uow, stripe, other = FakeUnitOfWork(), FakeProvider(), OtherProvider()
    deps = _deps(uow, ProviderRegistry([stripe, other], default="stripe"))
    cmd = commands.Authorize(
        request_id="r1",
        branch=TccBranch("gtx-1", "payment"),
        owner_id="company-1",
        amount_minor=2500,
        currency="USD",
        method=Method.CARD,
        payment_method_token="pm_card_visa",
        metadata={"subsystem": "jobs"},
    )
    payment = (await handlers.authorize(cmd, deps)).payment
    assert payment.provider == "stripe"
    clean = await audit.reconcile_provider(commands.ReconcileProvider(), deps)
    assert clean.checked == 1 and clean.mismatches == []

    # Captured behind our back at Stripe; then a restart with another default provider.
    pi = stripe.intents[payment.provider_payment_id]
    stripe.intents[pi.id] = replace(
        pi, status=ProviderStatus.CAPTURED, amount_received=2500, amount_capturable=0
    )
    restarted = _deps(uow, ProviderRegistry([stripe, other], default="paypal"))
    found = await audit.reconcile_provider(commands.ReconcileProvider(), restarted)
    assert found.checked == 1
    assert [(m.payment_id, m.detail) for m in found.mismatches] == [
        (payment.id, "provider captured 2500, local state AUTHORIZED")
    ]
    assert other.calls == []  # the default was never asked about a payment it did not make


async def test_a_payment_whose_provider_is_not_configured_is_skipped_not_misreported() -> None:
    uow, stripe = FakeUnitOfWork(), FakeProvider()
    deps = _deps(uow, ProviderRegistry([stripe]))
    cmd = commands.Authorize(
        request_id="r1",
        branch=TccBranch("gtx-1", "payment"),
        owner_id="company-1",
        amount_minor=2500,
        currency="USD",
        method=Method.CARD,
        payment_method_token="pm_card_visa",
        metadata={"subsystem": "jobs"},
    )
    await handlers.authorize(cmd, deps)
    without_stripe = _deps(uow, ProviderRegistry([OtherProvider()]))
    result = await audit.reconcile_provider(commands.ReconcileProvider(), without_stripe)
    assert result.checked == 0 and result.mismatches == []


def test_only_jobs_may_call_the_auditors_reads() -> None:
    """Issue 12: the auditor is a jobs worker; the edge never reads every payment."""
    for rpc in ("ListPayments", "ReconcileProvider"):
        assert ACCESS.allows("jobs", rpc)
        assert not ACCESS.allows("gateway", rpc)
        assert not ACCESS.allows("wallet", rpc)
