"""PostgreSQL repositories of applications and candidate views (rows <-> domain). Never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.adapters import tables as t
from jobs.domain.applications import ApplicantDetails, Application, ApplicationStatus, ViewState

A = t.applications.c
V = t.candidate_views.c


def _application(row: Any) -> Application:
    m = row._mapping
    return Application(
        id=m["id"],
        job_id=m["job_id"],
        company_id=m["company_id"],
        applicant_id=m["applicant_id"],
        details=ApplicantDetails(
            m["applicant_name"], m["applicant_email"], m["cover_letter"], m["resume_url"]
        ),
        status=ApplicationStatus(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        decided_at=m["decided_at"],
    )


class SqlApplicationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_if_absent(self, application: Application) -> bool:
        """Insert-first on (job, applicant): False if this applicant applied to the job before."""
        d = application.details
        result = await self.session.execute(
            insert(t.applications)
            .values(
                id=application.id,
                job_id=application.job_id,
                company_id=application.company_id,
                applicant_id=application.applicant_id,
                applicant_name=d.name,
                applicant_email=d.email,
                cover_letter=d.cover_letter,
                resume_url=d.resume_url,
                status=application.status.value,
                created_at=application.created_at,
                updated_at=application.updated_at,
                decided_at=application.decided_at,
            )
            .on_conflict_do_nothing(constraint="uq_applications_job_applicant")
        )
        return bool(result.rowcount)

    async def get(self, application_id: str, *, for_update: bool = False) -> Application | None:
        query = select(t.applications).where(A.id == application_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return _application(row) if row else None

    async def get_for(self, job_id: str, applicant_id: str) -> Application | None:
        query = select(t.applications).where(A.job_id == job_id, A.applicant_id == applicant_id)
        row = (await self.session.execute(query)).first()
        return _application(row) if row else None

    async def save(self, application: Application) -> None:
        await self.session.execute(
            update(t.applications)
            .where(A.id == application.id)
            .values(
                status=application.status.value,
                updated_at=application.updated_at,
                decided_at=application.decided_at,
            )
        )

    async def list_by_applicant(self, applicant_id: str, limit: int) -> list[Application]:
        rows = await self.session.execute(
            select(t.applications)
            .where(A.applicant_id == applicant_id)
            .order_by(A.created_at.desc(), A.id.desc())
            .limit(limit)
        )
        return [_application(row) for row in rows]

    async def list_by_job(self, job_id: str, limit: int) -> list[Application]:
        rows = await self.session.execute(
            select(t.applications)
            .where(A.job_id == job_id)
            .order_by(A.created_at.desc(), A.id.desc())
            .limit(limit)
        )
        return [_application(row) for row in rows]


class SqlCandidateViewRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self, company_id: str, applicant_id: str, transfer_id: str, now: datetime
    ) -> ViewState:
        """Insert-first the (company, applicant) view as charging; the row's state after it
        (CHARGED: viewed and paid before)."""
        await self.session.execute(
            insert(t.candidate_views)
            .values(
                company_id=company_id,
                applicant_id=applicant_id,
                state=ViewState.CHARGING.value,
                transfer_id=transfer_id,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["company_id", "applicant_id"])
        )
        state = await self.state(company_id, applicant_id)
        assert state is not None
        return state

    async def state(self, company_id: str, applicant_id: str) -> ViewState | None:
        row = (
            await self.session.execute(
                select(V.state).where(V.company_id == company_id, V.applicant_id == applicant_id)
            )
        ).first()
        return ViewState(row.state) if row else None

    async def mark_charged(
        self, company_id: str, applicant_id: str, transfer_id: str, now: datetime
    ) -> bool:
        """The wallet took the credit: charged, whatever happened to the claim meanwhile. True
        only for the call that inserted or changed the row: two racing views both see CHARGING
        before, but the second's upsert waits for the first's row lock, then finds it CHARGED
        and changes nothing (the conflict WHERE is re-checked on the newest row version)."""
        result = await self.session.execute(
            insert(t.candidate_views)
            .values(
                company_id=company_id,
                applicant_id=applicant_id,
                state=ViewState.CHARGED.value,
                transfer_id=transfer_id,
                created_at=now,
                charged_at=now,
            )
            .on_conflict_do_update(
                index_elements=["company_id", "applicant_id"],
                set_={"state": ViewState.CHARGED.value, "charged_at": now},
                where=V.state != ViewState.CHARGED.value,
            )
            .returning(V.state)
        )
        return result.first() is not None

    async def release(self, company_id: str, applicant_id: str) -> None:
        """The debit was refused: forget a claim that never took anything."""
        await self.session.execute(
            delete(t.candidate_views).where(
                V.company_id == company_id,
                V.applicant_id == applicant_id,
                V.state == ViewState.CHARGING.value,
            )
        )

    async def viewed(self, company_id: str, applicant_ids: list[str]) -> set[str]:
        """Which of these applicants the company has paid to view."""
        if not applicant_ids:
            return set()
        rows = await self.session.execute(
            select(V.applicant_id).where(
                V.company_id == company_id,
                V.applicant_id.in_(applicant_ids),
                V.state == ViewState.CHARGED.value,
            )
        )
        return {row.applicant_id for row in rows}
