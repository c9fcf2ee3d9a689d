"""Refunds made at a provider that sends no refund event (Fatora: a refund from its dashboard),
found by the provider reconciliation (OPS-3) and booked through the webhook's own core
(provider_refunds.book_provider_refunds; ESC-1 every cent, API-4, PAY-15), against the in-memory
fakes: recorded once, the payment REFUNDED, its `payment.refunded` settlement event published
(jobs ends the posting), revenue back to clearing on the fake ledger, the audit trail saying the
reconciliation found it; a provider whose refunds arrive by event is left to them (a property of
the provider, not its name); a refund of Hirepay's own still unanswered is never booked twice."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from payments.domain import commands, errors
from payments.domain.model import PaymentState
from payments.domain.provider import InvalidRequest, OutcomeUnknown, ProviderRefund, RefundState
from payments.domain.reconciliation import MismatchKind
from payments.domain.refunds import RefundStatus
from payments.service_layer import metrics
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit, credits, refund
from payments.service_layer.handlers.poller import poll_due
from payments.service_layer.handlers.provider_refunds import (
    RECONCILIATION,
    book_provider_refunds,
)
from payments.service_layer.providers import ProviderRegistry
from tests.payments.unit.test_provider_refunds import (
    FEE,
    _intent,
    _moved,
    _refunded_events,
    _state,
)
from tests.payments.unit.test_provider_refunds import _captured as _captured_fee
from tests.support.payments_fakes import Clock, FakeLedger, FakeProvider, FakeUnitOfWork

CLEARING, PLATFORM = ("provider:fatora", "USD"), ("platform", "USD")


class OneRefundProvider(FakeProvider):
    """Fatora-like: no refund event; one whole refund per payment, named after the payment
    (adapters.fatora_provider: `<order>:refund`) and carrying none of Hirepay's metadata; asked
    again once refunded, it answers the refund made (verify's `refund_status`)."""

    name = "fatora"
    refunds_by_event = False

    async def refund(
        self,
        intent_id: str,
        amount_minor: int,
        reason: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderRefund:
        def run() -> ProviderRefund:
            whole = self.intents[intent_id].amount_received
            if amount_minor != whole:
                raise InvalidRequest("only the whole payment", code="partial_refund")
            made = self.refunds.get(intent_id)
            if made:
                return made[0]
            return self._refund_whole(intent_id)

        return await self._idempotent("refund", idempotency_key, run)

    def _refund_whole(self, intent_id: str) -> ProviderRefund:
        whole = self.intents[intent_id].amount_received
        self.refunded[intent_id] = whole
        made = ProviderRefund(f"{intent_id}:refund", RefundState.SUCCEEDED, whole)
        self.refunds[intent_id] = [made]
        return made

    def refund_at_dashboard(self, intent_id: str) -> str:
        """The merchant refunds the payment in Fatora's dashboard: nothing tells Hirepay."""
        assert not self.refunds.get(intent_id), "Fatora refunds a payment once"
        return self._refund_whole(intent_id).id


@pytest.fixture
def deps() -> Deps:
    return _deps(OneRefundProvider())


def _deps(provider: FakeProvider) -> Deps:
    return Deps(
        FakeUnitOfWork(),
        ProviderRegistry([provider]),
        Policy(grant_retry_base=1, grant_retry_max=4, provider_timeout=1),
        clock=Clock(),
        ledger=FakeLedger(),
    )


def _provider(deps: Deps) -> FakeProvider:
    [name] = deps.providers.names
    provider = deps.providers.of_existing(name)
    assert isinstance(provider, FakeProvider)
    return provider


async def _captured(deps: Deps, gtx: str) -> tuple[str, str]:
    """A posting fee captured (its booking posted): (payment id, provider payment id)."""
    payment_id = await _captured_fee(deps, gtx)
    return payment_id, await _intent(deps, payment_id)


async def _round(deps: Deps) -> audit.Reconciliation:
    assert isinstance(deps.clock, Clock)
    deps.clock.advance(60)
    return await audit.reconcile_provider(commands.ReconcileProvider(), lambda: deps)


def _count(provider: str, result: str) -> float:
    return metrics.PROVIDER_REFUNDS.labels(provider, result)._value.get()


async def test_a_dashboard_refund_found_by_the_reconciliation_is_booked_once(deps: Deps) -> None:
    pid, pi = await _captured(deps, "g1")
    assert _moved(deps) == {CLEARING: -FEE, PLATFORM: FEE}
    refund_id = _provider(deps).refund_at_dashboard(pi)
    reconciled = _count("fatora", "reconciled")

    found = await _round(deps)

    # Booked, so no longer named: the finding is applied, not only reported.
    assert (found.checked, found.mismatches) == (1, [])
    p, refunds, trail = await _state(deps, pid)
    assert (p.state, p.refunded_minor, p.refundable_minor) == (PaymentState.REFUNDED, FEE, 0)
    [ref] = refunds
    assert (ref.status, ref.request_id, ref.provider_refund_id, ref.amount_minor) == (
        RefundStatus.SUCCEEDED,
        f"provider:{refund_id}",
        refund_id,
        FEE,
    )
    assert _refunded_events(deps, pid) == ["REFUNDED"]  # jobs hears it and ends the posting
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}  # revenue back to clearing: captured fees minus refunds = 0
    booked = [e for e in trail if e.action == "refund" and e.actor == "reconciliation"]
    assert [e.details["found_by"] for e in booked] == ["reconciliation"]
    assert "found by the reconciliation" in booked[0].reason
    assert any(e.action == "reconcile" and "sends no refund event" in e.reason for e in trail)
    assert _count("fatora", "reconciled") == reconciled + 1

    # The next rounds find it recorded: nothing more booked, published or named.
    again = await _round(deps)
    assert (again.checked, again.mismatches) == (1, [])
    _, refunds, _ = await _state(deps, pid)
    assert len(refunds) == 1 and _refunded_events(deps, pid) == ["REFUNDED"]
    assert _count("fatora", "reconciled") == reconciled + 1
    # And Hirepay refunds nothing more of it.
    with pytest.raises(errors.RefundExceedsCaptured):
        await refund(commands.Refund("r-1", pid, 0), deps, actor="admin")
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}


