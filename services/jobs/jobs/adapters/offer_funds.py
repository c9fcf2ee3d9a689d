"""The money of marketplace offers over gRPC: card offers through payments (Authorize / Capture /
Void, not captured until accepted), coin offers through wallet holds, and the ledger bookings of
the acceptance fee and the escrow (MARKETPLACE.md ledger conventions and transfer ids)."""

from __future__ import annotations

from typing import Any

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_platform.client import LazyServiceClient
from hirepay_platform.errors import HirepayError
from jobs.adapters.participants import (
    PLATFORM_OWNER,
    PaymentsParticipant,
    branch_of,
    try_result_from_hold,
    try_result_from_payment,
)
from jobs.domain.marketplace import BPS, FundingSplit, Offer, capture_transfer_id, escrow_owner
from jobs.domain.posting_saga import PaymentMethod, Saga, TryResult, TryState
from jobs.service_layer.ports import OfferFunds

MARKETPLACE = "marketplace"


class WalletAccounts(LazyServiceClient[wpb_grpc.WalletServiceStub]):
    """Opens the wallet accounts of the ledger conventions (idempotent on owner + unit + kind)."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__("wallet", target, timeout, wpb_grpc.WalletServiceStub)
        self._opened: dict[tuple[str, str, int], str] = {}

    async def open(
        self, owner_id: str, unit: str, kind: int, *, allow_negative: bool = False
    ) -> str:
        key = (owner_id, unit, kind)
        if key not in self._opened:
            request = wpb.OpenAccountRequest(
                request_id=f"open:{owner_id}:{unit}:{kind}",
                owner_id=owner_id,
                currency=unit,
                kind=kind,  # type: ignore[arg-type]
                allow_negative=allow_negative,
            )
            reply = await self.client.call(self.stub.OpenAccount, request, timeout=self.timeout)
            self._opened[key] = str(reply.account.account_id)
        return self._opened[key]

    async def revenue(self, unit: str) -> str:
        return await self.open(PLATFORM_OWNER, unit, wpb.ACCOUNT_KIND_PLATFORM_REVENUE)

    async def escrow(self, engagement_id: str, unit: str) -> str:
        return await self.open(escrow_owner(engagement_id), unit, wpb.ACCOUNT_KIND_ESCROW)

    async def clearing(self, provider: str, unit: str) -> str:
        return await self.open(
            f"provider:{provider}", unit, wpb.ACCOUNT_KIND_PROVIDER_CLEARING, allow_negative=True
        )

    async def user(self, owner_id: str, unit: str) -> str:
        return await self.open(owner_id, unit, wpb.ACCOUNT_KIND_USER)


def _money(amount_minor: int, unit: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency=unit)


class CardOfferFunds:
    """A card offer: an authorization of payments (manual capture), captured on acceptance and
    booked by jobs (purpose=marketplace: payments leaves its booking to jobs)."""

    def __init__(self, payments: PaymentsParticipant, accounts: WalletAccounts) -> None:
        self.payments = payments
        self.accounts = accounts

    async def reserve(self, saga: Saga, offer: Offer, hold_seconds: int) -> TryResult:
        request = ppb.AuthorizeRequest(
            request_id=f"{saga.id}:try",
            branch=branch_of(saga),
            owner_id=saga.company_id,
            amount=_money(saga.amount_minor, saga.currency),
            method=ppb.PAYMENT_METHOD_TYPE_CARD,
            payment_method_token=saga.payment_token,
            description=f"Offer {offer.id} for job {offer.job_id}",
            metadata={
                "subsystem": MARKETPLACE,
                "purpose": MARKETPLACE,
                "type": "marketplace_offer",
                "offer_id": offer.id,
                "job_id": offer.job_id,
                "saga_id": saga.id,
                "customer_id": offer.customer_id,
                "contractor_id": offer.contractor_id,
            },
        )
        client = self.payments.client
        reply = await client.call(
            self.payments.stub.Authorize, request, timeout=self.payments.timeout
        )
        return try_result_from_payment(reply.payment)

    async def capture(
        self, saga: Saga, split: FundingSplit, escrow_account_id: str, fee_bps: int
    ) -> TryResult:
        return await self.payments.confirm(saga)

    async def book(self, saga: Saga, split: FundingSplit, escrow_account_id: str) -> None:
        request = ppb.GetPaymentByBranchRequest(branch=branch_of(saga))
        reply = await self.payments.client.call(
            self.payments.stub.GetPaymentByBranch, request, timeout=self.payments.timeout
        )
        payment = reply.payment
        if payment.state != ppb.Payment.CAPTURED or payment.captured_minor != split.amount_minor:
            raise HirepayError(
                "the offer's payment is not captured for its amount; nothing booked",
                reason="PAYMENT_NOT_CAPTURED",
                metadata={"payment_id": payment.payment_id},
            )
        unit = saga.currency
        clearing = await self.accounts.clearing(payment.provider, unit)
        legs = []
        if split.fee_minor:
            revenue = await self.accounts.revenue(unit)
            legs.append(
                wpb.TransferLeg(
                    from_account_id=clearing,
                    to_account_id=revenue,
                    amount=_money(split.fee_minor, unit),
                )
            )
        legs.append(
            wpb.TransferLeg(
                from_account_id=clearing,
                to_account_id=escrow_account_id,
                amount=_money(split.escrow_minor, unit),
            )
        )
        transfer_id = capture_transfer_id(payment.payment_id)
        request_t = wpb.TransferRequest(
            request_id=transfer_id,
            transfer_id=transfer_id,
            legs=legs,
            description=f"Marketplace offer captured ({saga.id})",
            metadata={"payment_id": payment.payment_id, "saga_id": saga.id, "purpose": MARKETPLACE},
        )
        await self.accounts.client.call(
            self.accounts.stub.Transfer, request_t, timeout=self.accounts.timeout
        )

    async def release(self, saga: Saga, reason: str) -> TryResult:
        return await self.payments.cancel(saga, reason)

    async def inspect(self, saga: Saga) -> TryResult:
        return await self.payments.inspect(saga)

    async def escrow_account(self, engagement_id: str, unit: str) -> str:
        return await self.accounts.escrow(engagement_id, unit)


class CoinOfferFunds:
    """A coin offer: a hold on the customer's COIN wallet, posted on acceptance split fee ->
    platform revenue (COIN), rest -> the engagement's escrow (one ledger transaction)."""

    def __init__(self, accounts: WalletAccounts) -> None:
        self.accounts = accounts

    @property
    def _stub(self) -> wpb_grpc.WalletServiceStub:
        return self.accounts.stub

    async def _call(self, method: Any, request: Any) -> Any:
        return await self.accounts.client.call(method, request, timeout=self.accounts.timeout)

    async def reserve(self, saga: Saga, offer: Offer, hold_seconds: int) -> TryResult:
        customer = await self.accounts.user(saga.company_id, saga.currency)
        revenue = await self.accounts.revenue(saga.currency)
        request = wpb.ReserveHoldRequest(
            request_id=f"{saga.id}:try",
            branch=branch_of(saga),
            account_id=customer,
            destination_account_id=revenue,  # the Confirm always splits (fee / escrow)
            amount=_money(saga.amount_minor, saga.currency),
            expires_in_seconds=hold_seconds,
            description=f"Offer {offer.id} for job {offer.job_id}",
        )
        reply = await self._call(self._stub.ReserveHold, request)
        return try_result_from_hold(reply.hold, saga)

    async def capture(
        self, saga: Saga, split: FundingSplit, escrow_account_id: str, fee_bps: int
    ) -> TryResult:
        revenue = await self.accounts.revenue(saga.currency)
        shares = [
            wpb.SplitShare(to_account_id=account, basis_points=bps)
            for account, bps in ((revenue, fee_bps), (escrow_account_id, BPS - fee_bps))
            if bps > 0
        ]
        # The remainder of the flooring goes to the escrow: fee = floor(A * bps / 10000), exactly
        # the funding rule.
        remainder = escrow_account_id if fee_bps < BPS else revenue
        request = wpb.ConfirmHoldRequest(
            request_id=f"{saga.id}:confirm",
            branch=branch_of(saga),
            shares=shares,
            remainder_account_id=remainder,
        )
        reply = await self._call(self._stub.ConfirmHold, request)
        return try_result_from_hold(reply.hold, saga)

    async def book(self, saga: Saga, split: FundingSplit, escrow_account_id: str) -> None:
        return None  # the split Confirm booked fee and escrow in one ledger transaction

    async def release(self, saga: Saga, reason: str) -> TryResult:
        request = wpb.CancelHoldRequest(
            request_id=f"{saga.id}:cancel", branch=branch_of(saga), reason=reason[:200]
        )
        reply = await self._call(self._stub.CancelHold, request)
        if reply.null_compensation or not reply.HasField("hold"):
            return TryResult(state=TryState.ABSENT)
        return try_result_from_hold(reply.hold, saga)

    async def inspect(self, saga: Saga) -> TryResult:
        try:
            reply = await self._call(self._stub.GetHold, wpb.GetHoldRequest(branch=branch_of(saga)))
        except HirepayError as exc:
            if exc.reason in ("HOLD_NOT_FOUND", "NOT_FOUND"):
                return TryResult(state=TryState.ABSENT)
            raise
        if not reply.HasField("hold"):
            return TryResult(state=TryState.ABSENT)
        return try_result_from_hold(reply.hold, saga)

    async def escrow_account(self, engagement_id: str, unit: str) -> str:
        return await self.accounts.escrow(engagement_id, unit)


class GrpcOfferFunds:
    """Chooses an offer's funds by its method (card or coins)."""

    def __init__(self, card: CardOfferFunds, coins: CoinOfferFunds) -> None:
        self.card = card
        self.coins = coins

    def for_method(self, method: PaymentMethod) -> OfferFunds:
        return self.coins if method is PaymentMethod.COINS else self.card
