"""The consistency auditor's use case (OPS-3): one round of cross-checks over the jobs database,
payments and the wallet (read through their gRPC contracts) and the provider (through payments).

Read-only and idempotent: any replica may run a round at any time; the worker runs one replica's
rounds at a time only to keep the load bounded. The worker's rounds keep an AuditCursor: between
full sweeps (its first round, then every `audit_full_sweep_seconds`) a round reads the history
checks' rows changed since its previous round only, so its cost follows what changed, not all
history (issue 13).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from hirepay_platform.errors import HirepayError
from jobs.domain import commands
from jobs.domain.audit import (
    AuditCursor,
    AuditReport,
    Check,
    PaymentFact,
    PurchaseRefunds,
    Violation,
    active_job_violation,
    captured_payment_violation,
    owes_a_posting,
    payment_deadline_violation,
)
from jobs.domain.errors import NotAllowed
from jobs.domain.escrow import (
    FAILED_SUFFIX,
    AtProviderOutcome,
    StepState,
    owed_to_customer,
    still_owed,
)
from jobs.domain.model import Job, JobStatus
from jobs.domain.posting_saga import PaymentMethod, Saga, TryResult
from jobs.service_layer import metrics
from jobs.service_layer.config import JobsConfig
from jobs.service_layer.deps import Deps

log = logging.getLogger(__name__)

# Payment states whose payments the auditor reads: money taken, and payments not final yet.
_TAKEN_STATES = frozenset({"CAPTURED", "PARTIALLY_REFUNDED"})
_NON_FINAL = frozenset({"REQUIRES_ACTION", "PROCESSING", "AUTHORIZED", "UNKNOWN"})
# Final states of payments whose money is not taken (an active job's payment must not be in one).
_NOT_TAKEN_FINAL = frozenset({"VOIDED", "FAILED", "REFUNDED"})
# Captured payments checked per unit of work (one read of their sagas, one of their jobs).
_CAPTURED_PAGE = 500


def new_cursor(config: JobsConfig) -> AuditCursor:
    """The memory of an auditor's rounds (one per worker holding the auditor lock)."""
    return AuditCursor(
        full_every=timedelta(seconds=config.audit_full_sweep_seconds),
        overlap=timedelta(seconds=config.audit_overlap_seconds),
    )


async def run_audit(
    cmd: commands.RunAudit, deps: Deps, cursor: AuditCursor | None = None
) -> AuditReport:
    """One audit round; publishes the violation counts as `hirepay_consistency_violations`.

    With a `cursor` (the worker's) the round is incremental when the cursor says so: active jobs,
    captured payments, payments' bookings and the wallet's zero-sum check read only what changed
    since the previous round (and the active jobs reported before), and the report keeps those
    checks' violations found since the last full sweep. Without one (the report on demand) it is
    a full sweep."""
    now = deps.clock()
    since = cursor.since(now) if cursor is not None else None
    violations: list[Violation] = []
    violations += await _active_jobs(deps, cmd.page_size, since)
    rechecked: frozenset[tuple[Check, str]] = frozenset()
    if cursor is not None and since is not None:
        # Active jobs reported before: read again (few), so one repaired leaves the report now.
        job_ids = cursor.carried_subjects(Check.ACTIVE_JOB_WITHOUT_PAYMENT)
        violations += await _jobs_by_id(deps, job_ids)
        rechecked = frozenset((Check.ACTIVE_JOB_WITHOUT_PAYMENT, j) for j in job_ids)
    violations += await _escrow_steps(deps, now, cmd.page_size)
    violations += await _escrow_refunds(deps, now, cmd.page_size)
    violations += await _refused_refunds(deps, cmd.page_size)
    sources = deps.sources
    purchase_refunds: PurchaseRefunds | None = None
    if sources is not None:
        in_flight = await sources.payments(_NON_FINAL)  # every round: state, not history
        if since is not None:
            violations += await _jobs_of_changed_payments(deps, since, in_flight)
        violations += await _payments(deps, now, since, in_flight)
        violations += await sources.ledger(now, since)
        reconciled = await sources.provider()
        violations += reconciled.violations
        purchase_refunds = reconciled.purchase_refunds
    for v in violations:
        log.warning("consistency violation %s: %s (%s)", v.check.value, v.subject_id, v.detail)
    if cursor is not None:
        reported = cursor.advance(now, since, violations, rechecked)
    else:
        reported = tuple(violations)
    report = AuditReport(now, reported, purchase_refunds)
    for check, count in report.counts().items():
        metrics.CONSISTENCY_VIOLATIONS.labels(check.value).set(count)
    metrics.count(metrics.AUDIT_RUNS, "ok")
    return report


