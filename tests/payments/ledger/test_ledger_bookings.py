"""Every cent on the ledger (ESC-1), coins (ESC-3) and the direct job payment (ESC-5), against the
real wallet, the Stripe and Fatora sandboxes and the payments process: balances asserted to the
cent on the provider's clearing account, platform revenue, issuance, the buyer's coins and the
engagement's escrow; duplicated webhooks book nothing twice, a failed payment books nothing; the
auditor names a captured payment without its transfer."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import asyncpg
import grpc

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.pg import libpq_url
from tests.payments.ledger.conftest import LedgerStack
from tests.support import fatora_support, wallet_reads
from tests.support.payments_helpers import authorize_request, branch, reason, rpc_error
from tests.support.service_auth import signed_aio_channel
from tests.support.waiting import wait_for

State = pb.Payment.State
STRIPE, FATORA = "provider:stripe", "provider:fatora"
RETURN_URL = "https://app.example/coins/bought"
DECLINED_CARD = "4000 0000 0000 0002"


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _usd(amount: int, currency: str = "USD") -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency=currency)


class Ledger:
    """Readings of the wallet: owners' balances by (kind, unit), and their changes."""

    def __init__(self, stack: LedgerStack, *owners: str) -> None:
        self.stack = stack
        self.owners = owners
        self.before = {owner: self.read(owner) for owner in owners}

    def read(self, owner: str) -> Counter[tuple[str, str]]:
        return wallet_reads.balances(self.stack.wallet.target, owner)

    def changes(self) -> dict[str, dict[tuple[str, str], int]]:
        found = {o: wallet_reads.delta(self.before[o], self.read(o)) for o in self.owners}
        return {o: d for o, d in found.items() if d}

    async def settles_at(self, wanted: dict[str, dict[tuple[str, str], int]]) -> None:
        """The ledger reaches exactly `wanted` (the booking worker runs in the background)."""

        async def reached() -> bool:
            return await asyncio.to_thread(self.changes) == wanted

        try:
            await wait_for(reached, timeout=20)
        except AssertionError:
            assert await asyncio.to_thread(self.changes) == wanted


async def _transfer(stack: LedgerStack, transfer_id: str) -> wpb.TransferRecord | None:
    channel = signed_aio_channel(stack.wallet.target, caller="payments", service="wallet")
    try:
        stub = wpb_grpc.WalletServiceStub(channel)
        reply = await stub.GetTransfer(wpb.GetTransferRequest(transfer_id=transfer_id))
        return reply.transfer
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        return None
    finally:
        await channel.close()


async def _payment(stub, payment_id: str, state: int) -> pb.Payment | None:
    got = (await stub.GetPayment(pb.GetPaymentRequest(payment_id=payment_id))).payment
    return got if got.state == state else None


# --- every cent: pay-to-post fees, refunds, subscriptions ---------------------------------------


async def test_a_captured_posting_fee_and_its_refund_are_booked_through_clearing(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    gtx = _id("gtx")
    await jobs_stub.Authorize(authorize_request(gtx, amount=14_900))
    captured = await jobs_stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    pid = captured.payment.payment_id
    assert captured.payment.state == State.CAPTURED
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -14_900},
            "platform": {("PLATFORM_REVENUE", "USD"): 14_900},
        }
    )
    booked = await _transfer(ledger_stack, f"payment:{pid}:capture")
    assert booked is not None and len(booked.entries) == 2
    refund = await jobs_stub.Refund(
        pb.RefundRequest(request_id=f"r-{gtx}", payment_id=pid, amount_minor=4_900)
    )
    rid = refund.refund.refund_id
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -10_000},
            "platform": {("PLATFORM_REVENUE", "USD"): 10_000},
        }
    )
    assert await _transfer(ledger_stack, f"payment:{pid}:refund:{rid}") is not None
    # Neither the capture nor the refund is booked twice, whatever the worker's rounds.
    await asyncio.sleep(0.5)
    assert ledger.changes()[STRIPE] == {("PROVIDER_CLEARING", "USD"): -10_000}


