"""Grouping off (WALLET_*_BATCH_MAX_ITEMS=1) on real PostgreSQL: each Transfer, ReserveHold and
ConfirmHold call runs at once as a group of its own, so in the common case it is one statement
that commits itself, and a refused call is answered exactly as on its own (issue 13)."""

from __future__ import annotations

import uuid

import pytest

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay_platform.errors import HirepayError
from wallet.entrypoints.servicer import WalletServicer

pytestmark = pytest.mark.usefixtures("sound")


def _usd(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="USD")


async def _warm_refs(deps, *account_ids: str) -> None:
    async with deps.uow() as uow:
        await uow.accounts.refs(account_ids)


async def test_each_call_alone_is_one_statement_and_refusals_are_its_own(ledger, deps, round_trips):
    servicer = WalletServicer(deps)  # no batchers: grouping off
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    await _warm_refs(deps, alice, bob)
    legs = [pb.TransferLeg(from_account_id=alice, to_account_id=bob, amount=_usd(300))]
    request = pb.TransferRequest(transfer_id=f"t-{uuid.uuid4().hex}", legs=legs)
    with round_trips:
        posted = await servicer.Transfer(request, None)
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    assert not posted.replayed and len(posted.transfer.entries) == 2
    assert (await servicer.Transfer(request, None)).replayed  # idempotent on its id
    too_much = [pb.TransferLeg(from_account_id=alice, to_account_id=bob, amount=_usd(800))]
    with pytest.raises(HirepayError) as refused:
        await servicer.Transfer(pb.TransferRequest(transfer_id="t-poor", legs=too_much), None)
    assert refused.value.reason == "INSUFFICIENT_FUNDS"
    assert await ledger.balances(alice, bob) == [(700, 0), (300, 0)]

    branch = common_pb2.TccBranch(global_tx_id=f"g-{uuid.uuid4().hex}", branch_id="payment")
    reserve = pb.ReserveHoldRequest(
        branch=branch, account_id=alice, destination_account_id=bob, amount=_usd(500)
    )
    with round_trips:
        held = await servicer.ReserveHold(reserve, None)
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    assert held.hold.state == pb.Hold.PENDING
    with round_trips:
        confirmed = await servicer.ConfirmHold(pb.ConfirmHoldRequest(branch=branch), None)
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    assert confirmed.hold.state == pb.Hold.CONFIRMED
    assert (await servicer.ConfirmHold(pb.ConfirmHoldRequest(branch=branch), None)).replayed
    poor = common_pb2.TccBranch(global_tx_id=f"g-{uuid.uuid4().hex}", branch_id="payment")
    with pytest.raises(HirepayError) as refused:
        await servicer.ReserveHold(
            pb.ReserveHoldRequest(
                branch=poor, account_id=alice, destination_account_id=bob, amount=_usd(201)
            ),
            None,
        )
    assert refused.value.reason == "INSUFFICIENT_FUNDS"
    assert await ledger.balances(alice, bob) == [(200, 0), (800, 0)]
