"""Payouts test stack and helpers (ESC-9): the Stripe sandbox, the wallet and payments as real
processes, and the calls the payouts tests make (as the gateway for a user; funding a contractor's
wallet from the platform's issuance account, test set-up only; balances and holds read back)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.procs import Process
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.services import PAYMENTS, WALLET, RunningService, start_service
from hirepay_platform.identity import Actor
from tests.support.payments_helpers import WEBHOOK_SECRET
from tests.support.service_auth import call_metadata, signed_aio_channel
from tests.support.startup import start_together
from tests.support.stripe_stack import payments_env, start_stripe_sandbox
from tests.support.waiting import wait_for
from tests.support.webhook_relay import WebhookRelay

USD = "USD"
# Three processes start at once on a machine that may be busy: room beyond the usual 30 s.
START_TIMEOUT = 90.0
State = pb.Withdrawal.State


@dataclass
class Stack:
    sandbox: Process
    sandbox_url: str
    admin: SandboxAdmin
    wallet: RunningService
    payments: RunningService


@contextlib.contextmanager
def payouts_stack(
    make_service_database: Callable[[str], str], name: str, **sandbox_env: str
) -> Iterator[Stack]:
    """Sandbox (webhooks relayed to payments), wallet and payments (wired to the wallet, its
    recovery worker fast), each a real process."""
    with contextlib.ExitStack() as cleanup:
        relay = WebhookRelay().start()
        cleanup.callback(relay.stop)
        # The sandbox and the wallet do not depend on each other: started side by side, while
        # the payments database is made.
        (sandbox, sandbox_url), wallet, payments_db = start_together(
            cleanup,
            (
                lambda: start_stripe_sandbox(
                    f"{name}-sandbox", relay.url, WEBHOOK_SECRET, **sandbox_env
                ),
                lambda started: started[0].stop(),
            ),
            (
                lambda: start_service(
                    WALLET,
                    make_service_database("wallet"),
                    log_name=f"{name}-wallet",
                    timeout=START_TIMEOUT,
                ),
                lambda started: started.stop(),
            ),
            (lambda: make_service_database("payments"), lambda _url: None),
        )
        env = payments_env(
            sandbox_url, "sk_test_payoutstests", WEBHOOK_SECRET, provider_timeout=1.5
        )
        payments = start_service(
            PAYMENTS,
            payments_db,
            env={
                **env,
                "PAYMENTS_WALLET_TARGET": wallet.target,
                "PAYMENTS_PAYOUT_INTERVAL_SECONDS": "0.2",
                "PAYMENTS_PAYOUT_WATCH_SECONDS": "1",
                "PAYMENTS_PAYOUT_RETURN_WATCH_SECONDS": "1",
            },
            log_name=f"{name}-payments",
            timeout=START_TIMEOUT,
        )
        cleanup.callback(payments.stop)
        relay.target = payments.target
        admin = SandboxAdmin(sandbox_url)
        cleanup.callback(admin.close)
        yield Stack(sandbox, sandbox_url, admin, wallet, payments)


def as_user(user: str, role: str = "contractor") -> list[tuple[str, str]]:
    """The metadata the gateway sends for a verified user."""
    return call_metadata("gateway", "payments", Actor(user, role))


def new_user() -> str:
    return f"pro-{uuid.uuid4().hex[:10]}"


async def _account(wallet: wpb_grpc.WalletServiceStub, owner: str, kind: int) -> str:
    system = kind in (wpb.ACCOUNT_KIND_ISSUANCE, wpb.ACCOUNT_KIND_PROVIDER_CLEARING)
    reply = await wallet.OpenAccount(
        wpb.OpenAccountRequest(
            request_id=f"open:{owner}:{USD}:{kind}",
            owner_id=owner,
            currency=USD,
            kind=kind,
            allow_negative=system,
        )
    )
    return str(reply.account.account_id)


async def fund(wallet: wpb_grpc.WalletServiceStub, user: str, amount: int) -> None:
    """Test set-up only: credit the user's cash wallet from the platform's issuance account."""
    source = await _account(wallet, "platform", wpb.ACCOUNT_KIND_ISSUANCE)
    target = await _account(wallet, user, wpb.ACCOUNT_KIND_USER)
    transfer_id = f"fund-{uuid.uuid4().hex}"
    await wallet.Transfer(
        wpb.TransferRequest(
            request_id=transfer_id,
            transfer_id=transfer_id,
            legs=[
                wpb.TransferLeg(
                    from_account_id=source,
                    to_account_id=target,
                    amount=common_pb2.Money(amount_minor=amount, currency=USD),
                )
            ],
        )
    )


async def balance(
    wallet: wpb_grpc.WalletServiceStub, owner: str, kind: int
) -> tuple[int, int, int]:
    """(posted, pending, available) of an account."""
    account_id = await _account(wallet, owner, kind)
    reply = await wallet.GetAccount(wpb.GetAccountRequest(account_id=account_id))
    b = reply.account.balance
    return (b.posted_minor, b.pending_minor, b.available_minor)


async def user_balance(wallet: wpb_grpc.WalletServiceStub, user: str) -> tuple[int, int, int]:
    return await balance(wallet, user, wpb.ACCOUNT_KIND_USER)


async def clearing(wallet: wpb_grpc.WalletServiceStub) -> int:
    return (await balance(wallet, "provider:stripe", wpb.ACCOUNT_KIND_PROVIDER_CLEARING))[0]


async def connect(payments: pb_grpc.PaymentsServiceStub, user: str) -> pb.PayoutAccount:
    reply = await payments.CreatePayoutAccount(
        pb.CreatePayoutAccountRequest(request_id=f"connect-{user}", user_id=user),
        metadata=as_user(user),
    )
    return reply.account


def withdraw_request(user: str, amount: int, request_id: str = "", currency: str = USD):
    return pb.RequestWithdrawalRequest(
        request_id=request_id or f"wd-{uuid.uuid4().hex[:12]}",
        user_id=user,
        amount=common_pb2.Money(amount_minor=amount, currency=currency),
    )


async def withdraw(
    payments: pb_grpc.PaymentsServiceStub, user: str, amount: int, request_id: str = ""
) -> pb.Withdrawal:
    reply = await payments.RequestWithdrawal(
        withdraw_request(user, amount, request_id), metadata=as_user(user)
    )
    return reply.withdrawal


async def settled(
    payments: pb_grpc.PaymentsServiceStub,
    user: str,
    withdrawal_id: str,
    timeout: float = 30,
    states: tuple[int, ...] = (State.PAID, State.FAILED),
) -> pb.Withdrawal:
    """The withdrawal once it reaches one of `states` (by default: paid or failed)."""

    async def final() -> pb.Withdrawal | None:
        reply = await payments.GetWithdrawal(
            pb.GetWithdrawalRequest(withdrawal_id=withdrawal_id), metadata=as_user(user)
        )
        w = reply.withdrawal
        return w if w.state in states else None

    return await wait_for(final, timeout=timeout, interval=0.1)


async def hold_of(wallet: wpb_grpc.WalletServiceStub, withdrawal_id: str) -> wpb.HoldResponse:
    branch = common_pb2.TccBranch(global_tx_id="payout", branch_id=withdrawal_id)
    return await wallet.GetHold(wpb.GetHoldRequest(branch=branch))


async def payout_events(stack: Stack, withdrawal_id: str) -> list[str]:
    """The settlement events published about one withdrawal (read as jobs reads the stream)."""
    async with signed_aio_channel(stack.payments.target, caller="jobs", service="payments") as ch:
        stub = pb_grpc.PaymentsServiceStub(ch)
        events = stub.StreamSettlementEvents(pb.StreamSettlementEventsRequest(follow=False))
        return [e.type async for e in events if e.withdrawal.withdrawal_id == withdrawal_id]
