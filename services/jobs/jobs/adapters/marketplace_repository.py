"""PostgreSQL repositories of the marketplace: jobs for contractors, job requests, offers and
engagements (rows <-> domain). Never commit; `for_update` locks a row until the transaction ends.

Lock order of every marketplace transaction: the job, then its offers, then their sagas (so two
acceptances, an assignment and an expiry never wait on each other in a cycle)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.adapters import tables as t
from jobs.domain.marketplace import (
    OFFER_FINAL,
    Engagement,
    EngagementState,
    FundingSource,
    FundingState,
    JobRequest,
    JobRequestStatus,
    MarketJob,
    MarketJobFields,
    MarketJobStatus,
    Offer,
    OfferState,
)

J = t.market_jobs.c
R = t.job_requests.c
O = t.offers.c  # noqa: E741
E = t.engagements.c


def market_job_from_row(row: Any) -> MarketJob:
    m = row._mapping
    return MarketJob(
        id=m["id"],
        customer_id=m["customer_id"],
        fields=MarketJobFields(
            title=m["title"],
            description=m["description"],
            category=m["category"],
            budget_minor=m["budget_minor"],
            currency=m["currency"],
        ),
        status=MarketJobStatus(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        contractor_id=m["contractor_id"],
        engagement_id=m["engagement_id"],
        accepting_offer_id=m["accepting_offer_id"],
    )


def market_job_to_values(job: MarketJob, create_request_id: str = "") -> dict[str, object]:
    f = job.fields
    return {
        "id": job.id,
        "customer_id": job.customer_id,
        "title": f.title,
        "description": f.description,
        "category": f.category,
        "budget_minor": f.budget_minor,
        "currency": f.currency,
        "status": job.status.value,
        "contractor_id": job.contractor_id,
        "engagement_id": job.engagement_id,
        "accepting_offer_id": job.accepting_offer_id,
        "create_request_id": create_request_id,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


class SqlMarketJobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_if_absent(self, job: MarketJob, request_id: str) -> MarketJob:
        """Insert-first on (customer, request_id) when a key is given; the stored job."""
        stmt = pg_insert(t.market_jobs).values(**market_job_to_values(job, request_id))
        if request_id:
            stmt = stmt.on_conflict_do_nothing(
                index_elements=["customer_id", "create_request_id"],
                # A literal, as the partial index's own condition: a bound parameter here lets
                # PostgreSQL infer the index only while it plans with the value (the first five
                # runs on a connection); its generic plan then finds no arbiter index and fails.
                index_where=text("create_request_id <> ''"),
            )
        inserted = (await self.session.execute(stmt.returning(J.id))).scalar_one_or_none()
        if inserted is not None:
            return job
        row = (
            await self.session.execute(
                select(t.market_jobs).where(
                    J.customer_id == job.customer_id, J.create_request_id == request_id
                )
            )
        ).one()
        return market_job_from_row(row)

    async def get(self, job_id: str, *, for_update: bool = False) -> MarketJob | None:
        stmt = select(t.market_jobs).where(J.id == job_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).one_or_none()
        return market_job_from_row(row) if row else None

    async def save(self, job: MarketJob) -> None:
        values = market_job_to_values(job)
        for key in ("id", "create_request_id", "created_at", "customer_id"):
            values.pop(key)
        await self.session.execute(update(t.market_jobs).where(J.id == job.id).values(**values))

    async def list_open(
        self, category: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[MarketJob]:
        stmt = select(t.market_jobs).where(J.status == MarketJobStatus.OPEN.value)
        if category:
            stmt = stmt.where(J.category == category)
        if after is not None:
            stmt = stmt.where(tuple_(J.created_at, J.id) < tuple_(*after))
        stmt = stmt.order_by(J.created_at.desc(), J.id.desc()).limit(limit)
        return [market_job_from_row(r) for r in (await self.session.execute(stmt)).all()]

    async def list_by_customer(
        self, customer_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[MarketJob]:
        stmt = select(t.market_jobs).where(J.customer_id == customer_id)
        if after is not None:
            stmt = stmt.where(tuple_(J.created_at, J.id) < tuple_(*after))
        stmt = stmt.order_by(J.created_at.desc(), J.id.desc()).limit(limit)
        return [market_job_from_row(r) for r in (await self.session.execute(stmt)).all()]


def job_request_from_row(row: Any) -> JobRequest:
    m = row._mapping
    return JobRequest(
        id=m["id"],
        job_id=m["job_id"],
        customer_id=m["customer_id"],
        contractor_id=m["contractor_id"],
        message=m["message"],
        status=JobRequestStatus(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        decided_at=m["decided_at"],
    )


class SqlJobRequestRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_if_absent(self, request: JobRequest) -> bool:
        """Insert-first on (job, contractor): False if this contractor asked for the job before."""
        result = await self.session.execute(
            pg_insert(t.job_requests)
            .values(
                id=request.id,
                job_id=request.job_id,
                customer_id=request.customer_id,
                contractor_id=request.contractor_id,
                message=request.message,
                status=request.status.value,
                created_at=request.created_at,
                updated_at=request.updated_at,
                decided_at=request.decided_at,
            )
            .on_conflict_do_nothing(constraint="uq_job_requests_job_contractor")
        )
        return bool(result.rowcount)

    async def get(self, request_id: str, *, for_update: bool = False) -> JobRequest | None:
        stmt = select(t.job_requests).where(R.id == request_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        return job_request_from_row(row) if row else None

    async def get_for(self, job_id: str, contractor_id: str) -> JobRequest | None:
        stmt = select(t.job_requests).where(R.job_id == job_id, R.contractor_id == contractor_id)
        row = (await self.session.execute(stmt)).first()
        return job_request_from_row(row) if row else None

    async def save(self, request: JobRequest) -> None:
        await self.session.execute(
            update(t.job_requests)
            .where(R.id == request.id)
            .values(
                status=request.status.value,
                updated_at=request.updated_at,
                decided_at=request.decided_at,
            )
        )

    async def list_by_job(self, job_id: str, limit: int) -> list[JobRequest]:
        stmt = (
            select(t.job_requests)
            .where(R.job_id == job_id)
            .order_by(R.created_at.desc(), R.id.desc())
            .limit(limit)
        )
        return [job_request_from_row(r) for r in (await self.session.execute(stmt)).all()]

    async def list_by_contractor(self, contractor_id: str, limit: int) -> list[JobRequest]:
        stmt = (
            select(t.job_requests)
            .where(R.contractor_id == contractor_id)
            .order_by(R.created_at.desc(), R.id.desc())
            .limit(limit)
        )
        return [job_request_from_row(r) for r in (await self.session.execute(stmt)).all()]


def offer_from_row(row: Any) -> Offer:
    m = row._mapping
    return Offer(
        id=m["id"],
        job_id=m["job_id"],
        customer_id=m["customer_id"],
        contractor_id=m["contractor_id"],
        amount_minor=m["amount_minor"],
        unit=m["unit"],
        funding=FundingSource(m["funding"]),
        state=OfferState(m["state"]),
        saga_id=m["saga_id"],
        request_id=m["request_id"],
        expires_at=m["expires_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        message=m["message"],
        payment_id=m["payment_id"],
        engagement_id=m["engagement_id"],
        reason=m["reason"],
        decided_at=m["decided_at"],
        released_at=m["released_at"],
    )


def offer_to_values(offer: Offer) -> dict[str, object]:
    return {
        "id": offer.id,
        "job_id": offer.job_id,
        "customer_id": offer.customer_id,
        "contractor_id": offer.contractor_id,
        "amount_minor": offer.amount_minor,
        "unit": offer.unit,
        "funding": offer.funding.value,
        "state": offer.state.value,
        "saga_id": offer.saga_id,
        "request_id": offer.request_id,
        "message": offer.message,
        "payment_id": offer.payment_id,
        "engagement_id": offer.engagement_id,
        "reason": offer.reason[:64],
        "expires_at": offer.expires_at,
        "created_at": offer.created_at,
        "updated_at": offer.updated_at,
        "decided_at": offer.decided_at,
        "released_at": offer.released_at,
    }


class SqlOfferRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, offer: Offer) -> None:
        await self.session.execute(insert(t.offers).values(**offer_to_values(offer)))

    async def get(self, offer_id: str, *, for_update: bool = False) -> Offer | None:
        stmt = select(t.offers).where(O.id == offer_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).one_or_none()
        return offer_from_row(row) if row else None

    async def get_by_saga(self, saga_id: str, *, for_update: bool = False) -> Offer | None:
        stmt = select(t.offers).where(O.saga_id == saga_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).one_or_none()
        return offer_from_row(row) if row else None

    async def get_by_request(self, customer_id: str, request_id: str) -> Offer | None:
        stmt = select(t.offers).where(O.customer_id == customer_id, O.request_id == request_id)
        row = (await self.session.execute(stmt)).one_or_none()
        return offer_from_row(row) if row else None

    async def save(self, offer: Offer) -> None:
        values = offer_to_values(offer)
        for key in ("id", "job_id", "customer_id", "contractor_id", "saga_id", "request_id"):
            values.pop(key)
        await self.session.execute(update(t.offers).where(O.id == offer.id).values(**values))

    async def open_on_job(self, job_id: str, *, for_update: bool = False) -> list[Offer]:
        """The job's offers that are not final, oldest first (locked with `for_update`)."""
        stmt = (
            select(t.offers)
            .where(O.job_id == job_id, O.state.not_in([s.value for s in OFFER_FINAL]))
            .order_by(O.created_at, O.id)
        )
        if for_update:
            stmt = stmt.with_for_update()
        return [offer_from_row(r) for r in (await self.session.execute(stmt)).all()]

    async def list_by(
        self, *, job_id: str = "", customer_id: str = "", contractor_id: str = "", limit: int
    ) -> list[Offer]:
        stmt = select(t.offers)
        if job_id:
            stmt = stmt.where(O.job_id == job_id)
        if customer_id:
            stmt = stmt.where(O.customer_id == customer_id)
        if contractor_id:
            stmt = stmt.where(O.contractor_id == contractor_id)
        stmt = stmt.order_by(O.created_at.desc(), O.id.desc()).limit(limit)
        return [offer_from_row(r) for r in (await self.session.execute(stmt)).all()]


