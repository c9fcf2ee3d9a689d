"""Payouts through HTTP with every process real (sandbox, wallet, payments, jobs, gateway):
`/api/wallet/payout-account` and `/api/wallet/withdrawals` — a withdrawal paid and one failed
with the money back (to the cent), PAY-11 errors, Idempotency-Key, roles and others' 404."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from gateway.service_layer.auth import issue_token
from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.stack import JOBS, PAYMENTS, WALLET, Ports, Stack, service_exists
from tests.support.databases import SessionDatabases
from tests.support.service_auth import signed_channel

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(service_exists(s) for s in (WALLET, PAYMENTS, JOBS)),
        reason="needs the wallet, payments and jobs services",
    ),
]


@pytest.fixture(scope="module")
def stack(pg_server_url: str, test_databases: SessionDatabases) -> Iterator[Stack]:
    running = Stack(
        server_url=pg_server_url,
        ports=Ports.free(),
        db_suffix=f"_po{uuid.uuid4().hex[:6]}",
        fresh=True,
        extra_env={"payments": {"PAYMENTS_PAYOUT_WATCH_SECONDS": "1"}},
    )
    test_databases.add(*running.database_names())
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def wallet(stack: Stack) -> Iterator[wpb_grpc.WalletServiceStub]:
    with signed_channel(
        f"127.0.0.1:{stack.ports.wallet[0]}", caller="payments", service="wallet"
    ) as channel:
        yield wpb_grpc.WalletServiceStub(channel)


def user(role: str = "contractor") -> tuple[str, dict[str, str]]:
    user_id = f"{role}-{uuid.uuid4().hex[:8]}"
    token = issue_token(user_id=user_id, role=role, email=f"{user_id}@example.com")
    return user_id, {"Authorization": f"Bearer {token}"}


def _account(wallet: wpb_grpc.WalletServiceStub, owner: str, kind: int) -> str:
    reply = wallet.OpenAccount(
        wpb.OpenAccountRequest(
            request_id=f"open:{owner}:USD:{kind}",
            owner_id=owner,
            currency="USD",
            kind=kind,
            allow_negative=kind != wpb.ACCOUNT_KIND_USER,
        )
    )
    return str(reply.account.account_id)


def fund(wallet: wpb_grpc.WalletServiceStub, owner: str, amount: int) -> None:
    """Test set-up only: credit the contractor's cash wallet from the platform's issuance."""
    source = _account(wallet, "platform", wpb.ACCOUNT_KIND_ISSUANCE)
    target = _account(wallet, owner, wpb.ACCOUNT_KIND_USER)
    transfer_id = f"fund-{uuid.uuid4().hex}"
    leg = wpb.TransferLeg(
        from_account_id=source,
        to_account_id=target,
        amount=common_pb2.Money(amount_minor=amount, currency="USD"),
    )
    wallet.Transfer(
        wpb.TransferRequest(request_id=transfer_id, transfer_id=transfer_id, legs=[leg])
    )


def balance(wallet: wpb_grpc.WalletServiceStub, owner: str) -> tuple[int, int, int]:
    account_id = _account(wallet, owner, wpb.ACCOUNT_KIND_USER)
    b = wallet.GetAccount(wpb.GetAccountRequest(account_id=account_id)).account.balance
    return (b.posted_minor, b.pending_minor, b.available_minor)


def withdraw(
    http: httpx.Client, headers: dict[str, str], amount: int, key: str = ""
) -> httpx.Response:
    return http.post(
        "/api/wallet/withdrawals",
        json={"amount": {"amount_minor": amount, "currency": "USD"}},
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


def final(http: httpx.Client, headers: dict[str, str], withdrawal_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = http.get(f"/api/wallet/withdrawals/{withdrawal_id}", headers=headers).json()
        if body["status"] in ("paid", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"withdrawal {withdrawal_id} did not settle: {body}")


def test_connect_and_withdraw(http: httpx.Client, wallet: wpb_grpc.WalletServiceStub) -> None:
    contractor, headers = user()
    assert http.get("/api/wallet/payout-account", headers=headers).status_code == 404
    refused = withdraw(http, headers, 100)
    assert (refused.status_code, refused.json()["error"]) == (409, "PAYOUT_ACCOUNT_REQUIRED")

    connected = http.post("/api/wallet/payout-account", json={}, headers=headers)
    assert connected.status_code == 200, connected.text
    account = connected.json()
    assert account["providerAccountId"].startswith("acct_")
    assert account["status"] == "active"
    assert http.get("/api/wallet/payout-account", headers=headers).json() == account

    fund(wallet, contractor, 10_000)
    short = withdraw(http, headers, 10_001)
    assert (short.status_code, short.json()["error"]) == (402, "INSUFFICIENT_FUNDS")
    for amount in (0, -1):
        bad = withdraw(http, headers, amount)
        assert (bad.status_code, bad.json()["error"]) == (400, "VALIDATION_FAILED")
    bad = http.post(
        "/api/wallet/withdrawals",
        json={"amount": {"amount_minor": 100, "currency": "XYZ"}},
        headers={**headers, "Idempotency-Key": "xyz"},
    )
    assert (bad.status_code, bad.json()["error"]) == (400, "VALIDATION_FAILED")
    no_key = http.post(
        "/api/wallet/withdrawals",
        json={"amount": {"amount_minor": 100, "currency": "USD"}},
        headers=headers,
    )
    assert (no_key.status_code, no_key.json()["error"]) == (400, "IDEMPOTENCY_KEY_REQUIRED")
    assert balance(wallet, contractor) == (10_000, 0, 10_000)

    created = withdraw(http, headers, 6_000, key="payout-1")
    assert created.status_code == 201, created.text
    withdrawal = created.json()
    assert withdrawal["amount"] == {"amount_minor": 6_000, "currency": "USD"}
    again = withdraw(http, headers, 6_000, key="payout-1")
    assert again.json()["id"] == withdrawal["id"]
    reused = withdraw(http, headers, 5_000, key="payout-1")
    assert (reused.status_code, reused.json()["error"]) == (422, "IDEMPOTENCY_KEY_REUSED")

    done = final(http, headers, withdrawal["id"])
    assert done["status"] == "paid"
    assert balance(wallet, contractor) == (4_000, 0, 4_000)
    listed = http.get("/api/wallet/withdrawals", headers=headers).json()
    assert [w["id"] for w in listed["withdrawals"]] == [withdrawal["id"]]

    # Others: another contractor gets 404, a customer 403, an admin reads it.
    _, stranger = user()
    assert (
        http.get(f"/api/wallet/withdrawals/{withdrawal['id']}", headers=stranger).status_code == 404
    )
    _, customer = user("customer")
    assert http.get("/api/wallet/withdrawals", headers=customer).status_code == 403
    _, admin = user("admin")
    seen = http.get(f"/api/wallet/withdrawals/{withdrawal['id']}", headers=admin)
    assert seen.json()["status"] == "paid"
    theirs = http.get("/api/wallet/withdrawals", params={"userId": contractor}, headers=admin)
    assert [w["id"] for w in theirs.json()["withdrawals"]] == [withdrawal["id"]]
    spying = http.get("/api/wallet/withdrawals", params={"userId": contractor}, headers=stranger)
    assert spying.status_code == 403
    their_account = http.get(
        "/api/wallet/payout-account", params={"userId": contractor}, headers=admin
    )
    assert their_account.json()["providerAccountId"] == account["providerAccountId"]
    spying = http.get("/api/wallet/payout-account", params={"userId": contractor}, headers=stranger)
    assert spying.status_code == 403


def test_a_failed_payout_returns_the_money(
    stack: Stack, http: httpx.Client, wallet: wpb_grpc.WalletServiceStub
) -> None:
    contractor, headers = user()
    account = http.post("/api/wallet/payout-account", headers=headers).json()
    # The contractor's bank is Stripe's test account whose payouts fail with account_closed.
    client = stripe_client(stack.sandbox_url)
    asyncio.run(
        client.v1.accounts.update_async(
            account["providerAccountId"],
            params={"external_account": {"account_number": "000111111113"}},
        )
    )
    fund(wallet, contractor, 2_500)
    created = withdraw(http, headers, 2_499)
    assert created.status_code == 201, created.text
    done = final(http, headers, created.json()["id"])
    assert (done["status"], done["failureCode"]) == ("failed", "account_closed")
    assert balance(wallet, contractor) == (2_500, 0, 2_500)


def test_the_api_is_documented(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/api/wallet/payout-account"])
    assert {"post", "get"} <= set(paths["/api/wallet/withdrawals"])
    assert "get" in paths["/api/wallet/withdrawals/{withdrawal_id}"]
    assert "402" in paths["/api/wallet/withdrawals"]["post"]["responses"]


def test_grpc_is_not_reachable_unsigned(stack: Stack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.payments[0]}") as channel:
        stub = pb_grpc.PaymentsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListWithdrawals(pb.ListWithdrawalsRequest(user_id="anyone"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
