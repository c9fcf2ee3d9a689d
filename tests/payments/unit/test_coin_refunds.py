"""A refund of a payment that issued coins takes those coins back (ESC-1, ESC-3): against the
in-memory fakes, every balance asserted — cash back and coins kept would create money. The coins
are held before the provider is asked, so spent or held coins refuse the refund with nothing sent
(COINS_NOT_AVAILABLE, PAY-11); a refused refund gives the coins back; a replay or a second refund
takes nothing twice; a wallet outage after the provider's refund is finished by the poller."""

from __future__ import annotations

import pytest

from hirepay_platform.errors import Unavailable, ValidationError
from hirepay_platform.tcc import TccBranch
from payments.domain import commands, errors
from payments.domain.model import Method
from payments.domain.provider import InvalidRequest
from payments.domain.refunds import CoinsState, RefundStatus
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import authorize, capture, credits, refund
from payments.service_layer.handlers.poller import poll_due
from tests.support.payments_fakes import (
    Clock,
    FakeLedger,
    FakeProvider,
    ledger_deps,
)

BUYER = "co-1"
PAID = 14_900  # $149.00 for 14,900 coins


@pytest.fixture
def deps() -> Deps:
    return ledger_deps()


def _wallet(deps: Deps) -> FakeLedger:
    assert isinstance(deps.ledger, FakeLedger)
    return deps.ledger


def _provider(deps: Deps) -> FakeProvider:
    provider = deps.providers.of_existing("stripe")
    assert isinstance(provider, FakeProvider)
    return provider


async def _bought(deps: Deps, gtx: str, coins: int = PAID) -> str:
    """A captured coin purchase whose coins are on the buyer's wallet."""
    branch = TccBranch(gtx, "payment")
    metadata = {"type": "coin_purchase", "purpose": "coin_purchase", "coins": str(coins)}
    await authorize(
        commands.Authorize(
            f"a-{gtx}", branch, BUYER, PAID, "USD", Method.CARD, "pm_card_visa", metadata=metadata
        ),
        deps,
    )
    result = await capture(commands.Capture(f"c-{gtx}", branch), deps)
    assert result.payment is not None
    await credits.settle_due_grants(deps)
    assert _wallet(deps).balances[(BUYER, "COIN")] == coins
    return result.payment.id


def _cash_and_coins(deps: Deps) -> dict[tuple[str, str], int]:
    """Every balance that moved (the fake keys accounts by owner and unit)."""
    return {k: v for k, v in _wallet(deps).balances.items() if v}


async def test_a_full_refund_takes_every_coin_back_once(deps: Deps) -> None:
    pid = await _bought(deps, "g1")
    done = await refund(commands.Refund("r-1", pid, 0), deps)
    assert done.refund.status is RefundStatus.SUCCEEDED
    assert (done.refund.coins, done.refund.coins_state) == (PAID, CoinsState.TAKEN)
    again = await refund(commands.Refund("r-1", pid, 0), deps)  # a replay takes nothing more
    assert again.replayed and again.refund.id == done.refund.id
    with pytest.raises(errors.RefundExceedsCaptured):
        await refund(commands.Refund("r-2", pid, 0), deps)  # a second refund: nothing left
    await credits.settle_due_grants(deps)
    # Cash back to the provider's clearing, coins back to issuance: everything nets to zero.
    assert _cash_and_coins(deps) == {}
    assert len(_provider(deps).refunds[next(iter(_provider(deps).refunds))]) == 1


async def test_a_partial_refund_takes_back_its_share_of_the_coins(deps: Deps) -> None:
    pid = await _bought(deps, "g2")
    done = await refund(commands.Refund("r-1", pid, 4_900), deps)
    assert done.refund.coins == 4_900
    await credits.settle_due_grants(deps)
    assert _cash_and_coins(deps) == {
        ("provider:stripe", "USD"): -10_000,
        ("platform", "USD"): 10_000,  # the cash backing of the coins still out
        (BUYER, "COIN"): 10_000,
        ("platform", "COIN"): -10_000,
    }


async def test_a_refund_that_would_take_back_a_fraction_of_a_coin_is_refused(deps: Deps) -> None:
    pid = await _bought(deps, "g3", coins=1_000)  # 1,000 coins for $149.00
    with pytest.raises(ValidationError):
        await refund(commands.Refund("r-1", pid, 4_900), deps)
    async with deps.uow as uow:
        payment = await uow.payments.get(pid)
    assert payment is not None and payment.refunded_minor == 0
    assert _wallet(deps).coins_available(BUYER) == 1_000


