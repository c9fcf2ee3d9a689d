"""Named conversions between the contract's protobuf messages and the domain's types."""

from __future__ import annotations

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay_platform.tcc import TccBranch
from hirepay_platform.wire import timestamp, to_datetime
from payments.domain import commands
from payments.domain.credits import CREDIT_UNITS
from payments.domain.disputes import Dispute, DisputeStatus
from payments.domain.events import AuditEntry, OutboxEvent
from payments.domain.model import Method, Payment, PaymentState
from payments.domain.payouts import PayoutAccount, Withdrawal
from payments.domain.plans import Plan
from payments.domain.reconciliation import MismatchKind
from payments.domain.refunds import Refund
from payments.domain.transactions import Transaction, UserType
from payments.service_layer.handlers.audit import (
    Mismatch,
    PaymentPage,
    PurchaseRefundBooked,
    Reconciliation,
)
from payments.service_layer.handlers.coins import CoinCheckoutResult
from payments.service_layer.handlers.credits import RefundedPurchase, SubscriptionStatus

_METHODS = {
    pb.PAYMENT_METHOD_TYPE_CARD: Method.CARD,
    pb.PAYMENT_METHOD_TYPE_BANK_TRANSFER: Method.BANK_TRANSFER,
    pb.PAYMENT_METHOD_TYPE_CHECKOUT: Method.CHECKOUT,
}
_METHODS_OUT = {v: k for k, v in _METHODS.items()}
# Each state's number in the contract, looked up once (State.Value by name was a Python call
# per answer, issue 13); a state the contract lacks fails at import, not on an answer.
_STATES_OUT = {state: pb.Payment.State.Value(state.value) for state in PaymentState}
_USER_TYPES = {pb.USER_TYPE_COMPANY: UserType.COMPANY, pb.USER_TYPE_APPLICANT: UserType.APPLICANT}
_USER_TYPES_OUT = {v: k for k, v in _USER_TYPES.items()}


def branch_from(msg: common_pb2.TccBranch) -> TccBranch:
    return TccBranch(msg.global_tx_id, msg.branch_id)


def user_type_from(value: int) -> UserType | None:
    return _USER_TYPES.get(value)  # type: ignore[call-overload]


def authorize_command(req: pb.AuthorizeRequest) -> commands.Authorize:
    return commands.Authorize(
        request_id=req.request_id,
        branch=branch_from(req.branch),
        owner_id=req.owner_id,
        amount_minor=req.amount.amount_minor,
        currency=req.amount.currency,
        method=_METHODS.get(req.method),  # type: ignore[call-overload]
        payment_method_token=req.payment_method_token,
        description=req.description,
        # By its keys in one comprehension: dict() of a protobuf map goes through the Mapping
        # ABC's keys view, a Python generator step per key (issue 13).
        metadata={key: req.metadata[key] for key in req.metadata},
        return_url=req.return_url,
        cancel_url=req.cancel_url,
        email=req.email,
        provider=req.provider.lower(),
    )


def subscribe_command(req: pb.SubscribeRequest) -> commands.Subscribe:
    return commands.Subscribe(
        request_id=req.request_id,
        user_type=user_type_from(req.user_type),
        user_id=req.user_id,
        email=req.email,
        plan=req.plan or "MONTHLY",
        payment_method=req.payment_method or "STRIPE",
        return_url=req.return_url,
        cancel_url=req.cancel_url,
        currency=req.currency,
    )


def payment_msg(p: Payment) -> pb.Payment:
    message = pb.Payment(
        payment_id=p.id,
        branch=common_pb2.TccBranch(
            global_tx_id=p.branch.global_tx_id, branch_id=p.branch.branch_id
        ),
        owner_id=p.owner_id,
        amount=common_pb2.Money(amount_minor=p.amount_minor, currency=p.currency),
        captured_minor=p.captured_minor,
        refunded_minor=p.refunded_minor,
        state=_STATES_OUT[p.state],
        method=_METHODS_OUT[p.method],
        provider=p.provider,
        provider_payment_id=p.provider_payment_id,
        next_action_url=p.next_action_url,
        failure_reason=p.failure_reason,
        failure_code=p.failure_code,
        decline_code=p.decline_code,
        failure_message=p.failure_message,
        created_at=timestamp(p.created_at),
        updated_at=timestamp(p.updated_at),
    )
    # Key by key into the map: given to the constructor, a dict went through the Mapping ABC's
    # update() (an isinstance against the ABC, its __instancecheck__ and a Python loop): four
    # Python calls more per message, six messages per posting (issue 13). The same entries.
    metadata = message.metadata
    for key, value in p.metadata.items():
        metadata[key] = value
    return message


# Each dispute status's number in the contract (a status it lacks fails at import).
_DISPUTE_STATUS_OUT = {
    status: pb.PaymentDispute.Status.Value(status.name) for status in DisputeStatus
}


