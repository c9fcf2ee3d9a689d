"""The offer saga (kind `offer`) on the one saga engine: the same durable log, leases, driver and
recovery worker as pay-to-post, with its own steps and transition table.

Try = reserve the offer's money when it is sent (card authorization / coin hold); the saga then
waits in OFFERED, due at the offer's expiry (the recovery worker expires it then: that is the
offers' expiry worker, safe with several replicas through SKIP LOCKED claims and leases).
Confirm = the contractor accepted and the job is locked for this offer: capture, then BOOKING:
book fee1 -> platform revenue and the rest -> the engagement's escrow, create the engagement,
assign the job, reject every other offer on the job (their sagas move to CANCELLING).
Cancel = release the reservation (rejected, expired, withdrawn, lost, failed).

Every transaction locks in one order: the job, then offers, then sagas.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from hirepay_platform.errors import ErrorKind, HirepayError
from jobs.domain.errors import PaymentExpired, PaymentTimedOut
from jobs.domain.marketplace import (
    Engagement,
    JobTaken,
    MarketJobStatus,
    OfferExpired,
    OfferState,
    engagement_id_for,
    funding_split,
)
from jobs.domain.posting_saga import (
    Saga,
    SagaError,
    SagaState,
    TryResult,
    TryState,
    client_error,
)
from jobs.service_layer.deps import Deps
from jobs.service_layer.ports import OfferFunds
from jobs.service_layer.posting.activation import failure_error
from jobs.service_layer.posting.records import finish, retry_later

log = logging.getLogger(__name__)

# Branch states that show nothing is held any more (a refused release is then done).
_RELEASED = frozenset({TryState.CANCELLED, TryState.FAILED, TryState.ABSENT, TryState.REFUNDED})
# Offer states whose reservation is still wanted (the expiry applies to these).
_OPEN = frozenset({OfferState.RESERVING, OfferState.PENDING})


def funds_of(saga: Saga, deps: Deps) -> OfferFunds:
    if deps.offer_funds is None:
        raise HirepayError(
            "offer payments are not wired", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE
        )
    return deps.offer_funds.for_method(saga.method)


def hold_seconds(deps: Deps) -> int:
    """A coin hold outlives its offer, so the expiry always finds it pending."""
    return deps.config.offer_validity_seconds + deps.config.offer_hold_grace_seconds


async def offer_step(saga: Saga, now: datetime, deps: Deps, *, poll: bool) -> bool:
    """One step of an offer saga from its state; False when it cannot go further now."""
    if saga.state is SagaState.CONFIRMING:
        return await confirm(saga, deps)
    if saga.state is SagaState.BOOKING:
        return await book(saga, deps)
    if saga.state is SagaState.CANCELLING:
        return await release(saga, deps)
    if not poll:
        return False
    if saga.state is SagaState.TRYING:
        await resume_try(saga, now, deps)
        return True
    if saga.state is SagaState.OFFERED:
        return await expire_if_due(saga, now, deps)
    return False


# --------------------------------------------------------------------------- Try


async def send_try(saga: Saga, deps: Deps) -> None:
    """Reserve the offer's money; whatever comes back is persisted before anything else."""
    async with deps.uow as uow:
        offer = await uow.offers.get_by_saga(saga.id)
    if offer is None:
        return
    try:
        result = await funds_of(saga, deps).reserve(saga, offer, hold_seconds(deps))
    except HirepayError as exc:
        log.info("offer saga %s: reservation failed: %r", saga.id, exc)
        await apply_reservation(saga.id, None, client_error(exc, saga.method, saga.id), deps)
        return
    await apply_reservation(saga.id, result, None, deps)


async def resume_try(saga: Saga, now: datetime, deps: Deps) -> None:
    """A saga left in TRYING (its request died): the Try is sent again (idempotent on the
    branch), or given up once the reservation deadline has passed."""
    if now >= saga.created_at + timedelta(seconds=deps.config.saga_deadline_seconds):
        timeout = PaymentTimedOut(
            "the offer's payment did not complete in time; nothing is held",
            metadata={"payment_id": saga.payment_id, "transaction_id": saga.id},
        )
        await apply_reservation(saga.id, None, timeout, deps)
    else:
        await send_try(saga, deps)


