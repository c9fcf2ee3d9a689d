"""Typed gRPC clients of jobs, payments and wallet, built on the platform's ServiceClient.

Every call has a deadline, carries the current trace context and raises RemoteError on failure
(mapped to HTTP once, in gateway.api.errors). Retries happen only for requests with a request_id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pay_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wallet_pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from hirepay_platform.client import ServiceClient


class JobsClient:
    """The jobs service: drafts, postings and the pay-to-post saga."""

    def __init__(self, client: ServiceClient, saga_timeout: float) -> None:
        self.client = client
        self.stub = jobs_grpc.JobsServiceStub(client.channel)
        self.saga_timeout = saga_timeout

    async def create_draft(self, request: jobs_pb.CreateDraftRequest) -> jobs_pb.JobResponse:
        return await self.client.call(self.stub.CreateDraft, request)

    async def update_draft(self, request: jobs_pb.UpdateDraftRequest) -> jobs_pb.JobResponse:
        return await self.client.call(self.stub.UpdateDraft, request)

    async def get_job(self, request: jobs_pb.GetJobRequest) -> jobs_pb.JobResponse:
        return await self.client.call(self.stub.GetJob, request)

    async def preview_job(self, request: jobs_pb.PreviewJobRequest) -> jobs_pb.PreviewJobResponse:
        return await self.client.call(self.stub.PreviewJob, request)

    async def list_active_jobs(
        self, request: jobs_pb.ListActiveJobsRequest
    ) -> jobs_pb.ListJobsResponse:
        return await self.client.call(self.stub.ListActiveJobs, request)

    async def list_my_jobs(self, request: jobs_pb.ListMyJobsRequest) -> jobs_pb.ListJobsResponse:
        return await self.client.call(self.stub.ListMyJobs, request)

    async def create_job_with_payment(
        self, request: jobs_pb.CreateJobWithPaymentRequest
    ) -> jobs_pb.CreateJobWithPaymentResponse:
        # The saga talks to the provider; it gets a longer budget than a read.
        return await self.client.call(
            self.stub.CreateJobWithPayment, request, timeout=self.saga_timeout
        )

    async def cancel_job(self, request: jobs_pb.CancelJobRequest) -> jobs_pb.JobResponse:
        return await self.client.call(self.stub.CancelJob, request, timeout=self.saga_timeout)

    async def list_job_transitions(
        self, request: jobs_pb.ListJobTransitionsRequest
    ) -> jobs_pb.ListJobTransitionsResponse:
        return await self.client.call(self.stub.ListJobTransitions, request)

    async def get_consistency_report(
        self, request: jobs_pb.GetConsistencyReportRequest
    ) -> jobs_pb.ConsistencyReport:
        # An audit round reads every service and the provider: a longer budget than a read.
        return await self.client.call(
            self.stub.GetConsistencyReport, request, timeout=self.saga_timeout
        )

    async def apply(self, request: jobs_pb.ApplyRequest) -> jobs_pb.ApplicationResponse:
        return await self.client.call(self.stub.Apply, request)

    async def list_my_applications(
        self, request: jobs_pb.ListMyApplicationsRequest
    ) -> jobs_pb.ListApplicationsResponse:
        return await self.client.call(self.stub.ListMyApplications, request)

    async def list_job_applications(
        self, request: jobs_pb.ListJobApplicationsRequest
    ) -> jobs_pb.ListApplicationsResponse:
        return await self.client.call(self.stub.ListJobApplications, request)

    async def view_applicant(
        self, request: jobs_pb.ViewApplicantRequest
    ) -> jobs_pb.ApplicationResponse:
        # A debit on the wallet: the longer budget.
        return await self.client.call(self.stub.ViewApplicant, request, timeout=self.saga_timeout)

    async def decide_application(
        self, request: jobs_pb.DecideApplicationRequest
    ) -> jobs_pb.ApplicationResponse:
        return await self.client.call(self.stub.DecideApplication, request)

    # Marketplace (ESC-6..10). Offers move money (an authorization or a hold, a capture and the
    # ledger bookings, releases): the saga budget.

    async def post_market_job(
        self, request: jobs_pb.PostMarketJobRequest
    ) -> jobs_pb.MarketJobResponse:
        return await self.client.call(self.stub.PostMarketJob, request)

    async def get_market_job(
        self, request: jobs_pb.GetMarketJobRequest
    ) -> jobs_pb.MarketJobResponse:
        return await self.client.call(self.stub.GetMarketJob, request)

    async def list_my_market_jobs(
        self, request: jobs_pb.ListMyMarketJobsRequest
    ) -> jobs_pb.ListMarketJobsResponse:
        return await self.client.call(self.stub.ListMyMarketJobs, request)

    async def list_open_market_jobs(
        self, request: jobs_pb.ListOpenMarketJobsRequest
    ) -> jobs_pb.ListMarketJobsResponse:
        return await self.client.call(self.stub.ListOpenMarketJobs, request)

    async def request_job(self, request: jobs_pb.RequestJobRequest) -> jobs_pb.JobRequestResponse:
        return await self.client.call(self.stub.RequestJob, request)

    async def list_job_requests(
        self, request: jobs_pb.ListJobRequestsRequest
    ) -> jobs_pb.ListJobRequestsResponse:
        return await self.client.call(self.stub.ListJobRequests, request)

    async def decide_job_request(
        self, request: jobs_pb.DecideJobRequestRequest
    ) -> jobs_pb.JobRequestResponse:
        return await self.client.call(self.stub.DecideJobRequest, request)

    async def send_offer(self, request: jobs_pb.SendOfferRequest) -> jobs_pb.OfferResponse:
        return await self.client.call(self.stub.SendOffer, request, timeout=self.saga_timeout)

    async def get_offer(self, request: jobs_pb.GetOfferRequest) -> jobs_pb.OfferResponse:
        return await self.client.call(self.stub.GetOffer, request)

    async def list_offers(self, request: jobs_pb.ListOffersRequest) -> jobs_pb.ListOffersResponse:
        return await self.client.call(self.stub.ListOffers, request)

    async def accept_offer(self, request: jobs_pb.AcceptOfferRequest) -> jobs_pb.OfferResponse:
        return await self.client.call(self.stub.AcceptOffer, request, timeout=self.saga_timeout)

    async def reject_offer(self, request: jobs_pb.RejectOfferRequest) -> jobs_pb.OfferResponse:
        return await self.client.call(self.stub.RejectOffer, request, timeout=self.saga_timeout)

    async def withdraw_offer(self, request: jobs_pb.WithdrawOfferRequest) -> jobs_pb.OfferResponse:
        return await self.client.call(self.stub.WithdrawOffer, request, timeout=self.saga_timeout)


class PaymentsClient:
    """The payments service: subscriptions, transactions, checkout and provider webhooks."""

    def __init__(self, client: ServiceClient, slow_timeout: float) -> None:
        self.client = client
        self.stub = pay_grpc.PaymentsServiceStub(client.channel)
        self.slow_timeout = slow_timeout

    async def subscribe(self, request: pay_pb.SubscribeRequest) -> pay_pb.TransactionResponse:
        # Creating the checkout session is a provider call.
        return await self.client.call(self.stub.Subscribe, request, timeout=self.slow_timeout)

    async def get_transaction(
        self, request: pay_pb.GetTransactionRequest
    ) -> pay_pb.TransactionResponse:
        return await self.client.call(self.stub.GetTransaction, request)

    async def cancel_checkout(
        self, request: pay_pb.CancelCheckoutRequest
    ) -> pay_pb.CancelCheckoutResponse:
        return await self.client.call(self.stub.CancelCheckout, request, timeout=self.slow_timeout)

    async def handle_provider_event(
        self, request: pay_pb.HandleProviderEventRequest
    ) -> pay_pb.HandleProviderEventResponse:
        return await self.client.call(self.stub.HandleProviderEvent, request)

    async def list_plans(self, request: pay_pb.ListPlansRequest) -> pay_pb.ListPlansResponse:
        return await self.client.call(self.stub.ListPlans, request)

    async def get_subscription_status(
        self, request: pay_pb.GetSubscriptionStatusRequest
    ) -> pay_pb.GetSubscriptionStatusResponse:
        return await self.client.call(self.stub.GetSubscriptionStatus, request)

    async def refund_transaction(
        self, request: pay_pb.RefundTransactionRequest
    ) -> pay_pb.RefundTransactionResponse:
        # A provider refund and a wallet revocation.
        return await self.client.call(
            self.stub.RefundTransaction, request, timeout=self.slow_timeout
        )

    async def purchase_coins(
        self, request: pay_pb.PurchaseCoinsRequest
    ) -> pay_pb.CoinCheckoutResponse:
        # Creating the checkout is a provider call.
        return await self.client.call(self.stub.PurchaseCoins, request, timeout=self.slow_timeout)

    async def confirm_checkout_return(
        self, request: pay_pb.ConfirmCheckoutReturnRequest
    ) -> pay_pb.ConfirmCheckoutReturnResponse:
        # Re-reading the checkout (and completing an approved PayPal order) is a provider call.
        return await self.client.call(
            self.stub.ConfirmCheckoutReturn, request, timeout=self.slow_timeout
        )

    # --- payouts (ESC-9): opening accounts and withdrawing call the provider ------------------

    async def create_payout_account(
        self, request: pay_pb.CreatePayoutAccountRequest
    ) -> pay_pb.PayoutAccountResponse:
        return await self.client.call(
            self.stub.CreatePayoutAccount, request, timeout=self.slow_timeout
        )

    async def get_payout_account(
        self, request: pay_pb.GetPayoutAccountRequest
    ) -> pay_pb.PayoutAccountResponse:
        # An account still onboarding is re-read from the provider.
        return await self.client.call(
            self.stub.GetPayoutAccount, request, timeout=self.slow_timeout
        )

    async def request_withdrawal(
        self, request: pay_pb.RequestWithdrawalRequest
    ) -> pay_pb.WithdrawalResponse:
        return await self.client.call(
            self.stub.RequestWithdrawal, request, timeout=self.slow_timeout
        )

    async def get_withdrawal(
        self, request: pay_pb.GetWithdrawalRequest
    ) -> pay_pb.WithdrawalResponse:
        return await self.client.call(self.stub.GetWithdrawal, request)

    async def list_withdrawals(
        self, request: pay_pb.ListWithdrawalsRequest
    ) -> pay_pb.ListWithdrawalsResponse:
        return await self.client.call(self.stub.ListWithdrawals, request)


class WalletClient:
    """The wallet's reads (ESC-11): a user's wallet and history, the admin reports. The gateway
    never moves money on the ledger: the wallet's policy refuses it every other RPC."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client
        self.stub = wallet_grpc.WalletServiceStub(client.channel)

    async def get_wallet_summary(
        self, request: wallet_pb.GetWalletSummaryRequest
    ) -> wallet_pb.GetWalletSummaryResponse:
        return await self.client.call(self.stub.GetWalletSummary, request)

    async def list_wallet_transactions(
        self, request: wallet_pb.ListWalletTransactionsRequest
    ) -> wallet_pb.ListLedgerLinesResponse:
        return await self.client.call(self.stub.ListWalletTransactions, request)

    async def get_commission_earnings(
        self, request: wallet_pb.GetCommissionEarningsRequest
    ) -> wallet_pb.GetCommissionEarningsResponse:
        return await self.client.call(self.stub.GetCommissionEarnings, request)

    async def list_balances(
        self, request: wallet_pb.ListBalancesRequest
    ) -> wallet_pb.ListBalancesResponse:
        return await self.client.call(self.stub.ListBalances, request)

    async def list_transactions(
        self, request: wallet_pb.ListTransactionsRequest
    ) -> wallet_pb.ListLedgerLinesResponse:
        return await self.client.call(self.stub.ListTransactions, request)