def dispute_msg(d: Dispute) -> pb.PaymentDispute:
    message = pb.PaymentDispute(
        dispute_id=d.provider_dispute_id,
        amount=common_pb2.Money(amount_minor=d.amount_minor, currency=d.currency),
        status=_DISPUTE_STATUS_OUT[d.status],
        reason=d.reason,
        withdrawn_minor=d.withdrawn_minor,
        reinstated_minor=d.reinstated_minor,
        fee_minor=d.fee_minor,
        created_at=timestamp(d.created_at),
        updated_at=timestamp(d.updated_at),
    )
    if d.closed_at is not None:
        message.closed_at.CopyFrom(timestamp(d.closed_at))
    return message


def refund_msg(r: Refund) -> pb.RefundRecord:
    return pb.RefundRecord(
        refund_id=r.id,
        payment_id=r.payment_id,
        amount=common_pb2.Money(amount_minor=r.amount_minor, currency=r.currency),
        reason=r.reason,
        provider_refund_id=r.provider_refund_id,
        status=r.status.value,
        created_at=timestamp(r.created_at),
        request_id=r.request_id,
    )


def transaction_msg(x: Transaction) -> pb.Transaction:
    return pb.Transaction(
        transaction_id=x.id,
        status=pb.Transaction.Status.Value(x.status.value),
        user_type=_USER_TYPES_OUT[x.user_type],
        user_id=x.user_id,
        email=x.email,
        amount=common_pb2.Money(amount_minor=x.amount_minor, currency=x.currency),
        payment_method=x.payment_method,
        provider=x.provider,
        provider_transaction_id=x.provider_transaction_id,
        provider_customer_id=x.provider_customer_id,
        plan=x.plan,
        checkout_url=x.checkout_url,
        expires_at=timestamp(x.expires_at),
        subscription_start_date=x.subscription_start.isoformat() if x.subscription_start else "",
        subscription_end_date=x.subscription_end.isoformat() if x.subscription_end else "",
        created_at=timestamp(x.created_at),
        updated_at=timestamp(x.updated_at),
        metadata={k: v for k, v in x.metadata.items() if k != "fingerprint"},
    )


def plan_msg(p: Plan) -> pb.Plan:
    return pb.Plan(
        code=p.code,
        user_type=_USER_TYPES_OUT[p.user_type],
        name=p.name,
        prices=[common_pb2.Money(amount_minor=a, currency=c) for c, a in p.prices.items()],
        period_days=p.period_days,
        job_credits=p.job_credits,
        candidate_credits=p.candidate_credits,
        free=p.free,
    )


def credit_amounts(amounts: dict[str, int]) -> list[pb.CreditAmount]:
    """Credit units of a grant (the purchase's money is left out: it is not a credit)."""
    return [
        pb.CreditAmount(unit=unit, amount=n)
        for unit, n in sorted(amounts.items())
        if unit in CREDIT_UNITS
    ]


def subscription_status_msg(
    status: SubscriptionStatus, per_post: int
) -> pb.GetSubscriptionStatusResponse:
    return pb.GetSubscriptionStatusResponse(
        active=transaction_msg(status.active) if status.active else None,
        premium=status.active is not None,
        job_credits=status.job_credits,
        candidate_credits=status.candidate_credits,
        max_job_posts=status.max_job_posts,
        job_credits_per_post=per_post,
    )


def refunded_purchase_msg(result: RefundedPurchase) -> pb.RefundTransactionResponse:
    grant = result.grant
    return pb.RefundTransactionResponse(
        transaction=transaction_msg(result.transaction),
        revocation_done=bool(grant and grant.done),
        revoked=credit_amounts(grant.amounts) if grant and grant.done else [],
        used=credit_amounts(grant.used) if grant and grant.done else [],
    )


def audit_msg(a: AuditEntry) -> common_pb2.AuditRecord:
    return common_pb2.AuditRecord(
        id=a.id,
        action=a.action,
        actor=a.actor,
        reason=a.reason,
        details=a.details,
        created_at=timestamp(a.created_at),
    )


def event_msg(e: OutboxEvent) -> pb.SettlementEvent:
    return pb.SettlementEvent(
        event_id=e.event_id,
        cursor=e.cursor,
        type=str(e.type),  # a StrEnum's value, no property call (issue 13)
        payment=payment_msg(e.payment) if e.payment else None,
        transaction=transaction_msg(e.transaction) if e.transaction else None,
        occurred_at=timestamp(e.occurred_at),
        withdrawal=withdrawal_msg(e.withdrawal) if e.withdrawal else None,
    )


def list_payments_command(req: pb.ListPaymentsRequest) -> commands.ListPayments:
    """ListPayments on the wire -> the query (the page token is the last payment id)."""
    return commands.ListPayments(
        states=frozenset(pb.Payment.State.Name(state) for state in req.states),
        subsystem=req.subsystem,
        page_size=req.page_size or 200,
        after_id=req.page_token,
        global_tx_ids=frozenset(req.global_tx_ids),
        updated_since=to_datetime(req.updated_since) if req.HasField("updated_since") else None,
    )


