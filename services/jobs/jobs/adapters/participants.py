"""The saga's participants over gRPC: payments (money) and the wallet (job credits); and the
wallet's candidate credits for paid candidate views.

Provider and wire types stay here: each adapter translates its service's payment or hold into the
saga's TryResult, and errors arrive as RemoteError with the participant's reason and metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_platform.client import LazyServiceClient
from hirepay_platform.errors import HirepayError
from hirepay_platform.reasons import FailureReason
from jobs.domain.errors import InsufficientCredits
from jobs.domain.posting_saga import PaymentMethod, Saga, TryResult, TryState
from jobs.domain.pricing import CREDITS_UNIT
from jobs.service_layer.ports import Participant

PLATFORM_OWNER = "platform"
CANDIDATE_CREDIT_UNIT = "CANDIDATE_CREDIT"

_METHODS = {
    PaymentMethod.CARD: ppb.PAYMENT_METHOD_TYPE_CARD,
    PaymentMethod.BANK_TRANSFER: ppb.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
    PaymentMethod.CHECKOUT: ppb.PAYMENT_METHOD_TYPE_CHECKOUT,
}

# The auditor's batched reads: payments per ListPayments call (its maximum), wallet holds at once.
LIST_BATCH = 1000
HOLD_READS_AT_ONCE = 8

_PAYMENT_STATES = {
    ppb.Payment.REQUIRES_ACTION: TryState.ACTION_REQUIRED,
    ppb.Payment.PROCESSING: TryState.PROCESSING,
    ppb.Payment.AUTHORIZED: TryState.RESERVED,
    ppb.Payment.CAPTURED: TryState.CAPTURED,
    ppb.Payment.VOIDED: TryState.CANCELLED,
    ppb.Payment.FAILED: TryState.FAILED,
    ppb.Payment.REFUNDED: TryState.REFUNDED,
    ppb.Payment.PARTIALLY_REFUNDED: TryState.REFUNDED,
    ppb.Payment.UNKNOWN: TryState.UNKNOWN,
}

# Each payment state's name in the contract (State.Name), by number.
_PAYMENT_STATE_NAMES = {number: name for name, number in ppb.Payment.State.items()}

_HOLD_STATES = {
    wpb.Hold.PENDING: TryState.RESERVED,
    wpb.Hold.CONFIRMED: TryState.CAPTURED,
    wpb.Hold.CANCELLED: TryState.CANCELLED,
    wpb.Hold.EXPIRED: TryState.CANCELLED,
}


def branch_of(saga: Saga) -> common_pb2.TccBranch:
    """The saga's one participant branch."""
    return common_pb2.TccBranch(global_tx_id=saga.id, branch_id=saga.branch_id)


def try_result_from_payment(payment: ppb.Payment) -> TryResult:
    """The saga's view of a payment of the payments service."""
    return TryResult(
        state=_PAYMENT_STATES.get(payment.state, TryState.UNKNOWN),
        payment_id=payment.payment_id,
        # The state's name looked up, not State.Name's Python call per answer and event (issue
        # 13); a number the contract lacks goes to Name, which refuses it as before.
        provider_state=_PAYMENT_STATE_NAMES.get(payment.state)
        or ppb.Payment.State.Name(payment.state),
        next_action_url=payment.next_action_url,
        failure_reason=payment.failure_reason,
        failure_code=payment.failure_code or payment.decline_code,
    )


def hold_payment_id(saga: Saga) -> str:
    """How a credits payment is named on the job: the wallet hold's branch."""
    return f"{saga.id}/{saga.branch_id}"


def try_result_from_hold(hold: wpb.Hold, saga: Saga) -> TryResult:
    """The saga's view of a wallet hold."""
    return TryResult(
        state=_HOLD_STATES.get(hold.state, TryState.UNKNOWN),
        payment_id=hold_payment_id(saga),
        provider_state=wpb.Hold.State.Name(hold.state),
    )