@dataclass
class Backends:
    """Every client the gateway holds; built at start-up inside the event loop, closed at shutdown."""

    jobs: JobsClient
    payments: PaymentsClient
    wallet: WalletClient
    raw: dict[str, ServiceClient]

    @classmethod
    def connect(
        cls, targets: Mapping[str, str], *, rpc_timeout: float, saga_timeout: float
    ) -> Backends:
        """Clients of `targets` ({"jobs": host:port, "payments": ..., "wallet": ...}); reads and quick
        calls get `rpc_timeout`, the saga-driving calls `saga_timeout`."""
        raw = {
            name: ServiceClient(name, targets[name], timeout=rpc_timeout)
            for name in ("jobs", "payments", "wallet")
        }
        return cls(
            jobs=JobsClient(raw["jobs"], saga_timeout),
            payments=PaymentsClient(raw["payments"], saga_timeout),
            wallet=WalletClient(raw["wallet"]),
            raw=raw,
        )

    async def health(self, timeout: float) -> dict[str, str]:
        """Each backend's gRPC health status (SERVING, NOT_SERVING, UNREACHABLE...)."""

        async def check(client: ServiceClient) -> str:
            stub = health_pb2_grpc.HealthStub(client.channel)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                return (
                    "UNREACHABLE"
                    if exc.code()
                    in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    else exc.code().name
                )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        names = list(self.raw)
        results = await asyncio.gather(*(check(self.raw[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.raw.values()), return_exceptions=True)
