"""The gateway's wallet routes against a fake wallet (issue 9 §6 and §8, ESC-11, SEC-2): a user
reads only their own wallet (the owner is the verified caller, never a parameter), admins alone
read the reports (403 otherwise, and the wallet is never asked), and how answers and refusals read
(PAY-11)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay_platform.errors import ErrorKind
from hirepay_platform.identity import current_caller
from tests.support.gateway_fakes import domain_error, ts
from tests.support.gateway_harness import Backends, bearer


def account(unit: str, posted: int, held: int, **extra) -> wpb.Account:
    return wpb.Account(
        account_id=f"acc-{unit}",
        owner_id=extra.pop("owner_id", "con-1"),
        currency=unit,
        kind=extra.pop("kind", wpb.ACCOUNT_KIND_USER),
        balance=wpb.Balance(
            posted_minor=posted, pending_minor=held, available_minor=posted - held, currency=unit
        ),
        created_at=ts(1_790_000_000),
        **extra,
    )


def line(entry_id: int, amount: int, unit: str = "USD", **extra) -> wpb.LedgerLine:
    return wpb.LedgerLine(
        entry_id=entry_id,
        transfer_id=extra.pop("transfer_id", f"t-{entry_id}"),
        account_id="acc-USD",
        owner_id=extra.pop("owner_id", "con-1"),
        account_kind=extra.pop("account_kind", wpb.ACCOUNT_KIND_USER),
        amount=common_pb2.Money(amount_minor=amount, currency=unit),
        counterparty_kind=extra.pop("counterparty_kind", wpb.ACCOUNT_KIND_ESCROW),
        description=extra.pop("description", "engagement completed"),
        created_at=ts(1_790_000_000),
        **extra,
    )


async def test_wallet_is_the_callers_own_by_unit(client: httpx.AsyncClient, backends: Backends):
    seen = []

    def summary(request: wpb.GetWalletSummaryRequest) -> wpb.GetWalletSummaryResponse:
        seen.append((request.owner_id, current_caller().user))
        return wpb.GetWalletSummaryResponse(
            accounts=[
                account("CANDIDATE_CREDIT", 50, 0),
                account("COIN", 4_700, 1_200),
                account("JPY", 5_000, 0),
                account("USD", 100_000, 25_050),
            ]
        )

    backends.wallet.on("GetWalletSummary", summary)
    resp = await client.get("/api/wallet", headers=bearer("contractor", "con-1"))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "userId": "con-1",
        "balances": [
            {
                "unit": "CANDIDATE_CREDIT",
                "category": "credits",
                "availableMinor": 50,
                "heldMinor": 0,
                "postedMinor": 50,
                "available": "50",
                "held": "0",
            },
            {
                "unit": "COIN",
                "category": "coins",
                "availableMinor": 3_500,
                "heldMinor": 1_200,
                "postedMinor": 4_700,
                "available": "3500",
                "held": "1200",
            },
            {
                "unit": "JPY",
                "category": "cash",
                "availableMinor": 5_000,
                "heldMinor": 0,
                "postedMinor": 5_000,
                "available": "5000",
                "held": "0",
            },
            {
                "unit": "USD",
                "category": "cash",
                "availableMinor": 74_950,
                "heldMinor": 25_050,
                "postedMinor": 100_000,
                "available": "749.50",
                "held": "250.50",
            },
        ],
    }
    # The owner asked for is the verified caller, vouched for to the wallet as its actor.
    [(owner, actor)] = seen
    assert owner == "con-1" and (actor.user_id, actor.role) == ("con-1", "contractor")
    for role in ("customer", "company", "applicant", "admin"):
        resp = await client.get("/api/wallet", headers=bearer(role, f"{role}-9"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["userId"] == f"{role}-9"
    assert [owner for owner, _ in seen[1:]] == ["customer-9", "company-9", "applicant-9", "admin-9"]
    # No query parameter can name another owner: it is ignored, the caller's own wallet answers.
    resp = await client.get("/api/wallet?owner=con-2", headers=bearer("contractor", "con-1"))
    assert resp.status_code == 200 and seen[-1][0] == "con-1"
    resp = await client.get("/api/wallet")
    assert resp.status_code == 401 and resp.json()["error"] == "UNAUTHENTICATED"


async def test_transactions_page_with_filters(client: httpx.AsyncClient, backends: Backends):
    backends.wallet.on(
        "ListWalletTransactions",
        wpb.ListLedgerLinesResponse(
            lines=[
                line(12, 70_000, metadata={"engagement_id": "eng_1"}),
                line(9, -1_000, "COIN", counterparty_kind=wpb.ACCOUNT_KIND_UNSPECIFIED),
            ],
            next_page_token="tok-2",
        ),
    )
    resp = await client.get(
        "/api/wallet/transactions",
        params={
            "cursor": "tok-1",
            "limit": 2,
            "unit": "USD",
            "since": "2026-11-01T00:00:00Z",
            "until": "2026-12-01T00:00:00+02:00",
        },
        headers=bearer("customer", "cus-1"),
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["nextCursor"] == "tok-2"
    first, second = body["transactions"]
    assert first == {
        "id": "12",
        "transferId": "t-12",
        "accountId": "acc-USD",
        "ownerId": "con-1",
        "accountKind": "user",
        "unit": "USD",
        "amountMinor": 70_000,
        "amount": "700.00",
        "direction": "credit",
        "counterparty": "escrow",
        "description": "engagement completed",
        "metadata": {"engagement_id": "eng_1"},
        "createdAt": "2026-09-21T14:13:20Z",
    }
    assert (second["direction"], second["amount"], second["counterparty"]) == (
        "debit",
        "-1000",
        None,
    )
    [call] = backends.wallet.calls_to("ListWalletTransactions")
    request = call.request
    assert (request.owner_id, request.unit) == ("cus-1", "USD")
    assert (request.page.page_size, request.page.page_token) == (2, "tok-1")
    assert request.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    assert request.until.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 30, 22, tzinfo=UTC)

    # The last page has no cursor; defaults: 50 a page, every unit, no window.
    backends.wallet.on("ListWalletTransactions", wpb.ListLedgerLinesResponse())
    resp = await client.get("/api/wallet/transactions", headers=bearer("customer", "cus-1"))
    assert resp.json() == {"transactions": [], "nextCursor": None}
    request = backends.wallet.calls_to("ListWalletTransactions")[-1].request
    assert (request.page.page_size, request.unit, request.HasField("since")) == (50, "", False)


async def test_transactions_refusals_read_as_the_query_parameters(
    client: httpx.AsyncClient, backends: Backends
):
    headers = bearer("customer", "cus-1")
    for params, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"unit": "usd"}, "unit"),
        ({"since": "yesterday"}, "since"),
        # Past the last instant a time can name once in UTC.
        ({"until": "9999-12-31T23:00:00-05:00"}, "until"),
    ):
        resp = await client.get("/api/wallet/transactions", params=params, headers=headers)
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json()["error"] == "VALIDATION_FAILED" and field in resp.json()["fields"]
    assert backends.wallet.calls_to("ListWalletTransactions") == []
    backends.wallet.on(
        "ListWalletTransactions",
        domain_error(
            "VALIDATION_FAILED",
            ErrorKind.INVALID_ARGUMENT,
            page_token="does not belong to this listing",
        ),
    )
    resp = await client.get("/api/wallet/transactions?cursor=abc&unit=EUR", headers=headers)
    assert resp.status_code == 400
    assert resp.json()["fields"] == {"cursor": "does not belong to this listing"}
    backends.wallet.on(
        "ListWalletTransactions", domain_error("DATABASE_UNAVAILABLE", ErrorKind.UNAVAILABLE)
    )
    resp = await client.get("/api/wallet/transactions", headers=headers)
    assert resp.status_code == 503


ADMIN_GETS = {
    "/api/admin/earnings?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z": "GetCommissionEarnings",
    "/api/admin/wallets": "ListBalances",
    "/api/admin/transactions": "ListTransactions",
}


async def test_admin_reports_are_for_admins_only(client: httpx.AsyncClient, backends: Backends):
    for path, method in ADMIN_GETS.items():
        for role in ("customer", "contractor", "company", "applicant"):
            resp = await client.get(path, headers=bearer(role, "u-1"))
            assert resp.status_code == 403, (path, role, resp.text)
            assert resp.json()["error"] == "FORBIDDEN"
        assert (await client.get(path)).status_code == 401
        assert backends.wallet.calls_to(method) == []


async def test_admin_earnings_by_period(client: httpx.AsyncClient, backends: Backends):
    def earnings(request: wpb.GetCommissionEarningsRequest) -> wpb.GetCommissionEarningsResponse:
        assert current_caller().user.is_admin
        bucket = wpb.EarningsBucket(
            period_start=ts(1_793_491_200),  # 2026-11-01
            unit="USD",
            credited_minor=30_000,
            debited_minor=10_000,
            net_minor=20_000,
        )
        coins = wpb.EarningsBucket(
            period_start=ts(1_793_491_200), unit="COIN", debited_minor=20, net_minor=-20
        )
        return wpb.GetCommissionEarningsResponse(buckets=[coins, bucket], totals=[coins, bucket])

    backends.wallet.on("GetCommissionEarnings", earnings)
    resp = await client.get(
        "/api/admin/earnings",
        params={"from": "2026-11-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "period": "month"},
        headers=bearer("admin", "root"),
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["from"], body["to"], body["period"]) == (
        "2026-11-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
        "month",
    )
    assert body["buckets"][1] == {
        "periodStart": "2026-11-01T00:00:00Z",
        "unit": "USD",
        "creditedMinor": 30_000,
        "debitedMinor": 10_000,
        "netMinor": 20_000,
        "net": "200.00",
    }
    assert (body["buckets"][0]["net"], body["totals"][0]["netMinor"]) == ("-20", -20)
    [call] = backends.wallet.calls_to("GetCommissionEarnings")
    assert call.request.period == wpb.EARNINGS_PERIOD_MONTH
    assert call.request.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    assert call.request.until.ToDatetime(tzinfo=UTC) == datetime(2027, 1, 1, tzinfo=UTC)

    admin = bearer("admin", "root")
    for params, field in (
        ({"to": "2026-12-01T00:00:00Z"}, "from"),
        ({"from": "2026-11-01T00:00:00Z"}, "to"),
        ({"from": "2026-11-01", "to": "2026-12-01", "period": "week"}, "period"),
    ):
        resp = await client.get("/api/admin/earnings", params=params, headers=admin)
        assert resp.status_code == 400 and field in resp.json()["fields"], resp.text
    backends.wallet.on(
        "GetCommissionEarnings",
        domain_error("VALIDATION_FAILED", ErrorKind.INVALID_ARGUMENT, until="must be after since"),
    )
    resp = await client.get(
        "/api/admin/earnings", params={"from": "2026-12-01", "to": "2026-11-01"}, headers=admin
    )
    assert resp.status_code == 400 and resp.json()["fields"] == {"to": "must be after since"}


async def test_admin_wallets_and_transactions_with_filters(
    client: httpx.AsyncClient, backends: Backends
):
    backends.wallet.on(
        "ListBalances",
        wpb.ListBalancesResponse(
            accounts=[
                account(
                    "USD",
                    -14_900,
                    0,
                    owner_id="provider:stripe",
                    kind=wpb.ACCOUNT_KIND_PROVIDER_CLEARING,
                    allow_negative=True,
                )
            ],
            next_page_token="w-2",
        ),
    )
    admin = bearer("admin", "root")
    resp = await client.get(
        "/api/admin/wallets",
        params={"kind": "provider_clearing", "unit": "USD", "owner": "provider:stripe", "limit": 1},
        headers=admin,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "wallets": [
            {
                "accountId": "acc-USD",
                "ownerId": "provider:stripe",
                "kind": "provider_clearing",
                "unit": "USD",
                "postedMinor": -14_900,
                "heldMinor": 0,
                "availableMinor": -14_900,
                "allowNegative": True,
                "createdAt": "2026-09-21T14:13:20Z",
            }
        ],
        "nextCursor": "w-2",
    }
    [call] = backends.wallet.calls_to("ListBalances")
    assert (call.request.kind, call.request.unit, call.request.owner_id) == (
        wpb.ACCOUNT_KIND_PROVIDER_CLEARING,
        "USD",
        "provider:stripe",
    )
    assert call.request.page.page_size == 1
    resp = await client.get("/api/admin/wallets?kind=bank", headers=admin)
    assert resp.status_code == 400 and "kind" in resp.json()["fields"]

    backends.wallet.on(
        "ListTransactions",
        wpb.ListLedgerLinesResponse(
            lines=[
                line(
                    7,
                    10_000,
                    owner_id="platform",
                    account_kind=wpb.ACCOUNT_KIND_PLATFORM_REVENUE,
                    counterparty_kind=wpb.ACCOUNT_KIND_PROVIDER_CLEARING,
                )
            ]
        ),
    )
    resp = await client.get(
        "/api/admin/transactions",
        params={
            "owner": "platform",
            "unit": "USD",
            "kind": "platform_revenue",
            "since": "2026-11-01T00:00:00Z",
            "cursor": "c-1",
        },
        headers=admin,
    )
    assert resp.status_code == 200, resp.text
    [entry] = resp.json()["transactions"]
    assert (entry["ownerId"], entry["accountKind"], entry["counterparty"]) == (
        "platform",
        "platform_revenue",
        "provider_clearing",
    )
    [call] = backends.wallet.calls_to("ListTransactions")
    request = call.request
    assert (request.owner_id, request.unit, request.account_kind) == (
        "platform",
        "USD",
        wpb.ACCOUNT_KIND_PLATFORM_REVENUE,
    )
    assert request.page.page_token == "c-1" and not request.HasField("until")


async def test_wallet_routes_are_documented_with_examples(client: httpx.AsyncClient):
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/api/wallet",
        "/api/wallet/transactions",
        "/api/admin/earnings",
        "/api/admin/wallets",
        "/api/admin/transactions",
    ):
        operation = paths[path]["get"]
        assert operation["summary"] and "200" in operation["responses"], path
        assert "401" in operation["responses"], path
        if path.startswith("/api/admin"):
            assert "403" in operation["responses"], path
    components = schema["components"]["schemas"]
    for name in ("WalletOut", "TransactionsOut", "EarningsOut", "AdminWalletsOut"):
        assert components[name].get("examples"), name
    params = {p["name"] for p in paths["/api/admin/earnings"]["get"]["parameters"]}
    assert {"from", "to", "period"} <= params