class PaymentsParticipant(LazyServiceClient[ppb_grpc.PaymentsServiceStub]):
    """Payments as the TCC participant: Authorize / Capture / Void, Refund, GetPaymentByBranch."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__("payments", target, timeout, ppb_grpc.PaymentsServiceStub)

    async def try_(self, saga: Saga) -> TryResult:
        request = ppb.AuthorizeRequest(
            request_id=f"{saga.id}:try",
            branch=branch_of(saga),
            owner_id=saga.company_id,
            amount=common_pb2.Money(amount_minor=saga.amount_minor, currency=saga.currency),
            method=_METHODS[saga.method],
            payment_method_token=saga.payment_token,
            description=f"Job posting {saga.job_id}",
            metadata={
                "subsystem": "jobs",
                "type": "job_posting",
                "job_id": saga.job_id,
                "saga_id": saga.id,
                "company_id": saga.company_id,
            },
            return_url=saga.return_url,
            cancel_url=saga.cancel_url,
            email=saga.email,
        )
        reply = await self.client.call(self.stub.Authorize, request, timeout=self.timeout)
        return try_result_from_payment(reply.payment)

    async def confirm(self, saga: Saga) -> TryResult:
        request = ppb.CaptureRequest(request_id=f"{saga.id}:confirm", branch=branch_of(saga))
        reply = await self.client.call(self.stub.Capture, request, timeout=self.timeout)
        return try_result_from_payment(reply.payment)

    async def cancel(self, saga: Saga, reason: str) -> TryResult:
        request = ppb.VoidRequest(
            request_id=f"{saga.id}:cancel", branch=branch_of(saga), reason=reason[:200]
        )
        reply = await self.client.call(self.stub.Void, request, timeout=self.timeout)
        if reply.null_compensation or not reply.HasField("payment"):
            return TryResult(state=TryState.ABSENT)
        return try_result_from_payment(reply.payment)

    async def refund(self, saga: Saga, amount_minor: int, reason: str) -> None:
        payment_id = saga.payment_id
        if not payment_id:
            payment_id = (await self.inspect(saga)).payment_id
        request = ppb.RefundRequest(
            request_id=f"{saga.id}:refund",
            payment_id=payment_id,
            amount_minor=amount_minor,
            reason=reason,
        )
        await self.client.call(self.stub.Refund, request, timeout=self.timeout)

    async def inspect(self, saga: Saga) -> TryResult:
        request = ppb.GetPaymentByBranchRequest(branch=branch_of(saga))
        try:
            reply = await self.client.call(
                self.stub.GetPaymentByBranch, request, timeout=self.timeout
            )
        except HirepayError as exc:
            if exc.reason in ("PAYMENT_NOT_FOUND", "NOT_FOUND"):
                return TryResult(state=TryState.ABSENT)
            raise
        if not reply.HasField("payment"):
            return TryResult(state=TryState.ABSENT)
        return try_result_from_payment(reply.payment)

    async def inspect_many(self, sagas: Sequence[Saga]) -> dict[str, TryResult]:
        """One ListPayments call per 1,000 sagas (filtered by their transactions), each
        payment matched to its saga's branch; ABSENT where no Try is recorded."""
        found = {s.id: TryResult(state=TryState.ABSENT) for s in sagas}
        branches = {(s.id, s.branch_id) for s in sagas}
        ids = sorted(found)
        for start in range(0, len(ids), LIST_BATCH):
            request = ppb.ListPaymentsRequest(
                global_tx_ids=ids[start : start + LIST_BATCH], page_size=LIST_BATCH
            )
            while True:
                reply = await self.client.call(
                    self.stub.ListPayments, request, timeout=self.timeout
                )
                for p in reply.payments:
                    if (p.branch.global_tx_id, p.branch.branch_id) in branches:
                        found[p.branch.global_tx_id] = try_result_from_payment(p)
                if not reply.next_page_token:
                    break
                request.page_token = reply.next_page_token
        return found