async def apply_reservation(
    saga_id: str, result: TryResult | None, error: HirepayError | None, deps: Deps
) -> None:
    """Reserved: the offer is pending (shown to the contractor), the saga due at its expiry.
    Anything else (declined, insufficient coins, an action required, a timeout): the offer
    failed and the saga releases whatever may be held (the barrier makes an early Cancel safe)."""
    async with deps.uow as uow:
        now = deps.clock()
        peek = await uow.sagas.get(saga_id)
        if peek is None or peek.state is not SagaState.TRYING:
            return
        job = await uow.market_jobs.get(peek.job_id, for_update=True)
        offer = await uow.offers.get_by_saga(saga_id, for_update=True)
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None or offer is None or saga.state is not SagaState.TRYING:
            return
        if result is not None and result.payment_id:
            saga.payment_id = result.payment_id
            offer.payment_id = result.payment_id
        if result is not None:
            saga.note_provider_state(result.provider_state)
        if error is None and result is not None and result.state is TryState.RESERVED:
            if (
                offer.state is OfferState.RESERVING
                and job is not None
                and job.status is MarketJobStatus.OPEN
            ):
                offer.reserved(result.payment_id, now)
                saga.hold_offer(offer.expires_at, now)
                detail = "reserved: offer pending"
            else:
                # Withdrawn meanwhile, or the job went to another offer: release it.
                if offer.state is OfferState.RESERVING:
                    offer.close(OfferState.REJECTED, "job_not_open", now)
                saga.start_cancelling(SagaError.of(JobTaken(offer.job_id)), now)
                saga.next_attempt_at = now
                detail = "reserved too late: releasing"
        else:
            failure = error or _not_reserved(result, saga)
            if offer.state is OfferState.RESERVING:
                offer.reservation_failed(failure.reason.lower(), now)
            saga.start_cancelling(SagaError.of(failure), now)
            saga.next_attempt_at = now
            detail = f"not reserved: {failure.reason}"
        await uow.offers.save(offer)
        await uow.sagas.save(saga)
        await uow.sagas.log(saga.id, saga.state.value, detail, now)
        await uow.commit()


def _not_reserved(result: TryResult | None, saga: Saga) -> HirepayError:
    """The client's error for a Try that reserved nothing usable."""
    if result is None:
        return HirepayError("the offer's payment failed", reason="PAYMENT_DECLINED")
    if result.state in (TryState.ACTION_REQUIRED, TryState.PROCESSING, TryState.UNKNOWN):
        return HirepayError(
            "offers need a payment method that authorizes at once (no 3-D Secure, no delayed "
            "settlement); nothing is held",
            reason="INVALID_PAYMENT_DETAILS",
            kind=ErrorKind.INVALID_ARGUMENT,
            metadata={"payment_id": result.payment_id, "transaction_id": saga.id},
        )
    return failure_error(result, saga)


# --------------------------------------------------------------------------- expiry


async def expire_if_due(saga: Saga, now: datetime, deps: Deps) -> bool:
    """An offer past its validity expires and its money is released; else due again then."""
    async with deps.uow as uow:
        offer = await uow.offers.get_by_saga(saga.id)
        if offer is None:
            return False
        await uow.market_jobs.get(offer.job_id, for_update=True)
        offer = await uow.offers.get_by_saga(saga.id, for_update=True)
        current = await uow.sagas.get(saga.id, for_update=True)
        if offer is None or current is None or current.state is not SagaState.OFFERED:
            return True
        if not offer.expired_at(now):
            current.next_attempt_at = offer.expires_at
            await uow.sagas.save(current)
            await uow.commit()
            return False
        offer.close(OfferState.EXPIRED, "expired", now)
        current.start_cancelling(SagaError.of(OfferExpired(offer.id)), now)
        current.next_attempt_at = now
        await uow.offers.save(offer)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, current.state.value, "offer expired", now)
        await uow.commit()
    return True


# --------------------------------------------------------------------------- Confirm


