"""The wallet as a real process (`python -m wallet`) called over real gRPC with the generated stubs:
statuses with ErrorInfo reasons, health, /metrics, the expiry worker, races and a crash."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay_platform.grpc_status import error_info
from tests.support.wallet_grpc import USD, branch, money, refused, uid


async def test_health_is_serving_and_metrics_are_exposed(wallet, channel, client):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "hirepay.wallet.v1.WalletService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    alice = await client.open("alice")
    await client.fund(alice, 100)
    assert await client.balance(alice) == (100, 0, 100)
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"http://127.0.0.1:{wallet.metrics_port}/metrics")).text
    assert 'hirepay_wallet_transfers_total{operation="Transfer",outcome="posted"}' in body
    assert 'hirepay_rpc_requests_total{code="OK",method="OpenAccount",service="wallet"}' in body
    assert "hirepay_wallet_expired_holds_released_total" in body


async def test_transfer_replay_and_mismatch_over_grpc(client):
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 1000)
    first = await client.transfer(f"t-{client.tag}", (alice, bob, 300), description="rent")
    again = await client.transfer(f"t-{client.tag}", (alice, bob, 300), description="rent")
    assert not first.replayed and again.replayed
    assert again.transfer == first.transfer
    assert [(e.account_id, e.amount.amount_minor) for e in first.transfer.entries] == [
        (alice, -300),
        (bob, 300),
    ]
    code, reason, meta = await refused(
        client.transfer(f"t-{client.tag}", (alice, bob, 301), description="rent")
    )
    assert (code, reason, meta["field"]) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_MISMATCH",
        "legs",
    )
    fetched = await client.stub.GetTransfer(pb.GetTransferRequest(transfer_id=f"t-{client.tag}"))
    assert fetched.transfer == first.transfer
    assert await client.balance(alice) == (700, 0, 700)
    assert await client.balance(bob) == (300, 0, 300)


async def test_errors_carry_their_reason(client):
    alice, bob = await client.open("alice"), await client.open("bob")
    euro = await client.open("alice", unit="EUR")
    await client.fund(alice, 100)
    cases = [
        (
            client.transfer(f"a-{uid()}", (alice, bob, 101)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_FUNDS",
        ),
        (
            client.transfer(f"b-{uid()}", (alice, euro, 1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNIT_MISMATCH",
        ),
        (
            client.transfer(f"c-{uid()}", (alice, str(uuid.uuid4()), 1)),
            grpc.StatusCode.NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
        ),
        (
            client.transfer("bad id!", (alice, bob, 1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
        ),
        (
            client.stub.GetAccount(pb.GetAccountRequest(account_id="nope")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
        ),
        (
            client.stub.OpenAccount(pb.OpenAccountRequest(owner_id="x", currency=USD)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
        ),
        (
            client.stub.GetTransfer(pb.GetTransferRequest(transfer_id=f"none-{uid()}")),
            grpc.StatusCode.NOT_FOUND,
            "TRANSFER_NOT_FOUND",
        ),
        (
            client.stub.GetHold(pb.GetHoldRequest(branch=branch(f"none-{uid()}"))),
            grpc.StatusCode.NOT_FOUND,
            "HOLD_NOT_FOUND",
        ),
    ]
    for call, code, reason in cases:
        got_code, got_reason, _ = await refused(call)
        assert (got_code, got_reason) == (code, reason)
    _, _, meta = await refused(client.transfer(f"d-{uid()}", (alice, bob, 0)))
    assert "legs[0].amount.amount_minor" in meta
    assert await client.balance(alice) == (100, 0, 100)


async def test_two_phase_hold_with_partial_confirm_and_fee_split(client):
    customer, contractor = await client.open("customer"), await client.open("contractor")
    revenue = await client.open("platform", pb.ACCOUNT_KIND_PLATFORM_REVENUE)
    await client.fund(customer, 10_000)
    b = branch(f"saga-{uid()}")
    reserved = await client.stub.ReserveHold(
        pb.ReserveHoldRequest(
            request_id=uid(),
            branch=b,
            account_id=customer,
            destination_account_id=contractor,
            amount=money(5000),
            expires_in_seconds=600,
        ),
        timeout=5,
    )
    assert reserved.hold.state == pb.Hold.PENDING
    assert await client.balance(customer) == (10_000, 5000, 5000)
    confirm = pb.ConfirmHoldRequest(
        request_id=uid(),
        branch=b,
        amount_minor=3333,
        shares=[
            pb.SplitShare(to_account_id=revenue, basis_points=1000),
            pb.SplitShare(to_account_id=contractor, basis_points=9000),
        ],
        remainder_account_id=contractor,
    )
    done = await client.stub.ConfirmHold(confirm, timeout=5)
    assert (done.hold.state, done.hold.confirmed_minor) == (pb.Hold.CONFIRMED, 3333)
    assert done.hold.transfer_id == done.transfer.transfer_id
    # floor(333.3)=333 fee, floor(2999.7)=2999 payout, 1 left over to the contractor
    assert await client.balance(customer) == (6667, 0, 6667)
    assert await client.balance(revenue) == (333, 0, 333)
    assert await client.balance(contractor) == (3000, 0, 3000)
    repeat = await client.stub.ConfirmHold(confirm, timeout=5)
    assert repeat.replayed and repeat.transfer == done.transfer
    code, reason, meta = await refused(
        client.stub.CancelHold(pb.CancelHoldRequest(request_id=uid(), branch=b), timeout=5)
    )
    assert (code, reason, meta["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_ALREADY_RESOLVED",
        "confirmed",
    )


async def test_null_compensation_and_hanging_over_grpc(client):
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 1000)
    b = branch(f"saga-{uid()}")
    cancelled = await client.stub.CancelHold(pb.CancelHoldRequest(request_id=uid(), branch=b))
    assert cancelled.null_compensation and not cancelled.HasField("hold")
    code, reason, _ = await refused(
        client.stub.ReserveHold(
            pb.ReserveHoldRequest(
                request_id=uid(),
                branch=b,
                account_id=alice,
                destination_account_id=bob,
                amount=money(500),
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_CANCELLED")
    assert await client.balance(alice) == (1000, 0, 1000)


async def test_history_pages_over_grpc(client):
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 100)
    for i in range(5):
        await client.transfer(f"h{i}-{client.tag}", (alice, bob, i + 1))
    amounts, token = [], ""
    while True:
        page = await client.stub.ListEntries(
            pb.ListEntriesRequest(
                account_id=bob, page=common_pb2.PageRequest(page_size=2, page_token=token)
            )
        )
        amounts += [e.amount.amount_minor for e in page.entries]
        if not (token := page.next_page_token):
            break
    assert amounts == [5, 4, 3, 2, 1]
    listed = await client.stub.ListAccounts(pb.ListAccountsRequest(owner_id=f"alice-{client.tag}"))
    assert [a.account_id for a in listed.accounts] == [alice]
    assert listed.accounts[0].balance.available_minor == 100 - 15


async def test_expiry_worker_releases_holds_in_the_running_service(wallet, client):
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 1000)
    b = branch(f"saga-{uid()}")
    await client.stub.ReserveHold(
        pb.ReserveHoldRequest(
            request_id=uid(),
            branch=b,
            account_id=alice,
            destination_account_id=bob,
            amount=money(400),
            expires_in_seconds=1,
        )
    )
    assert await client.balance(alice) == (1000, 400, 600)
    for _ in range(50):
        hold = (await client.stub.GetHold(pb.GetHoldRequest(branch=b))).hold
        if hold.state == pb.Hold.EXPIRED:
            break
        await asyncio.sleep(0.1)
    assert hold.state == pb.Hold.EXPIRED
    assert await client.balance(alice) == (1000, 0, 1000)
    code, reason, meta = await refused(
        client.stub.ConfirmHold(pb.ConfirmHoldRequest(request_id=uid(), branch=b))
    )
    assert (code, reason, meta["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_ALREADY_RESOLVED",
        "expired",
    )
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"http://127.0.0.1:{wallet.metrics_port}/metrics")).text
    released = [
        line
        for line in body.splitlines()
        if line.startswith("hirepay_wallet_expired_holds_released_total ")
    ]
    assert released and float(released[0].split()[1]) >= 1


async def test_fifty_concurrent_grpc_debits(client):
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 500)

    async def debit(i: int) -> str:
        try:
            await client.transfer(f"d{i}-{client.tag}", (alice, bob, 20))
            return "ok"
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            return info.reason if info else exc.code().name

    outcomes = Counter(await asyncio.gather(*(debit(i) for i in range(50))))
    assert outcomes == {"ok": 25, "INSUFFICIENT_FUNDS": 25}
    assert await client.balance(alice) == (0, 0, 0)
    assert await client.balance(bob) == (500, 0, 500)


async def test_duplicate_confirms_racing_a_cancel_over_grpc(client):
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 100_000)
    rng = random.Random(3)
    posted = 0
    for i in range(15):
        b = branch(f"race-{i}-{client.tag}")
        await client.stub.ReserveHold(
            pb.ReserveHoldRequest(
                request_id=uid(),
                branch=b,
                account_id=alice,
                destination_account_id=bob,
                amount=money(1000),
            )
        )
        confirm = pb.ConfirmHoldRequest(request_id=uid(), branch=b, amount_minor=700)
        calls = [
            ("confirm", client.stub.ConfirmHold(confirm)),
            ("confirm", client.stub.ConfirmHold(confirm)),
            ("cancel", client.stub.CancelHold(pb.CancelHoldRequest(request_id=uid(), branch=b))),
        ]
        rng.shuffle(calls)

        async def outcome(call):
            try:
                return await call
            except grpc.aio.AioRpcError as exc:
                return error_info(exc).reason

        results = await asyncio.gather(*(outcome(call) for _, call in calls))
        by = {"confirm": [], "cancel": []}
        for (name, _), result in zip(calls, results, strict=True):
            by[name].append(result)
        if by["cancel"][0] == "HOLD_ALREADY_RESOLVED":
            assert sorted(r.replayed for r in by["confirm"]) == [False, True]
            posted += 700
        else:
            assert by["cancel"][0].hold.state == pb.Hold.CANCELLED
            assert by["confirm"] == ["HOLD_ALREADY_RESOLVED"] * 2
    assert await client.balance(alice) == (100_000 - posted, 0, 100_000 - posted)
    assert await client.balance(bob) == (posted, 0, posted)


async def test_a_crash_loses_nothing_and_retries_replay(wallet, client, channel):
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 1000)
    first = await client.transfer(f"c-{client.tag}", (alice, bob, 250))
    wallet.kill()  # SIGKILL: no graceful shutdown
    wallet.restart()
    again = await client.transfer(f"c-{client.tag}", (alice, bob, 250))
    assert again.replayed and again.transfer == first.transfer
    assert await client.balance(alice) == (750, 0, 750)


async def test_create_transfers_over_grpc(client, stub):
    """A batch call: one result per transfer in order, a refused transfer fails alone with the
    status code and reason its single call would have had; a repeat is answered as replays."""
    alice, bob = await client.open("alice"), await client.open("bob")
    await client.fund(alice, 100)

    def item(transfer_id: str, amount: int, to: str = bob) -> pb.TransferRequest:
        leg = pb.TransferLeg(from_account_id=alice, to_account_id=to, amount=money(amount))
        return pb.TransferRequest(transfer_id=transfer_id, legs=[leg])

    request = pb.CreateTransfersRequest(
        request_id=uid(),
        transfers=[
            item(f"x1-{client.tag}", 70),
            item(f"x2-{client.tag}", 70),
            item(f"x3-{client.tag}", 30),
            item(f"x4-{client.tag}", 1, to=str(uuid.uuid4())),
        ],
    )
    reply = await stub.CreateTransfers(request, timeout=5)
    assert [r.index for r in reply.results] == [0, 1, 2, 3]
    assert [r.WhichOneof("outcome") for r in reply.results] == [
        "transfer",
        "error",
        "transfer",
        "error",
    ]
    assert (reply.results[1].error.code, reply.results[1].error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        "INSUFFICIENT_FUNDS",
    )
    assert reply.results[1].error.metadata["account_id"] == alice
    assert (reply.results[3].error.code, reply.results[3].error.reason) == (
        grpc.StatusCode.NOT_FOUND.value[0],
        "ACCOUNT_NOT_FOUND",
    )
    assert [e.amount.amount_minor for e in reply.results[0].transfer.transfer.entries] == [-70, 70]
    assert await client.balance(alice) == (0, 0, 0)

    again = await stub.CreateTransfers(request, timeout=5)
    assert [r.transfer.replayed for r in again.results if r.HasField("transfer")] == [True, True]
    assert await client.balance(bob) == (100, 0, 100)
    code, reason, _ = await refused(
        stub.CreateTransfers(pb.CreateTransfersRequest(request_id=uid()), timeout=5)
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
