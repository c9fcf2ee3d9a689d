"""No provider call is made while a unit of work is open (issue 13): a transaction, and the pooled
connection under it, held across a provider round trip would cap the payments in flight at the
pool's size whenever the provider is slow."""

from __future__ import annotations

from typing import Any

import pytest

from hirepay_platform.tcc import TccBranch
from payments.domain import commands
from payments.domain.provider import OutcomeUnknown
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, FakeProvider, FakeUnitOfWork
from tests.support.payments_helpers import authorize_command


class WatchedUnitOfWork(FakeUnitOfWork):
    """Counts the units of work open right now."""

    def __init__(self) -> None:
        super().__init__()
        self.open = 0

    async def __aenter__(self) -> WatchedUnitOfWork:
        self.open += 1
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.open -= 1
        await super().__aexit__(*exc_info)


class WatchingProvider(FakeProvider):
    """Notes every call made while a unit of work was open."""

    def __init__(self, uow: WatchedUnitOfWork) -> None:
        super().__init__()
        self.uow = uow
        self.inside: list[str] = []

    async def _idempotent(self, op: str, key: str, fn: Any) -> Any:
        if self.uow.open:
            self.inside.append(op)
        return await super()._idempotent(op, key, fn)


@pytest.fixture
def deps() -> Deps:
    uow = WatchedUnitOfWork()
    return Deps(
        uow,
        ProviderRegistry([WatchingProvider(uow)]),
        Policy(provider_timeout=1, poll_base=1, poll_max=4),
        clock=Clock(),
    )


async def test_authorize_capture_refund_void_and_the_poller_call_the_provider_outside(
    deps: Deps,
) -> None:
    provider: WatchingProvider = deps.providers.default  # type: ignore[assignment]
    # The posting's path: authorize, then capture; then a refund.
    await handlers.authorize(authorize_command("gtx-1"), deps)
    captured = await handlers.capture(commands.Capture("c1", TccBranch("gtx-1", "payment")), deps)
    assert captured.payment is not None
    await handlers.refund(commands.Refund("r1", captured.payment.id, 500), deps)
    # A declined card, and a void.
    with pytest.raises(Exception):  # noqa: B017 - the decline's own error is not the point here
        await handlers.authorize(
            authorize_command("gtx-2", payment_method_token="pm_card_chargeDeclined"), deps
        )
    await handlers.authorize(authorize_command("gtx-3"), deps)
    await handlers.void(commands.Void("v3", TccBranch("gtx-3", "payment"), "gave up"), deps)
    # An unknown outcome resolved by the poller.
    provider.script = [("after", OutcomeUnknown("slow", timeout=True))]
    with pytest.raises(Exception):  # noqa: B017 - PaymentTimeout; the poller heals it below
        await handlers.authorize(authorize_command("gtx-4"), deps)
    for _ in range(3):
        deps.clock.advance(deps.config.lease_seconds + 5)  # type: ignore[attr-defined]
        await handlers.poll_due(deps)
    ops = [op for op, _ in provider.calls]
    # Every kind of call happened (the poller's replay of the lost authorization included).
    assert {"authorize", "capture", "refund", "cancel"} <= set(ops) and ops.count("authorize") >= 5
    assert provider.inside == []