async def confirm(saga: Saga, deps: Deps) -> bool:
    """Capture the accepted offer's money (card Capture / coin ConfirmHold split fee / escrow)."""
    funds = funds_of(saga, deps)
    split = funding_split(saga.amount_minor, deps.config.acceptance_fee_bps)
    async with deps.uow as uow:
        offer = await uow.offers.get_by_saga(saga.id)
    if offer is None:
        return False
    try:
        escrow = await funds.escrow_account(engagement_id_for(offer.id), saga.currency)
        result = await funds.capture(saga, split, escrow, deps.config.acceptance_fee_bps)
    except HirepayError as exc:
        return await _capture_refused(saga, exc, deps)
    if result.state is not TryState.CAPTURED:
        refused = HirepayError(
            f"capture answered {result.state}",
            reason="PAYMENT_NOT_CAPTURED",
            kind=ErrorKind.FAILED_PRECONDITION,
        )
        return await _capture_refused(saga, refused, deps)
    return await _captured(saga, result, deps)


async def _captured(saga: Saga, result: TryResult, deps: Deps) -> bool:
    async with deps.uow as uow:
        now = deps.clock()
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or current.state is not SagaState.CONFIRMING:
            return True
        current.payment_id = current.payment_id or result.payment_id
        current.note_provider_state(result.provider_state)
        current.start_booking(now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, current.state.value, "captured", now)
        await uow.commit()
    return True


async def _capture_refused(saga: Saga, error: HirepayError, deps: Deps) -> bool:
    """Look at the branch first: taken means captured; a reservation gone for good (voided,
    expired, never recorded) gives the acceptance up and opens the job again; anything else is
    retried with backoff."""
    permanent = error.kind in (ErrorKind.FAILED_PRECONDITION, ErrorKind.NOT_FOUND)
    try:
        seen = await funds_of(saga, deps).inspect(saga)
    except HirepayError as inner:
        await retry_later(saga.id, "confirm", inner, deps)
        return False
    if seen.state is TryState.CAPTURED:
        return await _captured(saga, seen, deps)
    exhausted = permanent and saga.attempts + 1 >= deps.config.capture_max_refusals
    if (permanent and seen.state in _RELEASED) or exhausted:
        await _give_up_acceptance(saga, error, deps)
        return True
    await retry_later(saga.id, "confirm", error, deps)
    return False


async def _give_up_acceptance(saga: Saga, error: HirepayError, deps: Deps) -> None:
    expired = PaymentExpired(
        "the offer's payment could not be captured; the offer expired and nothing was taken",
        metadata={"payment_id": saga.payment_id, "transaction_id": saga.id, "cause": error.reason},
    )
    async with deps.uow as uow:
        now = deps.clock()
        job = await uow.market_jobs.get(saga.job_id, for_update=True)
        offer = await uow.offers.get_by_saga(saga.id, for_update=True)
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or offer is None or current.state is not SagaState.CONFIRMING:
            return
        if job is not None:
            job.unlock(offer.id, now)
            await uow.market_jobs.save(job)
        if offer.state is OfferState.ACCEPTING:
            offer.close(OfferState.EXPIRED, "payment_not_capturable", now)
            await uow.offers.save(offer)
        current.start_cancelling(SagaError.of(expired), now)
        current.next_attempt_at = now
        await uow.sagas.save(current)
        await uow.sagas.log(
            current.id, current.state.value, f"capture given up: {error.reason}", now
        )
        await uow.commit()


# --------------------------------------------------------------------------- booking


async def book(saga: Saga, deps: Deps) -> bool:
    """Book the fee and the escrow (idempotent transfer id), then assign in one transaction."""
    funds = funds_of(saga, deps)
    split = funding_split(saga.amount_minor, deps.config.acceptance_fee_bps)
    async with deps.uow as uow:
        offer = await uow.offers.get_by_saga(saga.id)
    if offer is None:
        return False
    engagement_id = engagement_id_for(offer.id)
    try:
        escrow = await funds.escrow_account(engagement_id, saga.currency)
        await funds.book(saga, split, escrow)
    except HirepayError as exc:
        await retry_later(saga.id, "book", exc, deps)
        return False
    others = await _assign(saga.id, engagement_id, escrow, deps)
    for other in others:
        # Release the losers now (recovery does it if this fails: they are due).
        try:
            # Imported here: the driver dispatches offer sagas to this module.
            from jobs.service_layer.posting.driver import drive

            await drive(other, deps.fresh(), poll=False)
        except Exception:
            log.exception(
                "offer saga %s: release after losing the job failed; recovery retries", other
            )
    return True