async def test_an_authorization_that_is_voided_books_nothing(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    gtx = _id("gtx")
    await jobs_stub.Authorize(authorize_request(gtx, amount=14_900))
    voided = await jobs_stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx)))
    assert voided.payment.state == State.VOIDED
    await asyncio.sleep(0.5)
    assert ledger.changes() == {}
    assert await _transfer(ledger_stack, f"payment:{voided.payment.payment_id}:capture") is None


async def paid_subscription(ledger_stack: LedgerStack, jobs_stub) -> pb.Transaction:
    """A company's MONTHLY subscription paid on the sandbox's page, booked on the ledger."""
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    txn = (
        await jobs_stub.Subscribe(
            pb.SubscribeRequest(
                request_id="s1",
                user_type=pb.USER_TYPE_COMPANY,
                user_id=_id("company"),
                email="hr@acme.example",
                plan="MONTHLY",
                payment_method="STRIPE",
                return_url="https://app.example/subscription/success",
                cancel_url="https://app.example/subscription/cancel",
            )
        )
    ).transaction
    assert ledger_stack.admin.pay_checkout(txn.checkout_url).status_code == 303
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -3_000},
            "platform": {("PLATFORM_REVENUE", "USD"): 3_000},
        }
    )
    return txn


async def test_a_paid_subscription_is_booked_through_its_providers_clearing(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    txn = await paid_subscription(ledger_stack, jobs_stub)
    assert txn.amount.amount_minor == 3_000
    assert await _transfer(ledger_stack, f"payment:{txn.transaction_id}:capture") is not None


# --- coins (ESC-3) ----------------------------------------------------------------------------


def _buy(buyer: str, amount: int, currency: str = "USD", provider: str = "stripe", key: str = ""):
    return pb.PurchaseCoinsRequest(
        request_id=key or _id("buy"),
        buyer_id=buyer,
        amount=_usd(amount, currency),
        provider=provider,
        email="buyer@example.com",
        return_url=RETURN_URL,
        cancel_url="https://app.example/coins/cancelled",
    )


async def test_coins_are_issued_once_whatever_the_duplicated_webhooks(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    buyer = _id("buyer")
    ledger = Ledger(ledger_stack, STRIPE, "platform", buyer)
    request = _buy(buyer, 1_000)
    opened = await jobs_stub.PurchaseCoins(request)
    assert (opened.coins, opened.fee_coins, opened.escrow_coins) == (1_000, 0, 0)
    assert opened.payment.state == State.REQUIRES_ACTION and opened.checkout_url
    assert dict(opened.payment.metadata)["type"] == "coin_purchase"
    again = await jobs_stub.PurchaseCoins(request)
    assert again.replayed and again.payment.payment_id == opened.payment.payment_id
    admin = ledger_stack.admin
    admin.add_fault("webhook_duplicate", times=6, event_type="checkout.session.*")
    admin.add_fault("webhook_duplicate", times=6, event_type="payment_intent.*")
    assert admin.pay_checkout(opened.checkout_url).status_code == 303
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -1_000},
            "platform": {("ISSUANCE", "USD"): 1_000, ("ISSUANCE", "COIN"): -1_000},
            buyer: {("USER", "COIN"): 1_000},
        }
    )
    pid = opened.payment.payment_id
    assert await wait_for(lambda: _payment(jobs_stub, pid, State.CAPTURED))

    async def delivered() -> bool:
        backlog = await asyncio.to_thread(admin.webhook_backlog)
        return backlog.get("pending", 0) == 0 and backlog.get("scheduled", 0) == 0

    await wait_for(delivered, timeout=20)
    await asyncio.sleep(0.5)  # a last worker round: still issued once
    assert ledger.changes()[buyer] == {("USER", "COIN"): 1_000}
    booked = await _transfer(ledger_stack, f"payment:{pid}:capture")
    assert booked is not None and len(booked.entries) == 4


