"""PostgreSQL repositories of the escrow: engagements' money steps and disputes. Never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.db import HotStatement
from jobs.adapters import tables as t
from jobs.domain.escrow import (
    AccountKind,
    AccountRef,
    AtProviderOutcome,
    Dispute,
    DisputeState,
    EscrowRefund,
    Leg,
    MoneyStep,
    Resolution,
    StepKind,
    StepState,
)
from jobs.domain.marketplace import EngagementState

S = t.engagement_steps.c
# The escrow worker's lock of its due steps (each round, about once a second under load), built
# once: building it cost more Python than running it; run hot (db.HotStatement), so a round that
# finds nothing due needs no SQLAlchemy Connection and no greenlet (issue 13).
_DUE_STEPS = HotStatement(
    select(t.engagement_steps)
    .where(
        S.state == StepState.PENDING.value,
        S.next_attempt_at <= bindparam("now", type_=S.next_attempt_at.type),
    )
    .order_by(S.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
D = t.disputes.c


def _ref_json(ref: AccountRef) -> dict[str, str]:
    return {"owner": ref.owner, "unit": ref.unit, "kind": ref.kind.value}


def _ref(data: dict[str, str]) -> AccountRef:
    return AccountRef(data["owner"], data["unit"], AccountKind(data["kind"]))


def legs_to_json(legs: tuple[Leg, ...]) -> list[dict[str, Any]]:
    return [
        {"from": _ref_json(x.source), "to": _ref_json(x.target), "amount_minor": x.amount_minor}
        for x in legs
    ]


def legs_from_json(data: list[dict[str, Any]]) -> tuple[Leg, ...]:
    return tuple(Leg(_ref(x["from"]), _ref(x["to"]), int(x["amount_minor"])) for x in data)


def _step(row: Any) -> MoneyStep:
    m = row._mapping
    return MoneyStep(
        engagement_id=m["engagement_id"],
        kind=StepKind(m["kind"]),
        transfer_id=m["transfer_id"],
        legs=legs_from_json(m["legs"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        state=StepState(m["state"]),
        payment_id=m["payment_id"],
        refund_minor=m["refund_minor"],
        refund_id=m["refund_id"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        failure=m["failure"],
        refused_minor=m["refused_minor"],
    )


def _step_values(step: MoneyStep) -> dict[str, Any]:
    return {
        "state": step.state.value,
        "transfer_id": step.transfer_id,
        "legs": legs_to_json(step.legs),
        "payment_id": step.payment_id,
        "refund_minor": step.refund_minor,
        "refund_id": step.refund_id,
        "attempts": step.attempts,
        "next_attempt_at": step.next_attempt_at,
        "failure": step.failure,
        "updated_at": step.updated_at,
        "refused_minor": step.refused_minor,
    }


class SqlMoneyStepRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, step: MoneyStep) -> bool:
        stmt = (
            insert(t.engagement_steps)
            .values(
                engagement_id=step.engagement_id,
                kind=step.kind.value,
                created_at=step.created_at,
                **_step_values(step),
            )
            .on_conflict_do_nothing()
            .returning(S.kind)
        )
        return (await self.s.execute(stmt)).first() is not None

    async def get(
        self, engagement_id: str, kind: StepKind, *, for_update: bool = False
    ) -> MoneyStep | None:
        stmt = select(t.engagement_steps).where(
            S.engagement_id == engagement_id, S.kind == kind.value
        )
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.s.execute(stmt)).one_or_none()
        return _step(row) if row else None

    async def for_engagement(self, engagement_id: str) -> list[MoneyStep]:
        return await self.for_engagements([engagement_id])

    async def for_engagements(self, engagement_ids: list[str]) -> list[MoneyStep]:
        stmt = (
            select(t.engagement_steps)
            .where(S.engagement_id.in_(engagement_ids))
            .order_by(S.created_at)
        )
        return [_step(r) for r in (await self.s.execute(stmt)).all()]

    async def save(self, step: MoneyStep) -> None:
        await self.s.execute(
            update(t.engagement_steps)
            .where(S.engagement_id == step.engagement_id, S.kind == step.kind.value)
            .values(**_step_values(step))
        )

    async def refund_refused(self, limit: int) -> list[MoneyStep]:
        """The auditor's read: steps whose card refund the provider refused (oldest first)."""
        stmt = (
            select(t.engagement_steps)
            .where(S.state == StepState.REFUND_REFUSED.value)
            .order_by(S.created_at)
            .limit(limit)
        )
        return [_step(r) for r in (await self.s.execute(stmt)).all()]

    async def pending_since(self, before: datetime, limit: int) -> list[MoneyStep]:
        # Pending steps are few (the worker posts them within seconds): the partial index on
        # pending steps bounds the scan.
        stmt = (
            select(t.engagement_steps)
            .where(S.state == StepState.PENDING.value, S.created_at < before)
            .order_by(S.created_at)
            .limit(limit)
        )
        return [_step(r) for r in (await self.s.execute(stmt)).all()]

    async def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[MoneyStep]:
        params = {"now": now, "limit": limit}
        steps = [_step(r) for r in (await self.s.execute(_DUE_STEPS, params)).all()]
        if steps:
            await self.s.execute(
                update(t.engagement_steps)
                .where(
                    tuple_(S.engagement_id, S.kind).in_(
                        [(x.engagement_id, x.kind.value) for x in steps]
                    )
                )
                .values(next_attempt_at=lease_until)
            )
        return steps