class CreditsParticipant(LazyServiceClient[wpb_grpc.WalletServiceStub]):
    """The wallet as the TCC participant for job credits: ReserveHold / ConfirmHold / CancelHold.

    The hold moves the company's JOB_CREDIT toward the platform's JOB_CREDIT revenue account; a
    refund after Confirm is a reversal transfer with a deterministic id (idempotent)."""

    def __init__(self, target: str, timeout: float, hold_expiry_seconds: int) -> None:
        super().__init__("wallet", target, timeout, wpb_grpc.WalletServiceStub)
        self.hold_expiry_seconds = hold_expiry_seconds

    async def _account(self, owner_id: str, kind: int) -> str:
        request = wpb.OpenAccountRequest(
            request_id=f"open:{owner_id}:{CREDITS_UNIT}:{kind}",
            owner_id=owner_id,
            currency=CREDITS_UNIT,
            kind=kind,  # type: ignore[arg-type]
        )
        reply = await self.client.call(self.stub.OpenAccount, request, timeout=self.timeout)
        return str(reply.account.account_id)

    async def _accounts(self, saga: Saga) -> tuple[str, str]:
        company = await self._account(saga.company_id, wpb.ACCOUNT_KIND_USER)
        platform = await self._account(PLATFORM_OWNER, wpb.ACCOUNT_KIND_PLATFORM_REVENUE)
        return company, platform

    async def try_(self, saga: Saga) -> TryResult:
        company, platform = await self._accounts(saga)
        request = wpb.ReserveHoldRequest(
            request_id=f"{saga.id}:try",
            branch=branch_of(saga),
            account_id=company,
            destination_account_id=platform,
            amount=common_pb2.Money(amount_minor=saga.amount_minor, currency=saga.currency),
            expires_in_seconds=self.hold_expiry_seconds,
            description=f"Job posting {saga.job_id}",
        )
        reply = await self.client.call(self.stub.ReserveHold, request, timeout=self.timeout)
        return try_result_from_hold(reply.hold, saga)

    async def confirm(self, saga: Saga) -> TryResult:
        request = wpb.ConfirmHoldRequest(request_id=f"{saga.id}:confirm", branch=branch_of(saga))
        reply = await self.client.call(self.stub.ConfirmHold, request, timeout=self.timeout)
        return try_result_from_hold(reply.hold, saga)

    async def cancel(self, saga: Saga, reason: str) -> TryResult:
        request = wpb.CancelHoldRequest(
            request_id=f"{saga.id}:cancel", branch=branch_of(saga), reason=reason[:200]
        )
        reply = await self.client.call(self.stub.CancelHold, request, timeout=self.timeout)
        if reply.null_compensation or not reply.HasField("hold"):
            return TryResult(state=TryState.ABSENT)
        return try_result_from_hold(reply.hold, saga)

    async def refund(self, saga: Saga, amount_minor: int, reason: str) -> None:
        held = await self.inspect(saga)
        if held.state is TryState.RESERVED:
            # Never posted: releasing the hold returns everything.
            await self.cancel(saga, reason)
            return
        if held.state is not TryState.CAPTURED:
            return
        company, platform = await self._accounts(saga)
        request = wpb.TransferRequest(
            request_id=f"{saga.id}:refund",
            transfer_id=f"refund-{saga.id}",
            legs=[
                wpb.TransferLeg(
                    from_account_id=platform,
                    to_account_id=company,
                    amount=common_pb2.Money(amount_minor=amount_minor, currency=saga.currency),
                )
            ],
            description=f"Refund of job posting {saga.job_id}",
            metadata={"job_id": saga.job_id, "saga_id": saga.id, "reason": reason},
        )
        await self.client.call(self.stub.Transfer, request, timeout=self.timeout)

    async def inspect(self, saga: Saga) -> TryResult:
        request = wpb.GetHoldRequest(branch=branch_of(saga))
        try:
            reply = await self.client.call(self.stub.GetHold, request, timeout=self.timeout)
        except HirepayError as exc:
            if exc.reason in ("HOLD_NOT_FOUND", "NOT_FOUND"):
                return TryResult(state=TryState.ABSENT)
            raise
        if not reply.HasField("hold"):
            return TryResult(state=TryState.ABSENT)
        return try_result_from_hold(reply.hold, saga)

    async def inspect_many(self, sagas: Sequence[Saga]) -> dict[str, TryResult]:
        """The wallet has no batched hold read: GetHold per saga, a bounded number at once."""
        gate = asyncio.Semaphore(HOLD_READS_AT_ONCE)

        async def one(saga: Saga) -> TryResult:
            async with gate:
                return await self.inspect(saga)

        results = await asyncio.gather(*(one(s) for s in sagas))
        return {s.id: r for s, r in zip(sagas, results, strict=True)}


class GrpcParticipants:
    """Chooses the participant of a payment method."""

    def __init__(self, payments: PaymentsParticipant, credits: CreditsParticipant) -> None:
        self.payments = payments
        self.credits = credits

    def for_method(self, method: PaymentMethod) -> Participant:
        return self.credits if method is PaymentMethod.CREDITS else self.payments


class WalletCandidateCredits(LazyServiceClient[wpb_grpc.WalletServiceStub]):
    """The wallet's CANDIDATE_CREDIT ledger for paid candidate views (CR-3): one transfer per
    (company, applicant) from the company's account to the platform's, keyed by its transfer id."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__("wallet", target, timeout, wpb_grpc.WalletServiceStub)
        self._accounts: dict[tuple[str, int], str] = {}

    async def _account(self, owner_id: str, kind: int) -> str:
        if (owner_id, kind) not in self._accounts:
            request = wpb.OpenAccountRequest(
                request_id=f"open:{owner_id}:{CANDIDATE_CREDIT_UNIT}:{kind}",
                owner_id=owner_id,
                currency=CANDIDATE_CREDIT_UNIT,
                kind=kind,  # type: ignore[arg-type]
            )
            reply = await self.client.call(self.stub.OpenAccount, request, timeout=self.timeout)
            self._accounts[(owner_id, kind)] = str(reply.account.account_id)
        return self._accounts[(owner_id, kind)]

    async def debit_view(self, company_id: str, applicant_id: str, transfer_id: str) -> None:
        company = await self._account(company_id, wpb.ACCOUNT_KIND_USER)
        platform = await self._account(PLATFORM_OWNER, wpb.ACCOUNT_KIND_PLATFORM_REVENUE)
        request = wpb.TransferRequest(
            request_id=transfer_id,
            transfer_id=transfer_id,
            legs=[
                wpb.TransferLeg(
                    from_account_id=company,
                    to_account_id=platform,
                    amount=common_pb2.Money(amount_minor=1, currency=CANDIDATE_CREDIT_UNIT),
                )
            ],
            description="Candidate view",
            metadata={"company_id": company_id, "applicant_id": applicant_id},
        )
        try:
            await self.client.call(self.stub.Transfer, request, timeout=self.timeout)
        except HirepayError as exc:
            if exc.reason == FailureReason.INSUFFICIENT_FUNDS:
                raise InsufficientCredits("no candidate credits left") from None
            raise