async def test_spent_coins_refuse_the_refund_before_the_provider_is_asked(deps: Deps) -> None:
    pid = await _bought(deps, "g4")
    _wallet(deps).spend(BUYER, "COIN", 10_001)  # 4,899 coins left: not enough for $49.00
    with pytest.raises(errors.CoinsNotAvailable) as refused:
        await refund(commands.Refund("r-1", pid, 4_900), deps)
    assert refused.value.reason == "COINS_NOT_AVAILABLE"
    assert refused.value.metadata == {"payment_id": pid, "coins": "4900"}
    with pytest.raises(errors.CoinsNotAvailable):  # its replay answers the same
        await refund(commands.Refund("r-1", pid, 4_900), deps)
    assert _provider(deps).refunds == {}
    async with deps.uow as uow:
        payment = await uow.payments.get(pid)
        audit = [e.reason for e in await uow.audit.list_for_payment(pid)]
    assert payment is not None and payment.refunded_minor == 0 and payment.refundable_minor == PAID
    assert any("not available: refused" in reason for reason in audit)
    # What is still there can be refunded: $48.99 for 4,899 coins.
    done = await refund(commands.Refund("r-2", pid, 4_899), deps)
    assert done.refund.status is RefundStatus.SUCCEEDED
    assert _wallet(deps).balances[(BUYER, "COIN")] == 0


async def test_coins_held_by_a_refund_cannot_be_held_by_a_second_one(deps: Deps) -> None:
    """Two refunds of one purchase whose coins are partly spent: the first holds what is there,
    the second finds nothing left and is refused (the hold reduces what is available)."""
    pid = await _bought(deps, "g5")
    _wallet(deps).spend(BUYER, "COIN", 7_000)  # 7,900 coins left
    provider = _provider(deps)
    provider.script = [InvalidRequest("try later", code="rate_limit")]  # the first: refused
    with pytest.raises(errors.PaymentNotRefundable):
        await refund(commands.Refund("r-1", pid, 7_900), deps)
    # A refused refund released its hold: the coins are the buyer's again.
    assert _wallet(deps).coins_available(BUYER) == 7_900
    done = await refund(commands.Refund("r-2", pid, 7_900), deps)
    assert done.refund.coins_state is CoinsState.TAKEN
    with pytest.raises(errors.CoinsNotAvailable):
        await refund(commands.Refund("r-3", pid, 100), deps)
    assert _wallet(deps).balances[(BUYER, "COIN")] == 0


async def test_a_wallet_outage_after_the_provider_refunded_is_finished_by_the_poller(
    deps: Deps,
) -> None:
    pid = await _bought(deps, "g6")
    wallet = _wallet(deps)
    original = wallet.take_coins

    async def down(refund_: object) -> None:
        raise Unavailable("wallet down")

    wallet.take_coins = down  # type: ignore[method-assign]
    done = await refund(commands.Refund("r-1", pid, 0), deps)
    assert done.refund.status is RefundStatus.SUCCEEDED
    assert done.refund.coins_state is CoinsState.HELD  # owed: the coins are still held
    assert wallet.coins_available(BUYER) == 0  # ... so they cannot be spent meanwhile
    wallet.take_coins = original  # type: ignore[method-assign]
    clock = deps.clock
    assert isinstance(clock, Clock)
    clock.advance(120)
    await poll_due(deps)
    async with deps.uow as uow:
        stored = await uow.refunds.get(done.refund.id)
    assert stored is not None and stored.coins_state is CoinsState.TAKEN
    await credits.settle_due_grants(deps)
    assert _cash_and_coins(deps) == {}
    clock.advance(120)
    assert await poll_due(deps) == 0  # nothing owed any more


async def test_a_wallet_outage_before_the_hold_sends_nothing_until_the_coins_are_held(
    deps: Deps,
) -> None:
    pid = await _bought(deps, "g7")
    _wallet(deps).fail = [Unavailable("wallet down")]
    with pytest.raises(Unavailable):
        await refund(commands.Refund("r-1", pid, 0), deps)
    assert _provider(deps).refunds == {}
    with pytest.raises(Unavailable):  # its replay: still being resolved
        await refund(commands.Refund("r-1", pid, 0), deps)
    clock = deps.clock
    assert isinstance(clock, Clock)
    clock.advance(120)
    await poll_due(deps)
    done = await refund(commands.Refund("r-1", pid, 0), deps)
    assert done.replayed and done.refund.status is RefundStatus.SUCCEEDED
    await credits.settle_due_grants(deps)
    assert _cash_and_coins(deps) == {}