def _dispute(row: Any) -> Dispute:
    m = row._mapping
    return Dispute(
        id=m["id"],
        engagement_id=m["engagement_id"],
        opened_by=m["opened_by"],
        reason=m["reason"],
        state=DisputeState(m["state"]),
        opened_at=m["opened_at"],
        engagement_state=EngagementState(m["engagement_state"]),
        resolution=Resolution(m["resolution"]) if m["resolution"] else None,
        contractor_minor=m["contractor_minor"],
        resolved_by=m["resolved_by"],
        note=m["note"],
        resolved_at=m["resolved_at"],
    )


def _dispute_values(d: Dispute) -> dict[str, Any]:
    return {
        "state": d.state.value,
        "resolution": d.resolution.value if d.resolution else "",
        "contractor_minor": d.contractor_minor,
        "resolved_by": d.resolved_by,
        "note": d.note,
        "resolved_at": d.resolved_at,
    }


class SqlDisputeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, dispute: Dispute) -> None:
        await self.s.execute(
            insert(t.disputes).values(
                id=dispute.id,
                engagement_id=dispute.engagement_id,
                opened_by=dispute.opened_by,
                reason=dispute.reason,
                engagement_state=dispute.engagement_state.value,
                opened_at=dispute.opened_at,
                **_dispute_values(dispute),
            )
        )

    async def get(self, dispute_id: str, *, for_update: bool = False) -> Dispute | None:
        stmt = select(t.disputes).where(D.id == dispute_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.s.execute(stmt)).one_or_none()
        return _dispute(row) if row else None

    async def for_engagement(self, engagement_id: str) -> Dispute | None:
        row = (
            await self.s.execute(select(t.disputes).where(D.engagement_id == engagement_id))
        ).one_or_none()
        return _dispute(row) if row else None

    async def save(self, dispute: Dispute) -> None:
        await self.s.execute(
            update(t.disputes).where(D.id == dispute.id).values(**_dispute_values(dispute))
        )

    async def list(
        self, state: DisputeState | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[Dispute]:
        """Disputes (of one state, or all), oldest first, strictly after the (opened_at, id) cursor."""
        stmt = select(t.disputes)
        if state is not None:
            stmt = stmt.where(D.state == state.value)
        if after is not None:
            stmt = stmt.where(tuple_(D.opened_at, D.id) > tuple_(*after))
        stmt = stmt.order_by(D.opened_at, D.id).limit(limit)
        return [_dispute(r) for r in (await self.s.execute(stmt)).all()]


R = t.escrow_refunds.c


def _escrow_refund(row: Any) -> EscrowRefund:
    m = row._mapping
    return EscrowRefund(
        refund_id=m["refund_id"],
        engagement_id=m["engagement_id"],
        payment_id=m["payment_id"],
        unit=m["unit"],
        amount_minor=m["amount_minor"],
        outcome=AtProviderOutcome(m["outcome"]),
        legs=legs_from_json(m["legs"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        state=StepState(m["state"]),
        attempts=m["attempts"],
        failure=m["failure"],
        reference=m["reference"],
        actor=m["actor"],
    )


class SqlEscrowRefundRepository:
    """Refunds of engagements' money made at the provider (one row per payments refund id)."""

    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, refund: EscrowRefund) -> bool:
        stmt = (
            insert(t.escrow_refunds)
            .values(
                refund_id=refund.refund_id,
                engagement_id=refund.engagement_id,
                payment_id=refund.payment_id,
                unit=refund.unit,
                amount_minor=refund.amount_minor,
                outcome=refund.outcome.value,
                legs=legs_to_json(refund.legs),
                state=refund.state.value,
                attempts=refund.attempts,
                failure=refund.failure,
                created_at=refund.created_at,
                updated_at=refund.updated_at,
                reference=refund.reference,
                actor=refund.actor,
            )
            .on_conflict_do_nothing()
            .returning(R.refund_id)
        )
        return (await self.s.execute(stmt)).first() is not None

    async def for_engagement(self, engagement_id: str) -> list[EscrowRefund]:
        return await self.for_engagements([engagement_id])

    async def for_engagements(self, engagement_ids: list[str]) -> list[EscrowRefund]:
        stmt = (
            select(t.escrow_refunds)
            .where(R.engagement_id.in_(engagement_ids))
            .order_by(R.created_at, R.refund_id)
        )
        return [_escrow_refund(r) for r in (await self.s.execute(stmt)).all()]

    async def save(self, refund: EscrowRefund) -> None:
        await self.s.execute(
            update(t.escrow_refunds)
            .where(R.refund_id == refund.refund_id)
            .values(
                state=refund.state.value,
                attempts=refund.attempts,
                failure=refund.failure,
                updated_at=refund.updated_at,
            )
        )

    async def unsettled(self, limit: int) -> list[EscrowRefund]:
        """The auditor's read: refunds not yet posted, or that left money owed (oldest first)."""
        stmt = (
            select(t.escrow_refunds)
            .where(
                (R.state == StepState.PENDING.value)
                | (R.outcome != AtProviderOutcome.UNWOUND.value)
            )
            .order_by(R.created_at, R.refund_id)
            .limit(limit)
        )
        return [_escrow_refund(r) for r in (await self.s.execute(stmt)).all()]
