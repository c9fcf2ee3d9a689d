"""The escrow's wire shapes: an engagement view with its dispute and money steps on the jobs
contract, and the gateway's HTTP model built from it."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.api import escrow_models
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from jobs.domain import commands
from jobs.domain.escrow import (
    CancelPolicy,
    Dispute,
    DisputeState,
    Resolution,
    StepKind,
    cancel_payout,
    plan_step,
)
from jobs.domain.marketplace import EngagementState, FundingSource
from jobs.entrypoints import escrow_conversions as econv
from jobs.service_layer.marketplace.escrow import DisputePage, EngagementView
from tests.support.escrow_support import unit_engagement as engagement

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_a_cancelled_card_engagement_on_the_wire_and_over_http() -> None:
    e = engagement(100_000, EngagementState.ASSIGNED, FundingSource.CARD, "USD")
    step = plan_step(e, StepKind.CANCEL, cancel_payout(e, CancelPolicy()), NOW, "stripe")
    step.refunded("rfd_1", NOW)
    step.done(NOW)
    dispute = Dispute("dsp_1", e.id, "ctr", "late", DisputeState.OPEN, NOW)
    dispute.resolve(Resolution.SPLIT, 40_000, "admin_1", "half", NOW)
    reply = econv.engagement_response(EngagementView(e, dispute, [step]))
    assert reply.engagement.escrow.amount_minor == 90_000
    assert (reply.dispute.resolution, reply.dispute.contractor_minor) == (
        pb.DISPUTE_RESOLUTION_SPLIT,
        40_000,
    )
    (wire,) = reply.steps
    assert (wire.kind, wire.state, wire.to_customer_minor, wire.to_revenue_minor) == (
        "cancel",
        "done",
        100_000,
        0,
    )
    assert wire.refund_transfer_id == "payment:pay_1:refund:rfd_1"
    http = escrow_models.engagement_to_http(reply)
    assert (http.state, http.funding, http.unit, http.amountMinor) == (
        "assigned",
        "card",
        "USD",
        100_000,
    )
    assert http.dispute is not None and http.dispute.resolution == "split"
    assert http.steps[0].refundTransferId == "payment:pay_1:refund:rfd_1"
    page = econv.disputes_to_proto(DisputePage([dispute], "tok"))
    assert escrow_models.disputes_to_http(page).nextPageToken == "tok"


def test_requests_from_the_wire() -> None:
    admin = commands.Actor("admin_1", "admin")
    resolve = econv.resolve_from_proto(
        admin,
        pb.ResolveDisputeRequest(
            dispute_id="dsp_1", resolution=pb.DISPUTE_RESOLUTION_REFUND, contractor_minor=5
        ),
    )
    assert (resolve.resolution, resolve.contractor_minor) == ("refund", 5)
    listed = econv.list_disputes_from_proto(admin, pb.ListDisputesRequest(state=pb.Dispute.OPEN))
    assert listed.state == "open"
    assert econv.resolve_from_proto(admin, pb.ResolveDisputeRequest()).resolution == ""
