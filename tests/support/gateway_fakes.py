"""Fake jobs, payments and wallet gRPC servers for the gateway tests.

Each fake is a real grpc.aio server in the test process behind the platform's PlatformInterceptor,
so a domain error raised by a scripted handler reaches the gateway exactly as a real service would
send it (status code + google.rpc.ErrorInfo). Every call is recorded with its request and metadata.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.adapters.ratelimit import TokenBucketLimiter
from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pay_grpc
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from hirepay_dev.procs import ensure_service_token_secret
from hirepay_platform.errors import ErrorKind, HirepayError
from hirepay_platform.identity import ServiceAuthenticator, current_caller
from hirepay_platform.server import PlatformInterceptor

Handler = Callable[[Any], Any]


def ts(seconds: int = 1_790_000_000) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def domain_error(reason: str, kind: ErrorKind, **metadata: str) -> HirepayError:
    """An error as a service raises it (the interceptor turns it into status + ErrorInfo)."""
    return HirepayError(
        f"{reason.lower()} (from the fake)", reason=reason, kind=kind, metadata=metadata
    )


def make_job(
    job_id: str = "job_1",
    company_id: str = "company-a",
    status: int = jobs_pb.Job.ACTIVE,
    **overrides: Any,
) -> jobs_pb.Job:
    job = jobs_pb.Job(
        job_id=job_id,
        company_id=company_id,
        status=status,
        fields=jobs_pb.JobFields(
            title="Senior Python Engineer",
            description="Build the payment backbone of a job marketplace.",
            location="Remote",
            employment_type=jobs_pb.FULL_TIME,
            category="engineering",
            salary_min_minor=9_000_000,
            salary_max_minor=12_000_000,
            salary_currency="USD",
        ),
        terms_version="2026-01",
        created_at=ts(1_790_000_000),
        updated_at=ts(1_790_000_100),
    )
    if status in (jobs_pb.Job.ACTIVE, jobs_pb.Job.PENDING_PAYMENT):
        job.payment_id = "pay_123"
        job.payment_method = "card"
        job.payment_amount.CopyFrom(common_pb2.Money(amount_minor=4900, currency="USD"))
        job.payment_status = (
            jobs_pb.Job.COMPLETED if status == jobs_pb.Job.ACTIVE else jobs_pb.Job.PENDING
        )
    if status == jobs_pb.Job.ACTIVE:
        job.posted_at.CopyFrom(ts(1_790_000_100))
        job.expires_at.CopyFrom(ts(1_792_592_100))
    _apply(job, overrides)
    return job


def make_transaction(
    transaction_id: str = "txn_abc123", user_id: str = "company-a", **overrides: Any
) -> pay_pb.Transaction:
    txn = pay_pb.Transaction(
        transaction_id=transaction_id,
        status=pay_pb.Transaction.SUCCESS,
        user_type=pay_pb.USER_TYPE_COMPANY,
        user_id=user_id,
        email="company@example.com",
        amount=common_pb2.Money(amount_minor=3000, currency="USD"),
        payment_method="STRIPE",
        provider="stripe",
        plan="MONTHLY",
        subscription_start_date="2026-01-10",
        subscription_end_date="2026-02-10",
        created_at=ts(1_768_040_400),
        updated_at=ts(1_768_040_700),
    )
    _apply(txn, overrides)
    return txn


def _apply(message: Message, overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, Message):
            getattr(message, key).CopyFrom(value)
        else:
            setattr(message, key, value)


@dataclass
class Call:
    """One RPC the fake received."""

    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class Scripted:
    """Base of the fakes: per-method handlers a test may replace, and the calls received."""

    defaults: dict[str, Handler] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def reset(self) -> None:
        self.handlers.clear()
        self.calls.clear()

    def on(self, method: str, handler: Handler | BaseException | Any) -> None:
        """Script `method`: a callable(request), an exception to raise, or a response to return."""
        if isinstance(handler, BaseException):
            error = handler

            def raise_it(_request: Any) -> Any:
                raise error

            self.handlers[method] = raise_it
        elif callable(handler):
            self.handlers[method] = handler
        else:
            self.handlers[method] = lambda _request: handler

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def dispatch(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = {m.key: m.value for m in context.invocation_metadata() or ()}
        self.calls.append(Call(method, request, metadata))
        handler = self.handlers.get(method) or self.defaults.get(method)
        if handler is None:
            raise HirepayError("not scripted", reason="UNIMPLEMENTED_IN_FAKE")
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
        return result


def _servicer(base: type, fake: Scripted, methods: list[str]) -> Any:
    """A servicer subclass whose every RPC goes through `fake.dispatch`."""

    def make(name: str) -> Callable[..., Any]:
        async def rpc(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await fake.dispatch(name, request, context)

        return rpc

    return type(f"Fake{base.__name__}", (base,), {m: make(m) for m in methods})()


class FakeJobs(Scripted):
    def __init__(self) -> None:
        super().__init__()
        # The real jobs keeps the posting buckets in PostgreSQL; the fake keeps them in memory.
        self.buckets: dict[int, TokenBucketLimiter] = {}
        self.defaults.update(
            {
                "GetJob": lambda r: jobs_pb.JobResponse(job=make_job(r.job_id)),
                "CreateDraft": lambda r: jobs_pb.JobResponse(
                    job=make_job("job_draft", r.actor.user_id, jobs_pb.Job.DRAFT, fields=r.fields)
                ),
                "ListActiveJobs": lambda r: jobs_pb.ListJobsResponse(jobs=[make_job()]),
                "ListMyJobs": lambda r: jobs_pb.ListJobsResponse(
                    jobs=[make_job("job_m", r.actor.user_id, jobs_pb.Job.DRAFT)]
                ),
                "GetConsistencyReport": lambda r: jobs_pb.ConsistencyReport(
                    counts={"active_job_without_payment": 0}
                ),
            }
        )

    async def dispatch(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if method != "CreateJobWithPayment" or not request.HasField("rate_limit"):
            return await super().dispatch(method, request, context)
        # As the real service: the attempt is spent first; a refused one reaches no handler, and
        # the decision comes back with the answer or with the error's metadata.
        decision = self._take_posting_attempt(request)
        metadata = {
            "rate_limit_allowed": str(decision.allowed).lower(),
            "rate_limit_limit": str(decision.limit),
            "rate_limit_remaining": str(decision.remaining),
            "rate_limit_reset_seconds": str(decision.reset_seconds),
            "rate_limit_retry_after_seconds": str(decision.retry_after_seconds),
        }
        if not decision.allowed:
            metadata_of_call = {m.key: m.value for m in context.invocation_metadata() or ()}
            self.calls.append(Call("CreateJobWithPayment/refused", request, metadata_of_call))
            raise domain_error("RATE_LIMITED", ErrorKind.RESOURCE_EXHAUSTED, **metadata)
        try:
            response = await super().dispatch(method, request, context)
        except HirepayError as exc:
            exc.metadata.update(metadata)
            raise
        answer = jobs_pb.CreateJobWithPaymentResponse()
        answer.CopyFrom(response)
        answer.rate_limit.CopyFrom(decision)
        return answer

    def _take_posting_attempt(
        self, request: jobs_pb.CreateJobWithPaymentRequest
    ) -> jobs_pb.PostingRateDecision:
        limit = request.rate_limit.limit
        limiter = self.buckets.setdefault(limit, TokenBucketLimiter(limit, policy="fake"))
        # The bucket is the signed actor's, as in the real service.
        decision = limiter.take(current_caller().user.user_id, attempt=request.request_id)
        return jobs_pb.PostingRateDecision(
            allowed=decision.allowed,
            limit=decision.limit,
            remaining=decision.remaining,
            reset_seconds=decision.reset_seconds,
            retry_after_seconds=decision.retry_after_seconds,
        )


class FakePayments(Scripted):
    pass


class FakeWallet(Scripted):
    """The wallet's reads (the gateway calls no other wallet RPC)."""


