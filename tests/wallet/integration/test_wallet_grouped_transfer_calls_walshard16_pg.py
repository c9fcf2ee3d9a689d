"""What a grouped Transfer call costs the wallet in Python (issue 13): GROUP concurrent calls at
the servicer, gathered by the batcher into one statement, counted in the wallet's own code (the
servicer and conversions, the batcher, the handlers, the domain, the repositories) and the
dataclasses it makes. Round 16 took out a coroutine per call (the batcher's `transfer` wrapper),
the batcher's `_schedule` per call once its timer is set, a generator per transfer in the
conversion of its legs, in `transfer_header`, `_post_alone` and `_check_run`, a new Leg per leg
when its account ids are canonical already, `legs_accounts` per transfer of a batch, the
`sharded` property per account of a posting and `_money` per entry of a reply: 61.4 -> 48.5 such
calls per transfer in a group of 32 (110.6 -> 97.7 at the servicer with asyncio's). Round 17
(walgrp17) took out the servicer's `_counted` coroutine and two counting calls per Transfer (its
series' incrementer called at once), and the platform's fingerprint digests the legs with one
JSON encoder kept, its steps in line: the wallet's 47.5 -> 44.5, the platform's 9.0 -> 6.0 per
transfer."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as pb
from tests.support.python_calls import entered
from tests.wallet.integration.conftest import warm_refs
from wallet.entrypoints.servicer import WalletServicer
from wallet.service_layer.batcher import TransferBatcher

pytestmark = pytest.mark.usefixtures("sound")

GROUP = 32
# The platform's calls per grouped transfer (its fingerprint, money checks, JSON, counting).
PLATFORM = 6.0
# The wallet's folders (and the dataclasses' generated __init__, "<string>").
_WALLET = {"entrypoints", "service_layer", "handlers", "domain", "repositories", "<string>"}


def _requests(payers: list[str], payees: list[str]) -> list[pb.TransferRequest]:
    return [
        pb.TransferRequest(
            request_id=uuid.uuid4().hex,
            transfer_id=f"g-{uuid.uuid4().hex}",
            legs=[
                pb.TransferLeg(
                    from_account_id=payer,
                    to_account_id=payee,
                    amount=common_pb2.Money(amount_minor=100, currency="USD"),
                )
            ],
        )
        for payer, payee in zip(payers, payees, strict=True)
    ]


async def test_a_grouped_transfer_call_costs_the_wallet_45_python_calls(ledger, deps, round_trips):
    payers = [await ledger.open(f"payer{i}") for i in range(GROUP)]
    payees = [await ledger.open(f"payee{i}") for i in range(GROUP)]
    for payer in payers:
        await ledger.fund(payer, 10_000)
    await warm_refs(deps, *payers, *payees)  # as on a running wallet
    servicer = WalletServicer(deps, TransferBatcher(deps, max_items=GROUP))
    for _ in range(2):  # warm: statements prepared, the pool's connections open
        await asyncio.gather(*(servicer.Transfer(r, None) for r in _requests(payers, payees)))
    calls = [servicer.Transfer(r, None) for r in _requests(payers, payees)]
    with round_trips, entered() as seen:
        replies = await asyncio.gather(*calls)
    assert [len(r.transfer.entries) for r in replies] == [2] * GROUP
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    wallet = sum(n for (folder, _), n in seen.items() if folder in _WALLET)
    assert wallet <= 44.6 * GROUP, wallet / GROUP  # 61.4 per transfer before, 48.5 in round 16
    platform = sum(n for (folder, _), n in seen.items() if folder == "hirepay_platform")
    assert platform <= PLATFORM * GROUP, platform / GROUP
    assert await ledger.balances(payers[0], payees[0]) == [(10_000 - 300, 0), (300, 0)]
