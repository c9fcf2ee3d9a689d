"""Helpers of the escrow tests: a real wallet process as the ledger, the jobs use cases in process
over real PostgreSQL, fakes of payments' refunds and job payment checkouts, and balances read
from the wallet by what each account is (customer, contractor, revenue, escrow, clearing)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay_platform.errors import ErrorKind, HirepayError, Unavailable
from hirepay_platform.tcc import IdempotencyMismatch
from jobs.adapters.escrow_ledger import WalletEscrowLedger
from jobs.domain.escrow import (
    AccountRef,
    JobPaymentCheckout,
    JobPaymentSession,
    Leg,
    PaymentRefund,
    RefundOutcome,
)
from jobs.domain.marketplace import (
    COIN_UNIT,
    Engagement,
    EngagementState,
    FundingSource,
    FundingState,
    MarketJob,
    MarketJobFields,
    MarketJobStatus,
    funding_split,
)
from jobs.service_layer.deps import Deps


@dataclass
class FakeCardRefunds:
    """Payments' Refund as jobs sees it: one refund per request id; and the payment's refunds as
    GetPayment lists them, with those made at the provider (`at_provider`). A payment whose
    capture is known (`captured`) is refused as payments refuses it (PAY-11): more than is left
    to refund (nothing left too) REFUND_EXCEEDS_CAPTURED, nothing recorded; the others are always
    accepted."""

    provider: str = "stripe"
    refunds: dict[str, tuple[str, int]] = field(default_factory=dict)  # request -> (payment, n)
    recorded: dict[str, list[PaymentRefund]] = field(default_factory=dict)  # payment -> refunds
    captured: dict[str, int] = field(default_factory=dict)  # payment -> amount captured
    refused: list[str] = field(default_factory=list)  # the request ids refused, in order

    def refundable(self, payment_id: str) -> int:
        recorded = self.recorded.get(payment_id, [])
        taken = sum(r.amount_minor for r in recorded if r.status != "FAILED")
        return self.captured.get(payment_id, 0) - taken

    async def refund(
        self, payment_id: str, amount_minor: int, request_id: str, reason: str
    ) -> RefundOutcome:
        refund_id = f"rfd_{uuid.uuid5(uuid.NAMESPACE_URL, request_id).hex}"
        if request_id in self.refunds and self.refunds[request_id][1] != amount_minor:
            raise IdempotencyMismatch(f"refund {request_id}", "amount_minor")
        left = self.refundable(payment_id)
        if request_id not in self.refunds and payment_id in self.captured and amount_minor > left:
            self.refused.append(request_id)
            raise HirepayError(
                f"refund of {amount_minor} exceeds the {left} still refundable on {payment_id}",
                reason="REFUND_EXCEEDS_CAPTURED",
                kind=ErrorKind.FAILED_PRECONDITION,
                metadata={"requested_minor": str(amount_minor), "refundable_minor": str(left)},
            )
        if request_id not in self.refunds:
            self.refunds[request_id] = (payment_id, amount_minor)
            own = PaymentRefund(refund_id, request_id, amount_minor, "SUCCEEDED")
            self.recorded.setdefault(payment_id, []).append(own)
        return RefundOutcome(refund_id, "SUCCEEDED")

    async def provider_of(self, payment_id: str) -> str:
        return self.provider

    def at_provider(self, payment_id: str, amount_minor: int) -> str:
        """A refund made at the provider (its dashboard), as payments records it: its id."""
        tag = uuid.uuid4().hex
        refund = PaymentRefund(f"rfd_{tag}", f"provider:re_{tag}", amount_minor, "SUCCEEDED")
        self.recorded.setdefault(payment_id, []).append(refund)
        return refund.refund_id

    def fail(self, payment_id: str, refund_id: str) -> None:
        """The refund failed at the provider after it succeeded (Stripe: the card closed since):
        payments records it FAILED, the payment refundable again."""
        self.recorded[payment_id] = [
            replace(r, status="FAILED") if r.refund_id == refund_id else r
            for r in self.recorded[payment_id]
        ]

    async def refunds_of(self, payment_id: str) -> tuple[str, list[PaymentRefund]]:
        return self.provider, list(self.recorded.get(payment_id, []))


@dataclass
class FakeJobPayments:
    """Payments' CreateJobPaymentCheckout (ESC-5) by the MARKETPLACE.md contract: one payment per
    engagement, 100 coins per major unit, the funding fee at 10%."""

    sessions: dict[str, tuple[JobPaymentCheckout, JobPaymentSession]] = field(default_factory=dict)

    async def create_checkout(self, request: JobPaymentCheckout) -> JobPaymentSession:
        if request.engagement_id not in self.sessions:
            coins = request.amount_minor  # USD:100 -> one coin per cent
            fee = coins * 1000 // 10000
            session = JobPaymentSession(
                f"pay_{uuid.uuid4().hex}", "https://checkout.example/pay", coins, fee, coins - fee
            )
            self.sessions[request.engagement_id] = (request, session)
        return self.sessions[request.engagement_id][1]


class FlakyLedger:
    """The real ledger, but the first `failures` posts fail as if the wallet were down (after
    nothing was posted): money steps must be left pending and recovered."""

    def __init__(self, ledger: WalletEscrowLedger, failures: int) -> None:
        self.ledger = ledger
        self.failures = failures

    async def post(self, transfer_id: str, legs: tuple[Leg, ...], metadata: dict[str, str]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise Unavailable("wallet down (test)", reason="UNAVAILABLE")
        await self.ledger.post(transfer_id, legs, metadata)

    async def account_id(self, ref: AccountRef) -> str:
        return await self.ledger.account_id(ref)

    async def credits_of(self, transfer_id: str) -> dict[str, int]:
        return await self.ledger.credits_of(transfer_id)


async def issue(ledger: WalletEscrowLedger, owner: str, unit: str, amount: int) -> None:
    """Give `owner` `amount` of `unit` out of the platform's issuance (as a purchase would)."""
    source = await ledger.accounts.open(
        "platform", unit, wpb.ACCOUNT_KIND_ISSUANCE, allow_negative=True
    )
    target = await ledger.account_id(AccountRef.user(owner, unit))
    await _transfer(ledger, f"issue-{uuid.uuid4().hex}", [(source, target, amount, unit)])


