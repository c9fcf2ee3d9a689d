"""Plan credits on the ledger (CR-2, CR-3): the grant a settled purchase owes (recorded with the
settlement), the worker that books it on the wallet until acknowledged, an admin refund that
revokes a purchase's unused credits, and a user's subscription and credit status."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from hirepay_platform.errors import HirepayError, Unavailable
from hirepay_platform.reasons import FailureReason
from payments.domain import commands, errors
from payments.domain.credits import (
    CANDIDATE_CREDIT,
    CANDIDATE_CREDITS_KEY,
    JOB_CREDIT,
    JOB_CREDITS_KEY,
    CreditGrant,
    GrantKind,
    GrantStatus,
    taken_back,
)
from payments.domain.events import AuditEntry, EventType
from payments.domain.ledger import ESCROW_ACCOUNT_KEY, Kind
from payments.domain.plans import Plan
from payments.domain.provider import InvalidRequest, OutcomeUnknown
from payments.domain.transactions import Transaction, TxnStatus, UserType
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.handlers.shared import emit, publish
from payments.service_layer.ports import PaymentsUnitOfWork

log = logging.getLogger(__name__)


def plan_metadata(plan: Plan) -> dict[str, str]:
    """What a purchase records of its plan's credits when it is opened (a snapshot)."""
    return {
        JOB_CREDITS_KEY: str(plan.job_credits),
        CANDIDATE_CREDITS_KEY: str(plan.candidate_credits),
    }


async def record_settlement(uow: PaymentsUnitOfWork, txn: Transaction, deps: Deps) -> None:
    """In the settlement's own local transaction: a purchase that just became SUCCESS owes its
    booking on the ledger. Insert-first on the grant id, so settling twice records one grant."""
    if txn.status is TxnStatus.SUCCESS:
        await uow.credit_grants.add(CreditGrant.issue(txn, deps.clock()))


@dataclass(frozen=True, slots=True)
class GrantView:
    """A grant as callers see it: what it moved, and for a revocation what had been spent."""

    kind: GrantKind
    done: bool
    amounts: dict[str, int] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)


def _view(grant: CreditGrant) -> GrantView:
    return GrantView(grant.kind, grant.status is GrantStatus.DONE, grant.amounts or {}, grant.used)


async def settle_grant(grant_id: str, deps: Deps) -> CreditGrant | None:
    """Book one grant on the wallet (a repeat moves nothing: the transfer id is the grant's)."""
    ledger = deps.ledger
    if ledger is None:
        return None
    async with deps.uow as uow:
        grant = await uow.credit_grants.get(grant_id)
    if grant is None or grant.status is GrantStatus.DONE:
        return grant
    if grant.kind is GrantKind.REVOKE and not await _issued(grant, deps):
        # Revoking before the purchase's credits are issued would take back nothing and let the
        # issuance land afterwards: the revocation waits for its issuance.
        await _retry_later(grant, deps, Unavailable("the purchase's credits are not issued yet"))
        return grant
    try:
        if grant.amounts is None:
            # A revocation is planned once, from what is unused now, and kept: every retry then
            # sends the same transfer, which the wallet answers once.
            planned = grant.plan_revocation(await ledger.available(grant.user_id))
            async with deps.uow as uow:
                fresh = await uow.credit_grants.get(grant_id, for_update=True)
                if fresh is not None and fresh.amounts is None:
                    fresh.amounts = planned
                    await uow.credit_grants.save(fresh)
                    await uow.commit()
                grant = fresh or grant
        await ledger.move(grant, grant.amounts or {})
    except HirepayError as exc:
        await _retry_later(grant, deps, exc)
        return grant
    async with deps.uow as uow:
        fresh = await uow.credit_grants.get(grant_id, for_update=True)
        if fresh is not None and fresh.status is GrantStatus.PENDING:
            fresh.done(deps.clock())
            await uow.credit_grants.save(fresh)
            metrics.count(metrics.CREDIT_GRANTS, str(fresh.kind), "booked")
            await uow.audit.add(
                AuditEntry(
                    action="transition",
                    actor="ledger",
                    reason=f"credits {fresh.kind} booked on the wallet",
                    details={
                        "transfer_id": fresh.transfer_id,
                        **{unit: str(n) for unit, n in (fresh.amounts or {}).items()},
                    },
                    transaction_id=fresh.transaction_id,
                )
            )
            await uow.commit()
        return fresh


