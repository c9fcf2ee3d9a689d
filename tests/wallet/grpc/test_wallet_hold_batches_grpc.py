"""CreateHolds and ResolveHolds against the wallet as a real process over real gRPC: one result per
item in order, each refused item with the status code and reason its single call would have had,
replays, the batch limits, who may call them, their metrics, and batches racing on the same holds
and accounts with every balance exact."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev.services import RunningService
from hirepay_platform.db import create_engine
from hirepay_platform.identity import Actor
from tests.support.service_auth import call_metadata
from tests.support.wallet_grpc import branch, money, refused, uid
from tests.wallet.conftest import ledger_audit

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]


def reserve(gtx: str, account: str, destination: str, amount: int) -> pb.ReserveHoldRequest:
    return pb.ReserveHoldRequest(
        branch=branch(gtx), account_id=account, destination_account_id=destination,
        amount=money(amount),
    )  # fmt: skip


def confirm(gtx: str, amount: int = 0, **extra) -> pb.HoldResolution:
    return pb.HoldResolution(
        confirm=pb.ConfirmHoldRequest(branch=branch(gtx), amount_minor=amount, **extra)
    )


def cancel(gtx: str) -> pb.HoldResolution:
    return pb.HoldResolution(cancel=pb.CancelHoldRequest(branch=branch(gtx), reason="test"))


def outcomes(reply: pb.CreateHoldsResponse | pb.ResolveHoldsResponse) -> list[str]:
    """Per item: "new", "replayed", "null" (a Cancel before its Try) or the error's reason."""
    found = []
    for result in reply.results:
        if result.HasField("error"):
            found.append(result.error.reason)
        elif result.hold.null_compensation and not result.hold.replayed:
            found.append("null")
        else:
            found.append("replayed" if result.hold.replayed else "new")
    return found


