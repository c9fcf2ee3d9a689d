"""Payouts (ESC-9) with every process real: the Stripe sandbox (Connect), the wallet and payments.

A contractor connects a payout account and withdraws: the wallet holds the money (branch
`payout:<id>`), payments sends a Connect transfer and payout, and the hold is posted to provider
clearing once the payout is paid, or released (the transfer reversed) when it fails. Balances are
asserted to the cent; concurrent withdrawals never overdraw; a crash mid-withdrawal is finished by
the recovery worker; a duplicated webhook changes nothing; a payout the bank returns after it was
paid is credited back to the wallet exactly once, whatever the duplicated or reordered webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import grpc
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.pg import libpq_url
from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.services import PAYMENTS, start_service
from tests.support.payments_helpers import reason, rpc_error
from tests.support.payouts_stack import (
    START_TIMEOUT,
    USD,
    Stack,
    State,
    as_user,
    clearing,
    connect,
    fund,
    hold_of,
    new_user,
    payout_events,
    payouts_stack,
    settled,
    user_balance,
    withdraw,
    withdraw_request,
)
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def stack(make_service_database) -> Iterator[Stack]:
    with payouts_stack(make_service_database, "payouts") as running:
        yield running


# --- payout accounts ----------------------------------------------------------------------


async def test_connect_a_payout_account(payments: pb_grpc.PaymentsServiceStub) -> None:
    user = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await payments.GetPayoutAccount(
            pb.GetPayoutAccountRequest(user_id=user), metadata=as_user(user)
        )
    assert reason(missing.value)[:2] == (grpc.StatusCode.NOT_FOUND, "PAYOUT_ACCOUNT_NOT_FOUND")

    account = await connect(payments, user)
    assert account.provider_account_id.startswith("acct_")
    assert (account.user_id, account.provider) == (user, "stripe")
    # The sandbox's accounts are usable at once (real Stripe answers ONBOARDING and a link).
    assert account.state == pb.PayoutAccount.ACTIVE
    again = await connect(payments, user)
    assert again.provider_account_id == account.provider_account_id  # one per user
    read = await payments.GetPayoutAccount(
        pb.GetPayoutAccountRequest(user_id=user), metadata=as_user(user)
    )
    assert read.account.provider_account_id == account.provider_account_id

    stranger = new_user()
    exc = await rpc_error(
        payments.GetPayoutAccount(
            pb.GetPayoutAccountRequest(user_id=user), metadata=as_user(stranger)
        )
    )
    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = await payments.GetPayoutAccount(
        pb.GetPayoutAccountRequest(user_id=user), metadata=as_user("ops", "admin")
    )
    assert admin.account.provider_account_id == account.provider_account_id


# --- withdrawals ----------------------------------------------------------------------------


async def test_a_paid_withdrawal_posts_the_hold_to_clearing(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    account = await connect(payments, user)
    await fund(wallet, user, 10_000)
    clearing_before = await clearing(wallet)

    started = await withdraw(payments, user, 7_550)
    assert started.state in (State.SENDING, State.IN_TRANSIT, State.PAID)
    assert (started.amount.amount_minor, started.amount.currency) == (7_550, USD)
    assert await user_balance(wallet, user) in ((10_000, 7_550, 2_450), (2_450, 0, 2_450))

    done = await settled(payments, user, started.withdrawal_id)
    assert done.state == State.PAID
    assert done.transfer_id.startswith("tr_") and done.payout_id.startswith("po_")
    assert await user_balance(wallet, user) == (2_450, 0, 2_450)
    assert await clearing(wallet) - clearing_before == 7_550
    hold = await hold_of(wallet, started.withdrawal_id)
    assert (hold.hold.state, hold.hold.confirmed_minor) == (wpb.Hold.CONFIRMED, 7_550)
    assert hold.transfer.transfer_id == f"hold/payout/{started.withdrawal_id}"

    client = stripe_client(stack.sandbox_url)
    transfer = await client.v1.transfers.retrieve_async(done.transfer_id)
    assert (transfer.amount, transfer.destination, transfer.reversed) == (
        7_550,
        account.provider_account_id,
        False,
    )
    payout = await client.v1.payouts.retrieve_async(
        done.payout_id, options={"stripe_account": account.provider_account_id}
    )
    assert (payout.status, payout.amount) == ("paid", 7_550)
    assert await payout_events(stack, started.withdrawal_id) == ["payout.paid"]

    listed = await payments.ListWithdrawals(
        pb.ListWithdrawalsRequest(user_id=user), metadata=as_user(user)
    )
    assert [w.withdrawal_id for w in listed.withdrawals] == [started.withdrawal_id]


async def test_a_failed_payout_returns_the_money(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    account = await connect(payments, user)
    # The contractor's bank is Stripe's test account that fails payouts with `no_account`.
    client = stripe_client(stack.sandbox_url)
    await client.v1.accounts.update_async(
        account.provider_account_id,
        params={"external_account": {"object": "bank_account", "account_number": "000111111116"}},
    )
    await fund(wallet, user, 5_001)
    clearing_before = await clearing(wallet)

    started = await withdraw(payments, user, 5_000)
    done = await settled(payments, user, started.withdrawal_id)
    assert done.state == State.FAILED
    assert done.failure_code == "no_account"
    assert "No bank account" in done.failure_message
    assert await user_balance(wallet, user) == (5_001, 0, 5_001)
    assert await clearing(wallet) == clearing_before
    hold = await hold_of(wallet, started.withdrawal_id)
    assert hold.hold.state == wpb.Hold.CANCELLED
    transfer = await client.v1.transfers.retrieve_async(done.transfer_id)
    assert (transfer.reversed, transfer.amount_reversed) == (True, 5_000)
    assert await payout_events(stack, started.withdrawal_id) == ["payout.failed"]


async def _credited_back(wallet: wpb_grpc.WalletServiceStub, withdrawal_id: str) -> int:
    """How much the `payout:<id>:returned` transfer moved (0: no such transfer)."""
    try:
        reply = await wallet.GetTransfer(
            wpb.GetTransferRequest(transfer_id=f"payout:{withdrawal_id}:returned")
        )
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return 0
    return sum(e.amount.amount_minor for e in reply.transfer.entries if e.amount.amount_minor > 0)


async def test_a_payout_returned_after_it_was_paid_is_credited_back_once(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    """payout.paid, then payout.failed (the bank sent it back), each delivered three times at
    once: the withdrawal ends `returned`, the money is back on the wallet once, the transfer to
    the contractor's connected account is reversed, and the audit names the return."""
    user = new_user()
    await connect(payments, user)
    await fund(wallet, user, 6_000)
    clearing_before = await clearing(wallet)
    stack.admin.add_fault("webhook_duplicate", times=3, event_type="payout.*")
    started = await withdraw(payments, user, 4_000)
    paid = await settled(payments, user, started.withdrawal_id)
    assert paid.state == State.PAID
    assert await user_balance(wallet, user) == (2_000, 0, 2_000)

    stack.admin.settle_payout(paid.payout_id, "failed", "account_closed")
    done = await settled(payments, user, started.withdrawal_id, states=(State.RETURNED,))
    assert (done.failure_code, done.payout_id) == ("account_closed", paid.payout_id)
    assert await user_balance(wallet, user) == (6_000, 0, 6_000)
    assert await clearing(wallet) == clearing_before
    assert await _credited_back(wallet, started.withdrawal_id) == 4_000
    client = stripe_client(stack.sandbox_url)
    transfer = await client.v1.transfers.retrieve_async(done.transfer_id)
    assert (transfer.reversed, transfer.amount_reversed) == (True, 4_000)

    async def all_delivered() -> bool:
        sent = stack.admin.deliveries(event_type="payout.failed")
        mine = [d for d in sent if d.get("object_id") == paid.payout_id]
        return len([d for d in mine if d["status"] == "succeeded"]) >= 3  # the event, 2 copies

    await wait_for(all_delivered, timeout=15)
    await asyncio.sleep(1.5)  # the recovery worker's rounds too: still credited once
    assert await user_balance(wallet, user) == (6_000, 0, 6_000)
    assert await payout_events(stack, started.withdrawal_id) == ["payout.paid", "payout.failed"]
    url = libpq_url(stack.payments.database_url)
    conn = await asyncpg.connect(url)
    try:
        reasons = await conn.fetch(
            "SELECT reason FROM audit_log WHERE details->>'withdrawal_id' = $1 ORDER BY id",
            started.withdrawal_id,
        )
    finally:
        await conn.close()
    returns = [r["reason"] for r in reasons if "returned" in r["reason"]]
    assert returns == [
        "withdrawal paid/paid -> paid/returned",  # the webhook: the bank returned it
        "withdrawal paid/returned -> returned/returned",  # the ledger followed: credited back
    ], [r["reason"] for r in reasons]