async def test_a_failed_coin_payment_issues_nothing(ledger_stack: LedgerStack, jobs_stub) -> None:
    buyer = _id("buyer")
    ledger = Ledger(ledger_stack, STRIPE, "platform", buyer)
    opened = await jobs_stub.PurchaseCoins(_buy(buyer, 2_500))
    declined = ledger_stack.admin.pay_checkout(opened.checkout_url, DECLINED_CARD)
    assert declined.status_code == 402
    pid = opened.payment.payment_id
    failed = await wait_for(lambda: _payment(jobs_stub, pid, State.FAILED))
    assert failed.captured_minor == 0
    await asyncio.sleep(0.5)
    assert ledger.changes() == {}
    assert await _transfer(ledger_stack, f"payment:{pid}:capture") is None


async def test_coins_bought_through_fatora_are_issued_on_the_return(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    buyer = _id("buyer")
    ledger = Ledger(ledger_stack, FATORA, "platform", buyer)
    # KWD has three decimals: 2.500 KWD buys 250 coins at 100 coins per dinar.
    opened = await jobs_stub.PurchaseCoins(_buy(buyer, 2_500, "KWD", "fatora"))
    assert opened.coins == 250 and opened.payment.provider == "fatora"
    paid = await asyncio.to_thread(fatora_support.pay, opened.checkout_url)
    _, params = fatora_support.redirect(paid)
    back = await jobs_stub.ConfirmCheckoutReturn(
        pb.ConfirmCheckoutReturnRequest(provider="fatora", params=params)
    )
    assert back.payment.state == State.CAPTURED
    await ledger.settles_at(
        {
            FATORA: {("PROVIDER_CLEARING", "KWD"): -2_500},
            "platform": {("ISSUANCE", "KWD"): 2_500, ("ISSUANCE", "COIN"): -250},
            buyer: {("USER", "COIN"): 250},
        }
    )


async def test_a_coin_purchase_is_refused_when_it_cannot_buy_whole_coins(jobs_stub) -> None:
    for amount, currency, field in (
        (1_005, "KWD", "amount.amount_minor"),  # 100.5 coins
        (1_000, "EUR", "amount.currency"),  # coins are not sold in euros here
        (0, "USD", "amount.amount_minor"),
    ):
        exc = await rpc_error(jobs_stub.PurchaseCoins(_buy("buyer-x", amount, currency)))
        code, why, meta = reason(exc)
        assert (code, why) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"), meta
        assert field in exc.details()


# --- the direct job payment (ESC-5) ------------------------------------------------------------


def _job_payment(engagement: str, payer: str, amount: int) -> pb.CreateJobPaymentCheckoutRequest:
    return pb.CreateJobPaymentCheckoutRequest(
        request_id=_id("jp"),
        engagement_id=engagement,
        job_id=f"job-{engagement}",
        freelancer_id=f"freelancer-{engagement}",
        payer_id=payer,
        amount=_usd(amount),
        provider="stripe",
        return_url="https://app.example/jobs/paid",
    )


async def _events(stub, payment_id: str) -> list[pb.SettlementEvent]:
    found = []
    async for event in stub.StreamSettlementEvents(
        pb.StreamSettlementEventsRequest(after_cursor=0, subsystem="jobs")
    ):
        if event.payment.payment_id == payment_id:
            found.append(event)
    return found


async def test_a_job_payment_issues_coins_and_funds_the_escrow_in_one_transfer(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    engagement, payer = _id("eng"), _id("customer")
    escrow_owner = f"engagement:{engagement}"
    ledger = Ledger(ledger_stack, STRIPE, "platform", payer, escrow_owner)
    opened = await jobs_stub.CreateJobPaymentCheckout(_job_payment(engagement, payer, 100_000))
    # $1,000.00 at 100 coins a dollar: 100,000 coins, 10% to the platform, 90% in escrow.
    assert (opened.coins, opened.fee_coins, opened.escrow_coins) == (100_000, 10_000, 90_000)
    meta = dict(opened.payment.metadata)
    assert (meta["type"], meta["purpose"], meta["engagement_id"]) == (
        "job_payment",
        "job_payment",
        engagement,
    )
    # One payment per engagement: a repeat answers it, another amount is refused.
    again = await jobs_stub.CreateJobPaymentCheckout(_job_payment(engagement, payer, 100_000))
    assert again.payment.payment_id == opened.payment.payment_id and again.replayed
    exc = await rpc_error(
        jobs_stub.CreateJobPaymentCheckout(_job_payment(engagement, payer, 50_000))
    )
    assert reason(exc)[1] == "IDEMPOTENCY_MISMATCH"
    admin = ledger_stack.admin
    admin.add_fault("webhook_duplicate", times=6, event_type="checkout.session.*")
    admin.add_fault("webhook_duplicate", times=6, event_type="payment_intent.*")
    assert admin.pay_checkout(opened.checkout_url).status_code == 303
    # The payer's coins are issued and spent in the same transfer: their balance does not move.
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -100_000},
            "platform": {
                ("ISSUANCE", "USD"): 100_000,
                ("ISSUANCE", "COIN"): -100_000,
                ("PLATFORM_REVENUE", "COIN"): 10_000,
            },
            escrow_owner: {("ESCROW", "COIN"): 90_000},
        }
    )
    pid = opened.payment.payment_id
    booked = await _transfer(ledger_stack, f"payment:{pid}:capture")
    assert booked is not None and len(booked.entries) == 8  # four legs, one transfer
    assert ledger.read(payer)[("USER", "COIN")] == 0
    events = await wait_for(lambda: _events(jobs_stub, pid))
    assert [e.type for e in events] == ["payment.captured"]
    event_meta = dict(events[0].payment.metadata)
    assert event_meta["engagement_id"] == engagement
    escrow = [e.account_id for e in booked.entries if e.amount.amount_minor == 90_000]
    assert event_meta["escrow_account_id"] == escrow[0]
    await asyncio.sleep(0.5)  # duplicated webhooks: still one transfer, one event
    assert ledger.changes()[escrow_owner] == {("ESCROW", "COIN"): 90_000}
    assert len(await _events(jobs_stub, pid)) == 1


