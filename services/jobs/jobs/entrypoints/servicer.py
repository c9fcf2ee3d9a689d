"""The JobsService gRPC servicer: request -> command -> handler -> response, nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from jobs.domain import commands
from jobs.entrypoints import conversions as conv
from jobs.entrypoints import escrow_conversions as econv
from jobs.entrypoints import marketplace_conversions as mconv
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import (
    applications,
    audit,
    cancellation,
    drafts,
    pay_to_post,
)
from jobs.service_layer.marketplace import (
    escrow,
    job_payments,
    market_jobs,
    offers,
    receivables,
)


class JobsServicer(pb_grpc.JobsServiceServicer):
    """Thin adapter from the contract to the use cases."""

    def __init__(
        self, make_deps: Callable[[], Deps], *, posting_deps: Callable[[], Deps] | None = None
    ) -> None:
        # Each call gets its own dependencies (its own unit of work).
        self._deps = make_deps
        # CreateJobWithPayment's: units of work whose connections plan generically (issue 13).
        self._posting_deps = posting_deps or make_deps
        self._background: set[asyncio.Task[Any]] = set()

    async def CreateDraft(self, request: pb.CreateDraftRequest, context: Any) -> pb.JobResponse:
        cmd = commands.CreateDraft(
            actor=conv.caller_actor(),
            fields=conv.fields_from_proto(request.fields),
            request_id=request.request_id,
        )
        job = await drafts.create_draft(cmd, self._deps())
        return pb.JobResponse(job=conv.job_to_proto(job))

    async def UpdateDraft(self, request: pb.UpdateDraftRequest, context: Any) -> pb.JobResponse:
        cmd = commands.UpdateDraft(
            actor=conv.caller_actor(),
            job_id=request.job_id,
            fields=conv.fields_from_proto(request.fields),
            paths=tuple(request.update_mask.paths),
            request_id=request.request_id,
        )
        job = await drafts.update_draft(cmd, self._deps())
        return pb.JobResponse(job=conv.job_to_proto(job))

    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.JobResponse:
        cmd = commands.GetJob(actor=conv.caller_actor(), job_id=request.job_id)
        job = await drafts.get_job(cmd, self._deps())
        return pb.JobResponse(job=conv.job_to_proto(job))

    async def PreviewJob(
        self, request: pb.PreviewJobRequest, context: Any
    ) -> pb.PreviewJobResponse:
        cmd = commands.PreviewJob(actor=conv.caller_actor(), job_id=request.job_id)
        preview = await drafts.preview_job(cmd, self._deps())
        return conv.preview_to_proto(preview)

    async def ListActiveJobs(
        self, request: pb.ListActiveJobsRequest, context: Any
    ) -> pb.ListJobsResponse:
        cmd = commands.ListActiveJobs(
            page_size=request.page.page_size,
            page_token=request.page.page_token,
            category=request.category,
        )
        return conv.page_to_proto(await drafts.list_active_jobs(cmd, self._deps()))

    async def ListMyJobs(self, request: pb.ListMyJobsRequest, context: Any) -> pb.ListJobsResponse:
        cmd = commands.ListMyJobs(
            actor=conv.caller_actor(),
            page_size=request.page.page_size,
            page_token=request.page.page_token,
        )
        return conv.page_to_proto(await drafts.list_my_jobs(cmd, self._deps()))

    async def CreateJobWithPayment(
        self, request: pb.CreateJobWithPaymentRequest, context: Any
    ) -> pb.CreateJobWithPaymentResponse:
        cmd = conv.create_with_payment_from_proto(request)
        answer = await pay_to_post.create_job_with_payment(cmd, self._posting_deps())
        return conv.answer_to_proto(answer)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.JobResponse:
        cmd = commands.CancelJob(
            actor=conv.caller_actor(),
            job_id=request.job_id,
            reason=request.reason,
            request_id=request.request_id,
        )
        job, saga_id = await cancellation.cancel_job(cmd, self._deps())
        if saga_id:
            # The Cancel (pending payment) or the refund (live posting) is persisted as a saga
            # step and leased to this request: drive it now; recovery retries on failure.
            task = asyncio.create_task(
                cancellation.drive_cancellation(commands.DriveCancellation(saga_id), self._deps())
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return pb.JobResponse(job=conv.job_to_proto(job))

    async def ListJobTransitions(
        self, request: pb.ListJobTransitionsRequest, context: Any
    ) -> pb.ListJobTransitionsResponse:
        cmd = commands.ListJobTransitions(actor=conv.caller_actor(), job_id=request.job_id)
        transitions = await drafts.list_transitions(cmd, self._deps())
        return pb.ListJobTransitionsResponse(
            transitions=[conv.transition_to_proto(t) for t in transitions]
        )

    async def GetConsistencyReport(
        self, request: pb.GetConsistencyReportRequest, context: Any
    ) -> pb.ConsistencyReport:
        cmd = commands.GetConsistencyReport(actor=conv.caller_actor())
        return conv.audit_report_to_proto(await audit.get_consistency_report(cmd, self._deps()))

    async def Apply(self, request: pb.ApplyRequest, context: Any) -> pb.ApplicationResponse:
        cmd = commands.Apply(
            actor=conv.actor_from_proto(request.actor),
            job_id=request.job_id,
            name=request.name,
            email=request.email,
            cover_letter=request.cover_letter,
            resume_url=request.resume_url,
        )
        return conv.application_response(await applications.apply(cmd, self._deps()))

    async def ListMyApplications(
        self, request: pb.ListMyApplicationsRequest, context: Any
    ) -> pb.ListApplicationsResponse:
        cmd = commands.ListMyApplications(actor=conv.actor_from_proto(request.actor))
        views = await applications.list_my_applications(cmd, self._deps())
        return conv.applications_response(views)

    async def ListJobApplications(
        self, request: pb.ListJobApplicationsRequest, context: Any
    ) -> pb.ListApplicationsResponse:
        cmd = commands.ListJobApplications(
            actor=conv.actor_from_proto(request.actor), job_id=request.job_id
        )
        views = await applications.list_job_applications(cmd, self._deps())
        return conv.applications_response(views)

    async def ViewApplicant(
        self, request: pb.ViewApplicantRequest, context: Any
    ) -> pb.ApplicationResponse:
        cmd = commands.ViewApplicant(
            actor=conv.actor_from_proto(request.actor), application_id=request.application_id
        )
        return conv.application_response(await applications.view_applicant(cmd, self._deps()))

    async def DecideApplication(
        self, request: pb.DecideApplicationRequest, context: Any
    ) -> pb.ApplicationResponse:
        cmd = commands.DecideApplication(
            actor=conv.actor_from_proto(request.actor),
            application_id=request.application_id,
            accept=request.accept,
        )
        view = await applications.decide_application(cmd, self._deps())
        return conv.application_response(view)

    # ------------------------------------------------------------------ marketplace

    async def PostMarketJob(
        self, request: pb.PostMarketJobRequest, context: Any
    ) -> pb.MarketJobResponse:
        cmd = mconv.post_market_job_from_proto(conv.caller_actor(), request)
        job = await market_jobs.post_market_job(cmd, self._deps())
        return pb.MarketJobResponse(job=mconv.market_job_to_proto(job))

    async def GetMarketJob(
        self, request: pb.GetMarketJobRequest, context: Any
    ) -> pb.MarketJobResponse:
        cmd = commands.GetMarketJob(actor=conv.caller_actor(), job_id=request.job_id)
        job = await market_jobs.get_market_job(cmd, self._deps())
        return pb.MarketJobResponse(job=mconv.market_job_to_proto(job))

    async def ListMyMarketJobs(
        self, request: pb.ListMyMarketJobsRequest, context: Any
    ) -> pb.ListMarketJobsResponse:
        cmd = commands.ListMarketJobs(
            actor=conv.caller_actor(),
            mine=True,
            page_size=request.page.page_size,
            page_token=request.page.page_token,
        )
        return mconv.market_page_to_proto(await market_jobs.list_market_jobs(cmd, self._deps()))

    async def ListOpenMarketJobs(
        self, request: pb.ListOpenMarketJobsRequest, context: Any
    ) -> pb.ListMarketJobsResponse:
        cmd = commands.ListMarketJobs(
            actor=conv.caller_actor(),
            mine=False,
            page_size=request.page.page_size,
            page_token=request.page.page_token,
            category=request.category,
        )
        return mconv.market_page_to_proto(await market_jobs.list_market_jobs(cmd, self._deps()))

    async def RequestJob(
        self, request: pb.RequestJobRequest, context: Any
    ) -> pb.JobRequestResponse:
        cmd = commands.RequestJob(
            actor=conv.caller_actor(), job_id=request.job_id, message=request.message
        )
        view = await market_jobs.request_job(cmd, self._deps())
        return pb.JobRequestResponse(job_request=mconv.job_request_to_proto(view))

    async def ListJobRequests(
        self, request: pb.ListJobRequestsRequest, context: Any
    ) -> pb.ListJobRequestsResponse:
        cmd = commands.ListJobRequests(actor=conv.caller_actor(), job_id=request.job_id)
        views = await market_jobs.list_job_requests(cmd, self._deps())
        return pb.ListJobRequestsResponse(
            job_requests=[mconv.job_request_to_proto(v) for v in views]
        )

    async def DecideJobRequest(
        self, request: pb.DecideJobRequestRequest, context: Any
    ) -> pb.JobRequestResponse:
        cmd = commands.DecideJobRequest(
            actor=conv.caller_actor(),
            job_request_id=request.job_request_id,
            accept=request.accept,
        )
        view = await market_jobs.decide_job_request(cmd, self._deps())
        return pb.JobRequestResponse(job_request=mconv.job_request_to_proto(view))

    async def SendOffer(self, request: pb.SendOfferRequest, context: Any) -> pb.OfferResponse:
        cmd = mconv.send_offer_from_proto(conv.caller_actor(), request)
        return mconv.offer_response(await offers.send_offer(cmd, self._deps()))

    async def GetOffer(self, request: pb.GetOfferRequest, context: Any) -> pb.OfferResponse:
        cmd = commands.OfferCommand(actor=conv.caller_actor(), offer_id=request.offer_id)
        return mconv.offer_response(await offers.get_offer(cmd, self._deps()))

    async def ListOffers(
        self, request: pb.ListOffersRequest, context: Any
    ) -> pb.ListOffersResponse:
        cmd = commands.ListOffers(actor=conv.caller_actor(), job_id=request.job_id)
        found = await offers.list_offers(cmd, self._deps())
        return pb.ListOffersResponse(offers=[mconv.offer_to_proto(o) for o in found])

    async def AcceptOffer(self, request: pb.AcceptOfferRequest, context: Any) -> pb.OfferResponse:
        cmd = commands.OfferCommand(actor=conv.caller_actor(), offer_id=request.offer_id)
        return mconv.offer_response(await offers.accept_offer(cmd, self._deps()))

    async def RejectOffer(self, request: pb.RejectOfferRequest, context: Any) -> pb.OfferResponse:
        cmd = commands.OfferCommand(actor=conv.caller_actor(), offer_id=request.offer_id)
        return mconv.offer_response(await offers.reject_offer(cmd, self._deps()))

    async def WithdrawOffer(
        self, request: pb.WithdrawOfferRequest, context: Any
    ) -> pb.OfferResponse:
        cmd = commands.OfferCommand(actor=conv.caller_actor(), offer_id=request.offer_id)
        return mconv.offer_response(await offers.withdraw_offer(cmd, self._deps()))

    # ------------------------------------------------------------------ escrow

    def _on(self, request: pb.EngagementActionRequest) -> commands.EngagementCommand:
        return commands.EngagementCommand(
            conv.caller_actor(), request.engagement_id, request.reason
        )

    async def GetEngagement(
        self, request: pb.GetEngagementRequest, context: Any
    ) -> pb.EngagementResponse:
        cmd = commands.EngagementCommand(conv.caller_actor(), request.engagement_id)
        return econv.engagement_response(await escrow.get_engagement(cmd, self._deps()))

    async def StartEngagement(
        self, request: pb.EngagementActionRequest, context: Any
    ) -> pb.EngagementResponse:
        return econv.engagement_response(await escrow.start_work(self._on(request), self._deps()))

    async def CompleteEngagement(
        self, request: pb.EngagementActionRequest, context: Any
    ) -> pb.EngagementResponse:
        return econv.engagement_response(await escrow.complete(self._on(request), self._deps()))

    async def CancelEngagement(
        self, request: pb.EngagementActionRequest, context: Any
    ) -> pb.EngagementResponse:
        return econv.engagement_response(await escrow.cancel(self._on(request), self._deps()))

    async def OpenDispute(
        self, request: pb.OpenDisputeRequest, context: Any
    ) -> pb.EngagementResponse:
        cmd = commands.OpenDispute(conv.caller_actor(), request.engagement_id, request.reason)
        return econv.engagement_response(await escrow.open_dispute(cmd, self._deps()))

    async def ResolveDispute(
        self, request: pb.ResolveDisputeRequest, context: Any
    ) -> pb.EngagementResponse:
        cmd = econv.resolve_from_proto(conv.caller_actor(), request)
        return econv.engagement_response(await escrow.resolve_dispute(cmd, self._deps()))

    async def SettleEngagementReceivable(
        self, request: pb.SettleEngagementReceivableRequest, context: Any
    ) -> pb.EngagementResponse:
        cmd = econv.settle_receivable_from_proto(conv.caller_actor(), request)
        return econv.engagement_response(await receivables.settle_receivable(cmd, self._deps()))

    async def ListDisputes(
        self, request: pb.ListDisputesRequest, context: Any
    ) -> pb.ListDisputesResponse:
        cmd = econv.list_disputes_from_proto(conv.caller_actor(), request)
        return econv.disputes_to_proto(await escrow.list_disputes(cmd, self._deps()))

    async def PayJobWithCoins(
        self, request: pb.PayJobWithCoinsRequest, context: Any
    ) -> pb.EngagementResponse:
        cmd = commands.PayJobWithCoins(
            actor=conv.caller_actor(),
            job_id=request.job_id,
            freelancer_id=request.freelancer_id,
            amount_minor=request.amount_minor,
            request_id=request.request_id,
        )
        return econv.engagement_response(await job_payments.pay_with_coins(cmd, self._deps()))

    async def StartJobPayment(
        self, request: pb.StartJobPaymentRequest, context: Any
    ) -> pb.StartJobPaymentResponse:
        cmd = econv.start_job_payment_from_proto(conv.caller_actor(), request)
        view, session = await job_payments.start_job_payment(cmd, self._deps())
        return pb.StartJobPaymentResponse(
            engagement=mconv.engagement_to_proto(view.engagement),
            payment_id=session.payment_id,
            checkout_url=session.checkout_url,
        )
