"""A live posting whose fee was refunded in full at the provider, outside Hirepay (a refund from
the provider's dashboard, or the provider refunding on its own): payments books the refund and
publishes `payment.refunded` with the payment REFUNDED; the posting ends here. So it does when
the fee's chargeback is lost in full (`payment.charged_back`: the issuer gave the customer the
money back; payments booked the withdrawal).

Promise 1 (PAY-4): a job is active only while its money is taken, so an active job is taken down
(`cancelled`, by the system, "payment refunded at the provider"); an expired or filled one keeps
its status. Either way the job's payment status is `refunded` (PAY-5) and its saga ends REFUNDED,
as after the saga's own refund (PAY-7, PAY-13). A partial refund leaves the posting paid.
"""

from __future__ import annotations

import logging

from jobs.domain.model import JobStatus, PaymentStatus, Transition
from jobs.domain.posting_saga import (
    CHARGED_BACK,
    SagaState,
    SettlementEvent,
    refunded_at_provider,
)
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.posting.records import finish

log = logging.getLogger(__name__)

ACTOR = "system"
REASON = "payment refunded at the provider"
CHARGED_BACK_REASON = "payment charged back (dispute lost)"


async def end_refunded_posting(saga_id: str, event: SettlementEvent, deps: Deps) -> bool:
    """End the posting of a saga whose payment the event says is refunded in full (judged again
    under the saga's and the job's locks: a repeated event, or one racing the saga's own
    refund, changes nothing). Whether it changed the saga."""
    transitions: list[Transition] = []
    uow = deps.uow
    async with uow:
        now = deps.clock()
        saga, job = await uow.sagas.lock_with_job(saga_id)
        if saga is None or not refunded_at_provider(saga, event):
            return False
        reason = CHARGED_BACK_REASON if event.type == CHARGED_BACK else REASON
        saga.note_provider_state(event.result.provider_state)
        saga.start_refunding(now, reason=reason)
        saga.refund_amount_minor = saga.amount_minor
        finish(saga, SagaState.REFUNDED, now)
        if job is not None and job.saga_id == saga.id:
            if job.status is JobStatus.ACTIVE:
                job.transition(JobStatus.CANCELLED, actor=ACTOR, reason=reason, now=now)
                transitions = list(job.pending)
            job.payment_status = PaymentStatus.REFUNDED
            job.updated_at = now
            await uow.jobs.save(job)
        await uow.sagas.save(saga)
        await uow.sagas.log(saga.id, "refunded", f"{reason} ({event.type})", now)
        await uow.commit()
    metrics.record_transitions(transitions)
    log.info("saga %s: %s; its posting ended", saga_id, reason)
    return True