async def _issued(revocation: CreditGrant, deps: Deps) -> bool:
    """Whether the purchase's issuance is booked (booking it now if it is still owed)."""
    issue_id = f"{GrantKind.ISSUE.value}:{revocation.transaction_id}"
    async with deps.uow as uow:
        issue = await uow.credit_grants.get(issue_id)
    if issue is not None and issue.status is GrantStatus.PENDING:
        issue = await settle_grant(issue_id, deps)
    return issue is None or issue.status is GrantStatus.DONE


async def _retry_later(grant: CreditGrant, deps: Deps, exc: HirepayError) -> None:
    async with deps.uow as uow:
        fresh = await uow.credit_grants.get(grant.id, for_update=True)
        if fresh is None or fresh.status is GrantStatus.DONE:
            return
        if fresh.kind is GrantKind.REVOKE and exc.reason == FailureReason.INSUFFICIENT_FUNDS:
            # Credits were spent between planning and moving: plan again from the new balance.
            fresh.amounts = None
        cfg = deps.config
        delay = min(cfg.grant_retry_max, cfg.grant_retry_base * 2 ** min(fresh.attempts, 16))
        fresh.retry_later(deps.clock(), delay, f"{exc.reason}: {exc}")
        await uow.credit_grants.save(fresh, release_lease=True)
        await uow.commit()
    metrics.count(metrics.CREDIT_GRANTS, str(grant.kind), "retry")
    log.warning(
        "credit grant not booked yet",
        extra={"fields": {"grant": grant.id, "reason": exc.reason, "attempts": grant.attempts}},
    )


# The most bookings one round of the booking worker takes (one wallet call for payments' ones).
# Above what one interval (PAYMENTS_GRANT_INTERVAL_SECONDS, 0.5 s) records at the posting rates
# measured (122-147 postings/s at c=32, up to ~570/s at issue 13's target of 10% of pgbench):
# at 50 a round of 50 left a backlog, so a second round (its lease, wallet call, mark-done and
# commit: ~1,000 Python calls of this process and a CreateTransfers of the wallet) followed after
# the busy pause for the few left over (issue 13, paywh15). The wallet takes up to 1,000
# transfers per call (wallet MAX_BATCH); each keeps its own id and outcome.
GRANT_BATCH = 200


async def settle_due_grants(
    deps: Deps, *, limit: int = GRANT_BATCH, lease_seconds: float = 30.0
) -> int:
    """One round of the booking worker: book every booking whose attempt is due (safe in
    replicas: bookings are leased with SKIP LOCKED). Payments' bookings go to the wallet together
    in one CreateTransfers call; a purchase's grant is booked alone (a revocation is planned from
    the user's balance first)."""
    async with deps.uow as uow:
        await uow.autocommit()  # the lease is one statement: a transaction of its own
        due = await uow.credit_grants.lease_due(deps.clock(), limit, lease_seconds)
        await uow.commit()
    await book_payments([g for g in due if g.of_payment], deps)
    for grant in due:
        if not grant.of_payment:
            await settle_grant(grant.id, deps)
    return len(due)


async def book_payments(grants: list[CreditGrant], deps: Deps) -> None:
    """Post payments' bookings in one wallet call and record which were acknowledged."""
    ledger = deps.ledger
    if ledger is None or not grants:
        return
    try:
        outcomes = await ledger.move_many(grants)
    except HirepayError as exc:
        for grant in grants:
            await _retry_later(grant, deps, exc)
        return
    escrows: dict[str, str] = {}
    for grant, outcome in zip(grants, outcomes, strict=True):
        if outcome is not None:
            await _retry_later(grant, deps, outcome)
        elif grant.kind is GrantKind.CAPTURE and grant.legs:
            target = grant.legs[-1].target
            if target.kind is Kind.ESCROW:
                escrows[grant.id] = await ledger.account_id(target)
    booked = [g for g, outcome in zip(grants, outcomes, strict=True) if outcome is None]
    if booked:
        await _payments_booked(booked, escrows, deps)