async def test_hold_batches_over_grpc(wallet, client, stub):
    """A Try batch, then a batch of Confirms and Cancels: results in order with their indexes,
    refusals as their single calls' statuses, every balance exact; each request again: replays."""
    customer, contractor = await client.open("customer"), await client.open("contractor")
    revenue = await client.open("platform", pb.ACCOUNT_KIND_PLATFORM_REVENUE)
    await client.fund(customer, 1000)
    a, b, c, poor, never = (f"{name}-{uid()}" for name in ("a", "b", "c", "poor", "never"))
    create = pb.CreateHoldsRequest(
        request_id=uid(),
        holds=[
            reserve(a, customer, contractor, 400),
            reserve(b, customer, contractor, 300),
            reserve(poor, customer, contractor, 500),  # only 300 left
            reserve(c, customer, contractor, 200),
            reserve(f"x-{uid()}", customer, str(uuid.uuid4()), 1),
            reserve(a, customer, contractor, 401),  # the same branch, another amount
        ],
    )
    reply = await stub.CreateHolds(create, timeout=5)
    assert [r.index for r in reply.results] == list(range(6))
    assert outcomes(reply) == [
        "new",
        "new",
        "INSUFFICIENT_FUNDS",
        "new",
        "ACCOUNT_NOT_FOUND",
        "IDEMPOTENCY_MISMATCH",
    ]
    errors = {r.index: r.error for r in reply.results if r.HasField("error")}
    assert (errors[2].code, errors[2].metadata["account_id"]) == (FAILED_PRECONDITION, customer)
    assert errors[4].code == NOT_FOUND
    assert (errors[5].code, errors[5].metadata["field"]) == (ALREADY_EXISTS, "amount")
    assert reply.results[0].hold.hold.state == pb.Hold.PENDING
    assert reply.results[0].hold.hold.amount.amount_minor == 400
    assert await client.balance(customer) == (1000, 900, 100)

    split = [
        pb.SplitShare(to_account_id=revenue, basis_points=1000),
        pb.SplitShare(to_account_id=contractor, basis_points=9000),
    ]
    resolve = pb.ResolveHoldsRequest(
        request_id=uid(),
        resolutions=[
            confirm(a, 300, shares=split, remainder_account_id=contractor),
            cancel(b),
            cancel(never),
            confirm(c),
            confirm(c, 100),  # the same branch, other fields
            pb.HoldResolution(),  # neither
            confirm(b),  # cancelled above
        ],
    )
    reply = await stub.ResolveHolds(resolve, timeout=5)
    assert outcomes(reply) == [
        "new",
        "new",
        "null",
        "new",
        "IDEMPOTENCY_MISMATCH",
        "VALIDATION_FAILED",
        "HOLD_ALREADY_RESOLVED",
    ]
    assert reply.results[5].error.code == INVALID_ARGUMENT
    assert "action" in reply.results[5].error.metadata
    assert reply.results[6].error.code == FAILED_PRECONDITION
    confirmed = reply.results[0].hold
    assert confirmed.hold.state == pb.Hold.CONFIRMED and confirmed.hold.confirmed_minor == 300
    assert sorted(e.amount.amount_minor for e in confirmed.transfer.entries) == [-300, 30, 270]
    assert reply.results[1].hold.hold.state == pb.Hold.CANCELLED
    assert not reply.results[2].hold.HasField("hold")
    # a: 300 posted, 100 released; b: released; c: 200 posted.
    assert await client.balance(customer) == (500, 0, 500)
    assert await client.balance(contractor) == (270 + 200, 0, 470)
    assert await client.balance(revenue) == (30, 0, 30)

    again = await stub.ResolveHolds(resolve, timeout=5)
    assert outcomes(again)[:4] == ["replayed"] * 4
    assert again.results[0].hold.transfer == confirmed.transfer
    # The Try batch again: its holds replay (resolved since); the Try refused then left nothing
    # behind, so its branch reserves now that the money is there.
    assert outcomes(await stub.CreateHolds(create, timeout=5)) == [
        "replayed",
        "replayed",
        "new",
        "replayed",
        "ACCOUNT_NOT_FOUND",
        "IDEMPOTENCY_MISMATCH",
    ]
    assert await client.balance(customer) == (500, 500, 0)
    # A Try after its batch's Cancel reserves nothing, as a single call or in a batch.
    code, reason, _ = await refused(
        stub.ReserveHold(reserve(never, customer, contractor, 10), timeout=5)
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_CANCELLED")
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"http://127.0.0.1:{wallet.metrics_port}/metrics")).text
    assert 'hirepay_wallet_transfers_total{operation="ResolveHolds",outcome="posted"}' in body
    assert 'hirepay_wallet_transfers_total{operation="ResolveHolds",outcome="replayed"}' in body
    assert 'hirepay_rpc_requests_total{code="OK",method="CreateHolds",service="wallet"}' in body
    assert 'hold_transitions_total{from_state="pending",to_state="cancelled"}' in body


async def test_batch_limits_over_grpc(client, stub):
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 10_000)
    for request, rpc in (
        (pb.CreateHoldsRequest(request_id=uid()), stub.CreateHolds),
        (pb.ResolveHoldsRequest(request_id=uid()), stub.ResolveHolds),
        (
            pb.CreateHoldsRequest(
                holds=[reserve(f"l-{uid()}", alice, bob, 1) for _ in range(1001)]
            ),
            stub.CreateHolds,
        ),
        (
            pb.ResolveHoldsRequest(resolutions=[cancel(f"l-{uid()}") for _ in range(1001)]),
            stub.ResolveHolds,
        ),
    ):
        code, reason, meta = await refused(rpc(request, timeout=10))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
        assert set(meta) <= {"holds", "resolutions"} and meta
    assert await client.balance(alice) == (10_000, 0, 10_000)  # nothing was reserved
    full = pb.CreateHoldsRequest(holds=[reserve(f"k-{uid()}", alice, bob, 1) for _ in range(1000)])
    assert outcomes(await stub.CreateHolds(full, timeout=10)) == ["new"] * 1000
    assert await client.balance(alice) == (10_000, 1000, 9000)


