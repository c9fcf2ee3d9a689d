"""Who may see and do what in the marketplace (SEC-2): customers their jobs and the offers they
sent, contractors the open jobs and the offers made to them, admins everything; any other object
is reported as absent (404)."""

from __future__ import annotations

from jobs.domain.commands import Actor
from jobs.domain.errors import NotAllowed
from jobs.domain.marketplace import MarketJob, MarketJobStatus, Offer


def require_customer(actor: Actor) -> None:
    if not actor.is_customer:
        raise NotAllowed("only a customer may do this", metadata={"role": actor.role})


def require_contractor(actor: Actor) -> None:
    if not actor.is_contractor:
        raise NotAllowed("only a contractor may do this", metadata={"role": actor.role})


def can_read_job(actor: Actor, job: MarketJob) -> bool:
    """Its customer, its contractor and admins; contractors also every open job."""
    if actor.is_admin or (actor.user_id and actor.user_id in (job.customer_id, job.contractor_id)):
        return True
    return actor.is_contractor and job.status is MarketJobStatus.OPEN


def can_read_offer(actor: Actor, offer: Offer) -> bool:
    """Its customer and admins; its contractor once its money is reserved."""
    if actor.is_admin or (actor.user_id and offer.customer_id == actor.user_id):
        return True
    return (
        bool(actor.user_id)
        and offer.contractor_id == actor.user_id
        and (offer.visible_to_contractor)
    )
