"""Payout accounts that need Stripe's onboarding first (as real Stripe's Express accounts do; the
sandbox with SANDBOX_CONNECT_ONBOARDING=hosted): the account answers ONBOARDING with a link, a
withdrawal is refused until the contractor has been through it, then it is paid out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from tests.support.payments_helpers import reason, rpc_error
from tests.support.payouts_stack import (
    Stack,
    State,
    as_user,
    connect,
    fund,
    new_user,
    payouts_stack,
    settled,
    user_balance,
    withdraw,
    withdraw_request,
)


@pytest.fixture(scope="module")
def stack(make_service_database) -> Iterator[Stack]:
    with payouts_stack(
        make_service_database, "onboarding", SANDBOX_CONNECT_ONBOARDING="hosted"
    ) as running:
        yield running


async def test_a_withdrawal_waits_for_the_onboarding(
    stack: Stack, payments: pb_grpc.PaymentsServiceStub, wallet: wpb_grpc.WalletServiceStub
) -> None:
    user = new_user()
    account = await connect(payments, user)
    assert account.state == pb.PayoutAccount.ONBOARDING
    assert account.onboarding_url.startswith(f"{stack.sandbox_url}/connect/onboarding/")
    await fund(wallet, user, 3_000)

    refused = await rpc_error(
        payments.RequestWithdrawal(withdraw_request(user, 1_000), metadata=as_user(user))
    )
    code, why, meta = reason(refused)
    assert (code, why) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYOUT_ACCOUNT_NOT_READY")
    assert meta["onboarding_url"].startswith(f"{stack.sandbox_url}/connect/onboarding/")
    assert await user_balance(wallet, user) == (3_000, 0, 3_000)

    # Asking again gives a fresh link (Stripe's are single-use); the contractor goes through it.
    again = await connect(payments, user)
    assert again.state == pb.PayoutAccount.ONBOARDING
    assert again.onboarding_url != account.onboarding_url
    async with httpx.AsyncClient() as http:
        page = await http.get(again.onboarding_url)
    assert page.status_code == 303
    assert page.headers["location"] == "http://127.0.0.1:8080/api/wallet/payout-account"

    read = await payments.GetPayoutAccount(
        pb.GetPayoutAccountRequest(user_id=user), metadata=as_user(user)
    )
    assert read.account.state == pb.PayoutAccount.ACTIVE
    paid = await withdraw(payments, user, 1_000)
    assert (await settled(payments, user, paid.withdrawal_id)).state == State.PAID
    assert await user_balance(wallet, user) == (2_000, 0, 2_000)