async def _assign(saga_id: str, engagement_id: str, escrow: str, deps: Deps) -> list[str]:
    """The engagement (assigned, funded), the job assigned, the offer accepted, every other open
    offer on the job rejected with its saga releasing; the saga completed. Returns the other
    sagas to release."""
    others: list[str] = []
    async with deps.uow as uow:
        now = deps.clock()
        peek = await uow.sagas.get(saga_id)
        if peek is None or peek.state is not SagaState.BOOKING:
            return []
        job = await uow.market_jobs.get(peek.job_id, for_update=True)
        open_offers = await uow.offers.open_on_job(peek.job_id, for_update=True)
        saga = await uow.sagas.get(saga_id, for_update=True)
        if job is None or saga is None or saga.state is not SagaState.BOOKING:
            return []
        offer = next((o for o in open_offers if o.saga_id == saga_id), None)
        if offer is None:
            raise HirepayError(f"saga {saga_id}: its offer is not accepting", reason="INTERNAL")
        engagement = Engagement.funded_by_offer(
            engagement_id,
            offer,
            funding_split(saga.amount_minor, deps.config.acceptance_fee_bps),
            escrow,
            now,
        )
        engagement.payment_id = saga.payment_id
        await uow.engagements.add(engagement)
        job.assign(offer.id, offer.contractor_id, engagement.id, now)
        await uow.market_jobs.save(job)
        offer.payment_id = saga.payment_id or offer.payment_id
        offer.accepted(engagement.id, now)
        await uow.offers.save(offer)
        for other in open_offers:
            if other.id == offer.id:
                continue
            other.close(OfferState.REJECTED, "another_offer_accepted", now)
            await uow.offers.save(other)
            other_saga = await uow.sagas.get(other.saga_id, for_update=True)
            if other_saga is not None and other_saga.state in (SagaState.TRYING, SagaState.OFFERED):
                other_saga.start_cancelling(SagaError.of(JobTaken(job.id)), now)
                other_saga.next_attempt_at = now
                await uow.sagas.save(other_saga)
                await uow.sagas.log(other_saga.id, "cancelling", f"job went to {offer.id}", now)
                others.append(other_saga.id)
        finish(saga, SagaState.COMPLETED, now)
        await uow.sagas.save(saga)
        await uow.sagas.log(saga.id, "completed", f"engagement {engagement.id} assigned", now)
        await uow.commit()
    return others


# --------------------------------------------------------------------------- Cancel


async def release(saga: Saga, deps: Deps) -> bool:
    """Release the reservation until it succeeds; the offer records when it was released."""
    funds = funds_of(saga, deps)
    reason = saga.failure.reason if saga.failure else "released"
    try:
        result = await funds.release(saga, reason.lower())
    except HirepayError as exc:
        try:
            result = await funds.inspect(saga)
        except HirepayError:
            await retry_later(saga.id, "cancel", exc, deps)
            return False
        if result.state not in _RELEASED:
            await retry_later(saga.id, "cancel", exc, deps)
            return False
    if result.state is TryState.CAPTURED:
        # Money taken for an offer that was not accepted: never expected (a capture is only sent
        # for the one accepting offer, and given up only once the branch shows nothing held).
        # Kept CANCELLING and retried so the stuck-saga alert reaches an operator.
        log.error("offer saga %s: release found the money captured", saga.id)
        await retry_later(
            saga.id, "cancel", HirepayError("captured", reason="CAPTURED_NOT_RELEASED"), deps
        )
        return False
    async with deps.uow as uow:
        now = deps.clock()
        await uow.market_jobs.get(saga.job_id, for_update=True)
        offer = await uow.offers.get_by_saga(saga.id, for_update=True)
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or current.state is not SagaState.CANCELLING:
            return True
        if offer is not None:
            offer.released_at = now
            await uow.offers.save(offer)
        finish(current, SagaState.FAILED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, "released", f"release: {result.state}", now)
        await uow.commit()
    return True