async def _transfer(
    ledger: WalletEscrowLedger, transfer_id: str, legs: list[tuple[str, str, int, str]]
) -> None:
    request = wpb.TransferRequest(
        request_id=transfer_id,
        transfer_id=transfer_id,
        legs=[
            wpb.TransferLeg(
                from_account_id=a,
                to_account_id=b,
                amount=common_pb2.Money(amount_minor=n, currency=unit),
            )
            for a, b, n, unit in legs
        ],
        description="test",
    )
    await ledger.client.call(ledger.stub.Transfer, request, timeout=5)


async def balance(ledger: WalletEscrowLedger, ref: AccountRef) -> int:
    """The posted balance of an account (opened if new: 0)."""
    account_id = await ledger.account_id(ref)
    reply = await ledger.client.call(
        ledger.stub.GetAccount, wpb.GetAccountRequest(account_id=account_id), timeout=5
    )
    return int(reply.account.balance.posted_minor)


@dataclass
class Parties:
    """One engagement's people and accounts."""

    customer: str
    contractor: str
    unit: str
    engagement_id: str = ""
    job_id: str = ""
    provider: str = "stripe"
    # Balances of the shared accounts (revenue, clearing) when the test began: they are reported
    # as this test's change.
    baseline: dict[str, int] = field(default_factory=dict)

    def refs(self) -> dict[str, AccountRef]:
        refs = {
            "customer": AccountRef.user(self.customer, self.unit),
            "contractor": AccountRef.user(self.contractor, self.unit),
            "revenue": AccountRef.revenue(self.unit),
        }
        if self.engagement_id:
            refs["escrow"] = AccountRef.escrow(self.engagement_id, self.unit)
        if self.unit != COIN_UNIT:
            refs["clearing"] = AccountRef.clearing(self.provider, self.unit)
        return refs


async def balances(ledger: WalletEscrowLedger, parties: Parties) -> dict[str, int]:
    """Every account of the engagement; the shared ones as their change since the test began."""
    return {
        name: await balance(ledger, ref) - parties.baseline.get(name, 0)
        for name, ref in parties.refs().items()
    }


async def new_parties(ledger: WalletEscrowLedger, unit: str) -> Parties:
    tag = uuid.uuid4().hex[:10]
    parties = Parties(f"cust_{tag}", f"ctr_{tag}", unit)
    refs = parties.refs()
    for shared in ("revenue", "clearing"):
        if shared in refs:
            parties.baseline[shared] = await balance(ledger, refs[shared])
    return parties


