"""The PaymentsService servicer: request -> command -> handler -> response. No rule lives here;
domain errors are mapped to statuses (with ErrorInfo) by the platform interceptor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_platform.identity import current_caller
from hirepay_platform.wire import to_datetime
from payments.domain import commands, errors
from payments.entrypoints import conversions as conv
from payments.service_layer import access, handlers
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import (
    PaymentResult,
    audit,
    checkouts,
    coins,
    credits,
    disputes,
    payout_accounts,
    payouts,
    returns,
    subscriptions,
    webhooks,
)
from payments.service_layer.wakeup import Wakeup

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PaymentsService"].full_name
# A following stream reads again when this process commits settlement events (woken; at most one
# read per STREAM_POLL_SECONDS), else after STREAM_POLL_SECONDS, doubling while nothing comes up
# to STREAM_IDLE_SECONDS: events committed by another replica are delivered within that bound
# (issue 13: cheap idle polling, no read per commit under load).
STREAM_POLL_SECONDS = 0.15
STREAM_IDLE_SECONDS = 1.0
STREAM_BATCH = 200


def _payment_response(result: PaymentResult) -> pb.PaymentResponse:
    return pb.PaymentResponse(
        payment=conv.payment_msg(result.payment) if result.payment else None,
        null_compensation=result.null_compensation,
        replayed=result.replayed,
    )


class PaymentsServicer(pb_grpc.PaymentsServiceServicer):
    """Each call gets its own Deps (a fresh unit of work) from the factory; the pay-to-post path's
    calls (Authorize, Capture, Void, the providers' webhooks) from `posting_deps` if given: their
    units of work plan each statement once, generically, where the rest (listings, the auditor's
    reads) keep PostgreSQL's default plans (db.Database's `generic_plan_requests`, issue 13)."""

    def __init__(
        self,
        deps: Callable[[], Deps],
        stopping: asyncio.Event | None = None,
        published: Wakeup | None = None,
        *,
        posting_deps: Callable[[], Deps] | None = None,
    ) -> None:
        self._deps = deps
        self._posting_deps = posting_deps or deps
        self._stopping = stopping or asyncio.Event()
        self._published = published or Wakeup()

    async def Authorize(
        self, request: pb.AuthorizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.PaymentResponse:
        result = await handlers.authorize(conv.authorize_command(request), self._posting_deps())
        return _payment_response(result)

    async def Capture(
        self, request: pb.CaptureRequest, context: grpc.aio.ServicerContext
    ) -> pb.PaymentResponse:
        cmd = commands.Capture(
            request.request_id, conv.branch_from(request.branch), request.amount_minor
        )
        return _payment_response(await handlers.capture(cmd, self._posting_deps()))

    async def Void(
        self, request: pb.VoidRequest, context: grpc.aio.ServicerContext
    ) -> pb.PaymentResponse:
        cmd = commands.Void(request.request_id, conv.branch_from(request.branch), request.reason)
        return _payment_response(await handlers.void(cmd, self._posting_deps()))

    async def Refund(
        self, request: pb.RefundRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefundResponse:
        cmd = commands.Refund(
            request.request_id, request.payment_id, request.amount_minor, request.reason
        )
        result = await access.refund_payment(current_caller(), cmd, self._deps())
        return pb.RefundResponse(
            refund=conv.refund_msg(result.refund),
            payment=conv.payment_msg(result.payment),
            replayed=result.replayed,
        )

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.PaymentResponse:
        payment, found, refunds = await disputes.get_payment_with_disputes(
            request.payment_id, self._deps()
        )
        return pb.PaymentResponse(
            payment=conv.payment_msg(payment),
            disputes=[conv.dispute_msg(d) for d in found],
            refunds=[conv.refund_msg(r) for r in refunds],
        )

    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPaymentsResponse:
        page = await audit.list_payments(conv.list_payments_command(request), self._deps())
        return conv.payment_page_msg(page)

    async def ReconcileProvider(
        self, request: pb.ReconcileProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReconcileProviderResponse:
        cmd = commands.ReconcileProvider(limit=request.limit or 100)
        # The factory, not one Deps: payments are checked concurrently, each worker with a unit
        # of work of its own; the deadline: a partial answer rather than DEADLINE_EXCEEDED.
        found = await audit.reconcile_provider(cmd, self._deps, context.time_remaining)
        return conv.reconciliation_msg(found)

    async def GetPaymentByBranch(
        self, request: pb.GetPaymentByBranchRequest, context: grpc.aio.ServicerContext
    ) -> pb.PaymentResponse:
        result = await handlers.get_payment_by_branch(
            conv.branch_from(request.branch), self._deps()
        )
        return _payment_response(result)

    async def ListPaymentAttempts(
        self, request: pb.ListPaymentAttemptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPaymentAttemptsResponse:
        records = await handlers.list_attempts(request.payment_id, self._deps())
        return pb.ListPaymentAttemptsResponse(records=[conv.audit_msg(r) for r in records])

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransactionResponse:
        cmd = conv.subscribe_command(request)
        access.check_subscriber(current_caller(), cmd)
        txn = await subscriptions.subscribe(cmd, self._deps())
        return pb.TransactionResponse(transaction=conv.transaction_msg(txn))

    async def GetTransaction(
        self, request: pb.GetTransactionRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransactionResponse:
        txn = await access.verify_transaction(
            current_caller(), request.transaction_id, self._deps()
        )
        found = await disputes.disputes_of_purchase(txn.id, self._deps())
        return pb.TransactionResponse(
            transaction=conv.transaction_msg(txn),
            disputes=[conv.dispute_msg(d) for d in found],
        )

    async def ConfirmCheckoutReturn(
        self, request: pb.ConfirmCheckoutReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmCheckoutReturnResponse:
        cmd = commands.ConfirmReturn(request.provider, dict(request.params))
        result = await returns.confirm_return(cmd, self._deps())
        return pb.ConfirmCheckoutReturnResponse(
            transaction=conv.transaction_msg(result.transaction) if result.transaction else None,
            payment=conv.payment_msg(result.payment) if result.payment else None,
            redirect_url=result.redirect_url,
        )

    async def CancelCheckout(
        self, request: pb.CancelCheckoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelCheckoutResponse:
        cmd = commands.CancelCheckout(
            request.request_id, request.transaction_id, request.payment_id
        )
        result = await checkouts.cancel_checkout(cmd, self._deps())
        return pb.CancelCheckoutResponse(
            transaction=conv.transaction_msg(result.transaction) if result.transaction else None,
            payment=conv.payment_msg(result.payment) if result.payment else None,
            redirect_url=result.redirect_url,
        )

    async def ListPlans(
        self, request: pb.ListPlansRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPlansResponse:
        plans = subscriptions.list_plans(self._deps(), conv.user_type_from(request.user_type))
        return pb.ListPlansResponse(plans=[conv.plan_msg(p) for p in plans])

    async def GetSubscriptionStatus(
        self, request: pb.GetSubscriptionStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSubscriptionStatusResponse:
        access.check_reaches(current_caller(), request.user_id)
        deps = self._deps()
        user_type = conv.user_type_from(request.user_type)
        if user_type is None:
            raise errors.invalid("user_type", "must be COMPANY or APPLICANT")
        status = await credits.subscription_status(user_type, request.user_id, deps)
        return conv.subscription_status_msg(status, deps.config.job_credits_per_post)

    async def RefundTransaction(
        self, request: pb.RefundTransactionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefundTransactionResponse:
        caller = current_caller()
        access.check_admin(caller)
        cmd = commands.RefundTransaction(
            request.request_id,
            request.transaction_id,
            request.reason or "requested_by_customer",
            # Audited as the verified admin, never a name the request declares.
            caller.user.user_id or caller.service,
        )
        return conv.refunded_purchase_msg(await credits.refund_transaction(cmd, self._deps()))

    async def CreatePayoutAccount(
        self, request: pb.CreatePayoutAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.PayoutAccountResponse:
        access.check_payout_user(current_caller(), request.user_id)
        cmd = commands.CreatePayoutAccount(request.user_id, request.email, request.country)
        account = await payout_accounts.create_payout_account(cmd, self._deps())
        return pb.PayoutAccountResponse(account=conv.payout_account_msg(account))

    async def GetPayoutAccount(
        self, request: pb.GetPayoutAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.PayoutAccountResponse:
        access.check_payout_user(current_caller(), request.user_id)
        account = await payout_accounts.get_payout_account(request.user_id, self._deps())
        return pb.PayoutAccountResponse(account=conv.payout_account_msg(account))

    async def RequestWithdrawal(
        self, request: pb.RequestWithdrawalRequest, context: grpc.aio.ServicerContext
    ) -> pb.WithdrawalResponse:
        access.check_payout_user(current_caller(), request.user_id)
        cmd = conv.request_withdrawal_command(request)
        withdrawal = await payouts.request_withdrawal(cmd, self._deps())
        return pb.WithdrawalResponse(withdrawal=conv.withdrawal_msg(withdrawal))

    async def GetWithdrawal(
        self, request: pb.GetWithdrawalRequest, context: grpc.aio.ServicerContext
    ) -> pb.WithdrawalResponse:
        withdrawal = await access.get_withdrawal(
            current_caller(), request.withdrawal_id, self._deps()
        )
        return pb.WithdrawalResponse(withdrawal=conv.withdrawal_msg(withdrawal))

    async def ListWithdrawals(
        self, request: pb.ListWithdrawalsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWithdrawalsResponse:
        access.check_payout_user(current_caller(), request.user_id)
        query = commands.ListWithdrawals(
            request.user_id, request.page.page_size, request.page.page_token
        )
        page = await payouts.list_withdrawals(query, self._deps())
        return pb.ListWithdrawalsResponse(
            withdrawals=[conv.withdrawal_msg(w) for w in page.withdrawals],
            next_page_token=page.next_page_token,
        )

    async def PurchaseCoins(
        self, request: pb.PurchaseCoinsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CoinCheckoutResponse:
        cmd = conv.purchase_coins_command(request)
        access.check_reaches(
            current_caller(), cmd.payer_id, "a user buys coins only for themselves"
        )
        return conv.coin_checkout_msg(await coins.purchase_coins(cmd, self._deps()))

    async def CreateJobPaymentCheckout(
        self, request: pb.CreateJobPaymentCheckoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.CoinCheckoutResponse:
        cmd = conv.job_payment_command(request)
        return conv.coin_checkout_msg(await coins.create_job_payment_checkout(cmd, self._deps()))

    async def AuditLedgerBookings(
        self, request: pb.AuditLedgerBookingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuditLedgerBookingsResponse:
        since = to_datetime(request.settled_since) if request.HasField("settled_since") else None
        found = await audit.audit_ledger_bookings(request.grace_seconds, self._deps(), since)
        return pb.AuditLedgerBookingsResponse(
            checked=found.checked,
            findings=[
                pb.LedgerFinding(kind=f.kind, subject_id=f.subject_id, detail=f.detail)
                for f in found.findings
            ],
        )

    async def HandleProviderEvent(
        self, request: pb.HandleProviderEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.HandleProviderEventResponse:
        cmd = commands.ProviderEventDelivery(
            request.provider,
            request.payload,
            request.signature,
            {name: request.headers[name] for name in request.headers},  # (as authorize_command)
        )
        outcome = await webhooks.handle_provider_event(cmd, self._posting_deps())
        return pb.HandleProviderEventResponse(
            event_id=outcome.event_id,
            event_type=outcome.event_type,
            applied=outcome.applied,
            duplicate=outcome.duplicate,
        )

    async def StreamSettlementEvents(
        self, request: pb.StreamSettlementEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SettlementEvent]:
        cursor = request.after_cursor
        pause = STREAM_POLL_SECONDS
        loop = asyncio.get_running_loop()
        woken_at = float("-inf")  # when this process last committed events
        while True:
            events = await handlers.settlement_events_after(
                self._deps(), cursor, limit=STREAM_BATCH, subsystem=request.subsystem
            )
            for event in events:
                yield conv.event_msg(event)
                cursor = event.cursor
            if len(events) == STREAM_BATCH:
                continue
            if not request.follow or self._stopping.is_set():
                return
            read_at = loop.time()
            # An event committed here may wait for an older writer still running (the read's
            # horizon, payments 0020): for a while after a commit, no backing off.
            waiting = read_at - woken_at < STREAM_IDLE_SECONDS
            pause = (
                STREAM_POLL_SECONDS if events or waiting else min(STREAM_IDLE_SECONDS, pause * 2)
            )
            if await self._published.wait(pause):
                pause = STREAM_POLL_SECONDS
                woken_at = loop.time()
                # Under load, one read per STREAM_POLL_SECONDS takes every event committed
                # meanwhile: no read per commit.
                await asyncio.sleep(max(0.0, read_at + STREAM_POLL_SECONDS - loop.time()))