async def test_a_return_whose_webhook_is_lost_is_found_by_the_worker(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    """Every `payout.failed` dropped: the recovery worker re-fetches paid payouts (every
    PAYOUT_RETURN_WATCH_SECONDS, 1 s here) and credits the return back once."""
    user = new_user()
    await connect(payments, user)
    await fund(wallet, user, 1_200)
    clearing_before = await clearing(wallet)
    started = await withdraw(payments, user, 1_200)
    paid = await settled(payments, user, started.withdrawal_id)
    assert paid.state == State.PAID
    stack.admin.add_fault("webhook_drop", event_type="payout.failed")
    stack.admin.settle_payout(paid.payout_id, "failed", "no_account")
    done = await settled(payments, user, started.withdrawal_id, states=(State.RETURNED,))
    assert done.failure_code == "no_account"
    await asyncio.sleep(1.5)  # more worker rounds: still credited once
    assert await user_balance(wallet, user) == (1_200, 0, 1_200)
    assert await clearing(wallet) == clearing_before
    assert await _credited_back(wallet, started.withdrawal_id) == 1_200
    sent = stack.admin.deliveries(event_type="payout.failed")
    mine = [d for d in sent if d.get("object_id") == paid.payout_id]
    assert mine and all(d["status"] != "succeeded" for d in mine), mine  # never delivered


async def test_the_sandbox_returns_a_paid_payout_like_stripe_and_the_money_comes_back(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    """The sandbox's `payout_failure` fault with `after_paid`: the bank pays, then returns the
    payout a moment later; whichever order the webhooks arrive in (reordered here), the money
    is back on the wallet exactly once."""
    user = new_user()
    await connect(payments, user)
    await fund(wallet, user, 2_500)
    clearing_before = await clearing(wallet)
    stack.admin.add_fault("payout_failure", failure_code="account_closed", after_paid=True, count=1)
    stack.admin.add_fault("webhook_reorder", count=2, event_type="payout.*")
    started = await withdraw(payments, user, 2_500)
    back = (State.RETURNED, State.FAILED)
    done = await settled(payments, user, started.withdrawal_id, states=back)
    assert done.failure_code == "account_closed"
    await asyncio.sleep(1.5)
    assert await user_balance(wallet, user) == (2_500, 0, 2_500)
    assert await clearing(wallet) == clearing_before
    hold = await hold_of(wallet, started.withdrawal_id)
    # Returned after it was paid: the hold was posted, then the money credited back; failed
    # (the return seen before the payment): the hold released, nothing credited back.
    credited = await _credited_back(wallet, started.withdrawal_id)
    if done.state == State.RETURNED:
        assert (hold.hold.state, credited) == (wpb.Hold.CONFIRMED, 2_500)
    else:
        assert (hold.hold.state, credited) == (wpb.Hold.CANCELLED, 0)


async def test_concurrent_withdrawals_never_overdraw(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    await connect(payments, user)
    await fund(wallet, user, 10_000)

    calls = [
        payments.RequestWithdrawal(withdraw_request(user, 3_000), metadata=as_user(user))
        for _ in range(5)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    accepted = [r.withdrawal for r in results if isinstance(r, pb.WithdrawalResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(accepted) == 3 and len(refused) == 2, results
    for exc in refused:
        assert reason(exc)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    for w in accepted:
        assert (await settled(payments, user, w.withdrawal_id)).state == State.PAID
    assert await user_balance(wallet, user) == (1_000, 0, 1_000)
    listed = await payments.ListWithdrawals(
        pb.ListWithdrawalsRequest(user_id=user), metadata=as_user(user)
    )
    assert sorted(w.withdrawal_id for w in listed.withdrawals) == sorted(
        w.withdrawal_id for w in accepted
    )


async def test_a_repeated_request_withdraws_once(
    payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    await connect(payments, user)
    await fund(wallet, user, 4_000)
    first = await withdraw(payments, user, 1_500, request_id="same-request")
    again = await withdraw(payments, user, 1_500, request_id="same-request")
    assert again.withdrawal_id == first.withdrawal_id
    other = await rpc_error(
        payments.RequestWithdrawal(
            withdraw_request(user, 1_600, "same-request"), metadata=as_user(user)
        )
    )
    assert reason(other)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_MISMATCH")
    await settled(payments, user, first.withdrawal_id)
    assert await user_balance(wallet, user) == (2_500, 0, 2_500)


async def test_bad_requests_change_nothing(
    payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    exc = await rpc_error(
        payments.RequestWithdrawal(withdraw_request(user, 100), metadata=as_user(user))
    )
    assert reason(exc)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "PAYOUT_ACCOUNT_REQUIRED")
    await connect(payments, user)
    await fund(wallet, user, 2_000)
    for amount, currency, field in [
        (0, USD, "amount_minor"),
        (-5, USD, "amount_minor"),
        (100, "XYZ", "currency"),
        (100, "COIN", "currency"),
        (100, "", "currency"),
    ]:
        exc = await rpc_error(
            payments.RequestWithdrawal(
                withdraw_request(user, amount, currency=currency), metadata=as_user(user)
            )
        )
        code, why, meta = reason(exc)
        assert (code, why) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"), (
            amount,
            currency,
        )
        assert field in exc.details() or field in str(meta)
    exc = await rpc_error(
        payments.RequestWithdrawal(withdraw_request(user, 2_001), metadata=as_user(user))
    )
    assert reason(exc)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    # Someone else's wallet cannot be withdrawn from.
    exc = await rpc_error(
        payments.RequestWithdrawal(withdraw_request(user, 100), metadata=as_user(new_user()))
    )
    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await user_balance(wallet, user) == (2_000, 0, 2_000)
    listed = await payments.ListWithdrawals(
        pb.ListWithdrawalsRequest(user_id=user), metadata=as_user(user)
    )
    assert list(listed.withdrawals) == []


async def test_others_see_no_withdrawal(
    payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    await connect(payments, user)
    await fund(wallet, user, 1_000)
    w = await withdraw(payments, user, 1_000)
    request = pb.GetWithdrawalRequest(withdrawal_id=w.withdrawal_id)
    exc = await rpc_error(payments.GetWithdrawal(request, metadata=as_user(new_user())))
    assert reason(exc)[:2] == (grpc.StatusCode.NOT_FOUND, "WITHDRAWAL_NOT_FOUND")
    seen = await payments.GetWithdrawal(request, metadata=as_user("ops", "admin"))
    assert seen.withdrawal.user_id == user
    exc = await rpc_error(
        payments.ListWithdrawals(
            pb.ListWithdrawalsRequest(user_id=user), metadata=as_user(new_user())
        )
    )
    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
    await settled(payments, user, w.withdrawal_id)


async def test_duplicated_webhooks_settle_once(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    await connect(payments, user)
    await fund(wallet, user, 3_000)
    clearing_before = await clearing(wallet)
    stack.admin.add_fault("webhook_duplicate", times=3, event_type="payout.*")
    w = await withdraw(payments, user, 3_000)
    done = await settled(payments, user, w.withdrawal_id)
    assert done.state == State.PAID

    async def delivered() -> bool:
        sent = stack.admin.deliveries(event_type="payout.paid")
        mine = [
            d for d in sent if d.get("object_id") == done.payout_id and d["status"] == "succeeded"
        ]
        return len(mine) >= 2  # the event and its duplicates all answered 2xx

    await wait_for(delivered, timeout=15)
    await asyncio.sleep(0.5)
    assert await user_balance(wallet, user) == (0, 0, 0)
    assert await clearing(wallet) - clearing_before == 3_000
    assert await payout_events(stack, w.withdrawal_id) == ["payout.paid"]


async def test_a_crash_mid_withdrawal_is_finished_by_the_worker(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    await connect(payments, user)
    await fund(wallet, user, 6_000)
    slow = stack.admin.add_fault(
        "latency", ms=2_000, path_prefix="/v1/transfers", method="POST", count=1
    )
    call = asyncio.ensure_future(
        payments.RequestWithdrawal(withdraw_request(user, 6_000), metadata=as_user(user))
    )

    async def transfer_in_flight() -> bool:
        return all(f["id"] != slow["id"] for f in stack.admin.faults())

    await wait_for(transfer_in_flight, timeout=30, interval=0.02)
    stack.payments.kill()  # the wallet holds the money; the transfer is in flight
    exc = await rpc_error(call)
    assert exc.code() == grpc.StatusCode.UNAVAILABLE
    assert await user_balance(wallet, user) == (6_000, 6_000, 0)

    stack.payments.restart(timeout=START_TIMEOUT)
    listed = await payments.ListWithdrawals(
        pb.ListWithdrawalsRequest(user_id=user), metadata=as_user(user)
    )
    (w,) = listed.withdrawals
    done = await settled(payments, user, w.withdrawal_id, timeout=60)
    assert done.state == State.PAID
    assert await user_balance(wallet, user) == (0, 0, 0)
    client = stripe_client(stack.sandbox_url)
    transfers = await client.v1.transfers.list_async(
        params={"destination": done.provider_account_id}
    )
    assert [t.id for t in transfers.data] == [done.transfer_id]  # one transfer, replayed


async def test_a_refused_transfer_fails_at_once_and_returns_the_money(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    account = await connect(payments, user)
    await fund(wallet, user, 1_234)
    # The contractor's Connect account was closed at Stripe: the transfer is refused.
    await stripe_client(stack.sandbox_url).v1.accounts.delete_async(account.provider_account_id)
    refused = await withdraw(payments, user, 1_234)
    assert refused.state == State.FAILED
    assert (refused.failure_code, refused.transfer_id, refused.payout_id) == (
        "resource_missing",
        "",
        "",
    )
    assert await user_balance(wallet, user) == (1_234, 0, 1_234)
    assert (await hold_of(wallet, refused.withdrawal_id)).hold.state == wpb.Hold.CANCELLED
    assert await payout_events(stack, refused.withdrawal_id) == ["payout.failed"]


async def test_replicas_share_the_recovery_worker_when_webhooks_are_lost(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    """No payout webhook arrives: both replicas' workers re-fetch the payouts in transit and
    settle each withdrawal exactly once."""
    ports = {"PAYMENTS_GRPC_PORT", "PAYMENTS_METRICS_PORT", "PAYMENTS_DATABASE_URL"}
    env = {k: v for k, v in stack.payments.env.items() if k not in ports}
    second = start_service(
        PAYMENTS,
        stack.payments.database_url,
        env=env,
        log_name="payouts-payments-2",
        timeout=START_TIMEOUT,
    )
    try:
        stack.admin.add_fault("webhook_drop", event_type="payout.*")
        users = [new_user() for _ in range(4)]
        for user in users:
            await connect(payments, user)
            await fund(wallet, user, 2_000)
        clearing_before = await clearing(wallet)
        started = await asyncio.gather(*(withdraw(payments, user, 1_999) for user in users))
        for user, w in zip(users, started, strict=True):
            assert (await settled(payments, user, w.withdrawal_id)).state == State.PAID
            assert await user_balance(wallet, user) == (1, 0, 1)
            assert await payout_events(stack, w.withdrawal_id) == ["payout.paid"]
        assert await clearing(wallet) - clearing_before == 4 * 1_999
    finally:
        second.stop()
