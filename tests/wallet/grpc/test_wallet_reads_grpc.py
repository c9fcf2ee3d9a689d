"""The ledger's readers over real gRPC against the real process and PostgreSQL (ESC-11, SEC-2): a
user's wallet by unit with held amounts, their paged history (stable while entries are posted),
and the admin reports: commission earnings by day and month net of refunds, balances and
transactions with filters; a user reads only their own wallet, and only admins the reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev.services import RunningService
from hirepay_platform.db import create_engine
from hirepay_platform.identity import Actor
from tests.support.service_auth import call_metadata
from tests.support.wallet_grpc import Client, branch, money, refused, uid
from tests.wallet.conftest import ledger_audit

USER, REVENUE, ESCROW = (
    pb.ACCOUNT_KIND_USER,
    pb.ACCOUNT_KIND_PLATFORM_REVENUE,
    pb.ACCOUNT_KIND_ESCROW,
)
CLEARING, ISSUANCE = pb.ACCOUNT_KIND_PROVIDER_CLEARING, pb.ACCOUNT_KIND_ISSUANCE


@pytest.fixture(scope="module")
async def plain(wallet: RunningService) -> AsyncIterator[pb_grpc.WalletServiceStub]:
    """A stub whose calls carry only the metadata a test gives (to play the gateway)."""
    async with grpc.aio.insecure_channel(wallet.target) as channel:
        yield pb_grpc.WalletServiceStub(channel)


def as_user(user: str, role: str = "contractor") -> list[tuple[str, str]]:
    """The metadata of a call the gateway makes for `user`."""
    return call_metadata("gateway", "wallet", Actor(user, role))


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


def summary_of(reply: pb.GetWalletSummaryResponse) -> list[tuple[str, int, int, int]]:
    return [
        (a.currency, a.balance.posted_minor, a.balance.pending_minor, a.balance.available_minor)
        for a in reply.accounts
    ]


async def reserve(client: Client, account: str, destination: str, amount: int, unit: str) -> str:
    gtx = f"g-{uid()}"
    await client.stub.ReserveHold(
        pb.ReserveHoldRequest(
            request_id=uid(),
            branch=branch(gtx),
            account_id=account,
            destination_account_id=destination,
            amount=money(amount, unit),
            expires_in_seconds=600,
        ),
        timeout=5,
    )
    return gtx


async def test_wallet_summary_by_unit_with_held_amounts(client: Client) -> None:
    usd, coin = await client.open("ann"), await client.open("ann", unit="COIN")
    jobs = await client.open("ann", unit="JOB_CREDIT")
    cand = await client.open("ann", unit="CANDIDATE_CREDIT")
    # Accounts of other kinds or owners are not the user's wallet.
    escrow = await client.open("ann", ESCROW)
    await client.open("bob")
    await client.fund(usd, 100_000)
    await client.fund(coin, 5_000, "COIN")
    await client.fund(jobs, 2_500, "JOB_CREDIT")
    await client.fund(cand, 50, "CANDIDATE_CREDIT")
    coin_escrow = await client.open("engagement-1", ESCROW, unit="COIN")
    # A withdrawal held, a coin offer held, one coin hold confirmed in part (the rest released).
    await reserve(client, usd, escrow, 25_050, "USD")
    await reserve(client, coin, coin_escrow, 1_200, "COIN")
    confirmed = await reserve(client, coin, coin_escrow, 800, "COIN")
    await client.stub.ConfirmHold(
        pb.ConfirmHoldRequest(request_id=uid(), branch=branch(confirmed), amount_minor=300),
        timeout=5,
    )

    reply = await client.stub.GetWalletSummary(
        pb.GetWalletSummaryRequest(owner_id=client.owner("ann")), timeout=5
    )
    assert summary_of(reply) == [
        ("CANDIDATE_CREDIT", 50, 0, 50),
        ("COIN", 4_700, 1_200, 3_500),
        ("JOB_CREDIT", 2_500, 0, 2_500),
        ("USD", 100_000, 25_050, 74_950),
    ]
    assert {a.kind for a in reply.accounts} == {USER}
    assert {a.account_id for a in reply.accounts} == {usd, coin, jobs, cand}
    nobody = await client.stub.GetWalletSummary(
        pb.GetWalletSummaryRequest(owner_id=client.owner("nobody")), timeout=5
    )
    assert list(nobody.accounts) == []


async def test_history_newest_first_with_counterparty_description_and_filters(
    client: Client,
) -> None:
    usd, coin = await client.open("cy"), await client.open("cy", unit="COIN")
    clearing = await client.open("clearing", CLEARING, neg=True)
    revenue = await client.open("platform", REVENUE, unit="COIN")
    escrow = await client.open("engagement-7", ESCROW, unit="COIN")
    issuance = await client.open("platform", ISSUANCE, unit="COIN", neg=True)
    await client.transfer(
        "pay-in-" + client.tag,
        (clearing, usd, 10_000),
        description="top-up",
        metadata={"payment_id": "pay_1"},
    )
    await client.transfer(f"coins-{client.tag}", (issuance, coin, 1_000, "COIN"))
    before_fund = datetime.now(UTC)
    await asyncio.sleep(0.05)
    # Funding an engagement from coins: 10% to revenue, the rest to escrow, in one transfer.
    await client.transfer(
        f"engagement-7-fund-{client.tag}",
        (coin, revenue, 100, "COIN"),
        (coin, escrow, 900, "COIN"),
        description="offer accepted",
        metadata={"engagement_id": "engagement-7"},
    )
    request = pb.ListWalletTransactionsRequest(owner_id=client.owner("cy"))
    lines = (await client.stub.ListWalletTransactions(request, timeout=5)).lines
    assert [(x.transfer_id, x.amount.amount_minor, x.amount.currency) for x in lines] == [
        (f"engagement-7-fund-{client.tag}", -900, "COIN"),
        (f"engagement-7-fund-{client.tag}", -100, "COIN"),
        (f"coins-{client.tag}", 1_000, "COIN"),
        (f"pay-in-{client.tag}", 10_000, "USD"),
    ]
    newest, _, _, oldest = lines
    # The largest opposite entry of the same unit is the counter-party: escrow for the funding.
    assert newest.counterparty_kind == ESCROW and lines[2].counterparty_kind == ISSUANCE
    assert (oldest.counterparty_kind, oldest.description) == (CLEARING, "top-up")
    assert dict(oldest.metadata) == {"payment_id": "pay_1"}
    assert (oldest.account_id, oldest.owner_id, oldest.account_kind) == (
        usd,
        client.owner("cy"),
        USER,
    )
    assert newest.entry_id > lines[1].entry_id > lines[2].entry_id > oldest.entry_id

    only_usd = pb.ListWalletTransactionsRequest(owner_id=client.owner("cy"), unit="USD")
    lines = (await client.stub.ListWalletTransactions(only_usd, timeout=5)).lines
    assert [x.transfer_id for x in lines] == [f"pay-in-{client.tag}"]
    since = pb.ListWalletTransactionsRequest(owner_id=client.owner("cy"), since=stamp(before_fund))
    lines = (await client.stub.ListWalletTransactions(since, timeout=5)).lines
    assert {x.transfer_id for x in lines} == {f"engagement-7-fund-{client.tag}"}
    until = pb.ListWalletTransactionsRequest(owner_id=client.owner("cy"), until=stamp(before_fund))
    lines = (await client.stub.ListWalletTransactions(until, timeout=5)).lines
    assert [x.transfer_id for x in lines] == [f"coins-{client.tag}", f"pay-in-{client.tag}"]

    code, reason, meta = await refused(
        client.stub.ListWalletTransactions(
            pb.ListWalletTransactionsRequest(owner_id=client.owner("cy"), unit="DOGE")
        )
    )
    assert (code, reason, meta.get("unit")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        "unknown currency",
    )
    code, reason, _ = await refused(
        client.stub.ListWalletTransactions(
            pb.ListWalletTransactionsRequest(
                owner_id=client.owner("cy"), since=stamp(before_fund), until=stamp(before_fund)
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def _page_all(
    stub: pb_grpc.WalletServiceStub, owner: str, size: int, between_pages=None
) -> list[int]:
    ids: list[int] = []
    token = ""
    while True:
        reply = await stub.ListWalletTransactions(
            pb.ListWalletTransactionsRequest(
                owner_id=owner, page=common_pb2.PageRequest(page_size=size, page_token=token)
            ),
            timeout=5,
        )
        ids += [line.entry_id for line in reply.lines]
        token = reply.next_page_token
        if not token:
            return ids
        if between_pages is not None:
            await between_pages()


async def test_paging_across_many_entries_is_stable_while_entries_are_posted(
    client: Client,
) -> None:
    usd, coin = await client.open("dee"), await client.open("dee", unit="COIN")
    clearing = await client.open("clearing", CLEARING, neg=True)
    issuance = await client.open("platform", ISSUANCE, unit="COIN", neg=True)

    def credit(i: int) -> pb.TransferRequest:
        source, target, unit = (clearing, usd, "USD") if i % 2 else (issuance, coin, "COIN")
        return pb.TransferRequest(
            transfer_id=f"in-{client.tag}-{i}",
            legs=[
                pb.TransferLeg(from_account_id=source, to_account_id=target, amount=money(i, unit))
            ],
        )

    await client.stub.CreateTransfers(
        pb.CreateTransfersRequest(request_id=uid(), transfers=[credit(i) for i in range(1, 131)]),
        timeout=10,
    )
    owner = client.owner("dee")
    committed = await _page_all(client.stub, owner, 200)
    assert len(committed) == 130 and committed == sorted(committed, reverse=True)

    # While a reader pages by 17, other transfers keep landing on the same accounts.
    writers: list[asyncio.Future] = []
    posted = iter(range(1000, 1060))

    async def post_more() -> None:
        batch = [credit(next(posted)) for _ in range(6)]
        for request in batch:
            writers.append(asyncio.ensure_future(client.stub.Transfer(request, timeout=5)))
        await asyncio.sleep(0.01)

    paged = await _page_all(client.stub, owner, 17, post_more)
    await asyncio.gather(*writers)
    # Every entry committed before the first page appears exactly once, newest first; the new
    # ones are newer than the first page, so none of them shifted a page or repeated a line.
    assert paged == committed
    assert len(await _page_all(client.stub, owner, 200)) == 130 + len(writers)

    # A token belongs to its listing: reused with another filter it is refused.
    first = await client.stub.ListWalletTransactions(
        pb.ListWalletTransactionsRequest(owner_id=owner, page=common_pb2.PageRequest(page_size=5)),
        timeout=5,
    )
    code, reason, _ = await refused(
        client.stub.ListWalletTransactions(
            pb.ListWalletTransactionsRequest(
                owner_id=owner,
                unit="USD",
                page=common_pb2.PageRequest(page_size=5, page_token=first.next_page_token),
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def test_a_user_reads_only_their_own_wallet(client: Client, plain) -> None:
    mine, theirs = client.owner("eve"), client.owner("fay")
    await client.fund(await client.open("eve"), 700)
    await client.fund(await client.open("fay"), 900)

    own = await plain.GetWalletSummary(
        pb.GetWalletSummaryRequest(owner_id=mine), metadata=as_user(mine), timeout=5
    )
    assert summary_of(own) == [("USD", 700, 0, 700)]
    history = await plain.ListWalletTransactions(
        pb.ListWalletTransactionsRequest(owner_id=mine), metadata=as_user(mine), timeout=5
    )
    assert [line.amount.amount_minor for line in history.lines] == [700]
    # Another user's wallet answers as an empty one: nothing about it, not even that it exists.
    other = await plain.GetWalletSummary(
        pb.GetWalletSummaryRequest(owner_id=theirs), metadata=as_user(mine), timeout=5
    )
    assert list(other.accounts) == []
    other_history = await plain.ListWalletTransactions(
        pb.ListWalletTransactionsRequest(owner_id=theirs), metadata=as_user(mine), timeout=5
    )
    assert list(other_history.lines) == [] and not other_history.next_page_token
    # Through the gateway without a user, nothing either; an admin reads anyone's.
    anonymous = await plain.GetWalletSummary(
        pb.GetWalletSummaryRequest(owner_id=theirs),
        metadata=call_metadata("gateway", "wallet"),
        timeout=5,
    )
    assert list(anonymous.accounts) == []
    admin = await plain.GetWalletSummary(
        pb.GetWalletSummaryRequest(owner_id=theirs), metadata=as_user("root", "admin"), timeout=5
    )
    assert summary_of(admin) == [("USD", 900, 0, 900)]


async def test_admin_reports_refuse_everyone_but_admins_and_internal_callers(
    client: Client, plain
) -> None:
    now = datetime.now(UTC)
    calls = {
        "GetCommissionEarnings": pb.GetCommissionEarningsRequest(
            since=stamp(now - timedelta(days=1)), until=stamp(now + timedelta(days=1))
        ),
        "ListBalances": pb.ListBalancesRequest(),
        "ListTransactions": pb.ListTransactionsRequest(),
    }
    for name, request in calls.items():
        rpc = getattr(plain, name)
        for role in ("customer", "contractor", "company"):
            code, reason, _ = await refused(rpc(request, metadata=as_user("u-1", role)))
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"), name
        code, _, _ = await refused(rpc(request, metadata=call_metadata("gateway", "wallet")))
        assert code == grpc.StatusCode.PERMISSION_DENIED, name
        # A service outside the policy is refused before any servicer runs.
        code, reason, _ = await refused(rpc(request, metadata=call_metadata("sandbox", "wallet")))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED"), name
        await rpc(request, metadata=as_user("root", "admin"), timeout=5)
        await rpc(request, metadata=call_metadata("payments", "wallet"), timeout=5)
    # The gateway still may not move money.
    code, reason, _ = await refused(
        plain.Transfer(pb.TransferRequest(transfer_id="x"), metadata=as_user("root", "admin"))
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


async def _backfill(
    db_url: str, transfer_id: str, at: datetime, legs: list[tuple[str, str, int, str]]
) -> None:
    """Book a transfer as it was posted at `at` (the ledger's history before this test ran):
    balanced entries with that time, and the balances (row or shard) they move."""
    engine = create_engine(db_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO transfers (id, kind, fingerprint, created_at)"
                    " VALUES (:id, 'transfer', '{}', :at)"
                ),
                {"id": transfer_id, "at": at},
            )
            for source, target, amount, unit in legs:
                for account, signed in ((source, -amount), (target, amount)):
                    params = {"t": transfer_id, "a": account, "u": unit, "m": signed, "at": at}
                    await connection.execute(
                        text(
                            "INSERT INTO entries (transfer_id, account_id, unit, amount, created_at)"
                            " VALUES (:t, CAST(:a AS uuid), :u, :m, :at)"
                        ),
                        params,
                    )
                    await connection.execute(
                        text(
                            "UPDATE accounts SET posted = posted + :m"
                            " WHERE id = CAST(:a AS uuid) AND shards = 0"
                        ),
                        params,
                    )
                    await connection.execute(
                        text(
                            "UPDATE account_shards SET posted = posted + :m"
                            " WHERE account_id = CAST(:a AS uuid) AND shard = 0"
                        ),
                        params,
                    )
    finally:
        await engine.dispose()


def buckets_of(reply_buckets) -> list[tuple[str, str, int, int, int]]:
    return [
        (
            b.period_start.ToDatetime(tzinfo=UTC).isoformat(),
            b.unit,
            b.credited_minor,
            b.debited_minor,
            b.net_minor,
        )
        for b in reply_buckets
    ]


async def test_commission_earnings_by_day_and_month_per_unit_net_of_refunds(
    client: Client, wallet_db_url: str
) -> None:
    usd_revenue = await client.open("platform", REVENUE)
    coin_revenue = await client.open("platform", REVENUE, unit="COIN")
    clearing = await client.open("provider-stripe", CLEARING, neg=True)
    coin_issuance = await client.open("platform", ISSUANCE, unit="COIN", neg=True)
    user = await client.open("gus")

    def at(text_time: str) -> datetime:
        return datetime.fromisoformat(text_time).replace(tzinfo=UTC)

    history = [
        (
            "2021-03-01T10:00:00",
            [(clearing, usd_revenue, 1_000, "USD"), (clearing, user, 9_000, "USD")],
        ),
        ("2021-03-01T23:59:59.999999", [(clearing, usd_revenue, 500, "USD")]),
        ("2021-03-01T12:00:00", [(coin_issuance, coin_revenue, 50, "COIN")]),
        ("2021-03-02T00:00:00", [(clearing, usd_revenue, 300, "USD")]),
        ("2021-03-02T12:00:00", [(usd_revenue, clearing, 200, "USD")]),  # a fee refunded
        ("2021-04-15T08:00:00", [(clearing, usd_revenue, 700, "USD")]),
        ("2021-04-30T23:00:00", [(coin_revenue, coin_issuance, 20, "COIN")]),
        ("2021-05-01T00:00:00", [(clearing, usd_revenue, 999, "USD")]),  # after the ranges
    ]
    for i, (when, legs) in enumerate(history):
        await _backfill(wallet_db_url, f"history-{client.tag}-{i}", at(when), legs)
    engine = create_engine(wallet_db_url)
    try:
        assert await ledger_audit(engine) == {}
    finally:
        await engine.dispose()

    days = await client.stub.GetCommissionEarnings(
        pb.GetCommissionEarningsRequest(
            since=stamp(at("2021-03-01T00:00:00")),
            until=stamp(at("2021-03-03T00:00:00")),
            period=pb.EARNINGS_PERIOD_DAY,
        ),
        timeout=5,
    )
    assert buckets_of(days.buckets) == [
        ("2021-03-01T00:00:00+00:00", "COIN", 50, 0, 50),
        ("2021-03-01T00:00:00+00:00", "USD", 1_500, 0, 1_500),
        ("2021-03-02T00:00:00+00:00", "USD", 300, 200, 100),
    ]
    assert buckets_of(days.totals) == [
        ("2021-03-01T00:00:00+00:00", "COIN", 50, 0, 50),
        ("2021-03-01T00:00:00+00:00", "USD", 1_800, 200, 1_600),
    ]
    months = await client.stub.GetCommissionEarnings(
        pb.GetCommissionEarningsRequest(
            since=stamp(at("2021-03-01T00:00:00")),
            until=stamp(at("2021-05-01T00:00:00")),
            period=pb.EARNINGS_PERIOD_MONTH,
        ),
        timeout=5,
    )
    assert buckets_of(months.buckets) == [
        ("2021-03-01T00:00:00+00:00", "COIN", 50, 0, 50),
        ("2021-03-01T00:00:00+00:00", "USD", 1_800, 200, 1_600),
        ("2021-04-01T00:00:00+00:00", "COIN", 0, 20, -20),
        ("2021-04-01T00:00:00+00:00", "USD", 700, 0, 700),
    ]
    assert buckets_of(months.totals) == [
        ("2021-03-01T00:00:00+00:00", "COIN", 50, 20, 30),
        ("2021-03-01T00:00:00+00:00", "USD", 2_500, 200, 2_300),
    ]
    may = await client.stub.GetCommissionEarnings(
        pb.GetCommissionEarningsRequest(
            since=stamp(at("2021-05-01T00:00:00")),
            until=stamp(at("2021-05-01T00:00:01")),
            period=pb.EARNINGS_PERIOD_MONTH,
        ),
        timeout=5,
    )
    assert buckets_of(may.totals) == [("2021-05-01T00:00:00+00:00", "USD", 999, 0, 999)]

    for request in (
        pb.GetCommissionEarningsRequest(until=stamp(at("2021-03-01T00:00:00"))),
        pb.GetCommissionEarningsRequest(
            since=stamp(at("2021-03-02T00:00:00")), until=stamp(at("2021-03-01T00:00:00"))
        ),
        # 401 days in one day report is more than one answer may hold.
        pb.GetCommissionEarningsRequest(
            since=stamp(at("2021-01-01T00:00:00")), until=stamp(at("2022-02-05T00:00:00"))
        ),
    ):
        code, reason, _ = await refused(client.stub.GetCommissionEarnings(request))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def test_admin_lists_balances_with_filters_and_pages(client: Client, plain) -> None:
    units = ("USD", "EUR", "COIN")
    opened = {}
    for name in ("hal", "ida"):
        for unit in units:
            account = await client.open(name, unit=unit)
            opened[(name, unit)] = account
            await client.fund(account, 100 if unit == "USD" else 5, unit)

    async def listing(**filters) -> list[tuple[str, str, int]]:
        found, token = [], ""
        while True:
            reply = await client.stub.ListBalances(
                pb.ListBalancesRequest(
                    page=common_pb2.PageRequest(page_size=2, page_token=token), **filters
                ),
                timeout=5,
            )
            found += [(a.owner_id, a.currency, a.balance.available_minor) for a in reply.accounts]
            token = reply.next_page_token
            if not token:
                return found

    hal = client.owner("hal")
    assert await listing(owner_id=hal) == [(hal, "USD", 100), (hal, "EUR", 5), (hal, "COIN", 5)]
    assert await listing(owner_id=hal, unit="COIN") == [(hal, "COIN", 5)]
    users_in_eur = await listing(kind=USER, unit="EUR")
    assert (hal, "EUR", 5) in users_in_eur and (client.owner("ida"), "EUR", 5) in users_in_eur
    clearing = await listing(kind=CLEARING, owner_id=client.owner("clearing"))
    assert clearing == [
        (client.owner("clearing"), "USD", -200),
        (client.owner("clearing"), "EUR", -10),
        (client.owner("clearing"), "COIN", -10),
    ]
    # The same through the gateway for an admin.
    reply = await plain.ListBalances(
        pb.ListBalancesRequest(owner_id=hal), metadata=as_user("root", "admin"), timeout=5
    )
    assert [(a.currency, a.balance.posted_minor, a.kind) for a in reply.accounts] == [
        ("USD", 100, USER),
        ("EUR", 5, USER),
        ("COIN", 5, USER),
    ]


async def test_admin_lists_transactions_with_filters(client: Client) -> None:
    usd, eur = await client.open("jon"), await client.open("jon", unit="EUR")
    revenue = await client.open("platform", REVENUE)
    await client.fund(usd, 1_000)
    await client.fund(eur, 300, "EUR")
    mark = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await client.transfer(f"fee-{client.tag}", (usd, revenue, 150), description="fee")

    async def lines(**filters) -> list[tuple[str, str, int, str]]:
        reply = await client.stub.ListTransactions(pb.ListTransactionsRequest(**filters), timeout=5)
        return [
            (
                line.owner_id,
                pb.AccountKind.Name(line.account_kind),
                line.amount.amount_minor,
                line.amount.currency,
            )
            for line in reply.lines
        ]

    jon = client.owner("jon")
    assert await lines(owner_id=jon) == [
        (jon, "ACCOUNT_KIND_USER", -150, "USD"),
        (jon, "ACCOUNT_KIND_USER", 300, "EUR"),
        (jon, "ACCOUNT_KIND_USER", 1_000, "USD"),
    ]
    assert await lines(owner_id=jon, unit="EUR") == [(jon, "ACCOUNT_KIND_USER", 300, "EUR")]
    assert await lines(owner_id=jon, since=stamp(mark)) == [(jon, "ACCOUNT_KIND_USER", -150, "USD")]
    platform = client.owner("platform")
    assert await lines(owner_id=platform, account_kind=REVENUE) == [
        (platform, "ACCOUNT_KIND_PLATFORM_REVENUE", 150, "USD")
    ]
    # Without an owner: every owner's entries of that kind, newest first.
    newest = (await lines(account_kind=REVENUE, unit="USD", since=stamp(mark)))[0]
    assert newest == (platform, "ACCOUNT_KIND_PLATFORM_REVENUE", 150, "USD")
    everything = await lines(since=stamp(mark))
    assert (jon, "ACCOUNT_KIND_USER", -150, "USD") in everything
    assert all(currency in ("USD", "EUR", "COIN") for *_, currency in everything)
    code, reason, _ = await refused(
        client.stub.ListTransactions(pb.ListTransactionsRequest(account_kind=99))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    code, reason, meta = await refused(
        client.stub.ListTransactions(
            pb.ListTransactionsRequest(since=Timestamp(seconds=10**13))  # past year 9999
        )
    )
    assert (code, reason, list(meta)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["since"],
    )