def payment_page_msg(page: PaymentPage) -> pb.ListPaymentsResponse:
    return pb.ListPaymentsResponse(
        payments=[payment_msg(p) for p in page.payments], next_page_token=page.next_after_id
    )


_MISMATCH_KINDS = {
    MismatchKind.CHARGE: pb.ProviderMismatch.KIND_CHARGE,
    MismatchKind.REFUND: pb.ProviderMismatch.KIND_REFUND,
    MismatchKind.UNREADABLE: pb.ProviderMismatch.KIND_UNREADABLE,
}


def reconciliation_msg(result: Reconciliation) -> pb.ReconcileProviderResponse:
    return pb.ReconcileProviderResponse(
        checked=result.checked,
        mismatches=[_mismatch_msg(m) for m in result.mismatches],
        left=result.left,
        earlier_mismatches=[_mismatch_msg(m) for m in result.earlier],
        unreadable=result.unreadable,
        unreadable_payments=[_mismatch_msg(m) for m in result.unreadable_past_grace],
        purchases_checked=result.purchases.checked,
        purchase_refunds_found=result.purchases.found,
        purchase_refunds_booked=[_purchase_refund_msg(b) for b in result.purchases.booked],
        purchases_unreadable=result.purchases.unreadable,
    )


def _purchase_refund_msg(b: PurchaseRefundBooked) -> pb.PurchaseRefundBooked:
    return pb.PurchaseRefundBooked(
        transaction_id=b.transaction_id,
        provider=b.provider,
        amount_minor=b.amount_minor,
        currency=b.currency,
        refunded_in_full=b.in_full,
    )


def _mismatch_msg(m: Mismatch) -> pb.ProviderMismatch:
    return pb.ProviderMismatch(
        payment_id=m.payment_id,
        provider_payment_id=m.provider_payment_id,
        detail=m.detail,
        kind=_MISMATCH_KINDS[m.kind],
    )


# --- payouts (ESC-9) ---------------------------------------------------------------------------


def payout_account_msg(a: PayoutAccount) -> pb.PayoutAccount:
    return pb.PayoutAccount(
        user_id=a.user_id,
        provider=a.provider,
        provider_account_id=a.provider_account_id,
        state=pb.PayoutAccount.State.Value(a.state.value.upper()),
        onboarding_url=a.onboarding_url,
        created_at=timestamp(a.created_at),
        updated_at=timestamp(a.updated_at),
    )


def withdrawal_msg(w: Withdrawal) -> pb.Withdrawal:
    return pb.Withdrawal(
        withdrawal_id=w.id,
        user_id=w.user_id,
        request_id=w.request_id,
        amount=common_pb2.Money(amount_minor=w.amount_minor, currency=w.currency),
        state=pb.Withdrawal.State.Value(w.state.value.upper()),
        provider=w.provider,
        provider_account_id=w.provider_account_id,
        transfer_id=w.transfer_id,
        payout_id=w.payout_id,
        failure_code=w.failure_code,
        failure_message=w.failure_message,
        created_at=timestamp(w.created_at),
        updated_at=timestamp(w.updated_at),
    )


def request_withdrawal_command(req: pb.RequestWithdrawalRequest) -> commands.RequestWithdrawal:
    return commands.RequestWithdrawal(
        request_id=req.request_id,
        user_id=req.user_id,
        amount_minor=req.amount.amount_minor,
        currency=req.amount.currency,
    )


def purchase_coins_command(request: pb.PurchaseCoinsRequest) -> commands.CoinCheckout:
    return _coin_checkout(request, request.buyer_id)


def job_payment_command(request: pb.CreateJobPaymentCheckoutRequest) -> commands.CoinCheckout:
    return _coin_checkout(
        request,
        request.payer_id,
        engagement_id=request.engagement_id,
        job_id=request.job_id,
        freelancer_id=request.freelancer_id,
    )


def _coin_checkout(
    request: pb.PurchaseCoinsRequest | pb.CreateJobPaymentCheckoutRequest,
    payer_id: str,
    **parties: str,
) -> commands.CoinCheckout:
    return commands.CoinCheckout(
        request_id=request.request_id,
        payer_id=payer_id,
        amount_minor=request.amount.amount_minor,
        currency=request.amount.currency,
        provider=request.provider,
        email=request.email,
        return_url=request.return_url,
        cancel_url=request.cancel_url,
        **parties,
    )


def coin_checkout_msg(result: CoinCheckoutResult) -> pb.CoinCheckoutResponse:
    return pb.CoinCheckoutResponse(
        payment=payment_msg(result.payment),
        coins=result.coins,
        fee_coins=result.fee_coins,
        escrow_coins=result.escrow_coins,
        checkout_url=result.checkout_url,
        replayed=result.replayed,
    )
