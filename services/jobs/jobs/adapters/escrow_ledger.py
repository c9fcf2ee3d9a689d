"""The escrow's clients: the wallet as its ledger (accounts opened idempotently by owner + unit +
kind, one transfer per money step) and payments' Refund for card-funded engagements."""

from __future__ import annotations

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from jobs.adapters.participants import _LazyClient
from jobs.domain.escrow import AccountKind, AccountRef, Leg, RefundOutcome

_KINDS = {
    AccountKind.USER: wpb.ACCOUNT_KIND_USER,
    AccountKind.PLATFORM_REVENUE: wpb.ACCOUNT_KIND_PLATFORM_REVENUE,
    AccountKind.ESCROW: wpb.ACCOUNT_KIND_ESCROW,
    AccountKind.PROVIDER_CLEARING: wpb.ACCOUNT_KIND_PROVIDER_CLEARING,
}


class WalletEscrowLedger(_LazyClient):
    """OpenAccount (cached per process: an account's id never changes) and Transfer."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__("wallet", target, timeout)
        self._ids: dict[AccountRef, str] = {}

    @property
    def stub(self) -> wpb_grpc.WalletServiceStub:
        return wpb_grpc.WalletServiceStub(self.client.channel)

    async def account_id(self, ref: AccountRef) -> str:
        if ref not in self._ids:
            request = wpb.OpenAccountRequest(
                request_id=f"open:{ref.owner}:{ref.unit}:{ref.kind.value}",
                owner_id=ref.owner,
                currency=ref.unit,
                kind=_KINDS[ref.kind],  # type: ignore[arg-type]
                allow_negative=ref.kind is AccountKind.PROVIDER_CLEARING,
            )
            reply = await self.client.call(self.stub.OpenAccount, request, timeout=self.timeout)
            self._ids[ref] = str(reply.account.account_id)
        return self._ids[ref]

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


class PaymentsCardRefunds(_LazyClient):
    """Payments' Refund (idempotent on the request id) and the provider of a payment."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__("payments", target, timeout)

    @property
    def stub(self) -> ppb_grpc.PaymentsServiceStub:
        return ppb_grpc.PaymentsServiceStub(self.client.channel)

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