async def _payments_booked(grants: list[CreditGrant], escrows: dict[str, str], deps: Deps) -> None:
    """Mark bookings done, in one local transaction; a direct job payment's capture is published
    now, naming the escrow its booking funded (the jobs service assigns the engagement on it)."""
    async with deps.uow as uow:
        now = deps.clock()
        # One statement marks every booking still pending done (issue 13), one their audits.
        done = await uow.credit_grants.mark_done(grants, now)
        await uow.audit.add(
            *(
                AuditEntry(
                    action="transition",
                    actor="ledger",
                    reason=f"{fresh.kind} booked on the wallet",
                    details={"transfer_id": fresh.transfer_id, "provider": fresh.provider},
                    payment_id=fresh.payment_id,
                    # A plan purchase's dispute booking: on the purchase's audit trail.
                    transaction_id=fresh.transaction_id,
                )
                for fresh in done
            )
        )
        for fresh in done:
            if fresh.id in escrows:
                await _publish_job_payment(uow, deps, fresh.payment_id, escrows[fresh.id], now)
        await uow.commit()
    for fresh in done:
        metrics.count(metrics.CREDIT_GRANTS, str(fresh.kind), "booked")


async def _publish_job_payment(
    uow: PaymentsUnitOfWork, deps: Deps, payment_id: str, escrow_id: str, now: datetime
) -> None:
    payment = await uow.payments.get(payment_id, for_update=True)
    if payment is None:
        return
    payment.metadata = {**payment.metadata, ESCROW_ACCOUNT_KEY: escrow_id}
    await uow.payments.save(payment)
    await emit(uow, deps.config, [EventType.PAYMENT_CAPTURED], now, payment=payment)


@dataclass(frozen=True, slots=True)
class RefundedPurchase:
    transaction: Transaction
    grant: GrantView | None


async def refund_transaction(cmd: commands.RefundTransaction, deps: Deps) -> RefundedPurchase:
    """An admin refunds a paid purchase in full: the provider refunds the payment (one refund per
    transaction, keyed by it), then in one local transaction the transaction becomes REFUNDED and
    owes the revocation of its unused credits, which is booked at once if the wallet answers,
    else by the worker."""
    if not cmd.request_id:
        raise errors.invalid("request_id", "is required")
    async with deps.uow as uow:
        txn = await uow.transactions.get(cmd.transaction_id)
    if txn is None:
        raise errors.TransactionNotFound(cmd.transaction_id)
    if txn.status is TxnStatus.REFUNDED:
        return await _refunded(txn, deps)
    if txn.status is not TxnStatus.SUCCESS or not txn.provider_payment_intent_id:
        raise errors.PaymentNotRefundable(
            txn.id,
            txn.status.value,
            f"transaction {txn.id} is {txn.status.value}: nothing to refund",
        )
    if txn.amount_minor - taken_back(txn) <= 0:
        # Its money is back with the buyer already (a card dispute withdrew it, with any refunds
        # in part): nothing is left to refund at the provider; the dispute decides the rest.
        raise errors.PaymentNotRefundable(
            txn.id,
            txn.status.value,
            f"transaction {txn.id}: its money is back with the buyer already (disputed)",
        )
    key = f"txn-refund:{txn.id}"
    records = await _refund_at_provider(txn, cmd, key, deps)
    async with deps.uow as uow:
        now = deps.clock()
        stored = await uow.transactions.get(txn.id, for_update=True)
        assert stored is not None
        for record in records:
            await uow.audit.add(record.audit(cmd.actor or "admin", transaction_id=txn.id))
        if stored.status is TxnStatus.SUCCESS:
            await mark_refunded(
                uow, deps, stored, actor=cmd.actor or "admin", reason=cmd.reason, key=key, now=now
            )
        await uow.commit()
    await settle_grant(f"{GrantKind.REVOKE.value}:{txn.id}", deps)
    return await _refunded(stored, deps)


