"""Marketplace events told to subsystems as signed callbacks (issue 9 point 9, API-5): one event
per change, with an id derived from the change so that writing it again is a no-op."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobs.domain.marketplace import Offer, OfferState

# The audience of marketplace events (a callback URL is configured per subsystem).
MARKETPLACE = "marketplace"


class EventType(enum.StrEnum):
    OFFER_RECEIVED = "offer.received"
    OFFER_ACCEPTED = "offer.accepted"
    OFFER_REJECTED = "offer.rejected"
    OFFER_EXPIRED = "offer.expired"
    ENGAGEMENT_COMPLETED = "engagement.completed"
    ENGAGEMENT_CANCELLED = "engagement.cancelled"
    DISPUTE_OPENED = "dispute.opened"
    DISPUTE_RESOLVED = "dispute.resolved"
    # Offer money refunded at the provider, outside the escrow (subject: payments' refund id).
    ENGAGEMENT_REFUNDED_AT_PROVIDER = "engagement.refunded_at_provider"
    # A refund of offer money jobs booked failed after it succeeded (subject: its reversal's id).
    ENGAGEMENT_REFUND_FAILED = "engagement.refund_failed"
    # The provider refused an engagement's own refund outright (subject: the step's transfer).
    ENGAGEMENT_REFUND_REFUSED = "engagement.refund_refused"
    # An operator settled money owed to the customer outside Hirepay (subject: its record's id).
    ENGAGEMENT_RECEIVABLE_SETTLED = "engagement.receivable_settled"


def event_id_for(event_type: EventType, subject_id: str) -> str:
    """The id of the one event of this type about this subject (an offer, an engagement): the
    same change recorded twice (a replayed handler, a recovered step) is the same event."""
    digest = hashlib.sha256(f"{event_type.value}:{subject_id}".encode()).hexdigest()[:32]
    return f"evt_{digest}"


@dataclass(frozen=True, slots=True)
class MarketplaceEvent:
    """One outbox row: what happened to which subject, and its data (JSON-safe values)."""

    event_id: str
    type: EventType
    subject_id: str
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    subsystem: str = MARKETPLACE
    cursor: int = 0

    @classmethod
    def of(
        cls,
        event_type: EventType,
        subject_id: str,
        occurred_at: datetime,
        data: dict[str, Any] | None = None,
    ) -> MarketplaceEvent:
        return cls(
            event_id_for(event_type, subject_id),
            event_type,
            subject_id,
            occurred_at,
            dict(data or {}),
        )

    def body(self) -> dict[str, Any]:
        """The callback's JSON body."""
        return {
            "eventId": self.event_id,
            "type": self.type.value,
            "subjectId": self.subject_id,
            "occurredAt": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }


# The offer states that tell the contractor and the customer something (a withdrawn or failed
# offer was never, or is no longer, the contractor's to decide: nothing to tell).
_OFFER_EVENTS = {
    OfferState.PENDING: EventType.OFFER_RECEIVED,
    OfferState.ACCEPTED: EventType.OFFER_ACCEPTED,
    OfferState.REJECTED: EventType.OFFER_REJECTED,
    OfferState.EXPIRED: EventType.OFFER_EXPIRED,
}


def offer_event(offer: Offer, now: datetime) -> MarketplaceEvent | None:
    """The event an offer's current state tells, if any (one per state: its id is derived from
    the type and the offer, so saving the offer again in that state tells nothing new)."""
    event_type = _OFFER_EVENTS.get(offer.state)
    if event_type is None:
        return None
    return MarketplaceEvent.of(
        event_type,
        offer.id,
        now,
        {
            "offerId": offer.id,
            "jobId": offer.job_id,
            "customerId": offer.customer_id,
            "contractorId": offer.contractor_id,
            "amountMinor": offer.amount_minor,
            "unit": offer.unit,
            "funding": offer.funding.value,
            "state": offer.state.value,
            "reason": offer.reason,
            "engagementId": offer.engagement_id,
        },
    )