async def post_job(deps: Deps, customer: str) -> str:
    """An open marketplace job of `customer`."""
    now = deps.clock()
    job = MarketJob(
        id=f"mjob_{uuid.uuid4().hex}",
        customer_id=customer,
        fields=MarketJobFields("Build a payment page", "A checkout page for the marketplace."),
        status=MarketJobStatus.OPEN,
        created_at=now,
        updated_at=now,
    )
    async with deps.uow as uow:
        await uow.market_jobs.add_if_absent(job, "")
        await uow.commit()
    return job.id


async def card_funded_engagement(
    deps: Deps, ledger: WalletEscrowLedger, parties: Parties, amount_minor: int
) -> str:
    """An engagement funded by a captured card offer, as the acceptance leaves it: the capture
    booked (clearing -> revenue fee1, clearing -> escrow the rest) and the job assigned."""
    job_id = await post_job(deps, parties.customer)
    engagement_id = f"eng_{uuid.uuid4().hex}"
    payment_id = f"pay_{uuid.uuid4().hex}"
    split = funding_split(amount_minor, deps.config.acceptance_fee_bps)
    unit = parties.unit
    legs = (
        Leg(AccountRef.clearing(parties.provider, unit), AccountRef.revenue(unit), split.fee_minor),
        Leg(
            AccountRef.clearing(parties.provider, unit),
            AccountRef.escrow(engagement_id, unit),
            split.escrow_minor,
        ),
    )
    # As the acceptance books it (CardOfferFunds): no fee leg when the fee rounds down to 0.
    await ledger.post(
        f"payment:{payment_id}:capture", tuple(leg for leg in legs if leg.amount_minor), {}
    )
    now: datetime = deps.clock()
    engagement = Engagement(
        id=engagement_id,
        job_id=job_id,
        customer_id=parties.customer,
        contractor_id=parties.contractor,
        unit=unit,
        amount_minor=split.amount_minor,
        fee1_minor=split.fee_minor,
        escrow_minor=split.escrow_minor,
        funding=FundingSource.CARD,
        state=EngagementState.ASSIGNED,
        created_at=now,
        updated_at=now,
        funding_state=FundingState.FUNDED,
        escrow_account_id=await ledger.account_id(AccountRef.escrow(engagement_id, unit)),
        payment_id=payment_id,
        assigned_at=now,
    )
    async with deps.uow as uow:
        job = await uow.market_jobs.get(job_id, for_update=True)
        assert job is not None
        job.assign_directly(parties.contractor, engagement_id, now)
        await uow.engagements.add(engagement)
        await uow.market_jobs.save(job)
        await uow.commit()
    parties.engagement_id, parties.job_id = engagement_id, job_id
    return engagement_id


async def issue_and_fund(
    ledger: WalletEscrowLedger, parties: Parties, payment_id: str, coins: int
) -> None:
    """Payments' booking of a captured direct job payment (ESC-5) as one transfer
    `payment:<pid>:capture`: coins issued to the payer, fee1 to revenue(COIN), the rest to the
    engagement's escrow (the cash side of it is payments' and not needed here)."""
    fee = coins * 1000 // 10000
    issuance = await ledger.accounts.open(
        "platform", COIN_UNIT, wpb.ACCOUNT_KIND_ISSUANCE, allow_negative=True
    )
    payer = await ledger.account_id(AccountRef.user(parties.customer, COIN_UNIT))
    revenue = await ledger.account_id(AccountRef.revenue(COIN_UNIT))
    escrow = await ledger.account_id(AccountRef.escrow(parties.engagement_id, COIN_UNIT))
    await _transfer(
        ledger,
        f"payment:{payment_id}:capture",
        [
            (issuance, payer, coins, COIN_UNIT),
            (payer, revenue, fee, COIN_UNIT),
            (payer, escrow, coins - fee, COIN_UNIT),
        ],
    )


UNIT_NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def unit_engagement(  # a funded engagement for the pure rules
    amount: int,
    state: EngagementState = EngagementState.IN_PROGRESS,
    funding: FundingSource = FundingSource.COINS,
    unit: str = "COIN",
) -> Engagement:
    split = funding_split(amount, 1_000)
    return Engagement(
        id="eng_1",
        job_id="mjob_1",
        customer_id="cust",
        contractor_id="ctr",
        unit=unit,
        amount_minor=amount,
        fee1_minor=split.fee_minor,
        escrow_minor=split.escrow_minor,
        funding=funding,
        state=state,
        created_at=UNIT_NOW,
        updated_at=UNIT_NOW,
        funding_state=FundingState.FUNDED,
        payment_id="pay_1",
    )