async def test_a_failed_job_payment_changes_nothing(ledger_stack: LedgerStack, jobs_stub) -> None:
    engagement, payer = _id("eng"), _id("customer")
    ledger = Ledger(ledger_stack, STRIPE, "platform", payer, f"engagement:{engagement}")
    opened = await jobs_stub.CreateJobPaymentCheckout(_job_payment(engagement, payer, 5_000))
    assert ledger_stack.admin.pay_checkout(opened.checkout_url, DECLINED_CARD).status_code == 402
    pid = opened.payment.payment_id
    await wait_for(lambda: _payment(jobs_stub, pid, State.FAILED))
    await asyncio.sleep(0.5)
    assert ledger.changes() == {}
    # The jobs service hears that it failed (it may offer another try), never that it was paid.
    assert [e.type for e in await _events(jobs_stub, pid)] == ["payment.failed"]


async def test_a_job_payment_needs_its_parties(jobs_stub) -> None:
    for field, value in (("engagement_id", ""), ("freelancer_id", ""), ("job_id", "")):
        request = _job_payment(_id("eng"), "customer-1", 5_000)
        setattr(request, field, value)
        exc = await rpc_error(jobs_stub.CreateJobPaymentCheckout(request))
        assert reason(exc)[1] == "VALIDATION_FAILED" and field in exc.details()
    request = _job_payment(_id("eng"), "customer-1", 5_000)
    request.freelancer_id = "customer-1"
    exc = await rpc_error(jobs_stub.CreateJobPaymentCheckout(request))
    assert reason(exc)[1] == "VALIDATION_FAILED"


# --- the auditor ----------------------------------------------------------------------------


async def _findings(stub) -> dict[str, set[str]]:
    reply = await stub.AuditLedgerBookings(pb.AuditLedgerBookingsRequest(grace_seconds=1))
    found: dict[str, set[str]] = {}
    for f in reply.findings:
        found.setdefault(f.kind, set()).add(f.subject_id)
    return found


