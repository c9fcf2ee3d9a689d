"""Named conversions between the escrow messages of the jobs contract (engagement actions,
disputes, money steps, job payments) and the domain."""

from __future__ import annotations

from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay_platform.wire import timestamp
from jobs.domain import commands
from jobs.domain.escrow import Dispute, DisputeState, MoneyStep, Resolution
from jobs.entrypoints.marketplace_conversions import engagement_to_proto
from jobs.service_layer.marketplace.escrow import DisputePage, EngagementView

_DISPUTE_STATE = {DisputeState.OPEN: pb.Dispute.OPEN, DisputeState.RESOLVED: pb.Dispute.RESOLVED}
_DISPUTE_STATE_NAME = {pb.Dispute.OPEN: "open", pb.Dispute.RESOLVED: "resolved"}
_RESOLUTION = {
    Resolution.RELEASE: pb.DISPUTE_RESOLUTION_RELEASE,
    Resolution.REFUND: pb.DISPUTE_RESOLUTION_REFUND,
    Resolution.SPLIT: pb.DISPUTE_RESOLUTION_SPLIT,
}
_RESOLUTION_NAME = {wire: domain.value for domain, wire in _RESOLUTION.items()}


def dispute_to_proto(d: Dispute) -> pb.Dispute:
    message = pb.Dispute(
        dispute_id=d.id,
        engagement_id=d.engagement_id,
        opened_by=d.opened_by,
        reason=d.reason,
        state=_DISPUTE_STATE[d.state],
        resolution=_RESOLUTION.get(d.resolution, pb.DISPUTE_RESOLUTION_UNSPECIFIED)
        if d.resolution
        else pb.DISPUTE_RESOLUTION_UNSPECIFIED,
        contractor_minor=d.contractor_minor,
        resolved_by=d.resolved_by,
        note=d.note,
        opened_at=timestamp(d.opened_at),
    )
    if d.resolved_at is not None:
        message.resolved_at.CopyFrom(timestamp(d.resolved_at))
    return message


def _sum_to(step: MoneyStep, kind: str) -> int:
    return sum(leg.amount_minor for leg in step.legs if leg.target.kind.value == kind)


def step_to_proto(step: MoneyStep, customer_id: str, contractor_id: str) -> pb.MoneyStep:
    def to_owner(owner: str) -> int:
        return sum(
            leg.amount_minor
            for leg in step.legs
            if leg.target.owner == owner and leg.target.kind.value == "user"
        )

    back = to_owner(customer_id) + _sum_to(step, "provider_clearing")
    return pb.MoneyStep(
        kind=step.kind.value,
        state=step.state.value,
        transfer_id=step.transfer_id,
        refund_transfer_id=step.refund_transfer_id if step.refund_id else "",
        to_revenue_minor=_sum_to(step, "platform_revenue"),
        to_contractor_minor=to_owner(contractor_id),
        to_customer_minor=back,
        failure=step.failure,
        refused_minor=step.refused_minor,
    )


def engagement_response(view: EngagementView) -> pb.EngagementResponse:
    e = view.engagement
    response = pb.EngagementResponse(
        engagement=engagement_to_proto(e),
        steps=[step_to_proto(s, e.customer_id, e.contractor_id) for s in view.steps],
        owed_to_customer_minor=view.owed_to_customer_minor,
        settled_outside_minor=view.settled_outside_minor,
    )
    if view.dispute is not None:
        response.dispute.CopyFrom(dispute_to_proto(view.dispute))
    return response


def disputes_to_proto(page: DisputePage) -> pb.ListDisputesResponse:
    return pb.ListDisputesResponse(
        disputes=[dispute_to_proto(d) for d in page.disputes],
        next_page_token=page.next_page_token,
    )


def resolve_from_proto(
    actor: commands.Actor, r: pb.ResolveDisputeRequest
) -> commands.ResolveDispute:
    return commands.ResolveDispute(
        actor=actor,
        dispute_id=r.dispute_id,
        resolution=_RESOLUTION_NAME.get(r.resolution, ""),
        contractor_minor=r.contractor_minor,
        note=r.note,
    )


def settle_receivable_from_proto(
    actor: commands.Actor, r: pb.SettleEngagementReceivableRequest
) -> commands.SettleReceivable:
    return commands.SettleReceivable(
        actor=actor,
        engagement_id=r.engagement_id,
        request_id=r.request_id,
        amount_minor=r.amount.amount_minor,
        currency=r.amount.currency,
        reference=r.reference,
        note=r.note,
    )


def list_disputes_from_proto(
    actor: commands.Actor, r: pb.ListDisputesRequest
) -> commands.ListDisputes:
    return commands.ListDisputes(
        actor=actor,
        state=_DISPUTE_STATE_NAME.get(r.state, ""),
        page_size=r.page.page_size,
        page_token=r.page.page_token,
    )


def start_job_payment_from_proto(
    actor: commands.Actor, r: pb.StartJobPaymentRequest
) -> commands.StartJobPayment:
    return commands.StartJobPayment(
        actor=actor,
        job_id=r.job_id,
        freelancer_id=r.freelancer_id,
        amount_minor=r.amount.amount_minor,
        currency=r.amount.currency,
        request_id=r.request_id,
        return_url=r.return_url,
        cancel_url=r.cancel_url,
        email=r.email,
        provider=r.provider,
    )
