"""Offers (ESC-6): a customer sends an offer for an open job, its money reserved first; the
contractor accepts (the saga captures, books 10% / 90%, assigns the job and releases every other
offer) or rejects; the customer may withdraw; an offer not accepted in time expires."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from hirepay_platform import fingerprint, money
from hirepay_platform.errors import HirepayError, ValidationError
from hirepay_platform.ids import new_id
from jobs.domain import commands
from jobs.domain.errors import IdempotencyMismatch
from jobs.domain.marketplace import (
    COIN_UNIT,
    Engagement,
    FundingSource,
    JobNotOpen,
    MarketJobNotFound,
    Offer,
    OfferExpired,
    OfferNotFound,
    OfferState,
    validate_message,
    validate_unit,
)
from jobs.domain.posting_saga import PaymentMethod, Saga, SagaError, SagaKind, SagaState
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace.access import (
    can_read_offer,
    require_contractor,
    require_customer,
)
from jobs.service_layer.marketplace.offer_saga import send_try
from jobs.service_layer.posting.driver import drive
from jobs.service_layer.posting.leases import release, request_holder

log = logging.getLogger(__name__)

LIST_LIMIT = 200
_METHODS = {FundingSource.CARD: PaymentMethod.CARD, FundingSource.COINS: PaymentMethod.COINS}


@dataclass(frozen=True, slots=True)
class OfferView:
    offer: Offer
    engagement: Engagement | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _ValidOffer:
    funding: FundingSource
    unit: str
    amount_minor: int
    message: str


def _validate(cmd: commands.SendOffer) -> _ValidOffer:
    """Every problem of the offer at once, by field."""
    problems: dict[str, str] = {}
    funding = {"card": FundingSource.CARD, "coins": FundingSource.COINS}.get(cmd.funding)
    if funding is None:
        problems["funding"] = "must be card or coins"
    unit = ""
    try:
        unit = validate_unit(cmd.unit)
    except ValidationError:
        problems["currency"] = "must be an ISO 4217 code or COIN"
    if funding is FundingSource.COINS and unit and unit != COIN_UNIT:
        problems["currency"] = "an offer paid with coins is in COIN"
    if funding is FundingSource.CARD and unit == COIN_UNIT:
        problems["currency"] = "an offer paid by card is in a currency"
    try:
        money.validate_amount(cmd.amount_minor)
    except ValidationError as exc:
        problems["amount_minor"] = exc.metadata.get("amount_minor", "must be positive")
    if funding is FundingSource.CARD and not cmd.payment_token.startswith("pm_"):
        problems["payment_method"] = "a provider payment method token (pm_...) is required"
    if not cmd.contractor_id.strip() or len(cmd.contractor_id) > 128:
        problems["contractor_id"] = "is required"
    elif cmd.contractor_id == cmd.actor.user_id:
        problems["contractor_id"] = "must be another user"
    if problems:
        raise ValidationError("the offer is invalid", fields=problems)
    assert funding is not None
    return _ValidOffer(funding, unit, cmd.amount_minor, validate_message(cmd.message))


def _fingerprint(cmd: commands.SendOffer, valid: _ValidOffer) -> str:
    return fingerprint.digest(
        {
            "job_id": cmd.job_id,
            "contractor_id": cmd.contractor_id,
            "amount_minor": valid.amount_minor,
            "unit": valid.unit,
            "funding": valid.funding.value,
            "payment_method": cmd.payment_token,
            "message": valid.message,
        }
    )


async def send_offer(cmd: commands.SendOffer, deps: Deps) -> OfferView:
    """Reserve the money, then show the offer to the contractor; idempotent on request_id (a
    repeat answers the first offer; the same key with another body is refused)."""
    require_customer(cmd.actor)
    valid = _validate(cmd)
    print_ = _fingerprint(cmd, valid)
    request_id = cmd.request_id[:200] or new_id("req")
    config = deps.config
    holder = request_holder(config)
    async with deps.uow as uow:
        now = deps.clock()
        job = await uow.market_jobs.get(cmd.job_id, for_update=True) if cmd.job_id else None
        if job is None or job.customer_id != cmd.actor.user_id:
            raise MarketJobNotFound(cmd.job_id)
        existing = await uow.offers.get_by_request(cmd.actor.user_id, request_id)
        if existing is not None:
            saga = await uow.sagas.get(existing.saga_id)
            if saga is None or saga.fingerprint != print_:
                raise IdempotencyMismatch(
                    "this idempotency key was used with a different offer",
                    metadata={"request_id": request_id, "offer_id": existing.id},
                )
            return OfferView(existing, replayed=True)
        job.ensure_open()
        offer_id = new_id("offer")
        expires_at = now + timedelta(seconds=config.offer_validity_seconds)
        saga = Saga(
            id=new_id("saga"),
            kind=SagaKind.OFFER,
            company_id=cmd.actor.user_id,
            request_id=f"offer:{request_id}",
            fingerprint=print_,
            actor=cmd.actor.name,
            state=SagaState.TRYING,
            method=_METHODS[valid.funding],
            created_at=now,
            updated_at=now,
            deadline_at=expires_at + timedelta(seconds=config.saga_deadline_seconds),
            job_id=job.id,
            amount_minor=valid.amount_minor,
            currency=valid.unit,
            payment_token=cmd.payment_token,
            next_attempt_at=now + timedelta(seconds=config.lease_seconds),
        )
        saga.take_lease(holder, now + timedelta(seconds=config.lease_seconds), now)
        offer = Offer(
            id=offer_id,
            job_id=job.id,
            customer_id=cmd.actor.user_id,
            contractor_id=cmd.contractor_id.strip(),
            amount_minor=valid.amount_minor,
            unit=valid.unit,
            funding=valid.funding,
            state=OfferState.RESERVING,
            saga_id=saga.id,
            request_id=request_id,
            expires_at=expires_at,
            created_at=now,
            updated_at=now,
            message=valid.message,
        )
        if not await uow.sagas.insert(saga):
            raise IdempotencyMismatch(
                "this idempotency key is in use", metadata={"request_id": request_id}
            )
        await uow.offers.add(offer)
        await uow.sagas.log(saga.id, "trying", f"offer {offer.id} to {offer.contractor_id}", now)
        await uow.commit()
    try:
        await send_try(saga, deps)
        await drive(saga.id, deps, poll=False)
    finally:
        await release(saga.id, deps, holder)
    view = await _load(offer_id, deps)
    if view.offer.state is OfferState.FAILED:
        raise await _failure(saga.id, deps)
    if view.offer.state is OfferState.REJECTED and view.offer.reason == "job_not_open":
        # The job went to another offer while this one's money was being reserved (released).
        raise JobNotOpen(view.offer.job_id, "assigned")
    return view


async def _failure(saga_id: str, deps: Deps) -> HirepayError:
    async with deps.uow as uow:
        saga = await uow.sagas.get(saga_id)
    if saga is not None and saga.failure is not None:
        return saga.failure.to_error()
    return HirepayError("the offer's payment failed", reason="PAYMENT_DECLINED")


async def _load(offer_id: str, deps: Deps) -> OfferView:
    async with deps.uow as uow:
        offer = await uow.offers.get(offer_id)
        if offer is None:
            raise OfferNotFound(offer_id)
        engagement = await uow.engagements.get(offer.engagement_id) if offer.engagement_id else None
    return OfferView(offer, engagement)


async def get_offer(cmd: commands.OfferCommand, deps: Deps) -> OfferView:
    async with deps.uow as uow:
        offer = await uow.offers.get(cmd.offer_id) if cmd.offer_id else None
    if offer is None or not can_read_offer(cmd.actor, offer):
        raise OfferNotFound(cmd.offer_id)
    return await _load(offer.id, deps)


async def list_offers(cmd: commands.ListOffers, deps: Deps) -> list[Offer]:
    """Offers on one job (its customer, admins), else the caller's own: sent (customer) or
    received (contractor, once reserved)."""
    actor = cmd.actor
    async with deps.uow as uow:
        if cmd.job_id:
            job = await uow.market_jobs.get(cmd.job_id)
            if job is None or not (actor.is_admin or job.customer_id == actor.user_id):
                raise MarketJobNotFound(cmd.job_id)
            return await uow.offers.list_by(job_id=job.id, limit=LIST_LIMIT)
        if actor.is_customer:
            return await uow.offers.list_by(customer_id=actor.user_id, limit=LIST_LIMIT)
        require_contractor(actor)
        found = await uow.offers.list_by(contractor_id=actor.user_id, limit=LIST_LIMIT)
    return [o for o in found if o.visible_to_contractor]


async def accept_offer(cmd: commands.OfferCommand, deps: Deps) -> OfferView:
    """The offer's contractor accepts: the job is locked for this offer (exactly one acceptance
    wins: another one meanwhile gets JOB_ALREADY_TAKEN), then the saga captures, books and
    assigns. An acceptance interrupted by a crash is finished by recovery (or a repeat call)."""
    require_contractor(cmd.actor)
    config = deps.config
    holder = request_holder(config)
    async with deps.uow as uow:
        now = deps.clock()
        peek = await uow.offers.get(cmd.offer_id) if cmd.offer_id else None
        if (
            peek is None
            or peek.contractor_id != cmd.actor.user_id
            or not peek.visible_to_contractor
        ):
            raise OfferNotFound(cmd.offer_id)
        job = await uow.market_jobs.get(peek.job_id, for_update=True)
        offer = await uow.offers.get(peek.id, for_update=True)
        saga = await uow.sagas.get(peek.saga_id, for_update=True)
        assert job is not None and offer is not None and saga is not None
        if offer.state is OfferState.PENDING and offer.expired_at(now):
            offer.close(OfferState.EXPIRED, "expired", now)
            saga.start_cancelling(SagaError.of(OfferExpired(offer.id)), now)
            saga.next_attempt_at = now
            await uow.offers.save(offer)
            await uow.sagas.save(saga)
            await uow.sagas.log(saga.id, "cancelling", "accepted after expiry", now)
            await uow.commit()
            await _drive_quietly(saga.id, deps)
            raise OfferExpired(offer.id)
        if offer.state is not OfferState.ACCEPTING:
            offer.accept(now)  # refuses accepted / rejected / expired / withdrawn offers
            job.lock_for(offer.id, now)  # refuses when another acceptance holds or won the job
            saga.start_confirming(now)
            await uow.market_jobs.save(job)
            await uow.offers.save(offer)
        saga.take_lease(holder, now + timedelta(seconds=config.lease_seconds), now)
        await uow.sagas.save(saga)
        await uow.sagas.log(saga.id, saga.state.value, f"accepted by {cmd.actor.name}", now)
        await uow.commit()
    try:
        await drive(saga.id, deps, poll=False)
    finally:
        await release(saga.id, deps, holder)
    view = await _load(offer.id, deps)
    if view.offer.state is OfferState.EXPIRED:
        raise await _failure(saga.id, deps)
    return view


async def reject_offer(cmd: commands.OfferCommand, deps: Deps) -> OfferView:
    """The offer's contractor rejects it; its money is released."""
    require_contractor(cmd.actor)

    def visible(offer: Offer) -> bool:
        return offer.contractor_id == cmd.actor.user_id and offer.visible_to_contractor

    return await _close(cmd.offer_id, visible, OfferState.REJECTED, "rejected_by_contractor", deps)