async def get_consistency_report(cmd: commands.GetConsistencyReport, deps: Deps) -> AuditReport:
    """An audit round on demand (the gRPC report and the admin endpoint): admins only."""
    if not cmd.actor.is_admin:
        raise NotAllowed("only admins read the consistency report")
    return await run_audit(commands.RunAudit(), deps)


async def _active_jobs(
    deps: Deps, page_size: int, since: datetime | None = None
) -> list[Violation]:
    """Every active job satisfies `may_be_live`, and its participant shows the money taken.

    With `since` (an incremental round) only the jobs that went live since then: newest first,
    down to `since` (the active jobs' posting-time index). The payments of older active jobs that
    changed since are checked by _jobs_of_changed_payments."""
    found: list[Violation] = []
    after: tuple[datetime, str] | None = None
    while True:
        async with deps.new_uow() as uow:
            page = await uow.jobs.list_active("", after, page_size)
        recent = [j for j in page if since is None or (j.posted_at and j.posted_at >= since)]
        if recent:
            found += await _check_active_page(recent, deps, whole_history=since is None)
        if len(recent) < len(page) or len(page) < page_size:
            return found
        last = page[-1]
        assert last.posted_at is not None
        after = (last.posted_at, last.id)


async def _jobs_by_id(deps: Deps, job_ids: list[str]) -> list[Violation]:
    """The active-job check of the given jobs (those no longer active pass)."""
    found: list[Violation] = []
    for start in range(0, len(job_ids), _CAPTURED_PAGE):
        async with deps.new_uow() as uow:
            jobs = await uow.jobs.get_many(job_ids[start : start + _CAPTURED_PAGE])
        active = [j for j in jobs.values() if j.status is JobStatus.ACTIVE]
        if active:
            found += await _check_active_page(active, deps, whole_history=False)
    return found


async def _jobs_of_changed_payments(
    deps: Deps, since: datetime, in_flight: list[PaymentFact]
) -> list[Violation]:
    """An incremental round's other half of the active-job check: payments whose money is not
    (or no longer) taken - in flight now, or voided, failed or refunded since `since` - whose
    posting is active."""
    assert deps.sources is not None
    facts = in_flight + await deps.sources.payments(_NOT_TAKEN_FINAL, since)
    saga_ids = sorted({f.global_tx_id for f in facts if f.global_tx_id})
    job_ids: list[str] = []
    for start in range(0, len(saga_ids), _CAPTURED_PAGE):
        async with deps.new_uow() as uow:
            sagas = await uow.sagas.get_many(saga_ids[start : start + _CAPTURED_PAGE])
        job_ids += [s.job_id for s in sagas.values() if s.job_id]
    return await _jobs_by_id(deps, job_ids)


async def _check_active_page(
    page: list[Job], deps: Deps, *, whole_history: bool = True
) -> list[Violation]:
    """One page of active jobs: one query for their sagas, one batched read per participant
    (payments: one ListPayments call for the whole page), never a call per job.

    A participant unreadable now leaves its jobs to the next round when every round reads every
    active job; in an incremental round (`whole_history` False) the error fails the round, so the
    cursor does not move past jobs the next window would not read again."""
    found: list[Violation] = []
    rest: list[Job] = []
    for job in page:
        local = active_job_violation(job, None)
        if local is not None:
            found.append(local)
        else:
            rest.append(job)
    async with deps.new_uow() as uow:
        sagas = await uow.sagas.get_many([job.saga_id for job in rest])
    by_method: dict[PaymentMethod, list[Saga]] = {}
    for job in rest:
        saga = sagas.get(job.saga_id)
        if saga is None:
            found.append(Violation(Check.ACTIVE_JOB_WITHOUT_PAYMENT, job.id, "no saga"))
            continue
        by_method.setdefault(saga.method, []).append(saga)
    branches = await _branches(by_method, deps, whole_history)
    for job in rest:
        branch = branches.get(job.saga_id)
        if job.saga_id in sagas and branch is not None:
            violation = active_job_violation(job, branch)
            if violation is not None:
                found.append(violation)
    return found