async def test_only_jobs_and_payments_may_call_the_hold_batches(client, plain):
    """The gateway (even for an admin) and services outside the policy move no money."""
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 100)
    gtx = f"p-{uid()}"
    create = pb.CreateHoldsRequest(holds=[reserve(gtx, alice, bob, 10)])
    resolve = pb.ResolveHoldsRequest(resolutions=[confirm(gtx)])
    for metadata in (
        call_metadata("gateway", "wallet", Actor("root", "admin")),
        call_metadata("gateway", "wallet"),
        call_metadata("sandbox", "wallet"),
    ):
        for rpc, request in ((plain.CreateHolds, create), (plain.ResolveHolds, resolve)):
            code, reason, _ = await refused(rpc(request, metadata=metadata, timeout=5))
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    for caller in ("payments", "jobs"):
        metadata = call_metadata(caller, "wallet")
        assert outcomes(await plain.CreateHolds(create, metadata=metadata, timeout=5)) in (
            ["new"],
            ["replayed"],
        )
    reply = await plain.ResolveHolds(resolve, metadata=call_metadata("payments", "wallet"))
    assert outcomes(reply) == ["new"]
    assert await client.balance(bob) == (10, 0, 10)


async def test_batches_racing_over_grpc(client, stub, wallet_db_url):
    """Concurrent Try batches on one account never overdraw it; then a Confirm batch races a
    Cancel batch of the same holds (and twin Confirm batches race each other): each hold resolves
    once, the ledger audit finds nothing."""
    payer, payee = await client.open("payer"), await client.open("payee")
    await client.fund(payer, 2000)
    batches = [[f"o{i}-{j}-{uid()}" for j in range(25)] for i in range(6)]
    replies = await asyncio.gather(
        *(
            stub.CreateHolds(
                pb.CreateHoldsRequest(holds=[reserve(g, payer, payee, 30) for g in gtxs]),
                timeout=10,
            )
            for gtxs in batches
        )
    )
    counted = Counter(o for reply in replies for o in outcomes(reply))
    assert counted == {"new": 66, "INSUFFICIENT_FUNDS": 84}  # 66 * 30 = 1980 <= 2000 < 67 * 30
    assert await client.balance(payer) == (2000, 1980, 20)
    held = [
        g
        for gtxs, reply in zip(batches, replies, strict=True)
        for g, r in zip(gtxs, reply.results, strict=True)
        if not r.HasField("error")
    ]
    confirms = pb.ResolveHoldsRequest(resolutions=[confirm(g) for g in held])
    cancels = pb.ResolveHoldsRequest(resolutions=[cancel(g) for g in reversed(held)])
    by_confirm, twin, by_cancel = await asyncio.gather(
        stub.ResolveHolds(confirms, timeout=10),
        stub.ResolveHolds(confirms, timeout=10),
        stub.ResolveHolds(cancels, timeout=10),
    )
    posted = 0
    for one, other, cancelled in zip(
        outcomes(by_confirm), outcomes(twin), reversed(outcomes(by_cancel)), strict=True
    ):
        if cancelled == "new":  # the Cancel won: both Confirms are refused
            assert [one, other] == ["HOLD_ALREADY_RESOLVED"] * 2
        else:  # a Confirm won: the other replays it, the Cancel is refused
            assert cancelled == "HOLD_ALREADY_RESOLVED"
            assert sorted([one, other]) == ["new", "replayed"]
            posted += 30
    assert await client.balance(payer) == (2000 - posted, 0, 2000 - posted)
    assert await client.balance(payee) == (posted, 0, posted)
    engine = create_engine(wallet_db_url)
    try:
        assert await ledger_audit(engine) == {}
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def plain(wallet: RunningService) -> AsyncIterator[pb_grpc.WalletServiceStub]:
    """A stub whose calls carry only the metadata a test gives (to play the gateway)."""
    async with grpc.aio.insecure_channel(wallet.target) as channel:
        yield pb_grpc.WalletServiceStub(channel)