def engagement_from_row(row: Any) -> Engagement:
    m = row._mapping
    return Engagement(
        id=m["id"],
        job_id=m["job_id"],
        customer_id=m["customer_id"],
        contractor_id=m["contractor_id"],
        unit=m["unit"],
        amount_minor=m["amount_minor"],
        fee1_minor=m["fee1_minor"],
        escrow_minor=m["escrow_minor"],
        funding=FundingSource(m["funding"]),
        state=EngagementState(m["state"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        funding_state=FundingState(m["funding_state"]),
        offer_id=m["offer_id"],
        escrow_account_id=m["escrow_account_id"],
        payment_id=m["payment_id"],
        assigned_at=m["assigned_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
    )


def engagement_to_values(e: Engagement) -> dict[str, object]:
    return {
        "id": e.id,
        "job_id": e.job_id,
        "customer_id": e.customer_id,
        "contractor_id": e.contractor_id,
        "unit": e.unit,
        "amount_minor": e.amount_minor,
        "fee1_minor": e.fee1_minor,
        "escrow_minor": e.escrow_minor,
        "funding": e.funding.value,
        "funding_state": e.funding_state.value,
        "state": e.state.value,
        "offer_id": e.offer_id,
        "escrow_account_id": e.escrow_account_id,
        "payment_id": e.payment_id,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "assigned_at": e.assigned_at,
        "started_at": e.started_at,
        "finished_at": e.finished_at,
    }


class SqlEngagementRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _append(self, engagement: Engagement) -> None:
        transitions = engagement.drain_transitions()
        if transitions:
            await self.session.execute(
                insert(t.engagement_transitions),
                [
                    {
                        "engagement_id": x.engagement_id,
                        "from_state": x.from_state.value if x.from_state else None,
                        "to_state": x.to_state.value,
                        "actor": x.actor,
                        "reason": x.reason,
                        "at": x.at,
                    }
                    for x in transitions
                ],
            )

    async def add(self, engagement: Engagement) -> None:
        await self.session.execute(insert(t.engagements).values(**engagement_to_values(engagement)))
        await self._append(engagement)

    async def get(self, engagement_id: str, *, for_update: bool = False) -> Engagement | None:
        stmt = select(t.engagements).where(E.id == engagement_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).one_or_none()
        return engagement_from_row(row) if row else None

    async def save(self, engagement: Engagement) -> None:
        values = engagement_to_values(engagement)
        values.pop("id")
        await self.session.execute(
            update(t.engagements).where(E.id == engagement.id).values(**values)
        )
        await self._append(engagement)