async def test_a_provider_whose_refunds_arrive_by_event_is_left_to_its_events() -> None:
    """The same finding at a provider that sends refund events (Stripe) is reported only: its
    event books it (and would book it once more, were the reconciliation to as well)."""
    deps = _deps(FakeProvider())
    pid, pi = await _captured(deps, "g2")
    refund_id = _provider(deps).refund_outside(pi, FEE)
    found = await _round(deps)
    assert [(m.kind, m.detail) for m in found.mismatches] == [
        (
            MismatchKind.REFUND,
            f"provider refund {refund_id} of {FEE} (succeeded) has no local record",
        )
    ]
    p, refunds, _ = await _state(deps, pid)
    assert (p.state, refunds) == (PaymentState.CAPTURED, [])
    assert _refunded_events(deps, pid) == []


async def test_hirepays_own_refund_unanswered_is_never_booked_as_the_providers(
    deps: Deps,
) -> None:
    """Fatora's refund carries no id of ours: while Hirepay's own refund of the payment is asked
    and not answered, the refund listed may be that very one. The core leaves it (nothing
    written); the refund's own answer records it, once."""
    pid, pi = await _captured(deps, "g3")
    provider = _provider(deps)
    provider.script = [("after", OutcomeUnknown("timed out", timeout=True))]
    with pytest.raises(errors.PaymentTimeout):
        await refund(commands.Refund("r-1", pid, 0), deps, actor="admin")
    _, [ours], _ = await _state(deps, pid)
    assert (ours.status, ours.provider_refund_id) == (RefundStatus.PENDING, "")
    listed = await provider.list_refunds(pi)
    assert [r.id for r in listed] == [f"{pi}:refund"]

    left = await book_provider_refunds(deps, pid, listed, RECONCILIATION)
    assert not left.applied
    assert (await _round(deps)).mismatches == []  # in flight: not judged this round
    _, refunds, _ = await _state(deps, pid)
    assert [r.id for r in refunds] == [ours.id]

    assert isinstance(deps.clock, Clock)
    deps.clock.advance(3600)
    await poll_due(deps)  # the refund's answer, replayed: succeeded, recorded as Hirepay's
    p, refunds, _ = await _state(deps, pid)
    assert [(r.id, r.status, r.provider_refund_id) for r in refunds] == [
        (ours.id, RefundStatus.SUCCEEDED, f"{pi}:refund")
    ]
    assert (p.state, p.refunded_minor) == (PaymentState.REFUNDED, FEE)
    assert (await _round(deps)).mismatches == []
    _, refunds, _ = await _state(deps, pid)
    assert len(refunds) == 1
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}
