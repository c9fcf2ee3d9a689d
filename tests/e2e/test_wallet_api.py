"""A user's wallet through HTTP with every process real (issue 9 §6 and §8, ESC-11, SEC-2): the
balances and history a user sees after ledger operations (a plan bought and credits spent through
the API; coins and cash moved and held by the services), each user only their own, and the admin
reports for admins only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from tests.e2e.conftest import System, new_company
from tests.e2e.credits_support import buy, post_by_credits, wait_credits
from tests.e2e.marketplace_support import wallet_balances
from tests.support.service_auth import signed_channel


@pytest.fixture
def ledger(system: System) -> Iterator[wpb_grpc.WalletServiceStub]:
    """The wallet as payments calls it (the services move money; the gateway only reads)."""
    with signed_channel(
        system.stack.services["wallet"].target, caller="payments", service="wallet"
    ) as channel:
        yield wpb_grpc.WalletServiceStub(channel)


def _open(stub, owner: str, unit: str, kind=wpb.ACCOUNT_KIND_USER, neg: bool = False) -> str:
    return stub.OpenAccount(
        wpb.OpenAccountRequest(
            request_id=uuid.uuid4().hex,
            owner_id=owner,
            currency=unit,
            kind=kind,
            allow_negative=neg,
        ),
        timeout=5,
    ).account.account_id


def _move(stub, transfer_id: str, source: str, target: str, amount: int, unit: str) -> None:
    stub.Transfer(
        wpb.TransferRequest(
            request_id=uuid.uuid4().hex,
            transfer_id=transfer_id,
            legs=[
                wpb.TransferLeg(
                    from_account_id=source,
                    to_account_id=target,
                    amount=common_pb2.Money(amount_minor=amount, currency=unit),
                )
            ],
            description=transfer_id.split(":")[0],
        ),
        timeout=5,
    )


def test_a_company_sees_its_plan_credits_and_their_spending_in_its_wallet(system: System) -> None:
    company = new_company()
    assert wallet_balances(system, company, "company") == {}
    buy(system, company, "SWIFT_HIRE")
    wait_credits(system, company, job=2_500, candidate=50)
    assert wallet_balances(system, company, "company") == {
        "CANDIDATE_CREDIT": (50, 0, 50),
        "JOB_CREDIT": (2_500, 0, 2_500),
    }
    posted = post_by_credits(system, company, 1)
    assert posted.status_code == 201, posted.text
    assert wallet_balances(system, company, "company")["JOB_CREDIT"] == (2_000, 0, 2_000)

    resp = system.http.get(
        "/api/wallet/transactions",
        params={"unit": "JOB_CREDIT"},
        headers=system.headers(company),
    )
    assert resp.status_code == 200, resp.text
    lines = resp.json()["transactions"]
    assert [(x["amountMinor"], x["direction"]) for x in lines] == [
        (-500, "debit"),
        (2_500, "credit"),
    ]
    assert all(x["ownerId"] == company and x["accountKind"] == "user" for x in lines)


def test_a_users_wallet_after_ledger_operations_and_who_may_read_what(
    system: System, ledger: wpb_grpc.WalletServiceStub
) -> None:
    contractor, stranger = f"con-{uuid.uuid4().hex[:10]}", f"cus-{uuid.uuid4().hex[:10]}"
    usd, coin = _open(ledger, contractor, "USD"), _open(ledger, contractor, "COIN")
    clearing = _open(ledger, "provider:stripe", "USD", wpb.ACCOUNT_KIND_PROVIDER_CLEARING, True)
    issuance = _open(ledger, "platform", "COIN", wpb.ACCOUNT_KIND_ISSUANCE, True)
    revenue = _open(ledger, "platform", "USD", wpb.ACCOUNT_KIND_PLATFORM_REVENUE)
    payouts = _open(ledger, "platform", "USD", wpb.ACCOUNT_KIND_PAYOUTS)
    admin = system.headers("root", "admin")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    window = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}

    def revenue_today() -> int:
        resp = system.http.get("/api/admin/earnings", params=window, headers=admin)
        assert resp.status_code == 200, resp.text
        return sum(t["netMinor"] for t in resp.json()["totals"] if t["unit"] == "USD")

    earned_before = revenue_today()
    tag = uuid.uuid4().hex[:8]
    _move(ledger, f"engagement:{tag}:complete", clearing, usd, 70_000, "USD")
    _move(ledger, f"coins:{tag}", issuance, coin, 1_000, "COIN")
    _move(ledger, f"fee:{tag}", usd, revenue, 1_500, "USD")
    # A withdrawal on its way holds 20,000 of the cash.
    ledger.ReserveHold(
        wpb.ReserveHoldRequest(
            request_id=uuid.uuid4().hex,
            branch=common_pb2.TccBranch(global_tx_id=f"payout-{tag}", branch_id="payout"),
            account_id=usd,
            destination_account_id=payouts,
            amount=common_pb2.Money(amount_minor=20_000, currency="USD"),
            expires_in_seconds=600,
        ),
        timeout=5,
    )

    assert wallet_balances(system, contractor, "contractor") == {
        "COIN": (1_000, 0, 1_000),
        "USD": (48_500, 20_000, 68_500),
    }
    resp = system.http.get("/api/wallet", headers=system.headers(contractor, "contractor"))
    usd_out = next(b for b in resp.json()["balances"] if b["unit"] == "USD")
    assert (usd_out["category"], usd_out["available"], usd_out["held"]) == (
        "cash",
        "485.00",
        "200.00",
    )

    # The history, newest first, two a page, across both units.
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        resp = system.http.get(
            "/api/wallet/transactions",
            params=params,
            headers=system.headers(contractor, "contractor"),
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        seen += [
            (x["transferId"], x["amountMinor"], x["counterparty"]) for x in body["transactions"]
        ]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == [
        (f"fee:{tag}", -1_500, "platform_revenue"),
        (f"coins:{tag}", 1_000, "issuance"),
        (f"engagement:{tag}:complete", 70_000, "provider_clearing"),
    ]

    # Another user sees only their own (empty) wallet and history; nothing names another owner.
    assert wallet_balances(system, stranger, "customer") == {}
    resp = system.http.get("/api/wallet/transactions", headers=system.headers(stranger, "customer"))
    assert resp.json() == {"transactions": [], "nextCursor": None}

    # The admin reports: 403 for users, the whole ledger for an admin.
    for path in ("/api/admin/earnings", "/api/admin/wallets", "/api/admin/transactions"):
        for user, role in ((contractor, "contractor"), (stranger, "customer")):
            resp = system.http.get(path, params=window, headers=system.headers(user, role))
            assert resp.status_code == 403, (path, role, resp.text)
            assert resp.json()["error"] == "FORBIDDEN"
    assert revenue_today() - earned_before == 1_500
    resp = system.http.get("/api/admin/wallets", params={"owner": contractor}, headers=admin)
    assert resp.status_code == 200, resp.text
    assert [(w["unit"], w["availableMinor"], w["heldMinor"]) for w in resp.json()["wallets"]] == [
        ("USD", 48_500, 20_000),
        ("COIN", 1_000, 0),
    ]
    resp = system.http.get(
        "/api/admin/transactions",
        params={"owner": "platform", "kind": "platform_revenue", "unit": "USD", "limit": 1},
        headers=admin,
    )
    assert resp.status_code == 200, resp.text
    [newest] = resp.json()["transactions"]
    assert (newest["transferId"], newest["amountMinor"], newest["counterparty"]) == (
        f"fee:{tag}",
        1_500,
        "user",
    )
