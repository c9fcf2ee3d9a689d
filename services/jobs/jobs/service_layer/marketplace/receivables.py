"""Money owed to an engagement's customer settled by operators outside Hirepay (ESC-1, ESC-8,
SEC-2): a card refund the provider refused outright (marketplace.money_steps) or one that failed
after it succeeded (marketplace.refund_failures) leaves the money on the engagement's receivable,
owed to the customer. Once an operator paid them back by other means (a bank transfer), an admin
records it here: receivable -> `outside`, with the operator's reference, exactly once per request
id (an escrow_refunds row inserted first on `engagement:<id>:settled:<request id>`, outcome
`settled`, under the engagement's lock: twins and concurrent settlements take turns and see each
other). Refused with nothing changed (PAY-11): more than the receivable holds for the customer
(SETTLEMENT_EXCEEDS_OWED), another currency than the engagement's, a request id reused with
another amount. The booking is posted after the commit; a wallet outage leaves it pending and the
same request posts it (the auditor's `escrow_step_stuck` past the grace otherwise)."""

from __future__ import annotations

import hashlib
import logging

from hirepay_platform.errors import ValidationError
from hirepay_platform.tcc import IdempotencyMismatch
from jobs.domain import commands
from jobs.domain.escrow import (
    EngagementNotFound,
    EscrowRefund,
    SettlementExceedsOwed,
    StepState,
    owed_to_customer,
    receivable_settlement,
    settlement_id,
)
from jobs.domain.events import EventType
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace.escrow import (
    EngagementView,
    _require_admin,
    _view,
    engagement_event_data,
)
from jobs.service_layer.marketplace.refunds_at_provider import post
from jobs.service_layer.notifications import record_event

log = logging.getLogger(__name__)

REQUEST_ID_MAX = 255  # the gateway's Idempotency-Key
REFERENCE_MAX = 200


def _validate(cmd: commands.SettleReceivable) -> tuple[str, str]:
    """The request id and the reference, or VALIDATION_FAILED naming every bad field."""
    bad: dict[str, str] = {}
    request_id = (cmd.request_id or "").strip()
    reference = (cmd.reference or "").strip()
    if not request_id or len(request_id) > REQUEST_ID_MAX:
        bad["request_id"] = f"1-{REQUEST_ID_MAX} characters"
    if isinstance(cmd.amount_minor, bool) or not isinstance(cmd.amount_minor, int):
        bad["amount_minor"] = "integer minor units"
    elif cmd.amount_minor <= 0:
        bad["amount_minor"] = "must be positive"
    if not cmd.currency:
        bad["currency"] = "required"
    if not reference or len(reference) > REFERENCE_MAX:
        bad["reference"] = f"1-{REFERENCE_MAX} characters"
    if bad:
        raise ValidationError("invalid settlement", fields=bad)
    return request_id, reference


def _event_subject(engagement_id: str, request_id: str) -> str:
    """The settlement's event subject: the outbox's subject ids are short (64 characters)."""
    return f"{engagement_id}:{hashlib.sha256(request_id.encode()).hexdigest()[:16]}"


async def settle_receivable(cmd: commands.SettleReceivable, deps: Deps) -> EngagementView:
    """Record money owed to the customer as paid back outside (admins), once per request id."""
    _require_admin(cmd.actor)
    request_id, reference = _validate(cmd)
    row_id = settlement_id(cmd.engagement_id, request_id)
    decided: EscrowRefund | None = None
    async with deps.uow as uow:
        now = deps.clock()
        # The engagement's lock: refund bookings and reversals take it too (after the job's).
        engagement = await uow.engagements.get(cmd.engagement_id, for_update=True)
        if engagement is None:
            raise EngagementNotFound(cmd.engagement_id)
        booked = await uow.escrow_refunds.for_engagement(engagement.id)
        existing = next((r for r in booked if r.refund_id == row_id), None)
        if existing is not None:
            if (existing.amount_minor, existing.unit) != (cmd.amount_minor, cmd.currency):
                raise IdempotencyMismatch(f"settlement {request_id}", "amount")
            decided = existing if existing.state is StepState.PENDING else None
        else:
            if cmd.currency != engagement.unit:
                raise ValidationError(
                    f"engagement {engagement.id} is in {engagement.unit}",
                    fields={"currency": f"must be {engagement.unit}"},
                )
            steps = await uow.money_steps.for_engagement(engagement.id)
            owed = owed_to_customer(booked, steps)
            if cmd.amount_minor > owed:
                raise SettlementExceedsOwed(engagement.id, cmd.amount_minor, owed, engagement.unit)
            decided = receivable_settlement(
                engagement, cmd.amount_minor, request_id, reference, cmd.actor.name, now
            )
            # Under the engagement's lock no twin can be first; insert-first all the same.
            assert await uow.escrow_refunds.add(decided)
            await record_event(
                uow,
                EventType.ENGAGEMENT_RECEIVABLE_SETTLED,
                _event_subject(engagement.id, request_id),
                now,
                engagement_event_data(
                    engagement,
                    settledMinor=cmd.amount_minor,
                    reference=reference,
                    owedToCustomerMinor=owed - cmd.amount_minor,
                ),
            )
            await uow.commit()
            metrics.count(metrics.RECEIVABLES_SETTLED, engagement.unit)
            log.warning(
                "engagement %s: %d %s owed to the customer settled outside by %s (%s)%s",
                engagement.id,
                cmd.amount_minor,
                engagement.unit,
                cmd.actor.name,
                reference,
                f": {cmd.note[:200]}" if cmd.note else "",
            )
    if decided is not None:
        await post(decided, deps)
    return await _view(cmd.engagement_id, deps)
