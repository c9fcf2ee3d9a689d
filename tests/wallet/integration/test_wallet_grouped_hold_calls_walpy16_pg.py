"""What a grouped ReserveHold and a grouped ConfirmHold call cost the wallet in Python (issue 13):
GROUP concurrent calls at the servicer, gathered by the hold batchers into one transaction,
counted in the wallet's own code (the servicer and conversions, the batcher, the handlers, the
domain, the repositories) and the dataclasses it makes, as the grouped Transfer's are
(test_wallet_grouped_transfer_calls_walshard16_pg). Round 16 (walpy16) took out, per Reserve, the
`sharded` property of its account, the two `check_unit` calls (now called only to refuse) and the
conversion of a pending hold's unset `resolved_at`; per Confirm, the second `confirm_transfer_id`
(`_confirm_header` takes the id `hold.confirm` set), the conversion, validation and fingerprint
material of no shares (a list, two calls and two generators), the `Part` and list of credits of an
unsplit Confirm, `_counted`'s coroutine at the servicer, the generator of `confirm_accounts`, the
`check_unit` of its destination, and `unbalanced_units`' comprehension for a balanced posting:
33.4 -> 29.4 calls per Reserve and 72.6 -> 58.6 per Confirm in groups of 32 (17 -> 16 dataclasses
built per Confirm), replies and statements unchanged."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as pb
from tests.support.python_calls import entered
from tests.wallet.integration.conftest import warm_refs
from wallet.entrypoints.servicer import WalletServicer
from wallet.service_layer.batcher import HoldBatchers

pytestmark = pytest.mark.usefixtures("sound")

GROUP = 32
# The wallet's folders (and the dataclasses' generated __init__, "<string>").
_WALLET = {"entrypoints", "service_layer", "handlers", "domain", "repositories", "<string>"}


def _branch() -> common_pb2.TccBranch:
    return common_pb2.TccBranch(global_tx_id=f"h-{uuid.uuid4().hex}", branch_id="payment")


def _reserves(
    payers: list[str], payees: list[str], branches: list[common_pb2.TccBranch]
) -> list[pb.ReserveHoldRequest]:
    return [
        pb.ReserveHoldRequest(
            request_id=uuid.uuid4().hex,
            branch=branch,
            account_id=payer,
            destination_account_id=payee,
            amount=common_pb2.Money(amount_minor=100, currency="USD"),
        )
        for payer, payee, branch in zip(payers, payees, branches, strict=True)
    ]


def _confirms(branches: list[common_pb2.TccBranch]) -> list[pb.ConfirmHoldRequest]:
    return [pb.ConfirmHoldRequest(request_id=uuid.uuid4().hex, branch=b) for b in branches]


async def _pair(servicer: WalletServicer, payers: list[str], payees: list[str]) -> list[object]:
    branches = [_branch() for _ in payers]
    await asyncio.gather(
        *(servicer.ReserveHold(r, None) for r in _reserves(payers, payees, branches))
    )
    return await asyncio.gather(*(servicer.ConfirmHold(r, None) for r in _confirms(branches)))


async def test_grouped_reserve_and_confirm_calls_cost_the_wallet_29_and_59_python_calls(
    ledger, deps
):
    payers = [await ledger.open(f"payer{i}") for i in range(GROUP)]
    payees = [await ledger.open(f"payee{i}") for i in range(GROUP)]
    for payer in payers:
        await ledger.fund(payer, 10_000)
    await warm_refs(deps, *payers, *payees)  # as on a running wallet
    servicer = WalletServicer(deps, holds=HoldBatchers(deps, max_items=GROUP))
    for _ in range(2):  # warm: statements prepared, the pool's connections open
        await _pair(servicer, payers, payees)
    branches = [_branch() for _ in payers]
    reserves = [servicer.ReserveHold(r, None) for r in _reserves(payers, payees, branches)]
    with entered() as seen:
        held = await asyncio.gather(*reserves)
    assert [r.hold.state for r in held] == [pb.Hold.PENDING] * GROUP
    reserve = sum(n for (folder, _), n in seen.items() if folder in _WALLET)
    confirms = [servicer.ConfirmHold(r, None) for r in _confirms(branches)]
    with entered() as seen:
        confirmed = await asyncio.gather(*confirms)
    assert [r.hold.state for r in confirmed] == [pb.Hold.CONFIRMED] * GROUP
    confirm = sum(n for (folder, _), n in seen.items() if folder in _WALLET)
    assert reserve <= 29.5 * GROUP, reserve / GROUP  # 33.4 per call before
    assert confirm <= 58.7 * GROUP, confirm / GROUP  # 72.6 per call before
    assert [len(r.transfer.entries) for r in confirmed] == [2] * GROUP
    assert await ledger.balances(payers[0], payees[0]) == [(10_000 - 300, 0), (300, 0)]