async def _sql(url: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        async with conn.transaction():
            for statement, params in statements:
                await conn.execute(statement, *params)
    finally:
        await conn.close()


async def test_the_auditor_names_a_captured_payment_without_its_transfer(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    gtx = _id("gtx")
    await jobs_stub.Authorize(authorize_request(gtx, amount=14_900))
    captured = await jobs_stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    pid = captured.payment.payment_id
    # Its own capture booked before it looks (a fresh capture is within the auditor's grace, so a
    # clean report alone would not wait for it, and its booking would land in the next test's
    # readings of the shared clearing account).
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -14_900},
            "platform": {("PLATFORM_REVENUE", "USD"): 14_900},
        }
    )

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)  # every earlier payment booked, revenue as captured
    # Money captured at the provider that never reached the ledger: a copy of the payment under
    # a new id, settled an hour ago, with no booking.
    ghost = f"pay_ghost{uuid.uuid4().hex[:8]}"
    await _sql(
        ledger_stack.payments_db,
        ("CREATE TEMP TABLE ghost ON COMMIT DROP AS SELECT * FROM payments WHERE id = $1", (pid,)),
        (
            "UPDATE ghost SET id = $1, global_tx_id = $1, provider_payment_id = NULL,"
            " provider_checkout_id = NULL, updated_at = now() - interval '1 hour'",
            (ghost,),
        ),
        ("INSERT INTO payments SELECT * FROM ghost", ()),
    )
    found = await _findings(jobs_stub)
    assert found == {
        "ledger_booking_missing": {f"payment:{ghost}:capture"},
        "ledger_revenue_mismatch": {"USD"},
    }
    await _sql(ledger_stack.payments_db, ("DELETE FROM payments WHERE id = $1", (ghost,)))
    assert await _findings(jobs_stub) == {}


# --- a refund takes the coins it bought back (ESC-1, ESC-3) ------------------------------------


async def _coins_bought(ledger_stack: LedgerStack, jobs_stub, buyer: str, amount: int) -> str:
    """A paid coin purchase whose coins are on the buyer's wallet; its payment id."""
    opened = await jobs_stub.PurchaseCoins(_buy(buyer, amount))
    assert ledger_stack.admin.pay_checkout(opened.checkout_url).status_code == 303

    async def issued() -> bool:
        held = await asyncio.to_thread(wallet_reads.balances, ledger_stack.wallet.target, buyer)
        return held[("USER", "COIN")] == opened.coins

    await wait_for(issued, timeout=20)
    pid = opened.payment.payment_id
    assert await wait_for(lambda: _payment(jobs_stub, pid, State.CAPTURED))
    return pid


async def _spend_coins(stack: LedgerStack, buyer: str, coins: int, key: str) -> None:
    """The buyer spends coins on the wallet (a transfer to a shop's coin account)."""
    channel = signed_aio_channel(stack.wallet.target, caller="payments", service="wallet")
    try:
        stub = wpb_grpc.WalletServiceStub(channel)
        ids = []
        for owner in (buyer, "coin-shop"):
            opened = await stub.OpenAccount(
                wpb.OpenAccountRequest(
                    request_id=f"open:{owner}:COIN:{wpb.ACCOUNT_KIND_USER}",
                    owner_id=owner,
                    currency="COIN",
                    kind=wpb.ACCOUNT_KIND_USER,
                )
            )
            ids.append(opened.account.account_id)
        leg = wpb.TransferLeg(
            from_account_id=ids[0], to_account_id=ids[1], amount=_usd(coins, "COIN")
        )
        await stub.Transfer(wpb.TransferRequest(request_id=key, transfer_id=key, legs=[leg]))
    finally:
        await channel.close()