async def _branches(
    by_method: dict[PaymentMethod, list[Saga]], deps: Deps, whole_history: bool
) -> dict[str, TryResult]:
    """The participants' view of the sagas' payments: a read per payment method, not per job."""
    branches: dict[str, TryResult] = {}
    for method, group in by_method.items():
        try:
            branches |= await deps.participants.for_method(method).inspect_many(group)
        except HirepayError as exc:
            if not whole_history:
                raise
            # Unreadable this round: not a violation by itself, checked again next round.
            log.info("audit: cannot read %d payments of active jobs: %r", len(group), exc)
    return branches


async def _escrow_steps(deps: Deps, now: datetime, limit: int) -> list[Violation]:
    """Money steps of engagements decided longer than the grace ago and still not posted: the
    escrow worker retries them, so one still pending means the wallet (or the provider, for a
    card refund) keeps refusing or failing (ESC-7, ESC-8). At most `limit` are listed a round."""
    before = now - timedelta(seconds=deps.config.audit_grace_seconds)
    async with deps.new_uow() as uow:
        steps = await uow.money_steps.pending_since(before, limit)
    return [
        Violation(
            Check.ESCROW_STEP_STUCK,
            step.transfer_id,
            f"pending since {step.created_at.isoformat()} after {step.attempts} attempts"
            + (f": {step.failure}" if step.failure else ""),
        )
        for step in steps
    ]


# The refunds at the provider that leave money owed to the platform (an operator's settlement
# and a reversal do not).
_OWING = frozenset({AtProviderOutcome.FROZEN, AtProviderOutcome.OWED})


async def _refused_refunds(deps: Deps, limit: int) -> list[Violation]:
    """Money steps whose card refund the provider refused outright (marketplace.money_steps):
    what they gave back sits on the engagement's receivable, owed to the customer; reported as
    payable (a known state for operators to pay back) while the receivable still holds money
    for the customer, not once an operator settled it (marketplace.receivables)."""
    async with deps.new_uow() as uow:
        refused = await uow.money_steps.refund_refused(limit)
        ids = sorted({s.engagement_id for s in refused})
        refunds = await uow.escrow_refunds.for_engagements(ids) if ids else []
        steps = await uow.money_steps.for_engagements(ids) if ids else []
    found: list[Violation] = []
    for step in refused:
        payable = owed_to_customer(
            [r for r in refunds if r.engagement_id == step.engagement_id],
            [s for s in steps if s.engagement_id == step.engagement_id],
        )
        if payable > 0:
            unit = step.legs[0].source.unit if step.legs else ""
            found.append(
                Violation(
                    Check.ESCROW_REFUND_PAYABLE,
                    step.transfer_id,
                    f"engagement {step.engagement_id}: its {step.kind.value} refund of"
                    f" {step.refused_minor} {unit} was refused by the provider; {payable} {unit}"
                    f" owed to the customer on engagement:{step.engagement_id}:receivable",
                )
            )
    return found


