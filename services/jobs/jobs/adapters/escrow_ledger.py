"""The escrow's clients: the wallet as its ledger (accounts opened idempotently by owner + unit +
kind, one transfer per money step) and payments' Refund for card-funded engagements."""

from __future__ import annotations

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_platform.client import LazyServiceClient, ServiceClient
from hirepay_platform.errors import HirepayError
from jobs.adapters.offer_funds import WalletAccounts
from jobs.domain.escrow import (
    AccountKind,
    AccountRef,
    JobPaymentCheckout,
    JobPaymentSession,
    Leg,
    PaymentRefund,
    RefundOutcome,
)

_KINDS = {
    AccountKind.USER: wpb.ACCOUNT_KIND_USER,
    AccountKind.PLATFORM_REVENUE: wpb.ACCOUNT_KIND_PLATFORM_REVENUE,
    AccountKind.ESCROW: wpb.ACCOUNT_KIND_ESCROW,
    AccountKind.PROVIDER_CLEARING: wpb.ACCOUNT_KIND_PROVIDER_CLEARING,
}


class WalletEscrowLedger:
    """Accounts through the marketplace's WalletAccounts (opened once per process) and Transfer."""

    def __init__(self, accounts: WalletAccounts) -> None:
        self.accounts = accounts

    @property
    def client(self) -> ServiceClient:
        return self.accounts.client

    @property
    def timeout(self) -> float:
        return self.accounts.timeout

    @property
    def stub(self) -> wpb_grpc.WalletServiceStub:
        return self.accounts.stub

    async def account_id(self, ref: AccountRef) -> str:
        return await self.accounts.open(
            ref.owner,
            ref.unit,
            _KINDS[ref.kind],
            allow_negative=ref.kind is AccountKind.PROVIDER_CLEARING,
        )

    async def post(self, transfer_id: str, legs: tuple[Leg, ...], metadata: dict[str, str]) -> None:
        if not legs:
            return
        wire = [
            wpb.TransferLeg(
                from_account_id=await self.account_id(leg.source),
                to_account_id=await self.account_id(leg.target),
                amount=common_pb2.Money(amount_minor=leg.amount_minor, currency=leg.source.unit),
            )
            for leg in legs
        ]
        request = wpb.TransferRequest(
            request_id=transfer_id,
            transfer_id=transfer_id,
            legs=wire,
            description=metadata.get("description", transfer_id),
            metadata={k: v for k, v in metadata.items() if k != "description"},
        )
        await self.client.call(self.stub.Transfer, request, timeout=self.timeout)

    async def credits_of(self, transfer_id: str) -> dict[str, int]:
        request = wpb.GetTransferRequest(transfer_id=transfer_id)
        try:
            reply = await self.client.call(self.stub.GetTransfer, request, timeout=self.timeout)
        except HirepayError as exc:
            if exc.reason in ("TRANSFER_NOT_FOUND", "NOT_FOUND"):
                return {}
            raise
        credits: dict[str, int] = {}
        for entry in reply.transfer.entries:
            if entry.amount.amount_minor > 0:
                credits[entry.account_id] = (
                    credits.get(entry.account_id, 0) + entry.amount.amount_minor
                )
        return credits


class PaymentsCardRefunds(LazyServiceClient[ppb_grpc.PaymentsServiceStub]):
    """Payments' Refund (idempotent on the request id) and the provider of a payment."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__("payments", target, timeout, ppb_grpc.PaymentsServiceStub)

    async def refund(
        self, payment_id: str, amount_minor: int, request_id: str, reason: str
    ) -> RefundOutcome:
        request = ppb.RefundRequest(
            request_id=request_id, payment_id=payment_id, amount_minor=amount_minor, reason=reason
        )
        reply = await self.client.call(self.stub.Refund, request, timeout=self.timeout)
        return RefundOutcome(reply.refund.refund_id, reply.refund.status)

    async def provider_of(self, payment_id: str) -> str:
        request = ppb.GetPaymentRequest(payment_id=payment_id)
        reply = await self.client.call(self.stub.GetPayment, request, timeout=self.timeout)
        return str(reply.payment.provider) or "stripe"

    async def refunds_of(self, payment_id: str) -> tuple[str, list[PaymentRefund]]:
        request = ppb.GetPaymentRequest(payment_id=payment_id)
        reply = await self.client.call(self.stub.GetPayment, request, timeout=self.timeout)
        refunds = [
            PaymentRefund(r.refund_id, r.request_id, r.amount.amount_minor, r.status)
            for r in reply.refunds
        ]
        return str(reply.payment.provider) or "stripe", refunds


class PaymentsJobPayments(LazyServiceClient[ppb_grpc.PaymentsServiceStub]):
    """Payments' CreateJobPaymentCheckout (ESC-5), idempotent on the engagement."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__("payments", target, timeout, ppb_grpc.PaymentsServiceStub)

    async def create_checkout(self, request: JobPaymentCheckout) -> JobPaymentSession:
        stub = self.stub
        wire = ppb.CreateJobPaymentCheckoutRequest(
            request_id=f"job-payment:{request.engagement_id}",
            engagement_id=request.engagement_id,
            job_id=request.job_id,
            freelancer_id=request.freelancer_id,
            payer_id=request.customer_id,
            amount=common_pb2.Money(amount_minor=request.amount_minor, currency=request.currency),
            provider=request.provider,
            email=request.email,
            return_url=request.return_url,
            cancel_url=request.cancel_url,
        )
        reply = await self.client.call(
            stub.CreateJobPaymentCheckout,
            wire,
            timeout=self.timeout,
        )
        return JobPaymentSession(
            payment_id=reply.payment.payment_id,
            checkout_url=reply.checkout_url,
            coins=reply.coins,
            fee_coins=reply.fee_coins,
            escrow_coins=reply.escrow_coins,
        )