async def mark_refunded(
    uow: PaymentsUnitOfWork,
    deps: Deps,
    stored: Transaction,
    *,
    actor: str,
    reason: str,
    key: str,
    now: datetime,
) -> None:
    """A paid purchase refunded in full at its provider (the admin's refund, or one made at the
    provider's dashboard): REFUNDED, owing the revocation of its unused credits, and the
    subsystem told, in the caller's transaction (it holds the transaction's row lock)."""
    stored.status = TxnStatus.REFUNDED
    stored.updated_at = now
    stored.metadata = {**stored.metadata, "refund_reason": reason[:200]}
    await uow.transactions.save(stored)
    await uow.credit_grants.add(CreditGrant.revoke(stored, now))
    # Counted once the refund is committed: a rolled-back transaction refunded nothing.
    uow.after_commit(metrics.SUBSCRIPTIONS.labels(stored.user_type.value, stored.status.value).inc)
    await uow.audit.add(
        AuditEntry(
            action="refund",
            actor=actor,
            reason=reason,
            details={"from": "SUCCESS", "to": "REFUNDED", "idempotency_key": key},
            transaction_id=stored.id,
        )
    )
    await publish(uow, deps.config, [EventType.TRANSACTION_REFUNDED], now, txn=stored)


async def _refund_at_provider(
    txn: Transaction, cmd: commands.RefundTransaction, key: str, deps: Deps
) -> list[CallRecord]:
    """The provider's refund of the purchase's payment (keyed by the transaction: one refund)."""
    records: list[CallRecord] = []
    intent_id = txn.provider_payment_intent_id
    try:
        # The provider the purchase was paid with (never the default: see ProviderRegistry).
        provider = deps.providers.of_existing(txn.provider)
        await call(
            records,
            "refund",
            key,
            lambda: provider.refund(
                intent_id,
                # What its refunds in part at the provider and its disputes' withdrawals left
                # (the whole, without any).
                txn.amount_minor - taken_back(txn),
                cmd.reason,
                {"transaction_id": txn.id, "type": "subscription_refund"},
                key,
            ),
        )
    except (OutcomeUnknown, InvalidRequest) as exc:
        async with deps.uow as uow:
            for record in records:
                await uow.audit.add(record.audit(cmd.actor or "admin", transaction_id=txn.id))
            await uow.commit()
        meta = {"transaction_id": txn.id, "retry": "true"}
        if isinstance(exc, InvalidRequest):
            raise errors.PaymentNotRefundable(txn.id, txn.status.value, exc.message) from None
        if exc.timeout:
            raise errors.PaymentTimeout("the provider did not answer", metadata=meta) from None
        raise errors.ProviderUnavailable("the provider is unavailable", metadata=meta) from None
    return records


async def _refunded(txn: Transaction, deps: Deps) -> RefundedPurchase:
    async with deps.uow as uow:
        grant = await uow.credit_grants.get(f"{GrantKind.REVOKE.value}:{txn.id}")
        fresh = await uow.transactions.get(txn.id)
    return RefundedPurchase(fresh or txn, _view(grant) if grant else None)


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    """A user's premium status and credits (CR-3, API-6)."""

    active: Transaction | None
    job_credits: int
    candidate_credits: int
    max_job_posts: int


async def subscription_status(user_type: UserType, user_id: str, deps: Deps) -> SubscriptionStatus:
    """The active subscription (None: the free plan) and the credits the user can spend."""
    if not user_id:
        raise errors.invalid("user_id", "is required")
    async with deps.uow as uow:
        active = await uow.transactions.latest_active(user_type, user_id, deps.clock().date())
    balances = {JOB_CREDIT: 0, CANDIDATE_CREDIT: 0}
    if deps.ledger is not None:
        balances.update(await deps.ledger.available(user_id))
    per_post = max(1, deps.config.job_credits_per_post)
    return SubscriptionStatus(
        active=active,
        job_credits=balances[JOB_CREDIT],
        candidate_credits=balances[CANDIDATE_CREDIT],
        max_job_posts=balances[JOB_CREDIT] // per_post,
    )


async def transaction_grants(transaction_id: str, deps: Deps) -> list[GrantView]:
    """The ledger bookings of one purchase (issue and, after a refund, revoke)."""
    async with deps.uow as uow:
        return [_view(g) for g in await uow.credit_grants.for_transaction(transaction_id)]