async def withdraw_offer(cmd: commands.OfferCommand, deps: Deps) -> OfferView:
    """The offer's customer takes a pending (or still reserving) offer back; money released."""
    require_customer(cmd.actor)

    def visible(offer: Offer) -> bool:
        return offer.customer_id == cmd.actor.user_id

    return await _close(cmd.offer_id, visible, OfferState.WITHDRAWN, "withdrawn", deps)


async def _close(
    offer_id: str, visible: Callable[[Offer], bool], to: OfferState, reason: str, deps: Deps
) -> OfferView:
    """Close an open offer (rejected or withdrawn) and release its money."""
    async with deps.uow as uow:
        now = deps.clock()
        peek = await uow.offers.get(offer_id) if offer_id else None
        if peek is None or not visible(peek):
            raise OfferNotFound(offer_id)
        await uow.market_jobs.get(peek.job_id, for_update=True)
        offer = await uow.offers.get(peek.id, for_update=True)
        saga = await uow.sagas.get(peek.saga_id, for_update=True)
        assert offer is not None and saga is not None
        offer.close(to, reason, now)  # only an open offer may be closed
        if saga.state in (SagaState.TRYING, SagaState.OFFERED):
            error = HirepayError(f"offer {reason}", reason=reason.upper())
            saga.start_cancelling(SagaError.of(error), now)
            saga.next_attempt_at = now
        await uow.offers.save(offer)
        await uow.sagas.save(saga)
        await uow.sagas.log(saga.id, saga.state.value, reason, now)
        await uow.commit()
    await _drive_quietly(saga.id, deps)
    return await _load(offer_id, deps)


async def _drive_quietly(saga_id: str, deps: Deps) -> None:
    """Drive a release now; a failure is left to recovery (the saga is due)."""
    try:
        await drive(saga_id, deps, poll=False)
    except Exception:
        log.exception("offer saga %s: release failed; recovery retries", saga_id)
