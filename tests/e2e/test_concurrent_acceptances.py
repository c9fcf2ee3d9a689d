"""Two contractors accept offers on the same job at the same moment, through HTTP with every
process real (issue 9 §2): exactly one wins (200) and the other gets 409 JOB_ALREADY_TAKEN; the
loser's money is released (card: its authorization voided; coins: the customer's coin hold
released) and every wallet touched is asserted to the cent."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from hirepay.payments.v1 import payments_service_pb2 as ppb
from tests.e2e.conftest import System
from tests.e2e.credits_support import ledger, platform_delta
from tests.e2e.marketplace_support import (
    CLEARING,
    issue_coins,
    market_job,
    new_user,
    ok,
    payment,
    send_offer,
    wallet_balances,
)
from tests.support.waiting import eventually

AMOUNTS = (100_000, 60_000)  # the two offers: fee1 10,000 / 6,000, escrow 90,000 / 54,000


def _race(system: System, accepts: list[tuple[str, str]]) -> list[httpx.Response]:
    """POST /api/bidding/{offer}/accept for each (offer, contractor), released together."""

    async def race() -> list[httpx.Response]:
        barrier = asyncio.Barrier(len(accepts))
        async with httpx.AsyncClient(base_url=system.stack.gateway_url, timeout=60) as client:

            async def accept(offer_id: str, contractor: str) -> httpx.Response:
                headers = system.headers(contractor, "contractor")
                await barrier.wait()
                return await client.post(f"/api/bidding/{offer_id}/accept", headers=headers)

            return await asyncio.gather(*(accept(o, c) for o, c in accepts))

    return asyncio.run(race())


def _released(system: System, customer: str, offer_id: str) -> dict[str, Any]:
    got = ok(
        system.http.get(f"/api/bidding/{offer_id}", headers=system.headers(customer, "customer"))
    )
    assert got["offer"]["released"], got
    return got["offer"]


@pytest.mark.parametrize("funding", ["card", "coins"])
def test_two_contractors_accepting_at_once_one_wins_and_the_other_is_released(
    system: System, funding: str
) -> None:
    customer = new_user("customer")
    contractors = [new_user("contractor"), new_user("contractor")]
    unit = "USD" if funding == "card" else "COIN"
    if funding == "coins":
        issue_coins(system, customer, sum(AMOUNTS))
    job_id = market_job(system, customer)
    offers = [
        send_offer(system, customer, job_id, contractor, amount, funding)
        for contractor, amount in zip(contractors, AMOUNTS, strict=True)
    ]
    if funding == "coins":  # both offers hold the customer's coins
        assert wallet_balances(system, customer, "customer") == {"COIN": (0, 160_000, 160_000)}
    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, "provider:stripe")

    responses = _race(system, [(o["id"], c) for o, c in zip(offers, contractors, strict=True)])

    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    win = next(i for i, r in enumerate(responses) if r.status_code == 200)
    lose = 1 - win
    assert responses[lose].json()["error"] == "JOB_ALREADY_TAKEN"
    engagement = responses[win].json()["engagement"]
    amount = AMOUNTS[win]
    fee, escrow = amount // 10, amount - amount // 10
    assert (engagement["state"], engagement["contractorId"]) == ("assigned", contractors[win])
    assert engagement["amount"] == {"amount_minor": amount, "currency": unit}

    lost = eventually(lambda: _released(system, customer, offers[lose]["id"]), timeout=30)
    assert (lost["state"], lost["reason"]) == ("rejected", "another_offer_accepted")
    won = ok(
        system.http.get(
            f"/api/bidding/{offers[win]['id']}", headers=system.headers(customer, "customer")
        )
    )["offer"]
    assert (won["state"], won["engagementId"]) == ("accepted", engagement["id"])

    # Every wallet to the cent: the winner's fee to revenue, the rest in its escrow, nothing else.
    assert platform_delta(platform_before, ledger(system, "platform")) == {
        ("PLATFORM_REVENUE", unit): fee
    }
    assert dict(ledger(system, f"engagement:{engagement['id']}")) == {("ESCROW", unit): escrow}
    for contractor in contractors:
        assert dict(ledger(system, contractor)) == {}
    if funding == "card":
        # Only the winner's card was captured (through clearing); the loser's was voided.
        assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {
            CLEARING: -amount
        }
        assert dict(ledger(system, customer)) == {}
        captured = payment(system, offers[win]["paymentId"])
        assert (captured.state, captured.captured_minor) == (ppb.Payment.CAPTURED, amount)
        voided = payment(system, offers[lose]["paymentId"])
        assert (voided.state, voided.captured_minor) == (ppb.Payment.VOIDED, 0)
    else:
        # The loser's coins are available again, nothing held; the provider was never involved.
        assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {}
        left = AMOUNTS[lose]
        assert wallet_balances(system, customer, "customer") == {"COIN": (left, 0, left)}
        assert dict(ledger(system, customer)) == {("USER", "COIN"): left}