async def test_a_refund_of_a_coin_purchase_takes_its_coins_back(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    buyer = _id("buyer")
    ledger = Ledger(ledger_stack, STRIPE, "platform", buyer)
    pid = await _coins_bought(ledger_stack, jobs_stub, buyer, 2_000)
    first = await jobs_stub.Refund(
        pb.RefundRequest(request_id="r-1", payment_id=pid, amount_minor=500)
    )
    assert first.refund.status == "SUCCEEDED"
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -1_500},
            "platform": {("ISSUANCE", "USD"): 1_500, ("ISSUANCE", "COIN"): -1_500},
            buyer: {("USER", "COIN"): 1_500},
        }
    )
    # A replay and the refund of the rest: every coin back once, everything nets to zero.
    again = await jobs_stub.Refund(
        pb.RefundRequest(request_id="r-1", payment_id=pid, amount_minor=500)
    )
    assert again.refund.refund_id == first.refund.refund_id
    await jobs_stub.Refund(pb.RefundRequest(request_id="r-2", payment_id=pid))
    await ledger.settles_at({})
    exc = await rpc_error(jobs_stub.Refund(pb.RefundRequest(request_id="r-3", payment_id=pid)))
    assert reason(exc)[1] == "REFUND_EXCEEDS_CAPTURED"
    rid = first.refund.refund_id
    taken = await _transfer(ledger_stack, f"hold/refund/{rid}")
    assert taken is not None


async def test_a_refund_is_refused_when_the_coins_are_spent(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    buyer = _id("buyer")
    pid = await _coins_bought(ledger_stack, jobs_stub, buyer, 1_000)
    ledger = Ledger(ledger_stack, STRIPE, "platform", buyer, "coin-shop")
    await _spend_coins(ledger_stack, buyer, 600, _id("spend"))
    exc = await rpc_error(jobs_stub.Refund(pb.RefundRequest(request_id="r-1", payment_id=pid)))
    code, why, meta = reason(exc)
    assert (code, why, meta["coins"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "COINS_NOT_AVAILABLE",
        "1000",
    )
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    assert got.state == State.CAPTURED and got.refunded_minor == 0
    # What is left can be refunded: $4.00 for the 400 coins still there.
    await jobs_stub.Refund(pb.RefundRequest(request_id="r-2", payment_id=pid, amount_minor=400))
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): 400},
            "platform": {("ISSUANCE", "USD"): -400, ("ISSUANCE", "COIN"): 400},
            buyer: {("USER", "COIN"): -1_000},
            "coin-shop": {("USER", "COIN"): 600},
        }
    )


async def test_a_refund_racing_a_spend_of_the_same_coins_lets_exactly_one_win(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    """Ten rounds of a full refund and a spend of most of the coins at once: either the refund
    holds the coins first (it succeeds, the spend is refused) or the spend does (the refund is
    refused, nothing is sent); never cash back with the coins kept."""
    for _ in range(10):
        buyer = _id("buyer")
        pid = await _coins_bought(ledger_stack, jobs_stub, buyer, 1_000)
        ledger = Ledger(ledger_stack, STRIPE, "platform", buyer)
        outcomes = await asyncio.gather(
            jobs_stub.Refund(pb.RefundRequest(request_id="r-race", payment_id=pid)),
            _spend_coins(ledger_stack, buyer, 800, _id("spend")),
            return_exceptions=True,
        )
        refunded, spent = (not isinstance(o, BaseException) for o in outcomes)
        assert refunded != spent, outcomes
        if refunded:
            assert isinstance(outcomes[1], grpc.aio.AioRpcError)
            assert reason(outcomes[1])[1] == "INSUFFICIENT_FUNDS"
            await ledger.settles_at(
                {
                    STRIPE: {("PROVIDER_CLEARING", "USD"): 1_000},
                    "platform": {("ISSUANCE", "USD"): -1_000, ("ISSUANCE", "COIN"): 1_000},
                    buyer: {("USER", "COIN"): -1_000},
                }
            )
        else:
            assert isinstance(outcomes[0], grpc.aio.AioRpcError)
            assert reason(outcomes[0])[1] == "COINS_NOT_AVAILABLE"
            got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
            assert got.refunded_minor == 0
            assert ledger.changes()[buyer] == {("USER", "COIN"): -800}