JOBS_METHODS = [
    "CreateDraft",
    "UpdateDraft",
    "GetJob",
    "PreviewJob",
    "ListActiveJobs",
    "ListMyJobs",
    "CreateJobWithPayment",
    "CancelJob",
    "ListJobTransitions",
    "GetConsistencyReport",
    "Apply",
    "ListMyApplications",
    "ListJobApplications",
    "ViewApplicant",
    "DecideApplication",
    "PostMarketJob",
    "GetMarketJob",
    "ListMyMarketJobs",
    "ListOpenMarketJobs",
    "RequestJob",
    "ListJobRequests",
    "DecideJobRequest",
    "SendOffer",
    "GetOffer",
    "ListOffers",
    "AcceptOffer",
    "RejectOffer",
    "WithdrawOffer",
    "GetEngagement",
    "StartEngagement",
    "CompleteEngagement",
    "CancelEngagement",
    "OpenDispute",
    "ResolveDispute",
    "ListDisputes",
    "PayJobWithCoins",
    "StartJobPayment",
]
PAYMENTS_METHODS = [
    "Authorize",
    "Capture",
    "Void",
    "Refund",
    "GetPayment",
    "GetPaymentByBranch",
    "ListPaymentAttempts",
    "Subscribe",
    "GetTransaction",
    "CancelCheckout",
    "ListPlans",
    "HandleProviderEvent",
    "GetSubscriptionStatus",
    "RefundTransaction",
    "ConfirmCheckoutReturn",
    "PurchaseCoins",
]

WALLET_METHODS = [
    "GetWalletSummary",
    "ListWalletTransactions",
    "GetCommissionEarnings",
    "ListBalances",
    "ListTransactions",
]


@dataclass
class FakeServer:
    """One fake service listening on loopback, with its own health servicer."""

    name: str
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)


async def start_fake(
    name: str,
    add: Callable[[Any, grpc.aio.Server], None] | None,
    servicer: Any,
    port: int = 0,
) -> FakeServer:
    # The fakes authenticate the gateway exactly as the real services do.
    authenticator = ServiceAuthenticator(name, ensure_service_token_secret())
    server = grpc.aio.server(interceptors=[PlatformInterceptor(name, authenticator)])
    if add is not None:
        add(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    fake = FakeServer(name, server, port, health_servicer)
    await fake.set_serving(True)
    return fake


async def start_jobs(fake: FakeJobs, port: int = 0) -> FakeServer:
    """The jobs fake; `port` to come back where a stopped one listened."""
    servicer = _servicer(jobs_grpc.JobsServiceServicer, fake, JOBS_METHODS)
    return await start_fake("jobs", jobs_grpc.add_JobsServiceServicer_to_server, servicer, port)


async def start_payments(fake: FakePayments) -> FakeServer:
    servicer = _servicer(pay_grpc.PaymentsServiceServicer, fake, PAYMENTS_METHODS)
    return await start_fake("payments", pay_grpc.add_PaymentsServiceServicer_to_server, servicer)


async def start_wallet(fake: FakeWallet | None = None) -> FakeServer:
    """The wallet's reads (scripted by `fake`), or only its health when no fake is given."""
    if fake is None:
        return await start_fake("wallet", None, None)
    servicer = _servicer(wallet_grpc.WalletServiceServicer, fake, WALLET_METHODS)
    return await start_fake("wallet", wallet_grpc.add_WalletServiceServicer_to_server, servicer)