async def _escrow_refunds(deps: Deps, now: datetime, limit: int) -> list[Violation]:
    """Refunds of offer money made at the provider (marketplace.refunds_at_provider): each that
    left money owed (and its engagement still owes: not settled since) is reported as such (a known state: booked from the engagement's receivable,
    so no longer a missing booking), and one still not posted past the grace as a stuck step.
    A refund's reversal (failed after success, marketplace.refund_failures) whose engagement's
    receivable holds money for the customer is reported as owed to them (payable)."""
    before = now - timedelta(seconds=deps.config.audit_grace_seconds)
    async with deps.new_uow() as uow:
        refunds = await uow.escrow_refunds.unsettled(limit)
        # What each engagement still owes once its own refund netted the debt (an unwound
        # refund, or the engagement's cancel or resolve refund, settles it: nothing owed then):
        # their refunds and steps in one read each.
        owing = sorted(
            {r.engagement_id for r in refunds if r.outcome is not AtProviderOutcome.UNWOUND}
        )
        all_refunds = await uow.escrow_refunds.for_engagements(owing) if owing else []
        steps = await uow.money_steps.for_engagements(owing) if owing else []
    owed = {
        e: still_owed(
            [r for r in all_refunds if r.engagement_id == e],
            [s for s in steps if s.engagement_id == e],
        )
        for e in owing
    }
    found: list[Violation] = []
    for r in refunds:
        if r.state is StepState.PENDING and r.created_at < before:
            detail = f"refund at the provider pending since {r.created_at.isoformat()}"
            found.append(Violation(Check.ESCROW_STEP_STUCK, r.transfer_id, detail))
        if r.outcome is AtProviderOutcome.REVERSED:
            if owed[r.engagement_id] < 0:
                found.append(
                    Violation(
                        Check.ESCROW_REFUND_PAYABLE,
                        r.transfer_id,
                        f"engagement {r.engagement_id}: refund"
                        f" {r.refund_id.removesuffix(FAILED_SUFFIX)} ({r.amount_minor} {r.unit})"
                        f" failed after it succeeded; {-owed[r.engagement_id]} {r.unit} owed to"
                        f" the customer on engagement:{r.engagement_id}:receivable",
                    )
                )
        elif r.outcome in _OWING and owed[r.engagement_id] > 0:
            found.append(
                Violation(
                    Check.ESCROW_REFUND_OWED,
                    r.transfer_id,
                    f"engagement {r.engagement_id}: {r.amount_minor} {r.unit} refunded at the"
                    f" provider ({r.outcome.value}), owed from engagement:{r.engagement_id}"
                    ":receivable",
                )
            )
    return found


async def _payments(
    deps: Deps, now: datetime, since: datetime | None, in_flight: list[PaymentFact]
) -> list[Violation]:
    """Money taken without its posting (or refund), and payments not final past their deadline.

    Payments not final are all read every round (those in flight now, not history). Money taken
    is checked once unchanged for the grace: with `since`, only payments changed since then
    minus the grace (those that came due since the previous round, and the overlap)."""
    assert deps.sources is not None
    config = deps.config
    grace = timedelta(seconds=config.audit_grace_seconds)
    deadline = timedelta(seconds=config.settlement_deadline_seconds) + grace
    found: list[Violation] = []
    for fact in in_flight:
        violation = payment_deadline_violation(fact, now=now, deadline=deadline)
        if violation is not None:
            found.append(violation)
    taken_since = since - grace if since is not None else None
    taken = await deps.sources.payments(_TAKEN_STATES, taken_since)
    owing = [fact for fact in taken if owes_a_posting(fact, now=now, grace=grace)]
    for start in range(0, len(owing), _CAPTURED_PAGE):
        found += await _check_captured(owing[start : start + _CAPTURED_PAGE], deps, now, grace)
    return found


async def _check_captured(
    facts: list[PaymentFact], deps: Deps, now: datetime, grace: timedelta
) -> list[Violation]:
    """A page of captured payments that owe a posting, checked on one read of their sagas and
    one of their jobs (issue 13: a unit of work and two statements per payment before, every
    round, for every payment ever captured)."""
    async with deps.new_uow() as uow:
        sagas = await uow.sagas.get_many([f.global_tx_id for f in facts if f.global_tx_id])
        jobs = await uow.jobs.get_many([s.job_id for s in sagas.values() if s.job_id])
    found: list[Violation] = []
    for fact in facts:
        saga = sagas.get(fact.global_tx_id) if fact.global_tx_id else None
        job = jobs.get(saga.job_id) if saga is not None and saga.job_id else None
        violation = captured_payment_violation(fact, saga, job, now=now, grace=grace)
        if violation is not None:
            found.append(violation)
    return found
